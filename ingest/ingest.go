// Package ingest finds work and reads it: local files, S3 objects listed under a
// prefix, and S3 event notifications on SQS. It hands out Objects (a name, a
// version and a way to open the bytes) and a streaming line reader; it knows
// nothing of FHIR or of the target server.
package ingest

import (
	"context"
	"io"
)

// Object is one unit of work: a local file or an S3 object.
//
// Ack is called exactly once by the runner when every line of the object has a
// final outcome (err == nil), or when the object could not be finished (err !=
// nil: the source must arrange redelivery, e.g. leave the SQS message). Ack may
// be nil for sources that need no acknowledgement.
type Object struct {
	URI  string // file:///abs/path or s3://bucket/key (key not URL-encoded)
	ETag string // S3 ETag (or version id); for local files "size-mtimeUnixNano"
	Size int64  // bytes, -1 when unknown

	// Open returns the object's raw bytes (possibly gzip; the LineReader
	// detects that). Implementations resume transparently after a broken read
	// where they can (S3: a Range request from the last byte consumed).
	Open func(ctx context.Context) (io.ReadCloser, error)

	// Ack reports the object's final state to its source.
	Ack func(ctx context.Context, err error) error

	// Redelivers is set by sources that bring an object again after an Ack
	// with an error (SQS: the message reappears, and the queue's redrive
	// policy moves it to its dead-letter queue after maxReceiveCount). An
	// object of such a source that cannot be read is released for
	// redelivery; one of any other source is dead-lettered as
	// unreadable-object.
	Redelivers bool
}

// Key identifies an object's content for checkpoints: uri + "@" + etag.
func (o Object) Key() string { return o.URI + "@" + o.ETag }
