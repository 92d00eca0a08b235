package transform

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

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
