package fhirstore

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// History at instance (Type/id/_history), type (Type/_history) and system
// (_history) level: every version, newest first (by lastUpdated, then
// resource, then version), in history Bundles with total, paged by
// _offset (next and previous links), _count at most 100. _since keeps the
// versions written at or after an instant; _at keeps those that were
// current at some time within a date's range (2026, 2026-03-04, an
// instant). Each entry says how its version was written: request.method
// POST (request.url Type) for a create by POST, PUT, PATCH or DELETE
// (Type/id); versions written before the store recorded it say PUT (DELETE
// for deletions); response.status 201 for a version that created its
// resource (the first, or the first after a deletion), 200 for other
// updates, 204 for deletions.

// historySpec is a parsed history request.
type historySpec struct {
	typ, id string // "" for type or system level
	paging
	atLo int64 // _at range [atLo, atHi); atHi 0 when not given
	atHi int64
	view resultView
}

// parseHistory parses the parameters of a history request.
func parseHistory(c *call) (*historySpec, *fhirError) {
	h := &historySpec{typ: c.typ, id: c.id, paging: paging{count: defaultCount}}
	for _, p := range c.query {
		if known, e := h.paging.param(p); e != nil {
			return nil, e
		} else if known {
			continue
		}
		switch p.k {
		case "_at":
			lo, hi, ok := parseDateRange(p.v)
			if !ok {
				return nil, badRequest("_at must be a date, a dateTime or an instant.")
			}
			h.atLo, h.atHi = lo, hi
		case "_summary", "_elements":
			v, e := parseView(c.typ, p)
			if e != nil {
				return nil, e
			}
			h.view = v
		default:
			return nil, badRequest("History takes _count, _since, _at, _summary, _elements, _format and _pretty; not '%s'.", safeName(p.k))
		}
		h.params = append(h.params, p)
	}
	return h, nil
}

// paging is what history and $everything requests take alike: _count,
// _offset (the links carry their own), _since, _format and _pretty; params
// are those the links repeat.
type paging struct {
	count  int
	offset int
	since  int64 // Unix ms; 0 when not given
	params []kv
}

// link is the URL of the page at offset of the request at path (absolute):
// its parameters, then the offset.
func (pg *paging) link(path string, offset int) string {
	var b strings.Builder
	b.WriteString(path)
	sep := byte('?')
	for _, p := range pg.params {
		b.WriteByte(sep)
		sep = '&'
		b.WriteString(url.QueryEscape(p.k) + "=" + url.QueryEscape(p.v))
	}
	if offset > 0 {
		b.WriteByte(sep)
		b.WriteString("_offset=" + strconv.Itoa(offset))
	}
	return b.String()
}

// param parses p if it is one of paging's parameters (known), and keeps it
// for the links unless it is the offset; other parameters are the caller's,
// who keeps them in params.
func (pg *paging) param(p kv) (known bool, e *fhirError) {
	switch p.k {
	case "_count":
		n, err := strconv.Atoi(p.v)
		if err != nil || n < 1 {
			return true, badRequest("_count must be a positive integer.")
		}
		pg.count = min(n, maxCount)
	case "_offset", "_getpagesoffset":
		n, err := strconv.Atoi(p.v)
		if err != nil || n < 0 {
			return true, badRequest("%s must be a non-negative integer.", p.k)
		}
		pg.offset = n
		return true, nil
	case "_since":
		lo, _, ok := parseDateRange(p.v)
		if !ok {
			return true, badRequest("_since must be an instant (YYYY-MM-DDThh:mm:ss+zz:zz) or a date.")
		}
		pg.since = lo
	case "_format":
		if e := checkFormat(p.v); e != nil {
			return true, e
		}
	case "_pretty":
		if p.v != "true" && p.v != "false" {
			return true, badRequest("_pretty takes true or false.")
		}
	default:
		return false, nil
	}
	pg.params = append(pg.params, p)
	return true, nil
}

// parseView parses a _summary or _elements of a read or history.
func parseView(typ string, p kv) (resultView, *fhirError) {
	var v resultView
	switch p.k {
	case "_summary":
		switch p.v {
		case "true", "text", "data", "false":
			v.summary = p.v
		default:
			return v, badRequest("_summary takes true, text, data or false here.")
		}
	case "_elements":
		types := []string{typ}
		if typ == "" {
			types = resourceTypes[:]
		}
		els, e := parseElements(types, p.v)
		if e != nil {
			return v, e
		}
		v.elements = els
	}
	return v, nil
}

// historyVersion is one entry of a history page.
type historyVersion struct {
	rid       int64
	typ, id   string
	version   int64
	updated   int64
	deleted   bool
	method    int
	body      []byte
	recreated bool // the version before it was a deletion
}

