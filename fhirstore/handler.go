package fhirstore

import (
	"bytes"
	"context"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

const contentTypeFHIR = "application/fhir+json"

// Interactions.
const (
	opRead = iota + 1
	opVRead
	opHistory
	opSearch
	opCreate
	opUpdate
	opDelete
	opBundle
	opMetadata
)

// call is one interaction: a routed request or a Bundle entry.
type call struct {
	op      int
	typ, id string
	vid     int64
	query   []kv
	body    []byte
	parsed  *parsed // body, when already parsed
	ifMatch string
	minimal bool    // Prefer: return=minimal
	search  *search // opSearch, compiled by prepareRead
}

// perm is the scope permission the call needs.
func (c *call) perm() int {
	switch c.op {
	case opRead, opVRead, opHistory:
		return permRead
	case opSearch:
		return permSearch
	case opCreate:
		return permCreate
	case opUpdate:
		return permUpdate
	case opDelete:
		return permDelete
	}
	return 0
}

func (c *call) writes() bool { return c.op == opCreate || c.op == opUpdate || c.op == opDelete }

// result is what an interaction produced.
type result struct {
	status   int
	v        *version // the version written or read
	body     []byte   // response body: a resource or a Bundle
	location string   // relative: Type/id/_history/n
}

// statusWriter remembers the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (read
// deadlines, see intake).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	route := "-"
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", zap.String("method", r.Method), zap.String("route", route), zap.Any("panic", p))
			if w.status == 0 {
				writeError(w, &fhirError{status: http.StatusInternalServerError, code: "exception", text: "Internal server error."})
			}
		}
		s.log.Debug("request", zap.String("method", r.Method), zap.String("route", route),
			zap.Int("status", w.status), zap.Duration("duration", time.Since(start)))
	}()
	in, g, ok := s.admit(w, r)
	if !ok {
		return
	}
	defer in.release()
	if r.URL.Path == "/" && r.Header.Get("X-Amz-Target") != "" {
		route = "control"
		s.serveControl(w, r, in.b, g)
		return
	}
	route = s.serveData(w, r, in.b, g)
}

// admit runs the chaos latency and the admission of the request and its
// body (see intake.go); on refusal it has answered and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) (*body, grants, bool) {
	if d := s.latency(); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return nil, nil, false
		}
	}
	if r.ContentLength > s.opts.MaxBodyBytes {
		closeAfter(w)
		writeError(w, tooLarge(s.opts.MaxBodyBytes))
		return nil, nil, false
	}
	var chk *sigCheck
	if s.ver != nil {
		var e *fhirError
		if chk, e = s.ver.begin(r); e != nil {
			closeAfter(w)
			writeError(w, e)
			return nil, nil, false
		}
	}
	in, e := s.in.read(w, r, chk != nil)
	if e != nil {
		closeAfter(w)
		writeError(w, e)
		return nil, nil, false
	}
	g := grants{{typ: "*", perms: permAll}}
	if chk != nil {
		if g, e = chk.finish(in.sum); e != nil {
			in.release()
			writeError(w, e)
			return nil, nil, false
		}
	}
	return in, g, true
}

