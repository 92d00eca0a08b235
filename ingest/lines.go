package ingest

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
)

// Defaults of LineOptions.
const (
	DefaultMaxLineBytes         = 8 << 20
	DefaultKeepTooLong          = 64 << 10
	DefaultMaxDecompressedBytes = 64 << 30
)

// readBufferSize is the bufio buffer under the line scanner: lines up to this
// size are returned without a copy.
const readBufferSize = 64 << 10

var (
	// ErrTooLarge is wrapped by the error of a gzip object that expands past
	// LineOptions.MaxDecompressedBytes.
	ErrTooLarge = errors.New("object too large")
	// ErrCorrupt is wrapped by the error of a gzip stream that is truncated or
	// damaged (bad header, bad checksum, invalid deflate data).
	ErrCorrupt = errors.New("corrupt object")
	// ErrMissingObject is wrapped by the error of opening an object that no
	// longer exists (or no longer has the version that was announced).
	ErrMissingObject = errors.New("missing object")
	// ErrUnreadable is wrapped by the error of an object that exists but
	// cannot be opened or read to its end: permissions, a folder where a file
	// was expected, an I/O error, S3 AccessDenied or a 5xx that outlasted the
	// retries.
	ErrUnreadable = errors.New("unreadable object")
	// ErrCredentials is wrapped by the error of a source refused because of
	// who is asking (no credentials, an invalid or expired key, a bad
	// signature): no other object would fare better, so the run stops.
	ErrCredentials = errors.New("source credentials refused")
)

// utf8BOM is stripped from the start of a stream (see NewLineReader).
var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// LineOptions bound what a LineReader holds in memory.
type LineOptions struct {
	// MaxLineBytes is the longest line returned whole; longer lines are
	// returned with TooLong set and only their first KeepTooLong bytes kept.
	// Default 8 MiB.
	MaxLineBytes int
	// KeepTooLong is how many leading bytes of a too-long line are kept (for
	// the dead-letter entry). Default 64 KiB.
	KeepTooLong int
	// MaxDecompressedBytes bounds what a gzip object may expand to (a gzip
	// bomb guard); 0 means the default of 64 GiB. Exceeding it is an error
	// from Next wrapping ErrTooLarge.
	MaxDecompressedBytes int64
}

func (o LineOptions) withDefaults() LineOptions {
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	if o.KeepTooLong <= 0 {
		o.KeepTooLong = DefaultKeepTooLong
	}
	if o.KeepTooLong > o.MaxLineBytes {
		o.KeepTooLong = o.MaxLineBytes
	}
	if o.MaxDecompressedBytes <= 0 {
		o.MaxDecompressedBytes = DefaultMaxDecompressedBytes
	}
	return o
}

// Line is one line of an object. Bytes excludes the line terminator ("\n" or
// "\r\n") and is only valid until the next call to Next.
type Line struct {
	No      int64  // 1-based line number
	Offset  int64  // byte offset of the line's start in the (decompressed) stream
	Bytes   []byte // the line, or its first KeepTooLong bytes when TooLong
	TooLong bool   // the line exceeded MaxLineBytes
	Length  int64  // the full length of the line in bytes
}

// LineReader streams lines from an object, detecting gzip by magic bytes.
//
// Memory is bounded by MaxLineBytes plus a fixed read buffer whatever the size
// of the object or of any one line. A LineReader is not safe for concurrent
// use.
type LineReader struct {
	r    *bufio.Reader
	opts LineOptions

	gzip   bool
	sep    byte   // the line terminator: '\n' ("\r\n" too), or '\r'
	no     int64  // number of the last line returned
	offset int64  // decompressed bytes consumed so far
	buf    []byte // accumulates a line that spans several bufio reads
	err    error  // sticky error, returned once the buffered lines are out
}

// Stream is an object's bytes after decompression: its head can be looked at
// (to tell its format and encoding) before it is read as lines (Lines) or as
// one document (Reader). A stream starting with the gzip magic bytes (1f 8b)
// is decompressed, including multi-member gzip (as written by concatenating
// .gz files); its decompressed size is bounded by opts.MaxDecompressedBytes.
type Stream struct {
	r    *bufio.Reader
	gzip bool
	opts LineOptions
}

