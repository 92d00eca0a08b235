package ingest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
)

func gz(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// readAll drains a LineReader, copying each line.
func readAll(t testing.TB, r io.Reader, opts LineOptions) ([]Line, error) {
	t.Helper()
	lr, err := NewLineReader(r, opts)
	if err != nil {
		return nil, err
	}
	var out []Line
	for {
		l, err := lr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		l.Bytes = append([]byte(nil), l.Bytes...)
		out = append(out, l)
	}
}

func TestLineReader(t *testing.T) {
	type want struct {
		text    string
		off     int64
		tooLong bool
		length  int64
	}
	ln := func(text string, off int64) want { return want{text, off, false, int64(len(text))} }
	tests := []struct {
		name  string
		input []byte
		opts  LineOptions
		want  []want
		err   error
	}{
		{name: "plain", input: []byte("a\nbb\nccc\n"), want: []want{ln("a", 0), ln("bb", 2), ln("ccc", 5)}},
		{name: "last line without newline", input: []byte("a\nbb"), want: []want{ln("a", 0), ln("bb", 2)}},
		{name: "empty file", input: nil, want: nil},
		{name: "only newline is one blank line", input: []byte("\n"), want: []want{ln("", 0)}},
		{name: "blank lines kept", input: []byte("a\n\n\nb\n"), want: []want{ln("a", 0), ln("", 2), ln("", 3), ln("b", 4)}},
		{name: "crlf stripped", input: []byte("a\r\nbb\r\n\r\nc"), want: []want{ln("a", 0), ln("bb", 3), ln("", 7), ln("c", 9)}},
		{name: "lone cr is data", input: []byte("a\rb\nc\r"), want: []want{ln("a\rb", 0), ln("c\r", 4)}},
		{name: "bom stripped", input: []byte("\xef\xbb\xbf{\"a\":1}\nb\n"), want: []want{ln(`{"a":1}`, 3), ln("b", 11)}},
		{name: "bom only on line 1", input: []byte("a\n\xef\xbb\xbfb\n"), want: []want{ln("a", 0), ln("\xef\xbb\xbfb", 2)}},
		{name: "nul bytes passed through", input: []byte("a\x00b\n\x00\n"), want: []want{ln("a\x00b", 0), ln("\x00", 4)}},
		{name: "invalid utf8 passed through", input: []byte("\xff\xfe\n"), want: []want{ln("\xff\xfe", 0)}},
		{name: "gzip", input: gz(t, "a\nbb\n"), want: []want{ln("a", 0), ln("bb", 2)}},
		{name: "gzip bom crlf", input: gz(t, "\xef\xbb\xbfa\r\nb"), want: []want{ln("a", 3), ln("b", 6)}},
		{name: "multi-member gzip", input: append(gz(t, "a\nb"), gz(t, "c\nd\n")...), want: []want{ln("a", 0), ln("bc", 2), ln("d", 5)}},
		{name: "empty gzip", input: gz(t, ""), want: nil},
		{
			name:  "too long line is skipped with prefix kept",
			input: []byte("ok\n0123456789\nafter\n"),
			opts:  LineOptions{MaxLineBytes: 5, KeepTooLong: 3},
			want:  []want{ln("ok", 0), {"012", 3, true, 10}, ln("after", 14)},
		},
		{
			name:  "too long crlf line length excludes terminator",
			input: []byte("0123456789\r\nx"),
			opts:  LineOptions{MaxLineBytes: 5, KeepTooLong: 2},
			want:  []want{{"01", 0, true, 10}, ln("x", 12)},
		},
		{
			name:  "line of exactly max with crlf is whole",
			input: []byte("01234\r\n012345\n"),
			opts:  LineOptions{MaxLineBytes: 5, KeepTooLong: 2},
			want:  []want{ln("01234", 0), {"01", 7, true, 6}},
		},
		{
			name:  "too long last line without newline",
			input: []byte("a\n0123456789"),
			opts:  LineOptions{MaxLineBytes: 4, KeepTooLong: 4},
			want:  []want{ln("a", 0), {"0123", 2, true, 10}},
		},
		{
			name:  "gzip bomb",
			input: gz(t, "a\n"+strings.Repeat("\n", 1<<20)),
			opts:  LineOptions{MaxDecompressedBytes: 4},
			want:  []want{ln("a", 0), ln("", 2), ln("", 3)},
			err:   ErrTooLarge,
		},
		{
			name:  "truncated gzip returns complete lines then ErrCorrupt",
			input: truncate(gz(t, "line1\nline2\n"+strings.Repeat("x", 5000)), 8),
			want:  []want{ln("line1", 0), ln("line2", 6)},
			err:   ErrCorrupt,
		},
		{
			name:  "garbage after gzip member",
			input: append(gz(t, "a\n"), "junk"...),
			want:  []want{ln("a", 0)},
			err:   ErrCorrupt,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, bytes.NewReader(tt.input), tt.opts)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d lines %+v, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				g := got[i]
				if string(g.Bytes) != w.text || g.Offset != w.off || g.TooLong != w.tooLong || g.Length != w.length || g.No != int64(i+1) {
					t.Errorf("line %d = {No:%d Off:%d %q TooLong:%v Len:%d}, want {Off:%d %q TooLong:%v Len:%d}",
						i+1, g.No, g.Offset, g.Bytes, g.TooLong, g.Length, w.off, w.text, w.tooLong, w.length)
				}
			}
		})
	}
}