// serveData serves the FHIR data plane, /datastore/{id}/r4/…, and returns
// the route's name for the access log.
func (s *Server) serveData(w http.ResponseWriter, r *http.Request, body []byte, g grants) string {
	dsID, rest, e := s.splitBase(r.URL.Path)
	if e != nil {
		writeError(w, e)
		return "-"
	}
	st, done, ok := s.reg.acquire(dsID)
	if !ok {
		writeError(w, errf(http.StatusNotFound, "not-found", "Datastore not found."))
		return "-"
	}
	defer done()
	c, e := s.route(r, rest, body)
	route := "-"
	if c != nil {
		route = routeName(c)
	}
	if e != nil {
		writeError(w, e)
		return route
	}
	if c.op != opMetadata && c.op != opBundle && !g.allows(c.typ, c.perm()) {
		writeError(w, forbidden(c))
		return route
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && c.op != opSearch && s.bucket != nil {
		if ok, wait := s.bucket.take(writeUnits(len(body))); !ok {
			writeError(w, &fhirError{status: http.StatusTooManyRequests, code: "throttled", text: "Rate exceeded: write units per second limit reached.", retryAfter: wait})
			return route
		}
	}
	if e := s.chaos(); e != nil {
		writeError(w, e)
		return route
	}
	s.serveCall(w, r, st, c, body, g, baseURL(r, basePath(dsID)))
	return route
}

// serveCall runs an admitted, routed and authorised data-plane call and
// writes its response; base is the data store's FHIR base URL.
func (s *Server) serveCall(w http.ResponseWriter, r *http.Request, st *store, c *call, body []byte, g grants, base string) {
	switch c.op {
	case opMetadata:
		w.Header().Set("Content-Type", contentTypeFHIR)
		_, _ = w.Write(s.metadata(base))
		return
	case opBundle:
		out, e := s.bundle(r.Context(), st, body, g, base, preferRepresentation(r))
		if e != nil {
			s.writeFailure(w, r, e)
			return
		}
		w.Header().Set("Content-Type", contentTypeFHIR)
		_, _ = w.Write(out)
		return
	}
	res, err := s.execOne(r.Context(), st, c, base)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	h := w.Header()
	if res.v != nil && !res.v.deleted {
		h.Set("ETag", res.v.etag())
		h.Set("Last-Modified", res.v.updated.UTC().Format(http.TimeFormat))
	}
	if res.location != "" {
		h.Set("Location", base+res.location)
	}
	if res.body == nil || (c.writes() && c.minimal) {
		w.WriteHeader(res.status)
		return
	}
	h.Set("Content-Type", contentTypeFHIR)
	w.WriteHeader(res.status)
	_, _ = w.Write(res.body)
}

// writeFailure writes a *fhirError as is and anything else as a PHI-free 500.
func (s *Server) writeFailure(w http.ResponseWriter, r *http.Request, err error) {
	var fe *fhirError
	if errors.As(err, &fe) {
		writeError(w, fe)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	s.log.Error("request failed", zap.String("method", r.Method), zap.Error(err))
	writeError(w, &fhirError{status: http.StatusInternalServerError, code: "exception", text: "Internal server error."})
}

func forbidden(c *call) *fhirError {
	return &fhirError{status: http.StatusForbidden, code: "forbidden",
		text: "User is not authorized to perform this action: the key has no scope for " + c.typ + " " + permName(c.perm()) + "."}
}

func permName(p int) string {
	switch p {
	case permRead:
		return "read"
	case permSearch:
		return "search"
	case permCreate:
		return "create"
	case permUpdate:
		return "update"
	case permDelete:
		return "delete"
	}
	return "access"
}

func routeName(c *call) string {
	switch c.op {
	case opMetadata:
		return "metadata"
	case opBundle:
		return "bundle"
	case opSearch:
		return c.typ + "?"
	case opCreate:
		return c.typ
	case opVRead:
		return c.typ + "/" + c.id + "/_history/" + strconv.FormatInt(c.vid, 10)
	case opHistory:
		return c.typ + "/" + c.id + "/_history"
	}
	return c.typ + "/" + c.id
}

func preferRepresentation(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Prefer"), "return=representation")
}

// baseURL is the absolute FHIR base URL the client used.
func baseURL(r *http.Request, basePath string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + basePath
}

func methodNotAllowed(allow ...string) *fhirError {
	return errf(http.StatusMethodNotAllowed, "not-supported", "Method not allowed here; allowed: %s.", strings.Join(allow, ", "))
}

// basePath is the path of data store id's FHIR base URL.
func basePath(id string) string { return "/datastore/" + id + "/r4/" }

// splitBase splits a data-plane path into the data store id and the path
// below the FHIR base (/datastore/{id}/r4/{rest}).
func (s *Server) splitBase(path string) (id, rest string, e *fhirError) {
	rest, ok := strings.CutPrefix(path, "/datastore/")
	if !ok {
		return "", "", errf(http.StatusNotFound, "not-found", "Not found: the FHIR base URL is %s.", s.BasePath())
	}
	id, rest, _ = strings.Cut(rest, "/")
	ver, rest, _ := strings.Cut(rest, "/")
	if ver != "r4" {
		if s.reg.get(id) == nil {
			return "", "", errf(http.StatusNotFound, "not-found", "Datastore not found.")
		}
		return "", "", errf(http.StatusNotFound, "not-found", "Not found: only FHIR R4 is served, under %s.", basePath(id))
	}
	return id, rest, nil
}

// route maps a request below a FHIR base (rest) to a call, checking method
// and content type.
func (s *Server) route(r *http.Request, rest string, body []byte) (*call, *fhirError) {
	minimal := strings.Contains(r.Header.Get("Prefer"), "return=minimal")
	needsBody := func() *fhirError {
		if !isJSONType(r.Header.Get("Content-Type")) {
			return errf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type must be application/fhir+json or application/json.")
		}
		return nil
	}
	rest = strings.TrimSuffix(rest, "/")
	if rest == "" {
		if r.Method != http.MethodPost {
			return nil, methodNotAllowed("POST")
		}
		if e := needsBody(); e != nil {
			return nil, e
		}
		return &call{op: opBundle}, nil
	}
	if rest == "metadata" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return nil, methodNotAllowed("GET")
		}
		return &call{op: opMetadata}, nil
	}
	c, e := parseTarget(r.Method, rest, r.URL.RawQuery)
	if e != nil {
		return c, e
	}
	c.body, c.minimal = body, minimal
	switch c.op {
	case opCreate, opUpdate:
		if e := needsBody(); e != nil {
			return c, e
		}
		c.ifMatch = parseETag(r.Header.Get("If-Match"))
	case opSearch:
		if r.Method == http.MethodPost {
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if mt != "application/x-www-form-urlencoded" {
				return c, errf(http.StatusUnsupportedMediaType, "not-supported", "POST _search takes application/x-www-form-urlencoded.")
			}
			form, e := parseQuery(string(body))
			if e != nil {
				return c, e
			}
			c.query = append(c.query, form...)
		}
	}
	return c, nil
}