// OpenStream returns the Stream of r. The error is non-nil only when r fails
// on its first read or its gzip header is damaged (wrapping ErrCorrupt);
// later failures come from reading.
func OpenStream(r io.Reader, opts LineOptions) (*Stream, error) {
	opts = opts.withDefaults()
	// bufio.Reader.Peek forgets a read error once reported; stickyReader
	// makes sure a failing source cannot look like a clean end later.
	br := bufio.NewReaderSize(&stickyReader{r: r}, readBufferSize)
	magic, err := br.Peek(2)
	if err != nil && err != io.EOF {
		return nil, readError(err)
	}
	s := &Stream{r: br, opts: opts}
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, gzipError(err)
		}
		s.gzip = true
		s.r = bufio.NewReaderSize(&boundedReader{r: zr, limit: opts.MaxDecompressedBytes}, readBufferSize)
	}
	return s, nil
}

// HeadSize is how much of a stream Head looks at.
const HeadSize = 16 << 10

// Head returns the first HeadSize bytes of the (decompressed) stream, or all
// of it when it is shorter, without consuming them. A read error is not
// returned here: reading returns it.
func (s *Stream) Head() []byte {
	b, _ := s.r.Peek(HeadSize)
	return b
}

// Gzip reports whether the stream was detected as gzip.
func (s *Stream) Gzip() bool { return s.gzip }

// Reader returns the decompressed bytes, for formats read as one document
// (a Bundle file). Errors are classified like LineReader's.
func (s *Stream) Reader() io.Reader { return &classified{r: s.r, gzip: s.gzip} }

// Lines returns the stream's LineReader. A UTF-8 byte order mark at the
// start is not part of line 1's Bytes: line 1's Offset is then 3. Line
// terminators are "\n" and "\r\n", or "\r" alone when crOnly is set (files
// written with classic Mac OS line ends); NUL bytes and invalid UTF-8 are
// passed through unchanged for the caller to judge.
func (s *Stream) Lines(crOnly bool) *LineReader {
	lr := &LineReader{r: s.r, opts: s.opts, gzip: s.gzip, sep: '\n'}
	if crOnly {
		lr.sep = '\r'
	}
	if bom, _ := lr.r.Peek(len(utf8BOM)); bytes.Equal(bom, utf8BOM) {
		_, _ = lr.r.Discard(len(utf8BOM))
		lr.offset = int64(len(utf8BOM))
	}
	return lr
}

// classified wraps the errors of a stream's reader as LineReader does.
type classified struct {
	r    io.Reader
	gzip bool
}

func (c *classified) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		if c.gzip {
			err = gzipError(err)
		} else {
			err = readError(err)
		}
	}
	return n, err
}

// NewLineReader returns the LineReader of r's lines (OpenStream, then
// Lines(false)).
func NewLineReader(r io.Reader, opts LineOptions) (*LineReader, error) {
	s, err := OpenStream(r, opts)
	if err != nil {
		return nil, err
	}
	return s.Lines(false), nil
}

// Gzip reports whether the stream was detected as gzip.
func (r *LineReader) Gzip() bool { return r.gzip }

// Next returns the next line. At the end of the stream it returns io.EOF; a
// last line without a trailing newline is returned before that. A stream that
// breaks (a truncated gzip member wraps ErrCorrupt, a gzip bomb wraps
// ErrTooLarge, or the underlying reader fails) yields its complete lines first
// and then the error; the incomplete tail is never returned as a line. After
// an error every later call returns the same error.
func (r *LineReader) Next() (Line, error) {
	if r.err != nil {
		return Line{}, r.err
	}
	r.buf = r.buf[:0]
	var (
		total   int64 // bytes of the line read so far, terminator included
		tooLong bool
		prevCR  bool // last byte of the previous chunk was '\r' (for skipped lines)
	)
	for {
		chunk, err := r.r.ReadSlice(r.sep)
		total += int64(len(chunk))
		complete := err == nil
		switch {
		case complete && total == int64(len(chunk)):
			// Fast path: the whole line is in the bufio buffer.
			return r.finish(chunk, total, false, false), nil
		case tooLong:
			if complete {
				return r.finish(r.buf, total, true, endsCR(chunk, prevCR)), nil
			}
			if len(chunk) > 0 {
				prevCR = chunk[len(chunk)-1] == '\r'
			}
		default:
			r.grow(len(chunk))
			r.buf = append(r.buf, chunk...)
			if complete {
				return r.finish(r.buf, total, false, false), nil
			}
			// One extra byte may be the '\r' of a "\r\n" terminator.
			if len(r.buf) > r.opts.MaxLineBytes+1 {
				tooLong = true
				prevCR = r.buf[len(r.buf)-1] == '\r'
				r.buf = r.buf[:r.opts.KeepTooLong]
			}
		}
		if err == nil || err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			r.err = io.EOF
			if total == 0 {
				return Line{}, io.EOF
			}
			// The last line has no newline.
			if tooLong {
				return r.finish(r.buf, total, true, prevCR), nil
			}
			return r.finish(r.buf, total, false, false), nil
		}
		r.err = r.wrapErr(err)
		return Line{}, r.err
	}
}

