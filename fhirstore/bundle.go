package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

type bundleRequest struct {
	Method, URL, IfMatch string
}

type bundleEntry struct {
	FullURL  string
	Resource []byte // compact JSON, a slice of the request body
	Request  *bundleRequest
}

type bundleIn struct {
	ResourceType, Type string
	Entry              []bundleEntry
}

// decodeBundle decodes the parts of a Bundle the server uses. body is
// checked to be JSON once; the entries' resources stay slices of it
// (compacted), decoded later one by one.
func decodeBundle(body []byte) (*bundleIn, bool) {
	if !json.Valid(body) {
		return nil, false
	}
	b := compactValid(body)
	in := &bundleIn{}
	entry := func(el []byte) bool {
		var e bundleEntry
		ok := jobj(el, func(k string, v []byte) bool {
			ok := true
			switch k {
			case "fullUrl":
				e.FullURL, ok = jstr(v)
			case "resource":
				e.Resource = nil
				if !isNull(v) {
					e.Resource = v
				}
			case "request":
				e.Request = nil
				if !isNull(v) {
					e.Request = &bundleRequest{}
					ok = jfields(v, []string{"method", "url", "ifMatch"}, []*string{&e.Request.Method, &e.Request.URL, &e.Request.IfMatch})
				}
			}
			return ok
		})
		in.Entry = append(in.Entry, e)
		return ok
	}
	ok := len(b) > 0 && b[0] == '{' && jobj(b, func(k string, v []byte) bool {
		ok := true
		switch k {
		case "resourceType":
			in.ResourceType, ok = jstr(v)
		case "type":
			in.Type, ok = jstr(v)
		case "entry":
			in.Entry = in.Entry[:0]
			ok = jarr(v, entry)
		}
		return ok
	})
	return in, ok
}

// entryState is one Bundle entry on its way through processing.
type entryState struct {
	c   *call
	err *fhirError
	res *result
}