func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == contentTypeFHIR || mt == "application/json")
}

// parseETag turns W/"3" (or "3", or 3) into "3".
func parseETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

// parseTarget routes a path relative to the base ("Patient", "Patient/1",
// "Patient/1/_history/2", "Patient/_search") and a method to a call. It serves
// both HTTP requests and Bundle entries.
func parseTarget(method, rest, rawQuery string) (*call, *fhirError) {
	parts := strings.Split(rest, "/")
	typ := parts[0]
	if !knownType(typ) {
		return nil, errf(http.StatusBadRequest, "not-supported", "Unknown resource type '%s'.", safeName(typ))
	}
	c := &call{typ: typ}
	if len(parts) > 1 && parts[1] != "_search" && !validID(parts[1]) {
		return c, badRequest("Invalid resource id: 1-64 characters of A-Z a-z 0-9 - and '.'.")
	}
	switch {
	case len(parts) == 1:
		switch method {
		case http.MethodGet, http.MethodHead:
			c.op = opSearch
		case http.MethodPost:
			c.op = opCreate
		default:
			return c, methodNotAllowed("GET", "POST")
		}
	case len(parts) == 2 && parts[1] == "_search":
		if method != http.MethodPost && method != http.MethodGet {
			return c, methodNotAllowed("GET", "POST")
		}
		c.op = opSearch
	case len(parts) == 2:
		c.id = parts[1]
		switch method {
		case http.MethodGet, http.MethodHead:
			c.op = opRead
		case http.MethodPut:
			c.op = opUpdate
		case http.MethodDelete:
			c.op = opDelete
		default:
			return c, methodNotAllowed("GET", "PUT", "DELETE")
		}
	case len(parts) == 3 && parts[2] == "_history":
		c.id, c.op = parts[1], opHistory
		if method != http.MethodGet && method != http.MethodHead {
			return c, methodNotAllowed("GET")
		}
	case len(parts) == 4 && parts[2] == "_history":
		c.id, c.op = parts[1], opVRead
		if method != http.MethodGet && method != http.MethodHead {
			return c, methodNotAllowed("GET")
		}
		v, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil || v < 1 {
			return c, errf(http.StatusNotFound, "not-found", "Version not found: %s/%s/_history/%s.", typ, c.id, safeName(parts[3]))
		}
		c.vid = v
	default:
		return c, errf(http.StatusNotFound, "not-found", "Not found.")
	}
	if c.op == opSearch {
		q, e := parseQuery(rawQuery)
		if e != nil {
			return c, e
		}
		c.query = q
	}
	return c, nil
}

// execOne runs a single (non-Bundle) interaction.
func (s *Server) execOne(ctx context.Context, st *store, c *call, base string) (*result, error) {
	if !c.writes() {
		if err := s.prepareRead(ctx, st, c); err != nil {
			return nil, err
		}
		return s.execRead(ctx, st.r, c, base)
	}
	var res *result
	err := st.write(ctx, func(t *wtx) error {
		var err error
		res, err = s.execWrite(t, c, s.now(), nil)
		return err
	})
	return res, err
}

// prepareRead compiles a search call and activates the index keys it
// needs. It must not run inside a write transaction (activation takes
// the writer).
func (s *Server) prepareRead(ctx context.Context, st *store, c *call) error {
	if c.op != opSearch || c.search != nil {
		return nil
	}
	srch, e := compileSearch([]string{c.typ}, c.query, searchOptions{now: s.now()})
	if e != nil {
		return e
	}
	srch.path = c.typ
	if err := st.activate(ctx, srch.needs); err != nil {
		return err
	}
	c.search = srch
	return nil
}

