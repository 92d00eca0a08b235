package ingest

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLocal(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"a/Patient.ndjson":         "p\n",
		"a/Observation.ndjson.gz":  "o\n",
		"a/deep/x.jsonl":           "x\n",
		"a/deep/notes.txt":         "n\n",
		"a/UPPER.NDJSON":           "u\n",
		"b/one.ndjson":             "1\n",
		"b/two.ndjson":             "2\n",
		"c/data.json":              "c\n",
		"c/with space+plus.ndjson": "s\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	abs := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "file://"+filepath.ToSlash(filepath.Join(dir, n)))
		}
		return out
	}
	tests := []struct {
		name     string
		patterns []string
		opts     LocalOptions
		want     []string
		errPart  string
	}{
		{name: "dir walked recursively, sorted, suffix filter", patterns: []string{"a"},
			want: abs("a/Observation.ndjson.gz", "a/Patient.ndjson", "a/UPPER.NDJSON", "a/deep/x.jsonl")},
		{name: "explicit file whatever its name", patterns: []string{"c/data.json"}, want: abs("c/data.json")},
		{name: "glob", patterns: []string{"b/*.ndjson"}, want: abs("b/one.ndjson", "b/two.ndjson")},
		{name: "glob of dirs walks them (.json too: Bundle files)", patterns: []string{"[bc]"},
			want: abs("b/one.ndjson", "b/two.ndjson", "c/data.json", "c/with space+plus.ndjson")},
		{name: "duplicates once", patterns: []string{"b", "b/one.ndjson", "b/*"}, want: abs("b/one.ndjson", "b/two.ndjson")},
		{name: "custom suffixes", patterns: []string{"a", "c"}, opts: LocalOptions{Suffixes: []string{".txt", ".json"}},
			want: abs("a/deep/notes.txt", "c/data.json")},
		{name: "missing path", patterns: []string{"b", "nope.ndjson"}, errPart: "nope.ndjson"},
		{name: "glob matching nothing", patterns: []string{"z*/*.ndjson"}, errPart: "z*/*.ndjson"},
		{name: "bad glob", patterns: []string{"[.ndjson"}, errPart: "[.ndjson"},
	}
	t.Chdir(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Local(tt.patterns, tt.opts)
			if tt.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errPart) {
					t.Fatalf("err = %v, want one naming %q", err, tt.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range objs {
				got = append(got, o.URI)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestLocalObject(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.ndjson")
	if err := os.WriteFile(p, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, err := Local([]string{p}, LocalOptions{})
	if err != nil || len(objs) != 1 {
		t.Fatal(objs, err)
	}
	o := objs[0]
	info, _ := os.Stat(p)
	if o.Size != 6 || !strings.HasPrefix(o.ETag, "6-") || o.ETag == "6-0" || info.Size() != 6 {
		t.Fatalf("size %d etag %q", o.Size, o.ETag)
	}
	rc, err := o.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "hello\n" {
		t.Fatalf("read %q", b)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(context.Background()); !errors.Is(err, ErrMissingObject) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open of a removed file: %v", err)
	}
}
