// Package testlines reads the NDJSON files tests load: the repo's samples,
// gzipped or not.
package testlines

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// MaxLine is the longest line read (a whole Synthea Bundle on one line
// stays well under it).
const MaxLine = 16 << 20

// Each calls fn with each line of the file at path, gunzipped when its name
// ends in .gz, until fn returns false. The line is valid only during the
// call. A failure to open or read the file fails the test.
func Each(tb testing.TB, path string, fn func(line []byte) bool) {
	tb.Helper()
	if err := each(path, fn); err != nil {
		tb.Fatal(err)
	}
}

// All returns the lines of the file at path that are not blank, copied. A
// failure to open or read the file fails the test.
func All(tb testing.TB, path string) [][]byte {
	tb.Helper()
	lines, err := Read(path)
	if err != nil {
		tb.Fatal(err)
	}
	return lines
}

// Read is All for a caller without a test at hand (data read once per test
// binary).
func Read(path string) ([][]byte, error) {
	var lines [][]byte
	err := each(path, func(l []byte) bool {
		if len(bytes.TrimSpace(l)) > 0 {
			lines = append(lines, bytes.Clone(l))
		}
		return true
	})
	return lines, err
}

func each(path string, fn func(line []byte) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	for sc.Scan() {
		if !fn(sc.Bytes()) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