func truncate(b []byte, cut int) []byte { return b[:len(b)-cut] }

func TestLineReaderErrorIsSticky(t *testing.T) {
	lr, err := NewLineReader(bytes.NewReader(truncate(gz(t, "a\nb"), 4)), LineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = lr.Next(); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if _, err2 := lr.Next(); !errors.Is(err2, ErrCorrupt) {
		t.Fatalf("second err = %v, want ErrCorrupt", err2)
	}
}

func TestLineReaderBadGzipHeader(t *testing.T) {
	_, err := NewLineReader(bytes.NewReader([]byte{0x1f, 0x8b, 0x08}), LineOptions{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
}

// failingReader returns data, then a non-EOF error, then (wrongly) EOF: the
// line reader must not mistake the second call for a clean end.
type failingReader struct {
	data  []byte
	calls int
}

func (f *failingReader) Read(p []byte) (int, error) {
	f.calls++
	switch {
	case len(f.data) > 0:
		n := copy(p, f.data)
		f.data = f.data[n:]
		return n, nil
	case f.calls < 100:
		f.data = nil
		f.calls = 100
		return 0, errors.New("connection reset")
	}
	return 0, io.EOF
}

func TestLineReaderSourceErrorNotLost(t *testing.T) {
	got, err := readAll(t, &failingReader{data: []byte("a\nb")}, LineOptions{})
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("err = %v, want the source error", err)
	}
	if len(got) != 1 || string(got[0].Bytes) != "a" {
		t.Fatalf("lines = %+v, want only the complete line", got)
	}
}

// patternReader produces n bytes of a repeated byte followed by tail, without
// holding them.
type patternReader struct {
	n    int64
	b    byte
	tail []byte
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n == 0 {
		if len(p.tail) == 0 {
			return 0, io.EOF
		}
		n := copy(b, p.tail)
		p.tail = p.tail[n:]
		return n, nil
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	for i := range b {
		b[i] = p.b
	}
	p.n -= int64(len(b))
	return len(b), nil
}

func TestLineReaderHugeLineBoundedMemory(t *testing.T) {
	const size = 100 << 20
	src := &patternReader{n: size, b: 'x', tail: []byte("\r\n{\"ok\":true}\n")}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	lr, err := NewLineReader(src, LineOptions{}) // default 8 MiB limit
	if err != nil {
		t.Fatal(err)
	}
	l, err := lr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if !l.TooLong || l.Length != size || len(l.Bytes) != DefaultKeepTooLong || l.No != 1 {
		t.Fatalf("huge line = {TooLong:%v Length:%d kept:%d No:%d}", l.TooLong, l.Length, len(l.Bytes), l.No)
	}
	l, err = lr.Next()
	if err != nil || string(l.Bytes) != `{"ok":true}` || l.Offset != size+2 || l.No != 2 {
		t.Fatalf("next line = %q off %d no %d err %v", l.Bytes, l.Offset, l.No, err)
	}
	runtime.ReadMemStats(&after)
	// The reader may hold MaxLineBytes (8 MiB) plus buffers; a reader that
	// kept the line whole would allocate well over 100 MiB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Fatalf("allocated %d MiB reading a 100 MiB line", alloc>>20)
	}
}

func TestLineReaderAllocsPerLine(t *testing.T) {
	data := bytes.Repeat([]byte(`{"resourceType":"Patient","id":"x"}`+"\n"), 1000)
	allocs := testing.AllocsPerRun(5, func() {
		lr, err := NewLineReader(bytes.NewReader(data), LineOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := lr.Next(); err != nil {
				break
			}
		}
	})
	// Setup allocates a few objects; lines themselves must not.
	if allocs > 20 {
		t.Fatalf("%v allocations for 1000 lines", allocs)
	}
}

func TestLineReaderSampleData(t *testing.T) {
	for _, tc := range []struct {
		path  string
		lines int
	}{
		{"../testdata/sample/Patient.ndjson.gz", 100},
		{"../testdata/sample/Observation.ndjson.gz", 16315},
	} {
		f, err := os.Open(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readAll(t, f, LineOptions{})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tc.lines {
			t.Errorf("%s: %d lines, want %d", tc.path, len(got), tc.lines)
		}
	}
}

func BenchmarkLineReader(b *testing.B) {
	f, err := os.ReadFile("../testdata/sample/Observation.ndjson.gz")
	if err != nil {
		b.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(f))
	if err != nil {
		b.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		data []byte
	}{{"plain", plain}, {"gzip", f}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(plain))) // MB/s of NDJSON either way
			b.ReportAllocs()
			for b.Loop() {
				lr, err := NewLineReader(bytes.NewReader(bc.data), LineOptions{})
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := lr.Next(); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}

// TestStreamCROnly: a file with classic Mac OS line ends (CR alone) is split
// on CR when asked; its lines, numbers and offsets are right, and a CRLF
// file read the usual way is unchanged.
func TestStreamCROnly(t *testing.T) {
	s, err := OpenStream(strings.NewReader("a\rbb\r\rccc"), LineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := string(s.Head()); h != "a\rbb\r\rccc" {
		t.Fatalf("head %q", h)
	}
	lr := s.Lines(true)
	var got []string
	for {
		l, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d@%d:%q", l.No, l.Offset, l.Bytes))
	}
	if want := `1@0:"a" 2@2:"bb" 3@5:"" 4@6:"ccc"`; strings.Join(got, " ") != want {
		t.Fatalf("lines %s, want %s", strings.Join(got, " "), want)
	}
}
