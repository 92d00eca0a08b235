package fhirstore

import (
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	contentTypeFHIR      = "application/fhir+json"
	contentTypeJSONPatch = "application/json-patch+json"
)

// Interactions.
const (
	opRead = iota + 1
	opVRead
	opHistory       // Type/id/_history
	opHistoryType   // Type/_history
	opHistorySystem // _history
	opSearch        // Type?…, Type/_search, Patient/id/Type?… (compartment)
	opSearchSystem  // ?_type=…
	opEverything    // Patient/$everything, Patient/id/$everything
	opCreate
	opUpdate
	opPatch
	opDelete
	opBundle
	opMetadata
)

// call is one interaction: a routed request or a Bundle entry.
type call struct {
	op      int
	typ, id string
	vid     int64
	// query is the request's parameters: a search's, a read's or a
	// history's result parameters, or the criteria of a conditional update,
	// patch or delete (conditional is then set).
	query       []kv
	conditional bool
	body        []byte
	parsed      *parsed // body, when already parsed
	// compartment is the Patient/id (or another compartment) a search or
	// $everything is limited to; compartment.typ is "" when there is none.
	compartment struct{ typ, id string }

	ifMatch         string    // If-Match (version), for update, patch and delete
	ifNoneExist     []kv      // If-None-Exist: conditional create
	ifNoneMatch     string    // If-None-Match: conditional read (version or "*")
	ifModifiedSince time.Time // If-Modified-Since: conditional read
	prefer          prefer

	search *search // opSearch, opSearchSystem, compiled by prepare
	// grants are the key's scopes (nil: not checked), for the types a
	// call reads beyond its own (_include, chains; see readsAllowed).
	grants grants
	view   resultView
	pretty bool
}

// perm is the scope permission the call needs.
func (c *call) perm() int {
	switch c.op {
	case opRead, opVRead, opHistory, opHistoryType, opHistorySystem, opEverything:
		return permRead
	case opSearch, opSearchSystem:
		return permSearch
	case opCreate:
		return permCreate
	case opUpdate, opPatch:
		return permUpdate
	case opDelete:
		return permDelete
	}
	return 0
}

// scopeType is the resource type whose scope the call needs: "*" for
// interactions across types (system history, system search without
// _type, $everything).
func (c *call) scopeType() string {
	switch c.op {
	case opHistorySystem, opEverything:
		return "*"
	case opSearchSystem:
		return "*"
	}
	return c.typ
}

func (c *call) writes() bool {
	return c.op == opCreate || c.op == opUpdate || c.op == opDelete || c.op == opPatch
}

// result is what an interaction produced.
type result struct {
	status   int
	v        *version // the version written or read
	body     []byte   // response body: a resource or a Bundle
	location string   // relative: Type/id/_history/n
}

// prefer is the Prefer header (or a Bundle's): return and handling.
type prefer struct {
	ret     string // "", "minimal", "representation", "OperationOutcome"
	lenient bool   // handling=lenient
	applied []string
}

// parsePrefer parses a Prefer header. Known preferences with unknown
// values are refused (400); respond-async is refused (no asynchronous
// interactions); other preferences, which RFC 7240 lets a server ignore,
// are not applied, and Preference-Applied says which were.
func parsePrefer(h []string) (prefer, *fhirError) {
	var p prefer
	for _, line := range h {
		for tok := range strings.FieldsFuncSeq(line, func(r rune) bool { return r == ',' || r == ';' }) {
			k, v, _ := strings.Cut(strings.TrimSpace(tok), "=")
			k, v = strings.ToLower(strings.TrimSpace(k)), strings.Trim(strings.TrimSpace(v), `"`)
			switch k {
			case "return":
				switch v {
				case "minimal", "representation", "OperationOutcome":
					p.ret = v
				default:
					return p, badRequest("Prefer: return takes minimal, representation or OperationOutcome.")
				}
				p.applied = append(p.applied, "return="+v)
			case "handling":
				switch v {
				case "strict":
					p.lenient = false
				case "lenient":
					p.lenient = true
				default:
					return p, badRequest("Prefer: handling takes strict or lenient.")
				}
				p.applied = append(p.applied, "handling="+v)
			case "respond-async":
				return p, errf(http.StatusBadRequest, "not-supported", "Prefer: respond-async is not supported: every interaction is answered synchronously.")
			}
		}
	}
	return p, nil
}

