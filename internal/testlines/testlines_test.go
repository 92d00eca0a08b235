package testlines

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func TestEachAndAll(t *testing.T) {
	dir := t.TempDir()
	text := []byte("{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}")
	plain := filepath.Join(dir, "x.ndjson")
	if err := os.WriteFile(plain, text, 0o600); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(text)
	zw.Close()
	zipped := filepath.Join(dir, "x.ndjson.gz")
	if err := os.WriteFile(zipped, gz.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{plain, zipped} {
		got := All(t, p)
		if len(got) != 3 || string(got[0]) != `{"a":1}` || string(got[1]) != `{"b":2}` || string(got[2]) != `{"c":3}` {
			t.Errorf("%s: %q", p, got)
		}
		n := 0
		Each(t, p, func([]byte) bool { n++; return n < 2 })
		if n != 2 {
			t.Errorf("%s: Each went on after false: %d calls", p, n)
		}
	}
}
