package benchkit

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Noop is a FHIR endpoint that stores nothing: it answers a batch Bundle POST
// with a batch-response of "201 Created" per entry, PUT /{type}/{id} with 201,
// and GET metadata with a CapabilityStatement. It accepts any Authorization
// header (a SigV4 signature is neither required nor verified), so it measures
// the client, not the server. Use it as an http.Handler; the zero value is
// ready.
type Noop struct {
	// Latency, when set, is added to every answer (a server's think time).
	Latency time.Duration

	requests, entries, signed, bytes atomic.Int64
	bufs                             sync.Pool
}

// NoopStats counts what a Noop received.
type NoopStats struct {
	Requests int64 // HTTP requests
	Entries  int64 // resources: batch entries plus PUTs
	Signed   int64 // requests carrying an AWS4-HMAC-SHA256 Authorization header
	Bytes    int64 // request body bytes
}

// Stats returns the counts so far.
func (n *Noop) Stats() NoopStats {
	return NoopStats{Requests: n.requests.Load(), Entries: n.entries.Load(), Signed: n.signed.Load(), Bytes: n.bytes.Load()}
}

const capability = `{"resourceType":"CapabilityStatement","status":"active","date":"2024-01-01","kind":"instance",` +
	`"software":{"name":"fhirload noopfhir"},"fhirVersion":"4.0.1","format":["json"],` +
	`"rest":[{"mode":"server","resource":[{"type":"Patient","interaction":[{"code":"update"},{"code":"create"}]},` +
	`{"type":"Observation","interaction":[{"code":"update"},{"code":"create"}]}],"interaction":[{"code":"batch"}]}]}`

const outcomeNotFound = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"noopfhir answers POST (batch), PUT {type}/{id} and GET metadata only"}]}`

// ServeHTTP implements http.Handler.
func (n *Noop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n.requests.Add(1)
	if strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		n.signed.Add(1)
	}
	if n.Latency > 0 {
		t := time.NewTimer(n.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	bp, _ := n.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer n.bufs.Put(bp)
	body, err := readAll((*bp)[:0], r.Body)
	*bp = body
	n.bytes.Add(int64(len(body)))
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/fhir+json")
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	last := segs[len(segs)-1]
	switch {
	case r.Method == http.MethodGet && last == "metadata":
		_, _ = io.WriteString(w, capability)
	case r.Method == http.MethodPost && !isResourceType(last):
		count, ok := batchEntries(body)
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"structure","diagnostics":"not a batch Bundle"}]}`)
			return
		}
		n.entries.Add(int64(count))
		out := append(body[:0], `{"resourceType":"Bundle","type":"batch-response","entry":[`...)
		for i := 0; i < count; i++ {
			if i > 0 {
				out = append(out, ',')
			}
			out = append(out, `{"response":{"status":"201 Created","etag":"W/\"1\""}}`...)
		}
		out = append(out, "]}"...)
		*bp = out
		h.Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
	case r.Method == http.MethodPut && len(segs) >= 2 && isResourceType(segs[len(segs)-2]):
		n.entries.Add(1)
		h.Set("Location", segs[len(segs)-2]+"/"+last+"/_history/1")
		h.Set("ETag", `W/"1"`)
		w.WriteHeader(http.StatusCreated)
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, outcomeNotFound)
	}
}

func readAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		m, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func isResourceType(s string) bool {
	if s == "" || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// batchEntries counts the entries of a Bundle without parsing it: one pass
// that tracks strings and nesting, counting the objects directly inside the
// top-level "entry" array. Strings are skipped with bytes.IndexByte, so most
// of the body is passed over at memchr speed. ok is false when the body is
// not a JSON object or its brackets do not balance.
func batchEntries(b []byte) (count int, ok bool) {
	depth := 0
	lastKey := []byte(nil)
	inEntry := false
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			end := stringEnd(b, i+1)
			if end < 0 {
				return 0, false
			}
			if depth == 1 {
				lastKey = b[i+1 : end]
			}
			i = end
		case '{', '[':
			if depth == 0 && b[i] != '{' {
				return 0, false
			}
			if depth == 1 && b[i] == '[' {
				inEntry = string(lastKey) == "entry"
			}
			if depth == 2 && b[i] == '{' && inEntry {
				count++
			}
			depth++
		case '}', ']':
			depth--
			if depth < 0 {
				return 0, false
			}
			if depth == 1 {
				inEntry = false
			}
		}
	}
	return count, depth == 0 && len(b) > 0
}

// stringEnd returns the index of the quote that closes the string starting at
// from, or -1.
func stringEnd(b []byte, from int) int {
	for {
		j := bytes.IndexByte(b[from:], '"')
		if j < 0 {
			return -1
		}
		end := from + j
		bs := 0
		for k := end - 1; k >= from && b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return end
		}
		from = end + 1
	}
}