// checkAccept refuses (406) an Accept header that admits no JSON.
func checkAccept(h []string) *fhirError {
	if len(h) == 0 {
		return nil
	}
	for _, line := range h {
		for mr := range strings.SplitSeq(line, ",") {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(mr))
			if err != nil {
				continue
			}
			if q, ok := params["q"]; ok && (q == "0" || q == "0.0" || q == "0.00" || q == "0.000") {
				continue
			}
			switch mt {
			case "*/*", "application/*", contentTypeFHIR, "application/json", "application/json+fhir", "application/fhir+ndjson":
				return nil
			}
		}
	}
	return errf(http.StatusNotAcceptable, "not-supported", "Not acceptable: this server answers in JSON only (application/fhir+json), not %s.", safeFormat(strings.Join(h, ", ")))
}

func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == contentTypeFHIR || mt == "application/json" || mt == "application/json+fhir")
}

// parseETag turns W/"3" (or "3", or 3) into "3".
func parseETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	return strings.Trim(s, `"`)
}

func methodNotAllowed(allow ...string) *fhirError {
	e := errf(http.StatusMethodNotAllowed, "not-supported", "Method not allowed here; allowed: %s.", strings.Join(allow, ", "))
	e.allow = allow
	return e
}

// route maps a request below a FHIR base (rest) to a call, checking
// method, content type, Accept and the conditional and Prefer headers.
func (s *Server) route(r *http.Request, rest string, body []byte) (*call, *fhirError) {
	if e := checkAccept(r.Header.Values("Accept")); e != nil {
		return nil, e
	}
	pref, e := parsePrefer(r.Header.Values("Prefer"))
	if e != nil {
		return nil, e
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	c, e := parseTarget(method, strings.TrimSuffix(rest, "/"), r.URL.RawQuery)
	if e != nil {
		return c, e
	}
	c.body, c.prefer = body, pref
	for _, p := range c.query {
		if p.k == "_format" {
			if e := checkFormat(p.v); e != nil {
				return c, e
			}
		}
	}
	h := r.Header
	switch c.op {
	case opBundle, opCreate, opUpdate:
		if !isJSONType(h.Get("Content-Type")) {
			return c, errf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type must be application/fhir+json or application/json.")
		}
	case opPatch:
		mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
		switch mt {
		case contentTypeJSONPatch:
		case contentTypeFHIR, "application/json":
			return c, errf(http.StatusUnsupportedMediaType, "not-supported", "FHIRPath Patch (a Parameters resource) is not supported: send a JSON Patch as application/json-patch+json.")
		default:
			return c, errf(http.StatusUnsupportedMediaType, "not-supported", "PATCH takes a JSON Patch document, Content-Type application/json-patch+json.")
		}
	case opSearch, opSearchSystem:
		if r.Method == http.MethodPost {
			mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
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
	if e := c.conditions(h.Get("If-Match"), h.Get("If-None-Exist"), h.Get("If-None-Match"), h.Get("If-Modified-Since")); e != nil {
		return c, e
	}
	return c, nil
}

// conditions applies the conditional headers (or a Bundle entry's request
// fields) to c, refusing one the interaction does not take.
func (c *call) conditions(ifMatch, ifNoneExist, ifNoneMatch, ifModifiedSince string) *fhirError {
	if ifMatch != "" {
		switch c.op {
		case opUpdate, opPatch, opDelete:
			c.ifMatch = parseETag(ifMatch)
			if _, err := strconv.ParseInt(c.ifMatch, 10, 64); err != nil {
				return badRequest("If-Match must be a version ETag, W/\"n\".")
			}
		default:
			return badRequest("If-Match applies to update, patch and delete only.")
		}
	}
	if ifNoneExist != "" {
		if c.op != opCreate {
			return badRequest("If-None-Exist applies to create (POST) only.")
		}
		if i := strings.IndexByte(ifNoneExist, '?'); i >= 0 {
			ifNoneExist = ifNoneExist[i+1:]
		}
		q, e := parseQuery(ifNoneExist)
		if e != nil {
			return e
		}
		if len(q) == 0 {
			return badRequest("If-None-Exist has no search parameters.")
		}
		c.ifNoneExist = q
	}
	if ifNoneMatch != "" || ifModifiedSince != "" {
		if c.op != opRead && c.op != opVRead {
			return badRequest("If-None-Match and If-Modified-Since apply to read only.")
		}
	}
	if ifNoneMatch != "" {
		c.ifNoneMatch = parseETag(ifNoneMatch)
	}
	if ifModifiedSince != "" {
		t, err := http.ParseTime(ifModifiedSince)
		if err != nil {
			if t, err = time.Parse(time.RFC3339, ifModifiedSince); err != nil {
				return badRequest("If-Modified-Since must be an HTTP date (or an instant).")
			}
		}
		c.ifModifiedSince = t
	}
	return nil
}

// parseTarget routes a path relative to the base and a method to a call:
// "" (system: Bundle, search, history), "metadata", "_history", "Patient",
// "Patient/_search", "Patient/_history", "Patient/$everything",
// "Patient/1", "Patient/1/_history", "Patient/1/_history/2",
// "Patient/1/$everything", "Patient/1/Observation" (compartment). It
// serves HTTP requests and Bundle entries.
func parseTarget(method, rest, rawQuery string) (*call, *fhirError) {
	query, e := parseQuery(rawQuery)
	if e != nil {
		return nil, e
	}
	c := &call{query: query}
	allow := func(ms ...string) *fhirError {
		for _, m := range ms {
			if m == method {
				return nil
			}
		}
		return methodNotAllowed(ms...)
	}
	parts := strings.Split(rest, "/")
	if rest == "" {
		switch method {
		case http.MethodPost:
			c.op = opBundle
			if len(query) > 0 && !onlyFormat(query) {
				return c, badRequest("A Bundle posted to the base takes no parameters but _format.")
			}
			return c, nil
		case http.MethodGet:
			c.op = opSearchSystem
			return c, nil
		}
		return c, allow(http.MethodGet, http.MethodPost)
	}
	switch parts[0] {
	case "metadata":
		if len(parts) > 1 {
			return c, errf(http.StatusNotFound, "not-found", "Not found.")
		}
		c.op = opMetadata
		return c, allow(http.MethodGet)
	case "_history":
		if len(parts) > 1 {
			return c, errf(http.StatusNotFound, "not-found", "Not found.")
		}
		c.op = opHistorySystem
		return c, allow(http.MethodGet)
	case "_search":
		if len(parts) > 1 {
			return c, errf(http.StatusNotFound, "not-found", "Not found.")
		}
		c.op = opSearchSystem
		return c, allow(http.MethodGet, http.MethodPost)
	}
	typ := parts[0]
	if !knownType(typ) {
		return nil, errf(http.StatusBadRequest, "not-supported", "Unknown resource type '%s'.", safeName(typ))
	}
	c.typ = typ
	if len(parts) == 1 {
		switch method {
		case http.MethodGet:
			c.op = opSearch
		case http.MethodPost:
			c.op = opCreate
			if len(query) > 0 && !onlyFormat(query) {
				return c, badRequest("A create (POST %s) takes no search parameters: use If-None-Exist for a conditional create.", typ)
			}
		case http.MethodPut:
			c.op, c.conditional = opUpdate, true
		case http.MethodPatch:
			c.op, c.conditional = opPatch, true
		case http.MethodDelete:
			c.op, c.conditional = opDelete, true
		default:
			return c, allow(http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete)
		}
		if c.conditional && len(withoutResultParams(query)) == 0 {
			return c, badRequest("A conditional %s needs search parameters (%s %s?identifier=…).", method, method, typ)
		}
		return c, nil
	}
	switch parts[1] {
	case "_search":
		if len(parts) > 2 {
			return c, errf(http.StatusNotFound, "not-found", "Not found.")
		}
		c.op = opSearch
		return c, allow(http.MethodGet, http.MethodPost)
	case "_history":
		if len(parts) > 2 {
			return c, errf(http.StatusNotFound, "not-found", "Not found.")
		}
		c.op = opHistoryType
		return c, allow(http.MethodGet)
	case "$everything":
		if len(parts) > 2 {
			return c, errf(http.StatusNotFound, "not-found", "Not found.")
		}
		if typ != "Patient" {
			return c, errf(http.StatusNotFound, "not-supported", "$everything is defined on Patient only.")
		}
		c.op = opEverything
		return c, allow(http.MethodGet)
	}
	if strings.HasPrefix(parts[1], "$") {
		return c, errf(http.StatusNotFound, "not-supported", "Operation %s is not supported.", safeName(parts[1]))
	}
	if !validID(parts[1]) {
		return c, badRequest("Invalid resource id: 1-64 characters of A-Z a-z 0-9 - and '.'.")
	}
	c.id = parts[1]
	switch {
	case len(parts) == 2:
		switch method {
		case http.MethodGet:
			c.op = opRead
		case http.MethodPut:
			c.op = opUpdate
		case http.MethodPatch:
			c.op = opPatch
		case http.MethodDelete:
			c.op = opDelete
		default:
			return c, allow(http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete)
		}
		if (c.op == opUpdate || c.op == opPatch || c.op == opDelete) && len(query) > 0 && !onlyFormat(query) {
			return c, badRequest("%s %s/%s takes no parameters but _format.", method, typ, c.id)
		}
		return c, nil
	case len(parts) == 3 && parts[2] == "_history":
		c.op = opHistory
		return c, allow(http.MethodGet)
	case len(parts) == 4 && parts[2] == "_history":
		c.op = opVRead
		v, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil || v < 1 {
			return c, errf(http.StatusNotFound, "not-found", "Version not found: %s/%s/_history/%s.", typ, c.id, safeName(parts[3]))
		}
		c.vid = v
		return c, allow(http.MethodGet)
	case len(parts) == 3 && parts[2] == "$everything":
		if typ != "Patient" {
			return c, errf(http.StatusNotFound, "not-supported", "$everything is defined on Patient only.")
		}
		c.op = opEverything
		return c, allow(http.MethodGet)
	case len(parts) == 3 || len(parts) == 4 && parts[3] == "_search":
		// A compartment search: Patient/1/Observation.
		if searchCatalog().compartment(typ) == nil {
			return c, errf(http.StatusNotFound, "not-supported", "%s is not a compartment (Patient, Encounter, RelatedPerson, Practitioner and Device are).", typ)
		}
		c.compartment.typ, c.compartment.id = typ, c.id
		c.id = ""
		if parts[2] != "*" && !knownType(parts[2]) {
			return c, errf(http.StatusBadRequest, "not-supported", "Unknown resource type '%s'.", safeName(parts[2]))
		}
		c.typ, c.op = parts[2], opSearch
		if parts[2] == "*" {
			c.typ, c.op = "", opSearchSystem
		}
		return c, allow(http.MethodGet, http.MethodPost)
	}
	return c, errf(http.StatusNotFound, "not-found", "Not found.")
}

// onlyFormat reports whether query holds only _format and _pretty.
func onlyFormat(query []kv) bool {
	for _, p := range query {
		if p.k != "_format" && p.k != "_pretty" {
			return false
		}
	}
	return true
}

// withoutResultParams drops _format and _pretty.
func withoutResultParams(query []kv) []kv {
	var out []kv
	for _, p := range query {
		if p.k != "_format" && p.k != "_pretty" {
			out = append(out, p)
		}
	}
	return out
}

func routeName(c *call) string {
	switch c.op {
	case opMetadata:
		return "metadata"
	case opBundle:
		return "bundle"
	case opSearch:
		if c.compartment.typ != "" {
			return c.compartment.typ + "/" + c.compartment.id + "/" + c.typ + "?"
		}
		return c.typ + "?"
	case opSearchSystem:
		return "?"
	case opCreate:
		return c.typ
	case opVRead:
		return c.typ + "/" + c.id + "/_history/" + strconv.FormatInt(c.vid, 10)
	case opHistory:
		return c.typ + "/" + c.id + "/_history"
	case opHistoryType:
		return c.typ + "/_history"
	case opHistorySystem:
		return "_history"
	case opEverything:
		return c.typ + "/" + c.id + "/$everything"
	}
	if c.conditional {
		return c.typ + "?"
	}
	return c.typ + "/" + c.id
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
