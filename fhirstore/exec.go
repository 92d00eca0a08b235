package fhirstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// The interactions, once routed: prepare compiles what a call reads and
// activates the index keys it needs (outside the writer, which activation
// takes); execRead and execWrite run it, alone or as a Bundle entry.

// callState is what prepare compiled for a call.
type callState struct {
	criteria *querySpec // conditional create, update, patch, delete
	hist     *historySpec
	every    *everythingSpec
}

// readsAllowed refuses (403) a search or conditional interaction that
// reads, through _include, _revinclude, a chain or _has, a type the key
// may not search: what the key may not search it may not see that way.
func readsAllowed(c *call, q *querySpec, includes []string) *fhirError {
	if c.grants == nil || q == nil {
		return nil
	}
	for _, t := range append(slices.Clone(q.reads), includes...) {
		if !c.grants.allows(t, permSearch) {
			what := t
			if t == "*" {
				what = "every type (system/*)"
			}
			return &fhirError{status: http.StatusForbidden, code: "forbidden",
				text: "User is not authorized to perform this action: the key has no scope for " + what + " search, which this request reads (_include, _revinclude, a chained parameter or _has)."}
		}
	}
	return nil
}

// prepare compiles what c reads and activates the index keys it needs.
func (s *Server) prepare(ctx context.Context, st *store, c *call, cs *callState) error {
	var needs []int64
	switch c.op {
	case opRead, opVRead:
		for _, p := range c.query {
			switch p.k {
			case "_summary", "_elements":
				v, e := parseView(c.typ, p)
				if e != nil {
					return e
				}
				c.view = v
			case "_format":
				if e := checkFormat(p.v); e != nil {
					return e
				}
			case "_pretty":
				if p.v != "true" && p.v != "false" {
					return badRequest("_pretty takes true or false.")
				}
			default:
				return badRequest("A read takes _summary, _elements, _format and _pretty; not '%s'.", safeName(p.k))
			}
		}
	case opSearch, opSearchSystem:
		if c.search == nil {
			srch, e := s.compileCallSearch(c)
			if e != nil {
				return e
			}
			c.search = srch
		}
		if e := readsAllowed(c, &c.search.querySpec, c.search.includedTypes()); e != nil {
			return e
		}
		needs = c.search.needs
	case opHistory, opHistoryType, opHistorySystem:
		h, e := parseHistory(c)
		if e != nil {
			return e
		}
		cs.hist = h
	case opEverything:
		ev, e := parseEverything(c)
		if e != nil {
			return e
		}
		cs.every, needs = ev, ev.needs
	case opCreate, opUpdate, opPatch, opDelete:
		criteria := c.ifNoneExist
		if c.conditional {
			criteria = withoutResultParams(c.query)
		}
		if criteria != nil {
			q := &querySpec{types: []*typeParams{searchCatalog().types[c.typ]}, now: s.now()}
			for _, p := range criteria {
				if p.k[0] == '_' && p.k != "_id" && p.k != "_lastUpdated" && p.k != "_tag" && p.k != "_profile" &&
					p.k != "_security" && p.k != "_source" && !hasPrefix(p.k, "_has:") {
					return badRequest("The criteria of a conditional interaction take search parameters only, not '%s'.", safeName(p.k))
				}
				if e := q.addFilter(p.k, p.v, 0); e != nil {
					return e
				}
			}
			if e := readsAllowed(c, q, nil); e != nil {
				return e
			}
			cs.criteria, needs = q, q.needs
		}
	}
	for _, p := range c.query {
		if p.k == "_pretty" && p.v == "true" {
			c.pretty = true
		}
	}
	return st.activate(ctx, needs)
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// compileCallSearch compiles a type, compartment or system search.
func (s *Server) compileCallSearch(c *call) (*search, *fhirError) {
	types := []string{c.typ}
	system := c.op == opSearchSystem
	if system {
		types = resourceTypes[:]
		if c.compartment.typ != "" {
			types = compartmentTypes(c.compartment.typ)
		}
	}
	opt := searchOptions{now: s.now(), lenient: c.prefer.lenient, system: system && c.compartment.typ == ""}
	opt.compartment = c.compartment
	srch, e := compileSearch(types, c.query, opt)
	if e != nil {
		return nil, e
	}
	srch.path = c.typ
	if c.compartment.typ != "" {
		srch.path = c.compartment.typ + "/" + c.compartment.id + "/" + c.typ
		if system {
			srch.path = c.compartment.typ + "/" + c.compartment.id + "/*"
		}
	}
	return srch, nil
}

// execOne runs a single (non-Bundle) interaction.
func (s *Server) execOne(ctx context.Context, st *store, c *call, base string) (*result, error) {
	var cs callState
	if err := s.prepare(ctx, st, c, &cs); err != nil {
		return nil, err
	}
	if !c.writes() {
		return s.execRead(ctx, st.r, c, &cs, base)
	}
	var res *result
	err := st.write(ctx, func(t *wtx) error {
		var err error
		res, err = s.execWrite(t, c, &cs, s.now())
		return err
	})
	return res, err
}

// execRead runs a prepared read, vread, history, search or $everything
// through q.
func (s *Server) execRead(ctx context.Context, q querier, c *call, cs *callState, base string) (*result, error) {
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
		if c.ifNoneMatch != "" && (c.ifNoneMatch == "*" || c.ifNoneMatch == strconv.FormatInt(v.version, 10)) ||
			!c.ifModifiedSince.IsZero() && !v.updated.Truncate(time.Second).After(c.ifModifiedSince) {
			return &result{status: http.StatusNotModified, v: v}, nil
		}
		return &result{status: http.StatusOK, v: v, body: c.view.apply(c.typ, v.body)}, nil
	case opSearch, opSearchSystem:
		if c.search == nil {
			return nil, errors.New("search not prepared")
		}
		out, err := c.search.run(ctx, q, base)
		if err != nil {
			return nil, err
		}
		return &result{status: http.StatusOK, body: out}, nil
	case opHistory, opHistoryType, opHistorySystem:
		out, err := cs.hist.run(ctx, q, base, s.now())
		if err != nil {
			return nil, err
		}
		return &result{status: http.StatusOK, body: out}, nil
	case opEverything:
		out, err := cs.every.run(ctx, q, base, s.now())
		if err != nil {
			return nil, err
		}
		return &result{status: http.StatusOK, body: out}, nil
	}
	return nil, errf(http.StatusMethodNotAllowed, "not-supported", "Interaction not supported.")
}