// run renders the history Bundle.
func (h *historySpec) run(ctx context.Context, q querier, base string, now time.Time) ([]byte, error) {
	if h.id != "" {
		cur, err := read(ctx, q, h.typ, h.id)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			return nil, errf(http.StatusNotFound, "not-found", "Resource not found: %s/%s.", h.typ, h.id)
		}
	}
	// The versions: current ones (resources) and earlier ones (history),
	// with the resource row for type and id.
	var filter []string
	var args []any
	switch {
	case h.id != "":
		filter, args = append(filter, "r.type = ? AND r.id = ?"), append(args, h.typ, h.id)
	case h.typ != "":
		filter, args = append(filter, "r.type = ?"), append(args, h.typ)
	}
	where := "1"
	if len(filter) > 0 {
		where = strings.Join(filter, " AND ")
	}
	versions := `SELECT r.rid AS rid, r.version AS version, r.updated AS updated FROM resources r WHERE ` + where +
		` UNION ALL SELECT h.rid, h.version, h.updated FROM history h JOIN resources r ON r.rid = h.rid WHERE ` + where
	vargs := append(append([]any{}, args...), args...)
	cond := []string{}
	var cargs []any
	if h.since > 0 {
		cond, cargs = append(cond, "updated >= ?"), append(cargs, h.since)
	}
	if h.atHi != 0 {
		// Current at some time within [atLo, atHi): written before its end,
		// and not replaced before its start.
		versions = `SELECT rid, version, updated, lead(updated) OVER (PARTITION BY rid ORDER BY version) AS until FROM (` + versions + `)`
		cond, cargs = append(cond, "updated < ? AND (until IS NULL OR until > ?)"), append(cargs, h.atHi, h.atLo)
	}
	sel := "SELECT rid, version, updated FROM (" + versions + ")"
	if len(cond) > 0 {
		sel += " WHERE " + strings.Join(cond, " AND ")
	}
	allArgs := append(vargs, cargs...)
	var total int64
	if err := q.QueryRowContext(ctx, "SELECT count(*) FROM ("+sel+")", allArgs...).Scan(&total); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	page, err := h.page(ctx, q, sel+" ORDER BY updated DESC, rid DESC, version DESC LIMIT ? OFFSET ?", append(allArgs, h.count, h.offset))
	if err != nil {
		return nil, err
	}
	return h.render(base, now, total, page), nil
}

// page reads the versions the page query selects, with their bodies.
func (h *historySpec) page(ctx context.Context, q querier, query string, args []any) ([]historyVersion, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	var out []historyVersion
	for rows.Next() {
		var v historyVersion
		if err := rows.Scan(&v.rid, &v.version, &v.updated); err != nil {
			rows.Close()
			return nil, fmt.Errorf("history: %w", err)
		}
		out = append(out, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	for i := range out {
		v := &out[i]
		err := q.QueryRowContext(ctx, `SELECT r.type, r.id, v.deleted, v.method, v.body FROM resources r,
			(SELECT deleted, method, body FROM resources WHERE rid = ?1 AND version = ?2
			 UNION ALL SELECT deleted, method, body FROM history WHERE rid = ?1 AND version = ?2) v WHERE r.rid = ?1`, v.rid, v.version).
			Scan(&v.typ, &v.id, &v.deleted, &v.method, &v.body)
		if err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		if v.version > 1 && !v.deleted {
			var prevDeleted bool
			err := q.QueryRowContext(ctx, `SELECT deleted FROM history WHERE rid = ? AND version = ?`, v.rid, v.version-1).Scan(&prevDeleted)
			v.recreated = err == nil && prevDeleted
		}
	}
	return out, nil
}

// render writes the history Bundle of a page.
func (h *historySpec) render(base string, now time.Time, total int64, page []historyVersion) []byte {
	var out bytes.Buffer
	out.WriteString(`{"resourceType":"Bundle","id":"` + newID() + `","meta":{"lastUpdated":"` + lastUpdated(now) + `"},"type":"history","total":` +
		strconv.FormatInt(total, 10) + `,"link":[`)
	writeLink(&out, "self", h.link(base, h.offset))
	if int64(h.offset+len(page)) < total {
		out.WriteByte(',')
		writeLink(&out, "next", h.link(base, h.offset+h.count))
	}
	if h.offset > 0 {
		out.WriteByte(',')
		writeLink(&out, "previous", h.link(base, max(h.offset-h.count, 0)))
	}
	out.WriteString("]")
	if len(page) > 0 {
		out.WriteString(`,"entry":[`)
	}
	for i, v := range page {
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteString(`{"fullUrl":`)
		writeJSONString(&out, base+v.typ+"/"+v.id)
		method, url, status := "PUT", v.typ+"/"+v.id, "200 OK"
		switch {
		case v.deleted:
			method, status = "DELETE", "204 No Content"
		case v.method == methodPOST:
			method, url, status = "POST", v.typ, "201 Created"
		case v.method == methodPATCH:
			method = "PATCH"
		}
		if !v.deleted && v.method != methodPOST && (v.version == 1 || v.recreated) {
			status = "201 Created"
		}
		if !v.deleted {
			out.WriteString(`,"resource":`)
			out.Write(h.view.apply(v.typ, v.body))
		}
		out.WriteString(`,"request":{"method":"` + method + `","url":`)
		writeJSONString(&out, url)
		out.WriteString(`},"response":{"status":"` + status + `","etag":"W/\"` + strconv.FormatInt(v.version, 10) +
			`\"","lastModified":"` + lastUpdated(time.UnixMilli(v.updated)) + `"}}`)
	}
	if len(page) > 0 {
		out.WriteString("]")
	}
	out.WriteString("}")
	return out.Bytes()
}

// link is the URL of the history page at offset.
func (h *historySpec) link(base string, offset int) string {
	switch {
	case h.id != "":
		return h.paging.link(base+h.typ+"/"+h.id+"/_history", offset)
	case h.typ != "":
		return h.paging.link(base+h.typ+"/_history", offset)
	}
	return h.paging.link(base+"_history", offset)
}