// execRead runs a prepared read, vread, history or search through q.
func (s *Server) execRead(ctx context.Context, q querier, c *call, base string) (*result, error) {
	switch c.op {
	case opRead, opVRead:
		var v *version
		var err error
		if c.op == opRead {
			v, err = read(ctx, q, c.typ, c.id)
		} else {
			v, err = vread(ctx, q, c.typ, c.id, c.vid)
		}
		if err != nil {
			return nil, err
		}
		if v == nil {
			if c.op == opVRead {
				return nil, errf(http.StatusNotFound, "not-found", "Version not found: %s/%s/_history/%d.", c.typ, c.id, c.vid)
			}
			return nil, errf(http.StatusNotFound, "not-found", "Resource not found: %s/%s.", c.typ, c.id)
		}
		if v.deleted {
			return nil, &fhirError{status: http.StatusGone, code: "deleted", text: "Resource deleted: " + c.typ + "/" + c.id + ".", etag: v.etag()}
		}
		return &result{status: http.StatusOK, v: v, body: v.body}, nil
	case opSearch:
		if c.search == nil {
			return nil, errors.New("search not prepared")
		}
		out, err := c.search.run(ctx, q, base)
		if err != nil {
			return nil, err
		}
		return &result{status: http.StatusOK, body: out}, nil
	case opHistory:
		out, err := history(ctx, q, c.typ, c.id, base, lastUpdated(s.now()))
		if err != nil {
			return nil, err
		}
		return &result{status: http.StatusOK, body: out}, nil
	}
	return nil, errf(http.StatusMethodNotAllowed, "not-supported", "Interaction not supported.")
}

// execWrite runs a create, update or delete inside t.
func (s *Server) execWrite(t *wtx, c *call, now time.Time, buf []byte) (*result, error) {
	now = now.Truncate(time.Millisecond)
	if c.op == opDelete {
		v, found, err := t.remove(c.typ, c.id, now)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, errf(http.StatusNotFound, "not-found", "Resource not found: %s/%s.", c.typ, c.id)
		}
		return &result{status: http.StatusNoContent, v: v}, nil
	}
	p := c.parsed
	if p == nil {
		var e *fhirError
		if p, e = parseResource(c.body, false); e != nil {
			return nil, e
		}
	}
	if p.typ != c.typ {
		return nil, badRequest("The resourceType %s does not match the URL's resource type %s.", p.typ, c.typ)
	}
	if s.opts.Profile == ProfileSeed {
		if e := checkSeed(p); e != nil {
			return nil, e
		}
	}
	id := c.id
	opt := putOptions{ifMatch: c.ifMatch, dupCheck: true, method: methodPUT}
	if c.op == opCreate {
		opt.method = methodPOST
		if id == "" { // a transaction may have assigned it to resolve urn:uuid references
			id = newID()
		}
	} else if p.id != id {
		if p.id == "" {
			return nil, badRequest("The resource has no id; on update it must equal the id in the URL.")
		}
		return nil, badRequest("The resource id %s does not match the id %s in the URL.", p.id, id)
	}
	v, created, err := t.put(p, id, opt, now, buf)
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &result{status: status, v: v, body: v.body,
		location: c.typ + "/" + id + "/_history/" + strconv.FormatInt(v.version, 10)}, nil
}

// history renders the history Bundle of one resource, newest first.
func history(ctx context.Context, q querier, typ, id, base, now string) ([]byte, error) {
	cur, err := read(ctx, q, typ, id)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, errf(http.StatusNotFound, "not-found", "Resource not found: %s/%s.", typ, id)
	}
	var out bytes.Buffer
	out.WriteString(`{"resourceType":"Bundle","id":"` + newID() + `","meta":{"lastUpdated":"` + now + `"},"type":"history","total":` +
		strconv.FormatInt(cur.version, 10) + `,"entry":[`)
	full := base + typ + "/" + id
	for ver := cur.version; ver >= 1; ver-- {
		v, err := vread(ctx, q, typ, id, ver)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		if ver != cur.version {
			out.WriteByte(',')
		}
		out.WriteString(`{"fullUrl":`)
		writeJSONString(&out, full)
		method := "PUT"
		status := "200"
		if v.deleted {
			method, status = "DELETE", "204"
		} else {
			out.WriteString(`,"resource":`)
			out.Write(v.body)
			if ver == 1 {
				status = "201"
			}
		}
		out.WriteString(`,"request":{"method":"` + method + `","url":`)
		writeJSONString(&out, typ+"/"+id)
		out.WriteString(`},"response":{"status":"` + status + `","etag":"W/\"` + strconv.FormatInt(ver, 10) +
			`\"","lastModified":"` + lastUpdated(v.updated) + `"}}`)
	}
	out.WriteString("]}")
	return out.Bytes(), nil
}

// relativeTarget strips an absolute base from a Bundle entry's request.url.
func relativeTarget(u string) (path, rawQuery string) {
	if i := strings.Index(u, "/r4/"); i >= 0 && (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) {
		u = u[i+4:]
	}
	u = strings.TrimPrefix(u, "/")
	path, rawQuery, _ = strings.Cut(u, "?")
	if p, err := url.PathUnescape(path); err == nil {
		path = p
	}
	return path, rawQuery
}
