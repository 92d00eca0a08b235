package fhirstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Page sizes of searchset Bundles, as HealthLake pages.
const (
	defaultCount = 100
	maxCount     = 100
)

// kv is one search parameter as sent, in order.
type kv struct{ k, v string }

// parseQuery splits a query string into pairs, keeping their order.
func parseQuery(raw string) ([]kv, *fhirError) {
	var out []kv
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		dk, err1 := url.QueryUnescape(k)
		dv, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return nil, badRequest("Malformed query string.")
		}
		out = append(out, kv{dk, dv})
	}
	return out, nil
}

type paramKind int

const (
	kindToken paramKind = iota
	kindString
	kindDate
	kindRef
	kindID
	kindLastUpdated
)

// searchParam describes a supported search parameter of a resource type.
type searchParam struct {
	kind    paramKind
	index   string // idx.param
	refType string // kindRef: required target type ("" = any)
}

// searchParams lists the search parameters of typ.
func searchParams(typ string) map[string]searchParam {
	m := map[string]searchParam{
		"_id":          {kind: kindID},
		"_lastUpdated": {kind: kindLastUpdated},
		"identifier":   {kind: kindToken, index: "identifier"},
	}
	switch typ {
	case "Patient":
		m["name"] = searchParam{kind: kindString, index: "name"}
		m["family"] = searchParam{kind: kindString, index: "family"}
		m["given"] = searchParam{kind: kindString, index: "given"}
		m["gender"] = searchParam{kind: kindToken, index: "gender"}
		m["birthdate"] = searchParam{kind: kindDate, index: "birthdate"}
	case "Observation":
		m["patient"] = searchParam{kind: kindRef, index: "subject", refType: "Patient"}
		m["subject"] = searchParam{kind: kindRef, index: "subject"}
		m["category"] = searchParam{kind: kindToken, index: "category"}
		m["code"] = searchParam{kind: kindToken, index: "code"}
		m["date"] = searchParam{kind: kindDate, index: "date"}
	}
	return m
}

// search is a compiled search.
type search struct {
	typ          string
	where        []string
	args         []any
	subs         []string // index subqueries yielding rids, intersected
	subArgs      []any
	count        int
	summaryCount bool
	cursor       int64
	params       []kv // the filter and result parameters, for links
}

// compileSearch turns the parameters of a type search into SQL. Every value
// reaches SQL as a bound parameter; only fixed fragments are concatenated.
func compileSearch(typ string, pairs []kv) (*search, *fhirError) {
	s := &search{typ: typ, count: defaultCount, where: []string{"r.type = ?", "r.deleted = 0"}, args: []any{typ}}
	defs := searchParams(typ)
	for _, p := range pairs {
		name, mod, _ := strings.Cut(p.k, ":")
		switch name {
		case "_count":
			n, err := strconv.Atoi(p.v)
			if err != nil || n < 0 {
				return nil, badRequest("_count must be a non-negative integer.")
			}
			if n == 0 {
				s.summaryCount = true
			}
			s.count = min(max(n, 1), maxCount)
			s.params = append(s.params, p)
			continue
		case "_summary":
			switch p.v {
			case "count":
				s.summaryCount = true
			case "false":
			default:
				return nil, badRequest("_summary supports only 'count' and 'false'.")
			}
			s.params = append(s.params, p)
			continue
		case "_total":
			s.params = append(s.params, p)
			continue
		case "_format":
			if !strings.Contains(p.v, "json") {
				return nil, errf(http.StatusUnsupportedMediaType, "not-supported", "Only JSON is supported.")
			}
			s.params = append(s.params, p)
			continue
		case "_cursor":
			c, err := strconv.ParseInt(p.v, 10, 64)
			if err != nil || c < 0 {
				return nil, badRequest("Invalid _cursor: use the next link as returned.")
			}
			s.cursor = c
			continue
		}
		def, ok := defs[name]
		if !ok {
			return nil, badRequest("Invalid search parameter '%s' for resource type %s. Supported: %s.", safeName(name), typ, supported(defs))
		}
		if e := s.add(def, name, mod, p.v); e != nil {
			return nil, e
		}
		s.params = append(s.params, p)
	}
	return s, nil
}

func supported(defs map[string]searchParam) string {
	names := make([]string, 0, len(defs)+3)
	for n := range defs {
		names = append(names, n)
	}
	names = append(names, "_count", "_summary", "_total")
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// splitValues splits a parameter value on commas not escaped by a backslash.
func splitValues(v string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\\' && i+1 < len(v) && (v[i+1] == ',' || v[i+1] == '\\' || v[i+1] == '|' || v[i+1] == '$'):
			// Keep an escaped '|' escaped so token splitting can see it.
			if v[i+1] == '|' {
				cur.WriteByte('\\')
			}
			cur.WriteByte(v[i+1])
			i++
		case v[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(v[i])
		}
	}
	return append(out, cur.String())
}

