// Package loader is the FHIR writer: SigV4 signing, TLS, batching into Bundles,
// per-entry outcome parsing, retry with backoff, bounded and adaptive
// concurrency and a write-unit rate limit. It knows nothing of sources or files.
package loader

import "encoding/json"

// Dead-letter reasons produced by the loader.
const (
	ReasonDuplicate        = "duplicate"
	ReasonRejected         = "rejected"
	ReasonRetriesExhausted = "retries-exhausted"
)

// Item is one resource to write with PUT /{Type}/{ID}.
type Item struct {
	Type string
	ID   string
	Body []byte // the resource JSON, spliced verbatim into Bundles
}

// Outcome is the final result of writing one Item.
type Outcome struct {
	Loaded           bool
	Created          bool            // 201 (vs 200 updated)
	Reason           string          // when !Loaded: ReasonDuplicate, ReasonRejected, ReasonRetriesExhausted
	HTTPStatus       int             // the last status seen (0 for a network error)
	OperationOutcome json.RawMessage // the server's OperationOutcome, as returned, when any
	Message          string          // short, PHI-free description of the last failure
	Attempts         int
}
