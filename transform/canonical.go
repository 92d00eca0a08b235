package transform

import (
	"bytes"
	"encoding/json"
)

// canonicalJSON returns a canonical form of a syntactically valid JSON value: object
// keys sorted, no insignificant whitespace, strings re-escaped the same way, number
// literals as written. Two documents that differ only in key order, whitespace or string
// escapes have the same canonical form. It is used only for resources without an id or
// identifier (rare), so it favours simplicity over speed.
func canonicalJSON(b []byte) []byte {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return b // not reached for validated input
	}
	out, err := json.Marshal(v) // map keys are sorted
	if err != nil {
		return b
	}
	return out
}