// bundle processes a batch or transaction Bundle and returns the response
// Bundle. A batch runs its entries independently: each gets its own status,
// and a failed entry (including a missing scope, 403) gets an OperationOutcome
// in response.outcome. A transaction is all-or-nothing: the first failing
// entry fails the whole request with that entry's status. Either way, all
// writes of one Bundle share one SQLite transaction.
func (s *Server) bundle(ctx context.Context, st *store, body []byte, g grants, base string, representation bool) ([]byte, error) {
	in, ok := decodeBundle(body)
	if !ok {
		return nil, badRequest("Malformed JSON: the request body is not a valid Bundle.")
	}
	if in.ResourceType != "Bundle" {
		return nil, badRequest("Only a Bundle of type batch or transaction can be posted to the base URL.")
	}
	tx := in.Type == "transaction"
	if !tx && in.Type != "batch" {
		return nil, badRequest("Bundle.type must be batch or transaction.")
	}
	if len(in.Entry) > MaxBundleEntries {
		return nil, badRequest("A Bundle may have at most %d entries; this one has %d.", MaxBundleEntries, len(in.Entry))
	}
	entries := make([]entryState, len(in.Entry))
	for i := range in.Entry {
		entries[i].c, entries[i].err = entryCall(&in.Entry[i])
	}
	if tx {
		resolveUUIDs(in.Entry, entries)
	}
	for i := range entries {
		e := &entries[i]
		if e.err == nil && !g.allows(e.c.typ, e.c.perm()) {
			e.err = forbidden(e.c)
		}
		// Parse and compile outside the write lock, so requests parse in
		// parallel and searches activate the index keys they need.
		if e.err == nil && (e.c.op == opCreate || e.c.op == opUpdate) {
			e.c.parsed, e.err = parseResource(e.c.body, true)
		}
		if e.err == nil && e.c.op == opSearch {
			if err := s.prepareRead(ctx, st, e.c); err != nil {
				var fe *fhirError
				if !errors.As(err, &fe) {
					return nil, err
				}
				e.err = fe
			}
		}
		if e.err == nil && !tx {
			e.err = s.chaos()
		}
		if e.err != nil && tx {
			return nil, entryFailed(i, e.err)
		}
	}
	err := st.write(ctx, func(t *wtx) error {
		for _, i := range order(entries, tx) {
			e := &entries[i]
			if e.err != nil {
				continue
			}
			var err error
			if e.c.writes() {
				e.res, err = s.execWrite(t, e.c, s.now(), nil)
			} else if err = t.flush(); err == nil {
				e.res, err = s.execRead(ctx, t.tx, e.c, base)
			}
			var fe *fhirError
			if errors.As(err, &fe) {
				if tx {
					return entryFailed(i, fe)
				}
				e.err = fe
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return renderResponse(entries, tx, representation), nil
}

func entryFailed(i int, e *fhirError) *fhirError {
	out := *e
	out.text = "Transaction failed at entry " + strconv.Itoa(i) + ": " + e.text
	return &out
}

// order is the processing order: a batch in sequence, a transaction as FHIR
// prescribes (DELETE, POST, PUT, then reads).
func order(entries []entryState, tx bool) []int {
	idx := make([]int, 0, len(entries))
	if !tx {
		for i := range entries {
			idx = append(idx, i)
		}
		return idx
	}
	for _, op := range []int{opDelete, opCreate, opUpdate} {
		for i, e := range entries {
			if e.c != nil && e.c.op == op {
				idx = append(idx, i)
			}
		}
	}
	for i, e := range entries {
		if e.c != nil && !e.c.writes() {
			idx = append(idx, i)
		}
	}
	return idx
}

// entryCall routes one Bundle entry.
func entryCall(be *bundleEntry) (*call, *fhirError) {
	if be.Request == nil || be.Request.Method == "" || be.Request.URL == "" {
		return nil, badRequest("Bundle entry has no request.method and request.url.")
	}
	method := strings.ToUpper(be.Request.Method)
	switch method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		return nil, errf(http.StatusMethodNotAllowed, "not-supported", "Bundle entry method %s is not supported.", safeName(method))
	}
	path, q := relativeTarget(be.Request.URL)
	c, e := parseTarget(method, path, q)
	if e != nil {
		return nil, e
	}
	if c.op == opSearch && method == http.MethodPost {
		return nil, errf(http.StatusMethodNotAllowed, "not-supported", "Use GET for searches inside a Bundle.")
	}
	if (c.op == opCreate || c.op == opUpdate) && len(be.Resource) == 0 {
		return nil, badRequest("Bundle entry for %s has no resource.", method)
	}
	c.body = be.Resource
	c.ifMatch = parseETag(be.Request.IfMatch)
	return c, nil
}

// resolveUUIDs gives created resources their ids up front and rewrites
// references to urn:uuid fullUrls into Type/id, as a transaction requires.
func resolveUUIDs(in []bundleEntry, entries []entryState) {
	ids := map[string]string{}
	for i, be := range in {
		c := entries[i].c
		if c == nil || !strings.HasPrefix(be.FullURL, "urn:uuid:") {
			continue
		}
		switch c.op {
		case opCreate:
			c.id = newID()
			ids[be.FullURL] = c.typ + "/" + c.id
		case opUpdate:
			ids[be.FullURL] = c.typ + "/" + c.id
		}
	}
	if len(ids) == 0 {
		return
	}
	for i := range entries {
		if c := entries[i].c; c != nil && len(c.body) > 0 {
			c.body = rewriteUUIDs(c.body, ids)
		}
	}
}

// rewriteUUIDs replaces every JSON string equal to a key of ids.
func rewriteUUIDs(b []byte, ids map[string]string) []byte {
	const marker = `"urn:uuid:`
	if !bytes.Contains(b, []byte(marker)) {
		return b
	}
	var out []byte
	rest := b
	for {
		i := bytes.Index(rest, []byte(marker))
		if i < 0 {
			break
		}
		end := bytes.IndexByte(rest[i+1:], '"')
		if end < 0 {
			break
		}
		key := string(rest[i+1 : i+1+end])
		if to, ok := ids[key]; ok {
			out = append(out, rest[:i+1]...)
			out = append(out, to...)
			out = append(out, '"')
		} else {
			out = append(out, rest[:i+2+end]...)
		}
		rest = rest[i+2+end:]
	}
	return append(out, rest...)
}

func renderResponse(entries []entryState, tx, representation bool) []byte {
	var out bytes.Buffer
	typ := "batch-response"
	if tx {
		typ = "transaction-response"
	}
	out.WriteString(`{"resourceType":"Bundle","id":"` + newID() + `","type":"` + typ + `","entry":[`)
	for i, e := range entries {
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteByte('{')
		if e.err != nil {
			out.WriteString(`"response":{"status":"` + statusLine(e.err.status) + `","outcome":`)
			out.Write(e.err.outcome())
			out.WriteString("}}")
			continue
		}
		r := e.res
		if r.body != nil && (!e.c.writes() || representation) {
			out.WriteString(`"resource":`)
			out.Write(r.body)
			out.WriteByte(',')
		}
		out.WriteString(`"response":{"status":"` + statusLine(r.status) + `"`)
		if r.location != "" {
			out.WriteString(`,"location":`)
			writeJSONString(&out, r.location)
		}
		if r.v != nil && !r.v.deleted {
			out.WriteString(`,"etag":`)
			writeJSONString(&out, r.v.etag())
			out.WriteString(`,"lastModified":"` + lastUpdated(r.v.updated) + `"`)
		}
		out.WriteString("}}")
	}
	out.WriteString("]}")
	return out.Bytes()
}
