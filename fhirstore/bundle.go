package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

type bundleRequest struct {
	Method, URL, IfMatch, IfNoneExist, IfNoneMatch, IfModifiedSince string
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
					ok = jfields(v, []string{"method", "url", "ifMatch", "ifNoneExist", "ifNoneMatch", "ifModifiedSince"},
						[]*string{&e.Request.Method, &e.Request.URL, &e.Request.IfMatch, &e.Request.IfNoneExist, &e.Request.IfNoneMatch, &e.Request.IfModifiedSince})
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
	cs  callState
	err *fhirError
	res *result
}

// bundle processes a batch or transaction Bundle and returns the response
// Bundle. A batch runs its entries independently: each gets its own status,
// and a failed entry (including a missing scope, 403) gets an OperationOutcome
// in response.outcome. A transaction is all-or-nothing: the first failing
// entry fails the whole request with that entry's status; a transaction
// that touches one resource in two entries is refused (400), as FHIR
// requires. All writes of one Bundle share one SQLite transaction; a
// Bundle of reads only runs on the read connections, beside the writes.
// pref.ret says what write entries carry: the resource (representation),
// an OperationOutcome, or nothing (minimal, the default).
func (s *Server) bundle(ctx context.Context, st *store, body []byte, g grants, base string, pref prefer) ([]byte, error) {
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
		if entries[i].c != nil {
			entries[i].c.prefer.lenient = pref.lenient
			entries[i].c.grants = g
		}
	}
	if tx {
		for i := range entries {
			if entries[i].err != nil {
				return nil, entryFailed(i, entries[i].err)
			}
		}
		if e := touchedTwice(entries); e != nil {
			return nil, e
		}
		resolveUUIDs(in.Entry, entries)
	}
	writes := false
	for i := range entries {
		e := &entries[i]
		if e.err == nil && !g.allows(e.c.scopeType(), e.c.perm()) {
			e.err = forbidden(e.c)
		}
		// Parse and compile outside the write lock, so requests parse in
		// parallel and reads activate the index keys they need.
		if e.err == nil && (e.c.op == opCreate || e.c.op == opUpdate) {
			e.c.parsed, e.err = parseResource(e.c.body, true)
		}
		if e.err == nil {
			if err := s.prepare(ctx, st, e.c, &e.cs); err != nil {
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
		if e.err == nil && e.c.writes() {
			writes = true
		}
	}
	run := func(q querier, i int) error {
		e := &entries[i]
		var err error
		if e.c.op == opBundle || e.c.op == opMetadata {
			err = errf(http.StatusBadRequest, "not-supported", "A Bundle entry cannot be a Bundle or metadata.")
		} else {
			e.res, err = s.execRead(ctx, q, e.c, &e.cs, base)
		}
		var fe *fhirError
		if errors.As(err, &fe) {
			if tx {
				return entryFailed(i, fe)
			}
			e.err = fe
			return nil
		}
		return err
	}
	if !writes {
		for _, i := range order(entries, tx) {
			if entries[i].err == nil {
				if err := run(st.r, i); err != nil {
					return nil, err
				}
			}
		}
		return renderResponse(entries, tx, pref), nil
	}
	err := st.write(ctx, func(t *wtx) error {
		for _, i := range order(entries, tx) {
			e := &entries[i]
			if e.err != nil {
				continue
			}
			if !e.c.writes() {
				if err := t.flush(); err != nil {
					return err
				}
				if err := run(t.tx, i); err != nil {
					return err
				}
				continue
			}
			var err error
			e.res, err = s.execWrite(t, e.c, &e.cs, s.now())
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
	return renderResponse(entries, tx, pref), nil
}

// touchedTwice refuses a transaction two of whose entries touch the same
// resource (by Type/id, or by the same conditional URL).
func touchedTwice(entries []entryState) *fhirError {
	seen := map[string]int{}
	for i, e := range entries {
		c := e.c
		var key string
		switch {
		case !c.writes():
		case c.op == opCreate:
			if len(c.ifNoneExist) > 0 {
				key = c.typ + "?" + encodeQuery(c.ifNoneExist)
			}
		case c.conditional:
			key = c.typ + "?" + encodeQuery(withoutResultParams(c.query))
		default:
			key = c.typ + "/" + c.id
		}
		if key == "" {
			continue
		}
		if j, ok := seen[key]; ok {
			return badRequest("Transaction entries %d and %d touch the same resource (%s): a transaction may touch a resource once.", j, i, safeTarget(key))
		}
		seen[key] = i
	}
	return nil
}

// safeTarget names a touched resource without criteria values (which may
// be identifiers): Type/id, or Type?param,param.
func safeTarget(key string) string {
	typ, q, ok := strings.Cut(key, "?")
	if !ok {
		return key
	}
	var names []string
	for p := range strings.SplitSeq(q, "&") {
		k, _, _ := strings.Cut(p, "=")
		names = append(names, safeName(k))
	}
	return typ + "?" + strings.Join(names, ",")
}

// encodeQuery is a canonical text of a parameter list.
func encodeQuery(q []kv) string {
	var b strings.Builder
	for i, p := range q {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(p.k) + "=" + url.QueryEscape(p.v))
	}
	return b.String()
}

func entryFailed(i int, e *fhirError) *fhirError {
	out := *e
	out.text = "Transaction failed at entry " + strconv.Itoa(i) + ": " + e.text
	return &out
}

// order is the processing order: a batch in sequence, a transaction as FHIR
// prescribes (DELETE, POST, PUT and PATCH, then reads).
func order(entries []entryState, tx bool) []int {
	idx := make([]int, 0, len(entries))
	if !tx {
		for i := range entries {
			idx = append(idx, i)
		}
		return idx
	}
	for _, op := range []int{opDelete, opCreate, opUpdate, opPatch} {
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
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return nil, errf(http.StatusMethodNotAllowed, "not-supported", "Bundle entry method %s is not supported.", safeName(method))
	}
	if method == http.MethodHead {
		method = http.MethodGet
	}
	path, q := relativeTarget(be.Request.URL)
	c, e := parseTarget(method, path, q)
	if e != nil {
		return c, e
	}
	if (c.op == opSearch || c.op == opSearchSystem) && method == http.MethodPost {
		return c, errf(http.StatusMethodNotAllowed, "not-supported", "Use GET for searches inside a Bundle.")
	}
	if c.op == opBundle || c.op == opMetadata {
		return c, badRequest("A Bundle entry cannot post a Bundle or read metadata.")
	}
	if (c.op == opCreate || c.op == opUpdate || c.op == opPatch) && len(be.Resource) == 0 {
		return c, badRequest("Bundle entry for %s has no resource.", method)
	}
	c.body = be.Resource
	if c.op == opPatch {
		if c.body, e = patchFromBinary(be.Resource); e != nil {
			return c, e
		}
	}
	r := be.Request
	if e := c.conditions(r.IfMatch, r.IfNoneExist, r.IfNoneMatch, r.IfModifiedSince); e != nil {
		return c, e
	}
	return c, nil
}

// patchFromBinary returns the JSON Patch document a PATCH entry carries as
// a Binary resource (contentType application/json-patch+json, data base64).
func patchFromBinary(res []byte) ([]byte, *fhirError) {
	var bin struct {
		ResourceType string `json:"resourceType"`
		ContentType  string `json:"contentType"`
		Data         []byte `json:"data"`
	}
	if err := json.Unmarshal(res, &bin); err != nil || bin.ResourceType != "Binary" {
		return nil, badRequest("A PATCH entry's resource must be a Binary holding a JSON Patch (contentType application/json-patch+json, data base64).")
	}
	if mt, _, _ := mime.ParseMediaType(bin.ContentType); mt != contentTypeJSONPatch {
		return nil, errf(http.StatusUnsupportedMediaType, "not-supported", "A PATCH entry's Binary must have contentType application/json-patch+json (FHIRPath Patch is not supported).")
	}
	return bin.Data, nil
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

func renderResponse(entries []entryState, tx bool, pref prefer) []byte {
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
		if r.body != nil && (!e.c.writes() || pref.ret == "representation") {
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
		if e.c.writes() && pref.ret == "OperationOutcome" {
			out.WriteString(`,"outcome":`)
			out.Write(writeOutcome(e.c, r))
		}
		out.WriteString("}}")
	}
	out.WriteString("]}")
	return out.Bytes()
}
