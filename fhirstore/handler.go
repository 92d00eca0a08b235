package fhirstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

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
	if s.cors(w, r) {
		route = "options"
		return
	}
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
	if c != nil && c.op != 0 {
		route = routeName(c)
	}
	if e != nil {
		writeError(w, e)
		return route
	}
	if c.op != opMetadata && c.op != opBundle && !g.allows(c.scopeType(), c.perm()) {
		writeError(w, forbidden(c))
		return route
	}
	if c.writes() || c.op == opBundle {
		if s.bucket != nil {
			if ok, wait := s.bucket.take(writeUnits(len(body))); !ok {
				writeError(w, &fhirError{status: http.StatusTooManyRequests, code: "throttled", text: "Rate exceeded: write units per second limit reached.", retryAfter: wait})
				return route
			}
		}
	}
	if e := s.chaos(); e != nil {
		writeError(w, e)
		return route
	}
	c.grants = g
	s.serveCall(w, r, st, c, g, baseURL(r, basePath(dsID)))
	return route
}

// serveCall runs an admitted, routed and authorised data-plane call and
// writes its response; base is the data store's FHIR base URL.
func (s *Server) serveCall(w http.ResponseWriter, r *http.Request, st *store, c *call, g grants, base string) {
	h := w.Header()
	if len(c.prefer.applied) > 0 {
		h.Set("Preference-Applied", strings.Join(c.prefer.applied, ", "))
	}
	switch c.op {
	case opMetadata:
		for _, p := range c.query {
			switch {
			case p.k == "_format":
				if e := checkFormat(p.v); e != nil {
					writeError(w, e)
					return
				}
			case p.k == "_pretty" || p.k == "mode" && (p.v == "full" || p.v == "normative"):
			default:
				writeError(w, badRequest("metadata takes _format, _pretty and mode=full; not '%s'.", safeName(p.k)))
				return
			}
		}
		writeBody(w, http.StatusOK, s.metadata(base), c.pretty || hasPretty(c.query))
		return
	case opBundle:
		out, err := s.bundle(r.Context(), st, c.body, g, base, c.prefer)
		if err != nil {
			s.writeFailure(w, r, err)
			return
		}
		writeBody(w, http.StatusOK, out, hasPretty(c.query))
		return
	}
	res, err := s.execOne(r.Context(), st, c, base)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	if res.v != nil && !res.v.deleted {
		h.Set("ETag", res.v.etag())
		h.Set("Last-Modified", res.v.updated.UTC().Format(http.TimeFormat))
	}
	if res.location != "" {
		h.Set("Location", base+res.location)
	}
	status, body := res.status, res.body
	if c.writes() {
		switch c.prefer.ret {
		case "minimal":
			body = nil
		case "OperationOutcome":
			body = writeOutcome(c, res)
			if status == http.StatusNoContent {
				status = http.StatusOK
			}
		}
	}
	if body == nil || status == http.StatusNotModified {
		w.WriteHeader(status)
		return
	}
	writeBody(w, status, body, c.pretty)
}

// writeBody writes a JSON body, indented when pretty.
func writeBody(w http.ResponseWriter, status int, body []byte, pretty bool) {
	if pretty {
		var b bytes.Buffer
		if json.Indent(&b, body, "", "  ") == nil {
			body = b.Bytes()
		}
	}
	w.Header().Set("Content-Type", contentTypeFHIR)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func hasPretty(q []kv) bool {
	for _, p := range q {
		if p.k == "_pretty" && p.v == "true" {
			return true
		}
	}
	return false
}

// writeOutcome is the OperationOutcome a write answers with under
// Prefer: return=OperationOutcome.
func writeOutcome(c *call, res *result) []byte {
	var text string
	switch {
	case res.v == nil:
		text = "Nothing to do: the criteria match no " + c.typ + "."
	case res.status == http.StatusCreated:
		text = "Created " + res.v.typ + "/" + res.v.id + " (version " + strconv.FormatInt(res.v.version, 10) + ")."
	case res.v.deleted:
		text = "Deleted " + res.v.typ + "/" + res.v.id + "."
	case c.op == opCreate:
		text = "Not created: " + res.v.typ + "/" + res.v.id + " matches If-None-Exist."
	default:
		text = "Updated " + res.v.typ + "/" + res.v.id + " (version " + strconv.FormatInt(res.v.version, 10) + ")."
	}
	return outcome("information", "informational", text)
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
	typ := c.scopeType()
	if typ == "*" {
		typ = "every type (system/*)"
	}
	return &fhirError{status: http.StatusForbidden, code: "forbidden",
		text: "User is not authorized to perform this action: the key has no scope for " + typ + " " + permName(c.perm()) + "."}
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

// baseURL is the absolute FHIR base URL the client used.
func baseURL(r *http.Request, basePath string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + basePath
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