// match returns the ids of the resources the criteria select (at most
// two: whether there is none, one or several), seeing the writes of the
// transaction.
func (t *wtx) match(q *querySpec) ([]string, error) {
	if err := t.flush(); err != nil {
		return nil, err
	}
	w := q.where()
	rows, err := t.tx.QueryContext(t.ctx, "SELECT r.id FROM resources r WHERE "+w.sql+" LIMIT 2", w.args...)
	if err != nil {
		return nil, fmt.Errorf("conditional match: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("conditional match: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func multipleMatches(c *call) *fhirError {
	return errf(http.StatusPreconditionFailed, "multiple-matches", "The criteria of the conditional %s match more than one %s.", opName(c.op), c.typ)
}

func opName(op int) string {
	switch op {
	case opCreate:
		return "create"
	case opUpdate:
		return "update"
	case opPatch:
		return "patch"
	case opDelete:
		return "delete"
	}
	return "interaction"
}

// execWrite runs a prepared create, update, patch or delete inside t. A
// conditional one first resolves its target (cs.criteria) in t.
func (s *Server) execWrite(t *wtx, c *call, cs *callState, now time.Time) (*result, error) {
	now = now.Truncate(time.Millisecond)
	id := c.id
	if cs.criteria != nil {
		ids, err := t.match(cs.criteria)
		if err != nil {
			return nil, err
		}
		if len(ids) > 1 {
			return nil, multipleMatches(c)
		}
		switch {
		case c.op == opCreate && len(ids) == 1:
			// If-None-Exist found it: nothing is created, the match is the answer.
			v, err := read(t.ctx, t.tx, c.typ, ids[0])
			if err != nil {
				return nil, err
			}
			return &result{status: http.StatusOK, v: v, body: v.body, location: c.typ + "/" + v.id + "/_history/" + strconv.FormatInt(v.version, 10)}, nil
		case c.op == opCreate:
		case len(ids) == 1:
			id = ids[0]
		case c.op == opDelete:
			return &result{status: http.StatusNoContent}, nil
		case c.op == opPatch:
			return nil, errf(http.StatusNotFound, "not-found", "The criteria of the conditional patch match no %s.", c.typ)
		}
	}
	switch c.op {
	case opDelete:
		v, found, err := t.remove(c.typ, id, c.ifMatch, now)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, errf(http.StatusNotFound, "not-found", "Resource not found: %s/%s.", c.typ, id)
		}
		return &result{status: http.StatusNoContent, v: v}, nil
	case opPatch:
		return s.patch(t, c, id, now)
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
	opt := putOptions{ifMatch: c.ifMatch, dupCheck: true, method: methodPUT}
	switch {
	case c.op == opCreate:
		opt.method = methodPOST
		if id == "" { // a transaction may have assigned it to resolve urn:uuid references
			id = newID()
		}
	case c.conditional && id == "":
		// No match: the update creates, with the body's id or a new one.
		if id = p.id; id == "" {
			id = newID()
		}
	case c.conditional && p.id != "" && p.id != id:
		return nil, badRequest("The resource id %s is not the id %s of the resource the criteria match.", p.id, id)
	case !c.conditional && p.id != id:
		if p.id == "" {
			return nil, badRequest("The resource has no id; on update it must equal the id in the URL.")
		}
		return nil, badRequest("The resource id %s does not match the id %s in the URL.", p.id, id)
	}
	v, created, err := t.put(p, id, opt, now, nil)
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

// patch applies c's JSON Patch to the current version of typ/id.
func (s *Server) patch(t *wtx, c *call, id string, now time.Time) (*result, error) {
	cur, err := read(t.ctx, t.tx, c.typ, id)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, errf(http.StatusNotFound, "not-found", "Resource not found: %s/%s.", c.typ, id)
	}
	if cur.deleted {
		return nil, &fhirError{status: http.StatusGone, code: "deleted", text: "Resource deleted: " + c.typ + "/" + id + ".", etag: cur.etag()}
	}
	ver := strconv.FormatInt(cur.version, 10)
	if c.ifMatch != "" && c.ifMatch != ver {
		return nil, errf(http.StatusPreconditionFailed, "conflict", "Version conflict: %s/%s is not at the version in If-Match.", c.typ, id)
	}
	body, e := applyPatch(cur.body, c.body)
	if e != nil {
		return nil, e
	}
	p, e := parseResource(body, false)
	if e != nil {
		e2 := *e
		e2.status, e2.text = http.StatusUnprocessableEntity, "The patched resource is not valid: "+e.text
		return nil, &e2
	}
	if p.typ != c.typ || p.id != id {
		return nil, errf(http.StatusUnprocessableEntity, "processing", "A patch must not change the resource's type or id.")
	}
	if s.opts.Profile == ProfileSeed {
		if e := checkSeed(p); e != nil {
			e2 := *e
			e2.status = http.StatusUnprocessableEntity
			return nil, &e2
		}
	}
	v, _, err := t.put(p, id, putOptions{ifMatch: ver, dupCheck: true, method: methodPATCH}, now, nil)
	if err != nil {
		return nil, err
	}
	return &result{status: http.StatusOK, v: v, body: v.body,
		location: c.typ + "/" + id + "/_history/" + strconv.FormatInt(v.version, 10)}, nil
}
