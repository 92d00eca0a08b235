package transform

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readLines returns the lines of an NDJSON file (gzip when the name ends in .gz).
func readLines(t testing.TB, name string) [][]byte {
	t.Helper()
	lines, err := readFileLines(name)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func readFileLines(name string) ([][]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		r = gz
	}
	var lines [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
	}
	return lines, sc.Err()
}

// examples returns the official R4 examples, each compacted to one line.
func examples(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../testdata/shared/fhir/examples/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = buf.Bytes()
	}
	return out
}

func mustNew(t testing.TB, o Options) *Transformer {
	t.Helper()
	tr, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func asError(t testing.TB, err error) *Error {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return e
}