// add adds one parameter occurrence (values ORed) as an AND-ed condition.
func (s *search) add(def searchParam, name, mod, value string) *fhirError {
	values := splitValues(value)
	var ors []string
	var args []any
	switch def.kind {
	case kindID:
		if mod != "" {
			return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), name)
		}
		ph := strings.TrimSuffix(strings.Repeat("?,", len(values)), ",")
		s.where = append(s.where, "r.id IN ("+ph+")")
		for _, v := range values {
			s.args = append(s.args, v)
		}
		return nil
	case kindLastUpdated:
		if mod != "" {
			return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), name)
		}
		var e *fhirError
		if ors, args, e = dateConditions("r.updated", "(r.updated + 1)", name, values); e != nil {
			return e
		}
		s.where = append(s.where, "("+strings.Join(ors, " OR ")+")")
		s.args = append(s.args, args...)
		return nil
	case kindToken:
		if mod != "" {
			return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), name)
		}
		for _, v := range values {
			system, code, hasSystem := cutUnescaped(v)
			switch {
			case !hasSystem:
				ors = append(ors, "a = ?")
				args = append(args, code)
			case code == "":
				ors = append(ors, "b = ?")
				args = append(args, system)
			default:
				ors = append(ors, "(a = ? AND b = ?)")
				args = append(args, code, system)
			}
		}
	case kindString:
		for _, v := range values {
			switch mod {
			case "":
				n := normalizeString(v)
				ors = append(ors, "(a >= ? AND a < ?)")
				args = append(args, n, n+"\U0010FFFF")
			case "exact":
				ors = append(ors, "b = ?")
				args = append(args, v)
			case "contains":
				ors = append(ors, `a LIKE ? ESCAPE '\'`)
				args = append(args, "%"+likeEscape(normalizeString(v))+"%")
			default:
				return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), name)
			}
		}
	case kindRef:
		if mod != "" && !knownType(mod) {
			return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), name)
		}
		for _, v := range values {
			typ, id := splitReference(v)
			if typ == "" {
				typ = mod
			}
			if typ == "" {
				typ = def.refType
			}
			if def.refType != "" && typ != def.refType || mod != "" && typ != mod {
				return badRequest("Parameter %s refers to %s resources only.", name, def.refType+mod)
			}
			if typ == "" {
				ors = append(ors, "a = ?")
				args = append(args, id)
			} else {
				ors = append(ors, "(a = ? AND b = ?)")
				args = append(args, id, typ)
			}
		}
	case kindDate:
		if mod != "" {
			return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), name)
		}
		var e *fhirError
		if ors, args, e = dateConditions("a", "b", name, values); e != nil {
			return e
		}
	}
	s.subs = append(s.subs, "SELECT rid FROM idx WHERE k = ? AND ("+strings.Join(ors, " OR ")+")")
	s.subArgs = append(s.subArgs, indexKey(s.typ, def.index))
	s.subArgs = append(s.subArgs, args...)
	return nil
}

// cutUnescaped splits a token value at its first '|' not escaped by '\'.
func cutUnescaped(v string) (system, code string, found bool) {
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
			continue
		}
		if v[i] == '|' {
			return unescapeBar(v[:i]), unescapeBar(v[i+1:]), true
		}
	}
	return "", unescapeBar(v), false
}

func unescapeBar(s string) string { return strings.ReplaceAll(s, `\|`, "|") }

func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// dateCondition is the SQL for one date value with its FHIR prefix, over a
// stored range [lo, hi) against the value's range [plo, phi).
// dateConditions is dateCondition for each of a parameter's comma-separated
// values (ORed by the caller).
func dateConditions(lo, hi, name string, values []string) ([]string, []any, *fhirError) {
	var ors []string
	var args []any
	for _, v := range values {
		cond, a, e := dateCondition(lo, hi, name, v)
		if e != nil {
			return nil, nil, e
		}
		ors = append(ors, cond)
		args = append(args, a...)
	}
	return ors, args, nil
}

