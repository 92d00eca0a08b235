// Package deadletter is the dead-letter store: every line that could not be
// loaded, verbatim, with where it came from and why. Backends: a local folder
// and an S3 prefix, with one entry format.
//
// # Durable or nothing
//
// A write (Store.Put, Retire, Replace) either stores all its records durably
// and returns nil, or returns an error and none of them is ever visible to
// List or Get — in this process or a later one. So a caller counts a line as
// dead-lettered exactly when Put returned nil, and a report, the metrics and
// `fhirload deadletter ls` agree. Writes of concurrent callers are committed
// together (group commit): one write and one fsync, or one PutObject, serve
// every caller waiting at that moment.
//
// Locally each Store appends to a segment file of its own
// (segments/<time>-<pid>-<rand>.ndjson, 0600), created only when there is
// something to write. A segment starts with a header line and holds groups
// of records, each closed by a commit line written in the same write and
// fsynced before Put returns; a new segment's directory entry is fsynced too.
// Records without their commit line (a write cut short by a full disk, a
// crash) are never listed. A failed write is cut back to the last commit
// line; a segment whose first write failed is removed, so a failing disk
// leaves neither empty segments nor a segment per attempt, and the same store
// writes normally once there is space again.
//
// Readers skip a torn segment end with a warning naming the segment and the
// byte offset, never an error. The first write of a Store repairs the
// segments of writers that are gone: each writer holds an flock on its
// segment while it writes it, and a segment nobody holds that does not end
// with a commit line is cut back to its last one (removed when it has none).
// Segments of the previous format (no header: written by an earlier release,
// whose writers do not lock them) are read, never modified.
//
// On S3 each group commit is one segment object (PUT with server-side
// encryption), stored whole or not at all. When S3's answer leaves the
// outcome open (a 5xx after the SDK's retries, a timeout), the key is deleted
// before Put returns its error, so that a failed write does not show up
// later.
package deadletter

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Entry is one dead-lettered line (DESIGN.md "Dead-letter entry").
type Entry struct {
	ID      string `json:"id"`
	RunID   string `json:"run_id"`
	Reason  Reason `json:"reason"`
	Stage   Stage  `json:"stage"`
	Message string `json:"message,omitempty"`
	// Rule is the specification's rule the line breaks, when it is a named
	// one: an invariant key (obs-6, txt-1), "ext:" and an extension URL, or a
	// declared profile's URL.
	Rule             string          `json:"rule,omitempty"`
	Source           Source          `json:"source"`
	Line             string          `json:"line"`                  // verbatim when valid UTF-8
	LineBase64       string          `json:"line_base64,omitempty"` // verbatim bytes when the line is not valid UTF-8
	LineTruncated    bool            `json:"line_truncated,omitempty"`
	ResourceType     string          `json:"resource_type,omitempty"`
	ResourceID       string          `json:"resource_id,omitempty"`
	HTTPStatus       int             `json:"http_status,omitempty"`
	OperationOutcome json.RawMessage `json:"operation_outcome,omitempty"`
	Attempts         int             `json:"attempts"`
	FirstFailed      time.Time       `json:"first_failed"`
	LastFailed       time.Time       `json:"last_failed"`
	Transform        TransformInfo   `json:"transform"`
}

// Source says where a dead-lettered line came from.
type Source struct {
	URI    string `json:"uri"`
	ETag   string `json:"etag,omitempty"`
	Line   int64  `json:"line"`
	Offset int64  `json:"offset"`
	// Header is the CSV header line of the object, so a flat record can be
	// replayed without its source.
	Header string `json:"header,omitempty"`
	// FullURL is the Bundle entry's fullUrl (Bundle files: Line is then the
	// entry's position in Bundle.entry, from 1): a urn:uuid fullUrl gives a
	// resource without an id its id, on replay too.
	FullURL string `json:"full_url,omitempty"`
}

// TransformInfo records the transform settings a line was processed with.
type TransformInfo struct {
	Format      string `json:"format,omitempty"`
	Profile     string `json:"profile,omitempty"`
	IDs         string `json:"ids,omitempty"`
	Mapping     string `json:"mapping,omitempty"`
	MappingHash string `json:"mapping_hash,omitempty"`
}

// MakeLine returns the fields Entry.Line and Entry.LineBase64 for the raw
// line b: the text itself when b is valid UTF-8 (JSON keeps it verbatim),
// else base64 of the bytes (JSON would replace invalid bytes).
func MakeLine(b []byte) (line string, b64 string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return "", base64.StdEncoding.EncodeToString(b)
}

// Bytes returns the verbatim bytes of the dead-lettered line.
func (e Entry) Bytes() []byte {
	if e.LineBase64 != "" {
		if b, err := base64.StdEncoding.DecodeString(e.LineBase64); err == nil {
			return b
		}
	}
	return []byte(e.Line)
}