// grow makes room for n more bytes in buf, doubling (append grows large
// slices by only 1.25x, which allocates several times MaxLineBytes in total
// on the way to a too-long line) and never beyond what a line may need.
func (r *LineReader) grow(n int) {
	need := len(r.buf) + n
	if need <= cap(r.buf) {
		return
	}
	c := max(2*cap(r.buf), need, readBufferSize)
	c = min(c, max(need, r.opts.MaxLineBytes+2))
	nb := make([]byte, len(r.buf), c)
	copy(nb, r.buf)
	r.buf = nb
}

// finish builds the Line for raw (the line's bytes, with its terminator when
// it has one, or the kept prefix of a too-long line) and total (the line's
// length in the stream, terminator included). crBeforeLF tells, for a
// too-long line, whether a '\r' preceded the final '\n' (or the end).
func (r *LineReader) finish(raw []byte, total int64, tooLong, crBeforeLF bool) Line {
	r.no++
	l := Line{No: r.no, Offset: r.offset}
	r.offset += total
	length := total
	if tooLong {
		if total > 0 && !r.atEOF() {
			length-- // the terminator
			if crBeforeLF && r.sep == '\n' {
				length--
			}
		}
		l.Bytes, l.TooLong, l.Length = raw, tooLong, length
		return l
	}
	if n := len(raw); n > 0 && raw[n-1] == r.sep {
		raw = raw[:n-1]
		if n := len(raw); n > 0 && raw[n-1] == '\r' && r.sep == '\n' {
			raw = raw[:n-1]
		}
	}
	l.Bytes, l.Length = raw, int64(len(raw))
	if l.Length > int64(r.opts.MaxLineBytes) {
		l.TooLong = true
		l.Bytes = raw[:r.opts.KeepTooLong]
	}
	return l
}

func (r *LineReader) atEOF() bool { return r.err == io.EOF }

// endsCR reports whether the byte before the final '\n' of chunk is '\r';
// prevCR covers a chunk that is just "\n".
func endsCR(chunk []byte, prevCR bool) bool {
	if len(chunk) >= 2 {
		return chunk[len(chunk)-2] == '\r'
	}
	return prevCR
}

func (r *LineReader) wrapErr(err error) error {
	if errors.Is(err, ErrTooLarge) {
		return err
	}
	if r.gzip {
		return gzipError(err)
	}
	return readError(err)
}

// gzipError classifies an error of the gzip reader: damaged or truncated data
// wraps ErrCorrupt, anything else (the underlying reader's) is passed on.
func gzipError(err error) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, gzip.ErrHeader), errors.Is(err, gzip.ErrChecksum),
		errors.As(err, &corrupt):
		return fmt.Errorf("%w: gzip: %w", ErrCorrupt, err)
	}
	return readError(err)
}

// readError wraps ErrUnreadable around a failure of the object's own reader,
// unless it already says what it is (missing, credentials, cancellation).
func readError(err error) error {
	switch {
	case errors.Is(err, ErrMissingObject), errors.Is(err, ErrCredentials), errors.Is(err, ErrUnreadable),
		errors.Is(err, ErrCorrupt), errors.Is(err, ErrTooLarge):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("%w: read: %w", ErrUnreadable, err)
}

// boundedReader fails with ErrTooLarge once more than limit bytes were read.
// Its errors are sticky.
type boundedReader struct {
	r     io.Reader
	limit int64
	read  int64
	err   error
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	// Ask for one byte more than fits: getting it proves the object too large.
	if left := b.limit - b.read; int64(len(p)) > left+1 {
		p = p[:left+1]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > b.limit {
		n -= int(b.read - b.limit)
		b.read = b.limit
		err = fmt.Errorf("%w: gzip expands beyond %d bytes", ErrTooLarge, b.limit)
	}
	b.err = err
	return n, err
}

// stickyReader returns the first error of r (io.EOF included) for ever.
type stickyReader struct {
	r   io.Reader
	err error
}

func (s *stickyReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	s.err = err
	return n, err
}
