package ingest

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzLineReader checks, on plain input and on the same input gzipped, that
// the lines reproduce the input: each line's bytes are at its offset, offsets
// and numbers follow each other, and the terminators account for the rest.
func FuzzLineReader(f *testing.F) {
	for _, s := range []string{
		"", "\n", "a\nb", "a\r\nb\r\n", "\xef\xbb\xbfa\n", "a\x00b\n", "0123456789abcdef0123\nx\r",
		"\r\r\n\n\r", string(gz(f, "a\nb\n")),
	} {
		f.Add([]byte(s), uint8(8))
	}
	f.Fuzz(func(t *testing.T, in []byte, maxLine uint8) {
		opts := LineOptions{MaxLineBytes: int(maxLine%32) + 1, KeepTooLong: 3, MaxDecompressedBytes: 1 << 20}
		lines, err := readAll(t, bytes.NewReader(in), opts)
		isGzip := len(in) >= 2 && in[0] == 0x1f && in[1] == 0x8b
		if err != nil {
			if !isGzip {
				t.Fatalf("plain input: %v", err)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("gzip input: unclassified error %v", err)
			}
			return
		}
		if isGzip {
			return
		}
		checkLines(t, in, lines, opts)
		// The same bytes gzipped give the same lines.
		zl, err := readAll(t, bytes.NewReader(gz(t, string(in))), opts)
		if err != nil {
			t.Fatalf("gzipped: %v", err)
		}
		if len(zl) != len(lines) {
			t.Fatalf("gzipped: %d lines, plain %d", len(zl), len(lines))
		}
		for i := range zl {
			if !bytes.Equal(zl[i].Bytes, lines[i].Bytes) || zl[i].Offset != lines[i].Offset ||
				zl[i].Length != lines[i].Length || zl[i].TooLong != lines[i].TooLong {
				t.Fatalf("gzipped line %d = %+v, plain %+v", i+1, zl[i], lines[i])
			}
		}
	})
}

func checkLines(t *testing.T, in []byte, lines []Line, opts LineOptions) {
	t.Helper()
	off := int64(0)
	if bytes.HasPrefix(in, utf8BOM) {
		off = 3
	}
	for i, l := range lines {
		if l.No != int64(i+1) || l.Offset != off {
			t.Fatalf("line %d: No %d Offset %d, want offset %d", i+1, l.No, l.Offset, off)
		}
		end := off + l.Length
		if end > int64(len(in)) {
			t.Fatalf("line %d runs past the input", i+1)
		}
		full := in[off:end]
		if l.TooLong != (l.Length > int64(opts.MaxLineBytes)) {
			t.Fatalf("line %d: TooLong %v with length %d", i+1, l.TooLong, l.Length)
		}
		if l.TooLong {
			keep := min(opts.KeepTooLong, opts.MaxLineBytes)
			if !bytes.Equal(l.Bytes, full[:keep]) {
				t.Fatalf("line %d: kept %q, want %q", i+1, l.Bytes, full[:keep])
			}
		} else if !bytes.Equal(l.Bytes, full) {
			t.Fatalf("line %d: %q, want %q", i+1, l.Bytes, full)
		}
		if bytes.IndexByte(l.Bytes, '\n') >= 0 {
			t.Fatalf("line %d holds a newline", i+1)
		}
		rest := in[end:]
		switch {
		case bytes.HasPrefix(rest, []byte("\r\n")):
			off = end + 2
		case bytes.HasPrefix(rest, []byte("\n")):
			off = end + 1
		case len(rest) == 0:
			off = end
		default:
			t.Fatalf("line %d not followed by a terminator: %q", i+1, rest[:min(len(rest), 4)])
		}
	}
	if off != int64(len(in)) {
		t.Fatalf("lines cover %d of %d bytes", off, len(in))
	}
}
