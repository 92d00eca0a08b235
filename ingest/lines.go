package ingest

import "io"

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
type LineReader struct {
	r    io.Reader
	opts LineOptions
}