func dateCondition(lo, hi, name, v string) (string, []any, *fhirError) {
	prefix := "eq"
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	plo, phi, ok := parseDateRange(v)
	if !ok {
		return "", nil, badRequest("Invalid date in parameter %s: use YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, with an optional prefix eq ne gt lt ge le sa eb ap.", name)
	}
	switch prefix {
	case "eq":
		return "(" + lo + " >= ? AND " + hi + " <= ?)", []any{plo, phi}, nil
	case "ne":
		return "NOT (" + lo + " >= ? AND " + hi + " <= ?)", []any{plo, phi}, nil
	case "gt":
		return hi + " > ?", []any{phi}, nil
	case "lt":
		return lo + " < ?", []any{plo}, nil
	case "ge":
		return hi + " > ?", []any{plo}, nil
	case "le":
		return lo + " < ?", []any{phi}, nil
	case "sa":
		return lo + " >= ?", []any{phi}, nil
	case "eb":
		return hi + " <= ?", []any{plo}, nil
	case "ap":
		return "(" + lo + " < ? AND " + hi + " > ?)", []any{phi, plo}, nil
	}
	return "", nil, badRequest("Unknown date prefix in parameter %s: use eq ne gt lt ge le sa eb ap.", name)
}

// run executes the search and writes the searchset Bundle into out.
func (s *search) run(ctx context.Context, q querier, base string, out *bytes.Buffer, now string) error {
	countSQL, countArgs, where, qargs := s.sql()
	var total int64
	if err := q.QueryRowContext(ctx, countSQL, countArgs...).Scan(&total); err != nil {
		return fmt.Errorf("count search: %w", err)
	}
	out.WriteString(`{"resourceType":"Bundle","id":"`)
	out.WriteString(newID())
	out.WriteString(`","meta":{"lastUpdated":"`)
	out.WriteString(now)
	out.WriteString(`"},"type":"searchset","total":`)
	out.WriteString(strconv.FormatInt(total, 10))
	out.WriteString(`,"link":[{"relation":"self","url":`)
	self := s.link(base, s.cursor)
	writeJSONString(out, self)
	out.WriteString("}")
	if s.summaryCount {
		out.WriteString("]}")
		return nil
	}
	args := append(slices.Clip(qargs), s.cursor, s.count+1)
	rows, err := q.QueryContext(ctx, "SELECT r.rid, r.id, r.body FROM resources r WHERE "+where+" AND r.rid > ? ORDER BY r.rid LIMIT ?", args...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	var entries bytes.Buffer
	n := 0
	var last int64
	more := false
	for rows.Next() {
		if n == s.count {
			more = true
			break
		}
		var rid int64
		var id string
		var body sql.RawBytes
		if err := rows.Scan(&rid, &id, &body); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		if n > 0 {
			entries.WriteByte(',')
		}
		entries.WriteString(`{"fullUrl":`)
		writeJSONString(&entries, base+s.typ+"/"+id)
		entries.WriteString(`,"resource":`)
		entries.Write(body)
		entries.WriteString(`,"search":{"mode":"match"}}`)
		last = rid
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("search: %w", err)
	}
	if more {
		out.WriteString(`,{"relation":"next","url":`)
		writeJSONString(out, s.link(base, last))
		out.WriteString("}")
	}
	out.WriteString("]")
	if n > 0 {
		out.WriteString(`,"entry":[`)
		out.Write(entries.Bytes())
		out.WriteString("]")
	}
	out.WriteString("}")
	return nil
}

// sql returns the count query and the WHERE clause of the page query, with
// their arguments. The index subqueries are intersected into one set of rids
// that drives the query. Index rows exist only for live, current versions of
// their type, so with no other condition the count needs no resource rows at
// all; otherwise the type condition is kept from using the (type, id) index
// ("+r.type"), which would have SQLite walk every resource of the type.
func (s *search) sql() (count string, countArgs []any, where string, args []any) {
	if len(s.subs) == 0 {
		where = strings.Join(s.where, " AND ")
		return "SELECT count(*) FROM resources r WHERE " + where, s.args, where, s.args
	}
	rids := "r.rid IN (" + strings.Join(s.subs, " INTERSECT ") + ")"
	if len(s.where) == 2 { // only the type and not-deleted conditions
		return "SELECT count(DISTINCT rid) FROM (" + strings.Join(s.subs, " INTERSECT ") + ")", s.subArgs, rids, s.subArgs
	}
	w := slices.Clone(s.where)
	w[0] = "+r.type = ?"
	where = strings.Join(append(w, rids), " AND ")
	args = append(slices.Clone(s.args), s.subArgs...)
	return "SELECT count(*) FROM resources r WHERE " + where, args, where, args
}

// link is the URL of the page after cursor.
func (s *search) link(base string, cursor int64) string {
	var b strings.Builder
	b.WriteString(base)
	b.WriteString(s.typ)
	sep := byte('?')
	for _, p := range s.params {
		b.WriteByte(sep)
		sep = '&'
		b.WriteString(url.QueryEscape(p.k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(p.v))
	}
	if cursor > 0 {
		b.WriteByte(sep)
		b.WriteString("_cursor=")
		b.WriteString(strconv.FormatInt(cursor, 10))
	}
	return b.String()
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
}
