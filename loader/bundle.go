package loader

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
)

// body is a pooled request body shared by the request and its GetBody copies. It goes back to the
// pool when its owner and every reader the transport opened have let go (the transport may close a
// request body after RoundTrip returns).
type body struct {
	b    []byte
	refs atomic.Int32
	pool *sync.Pool
}

func getBody(pool *sync.Pool) *body {
	b := pool.Get().(*body)
	b.b = b.b[:0]
	b.refs.Store(1)
	return b
}

func (b *body) release() {
	if b.refs.Add(-1) == 0 && b.pool != nil {
		b.pool.Put(b)
	}
}

// reader opens a reader on the body; its Close releases it.
func (b *body) reader() io.ReadCloser {
	b.refs.Add(1)
	return &bodyReader{Reader: bytes.NewReader(b.b), b: b}
}

type bodyReader struct {
	*bytes.Reader
	b    *body
	once sync.Once
}

func (r *bodyReader) Close() error {
	r.once.Do(r.b.release)
	return nil
}

// appendBundle writes a FHIR batch Bundle of PUT entries for items[idx...], splicing each resource
// body verbatim. Types and ids were validated (FHIR id syntax), so they need no escaping.
func appendBundle(dst []byte, items []Item, idx []int) []byte {
	dst = append(dst, `{"resourceType":"Bundle","type":"batch","entry":[`...)
	for k, i := range idx {
		if k > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"resource":`...)
		dst = append(dst, bytes.TrimSpace(items[i].Body)...)
		dst = append(dst, `,"request":{"method":"PUT","url":"`...)
		dst = append(dst, items[i].Type...)
		dst = append(dst, '/')
		dst = append(dst, items[i].ID...)
		dst = append(dst, `"}}`...)
	}
	return append(dst, "]}"...)
}

// batchResponse is the part of a batch-response Bundle the loader reads.
type batchResponse struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		Response struct {
			Status  string          `json:"status"`
			Outcome json.RawMessage `json:"outcome"`
		} `json:"response"`
	} `json:"entry"`
}

// entryStatus parses "201 Created" (or "201") into 201; 0 when unreadable.
func entryStatus(s string) int {
	end := 0
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, err := strconv.Atoi(s[:end])
	if err != nil || n < 100 || n > 599 {
		return 0
	}
	return n
}

// validType and validID check FHIR syntax: a resource type is letters, an id is
// [A-Za-z0-9-.]{1,64}. Anything else could not be addressed by PUT /{type}/{id}.
func validType(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
