// Package deadletter is the dead-letter store: every line that could not be
// loaded, verbatim, with where it came from and why. Backends: a local folder
// and an S3 prefix, with one entry format.
package deadletter

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Entry is one dead-lettered line (DESIGN.md "Dead-letter entry").
type Entry struct {
	ID               string          `json:"id"`
	RunID            string          `json:"run_id"`
	Reason           Reason          `json:"reason"`
	Stage            Stage           `json:"stage"`
	Message          string          `json:"message,omitempty"`
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
