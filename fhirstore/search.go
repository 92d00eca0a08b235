package fhirstore

import (
	"math"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Page sizes of searchset Bundles, as HealthLake pages.
const (
	defaultCount = 100
	maxCount     = 100
	// maxChainDepth bounds chained parameters and _has nesting.
	maxChainDepth = 4
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

// sqlPart is a fragment of SQL with its arguments. Every value a client
// sends reaches SQL as a bound argument; only fixed fragments and integers
// the server computed are concatenated.
type sqlPart struct {
	sql  string
	args []any
}

// filterSet is the rids a filter selects: live resources of the query's
// types (never other ones), or, when neg is set, the complement of set
// among them.
type filterSet struct {
	sqlPart
	neg bool
}

// querySpec is the filtering part of a search: the types searched and the
// AND-ed filters. It is what conditional interactions (If-None-Exist,
// conditional update and delete) evaluate too.
type querySpec struct {
	types []*typeParams
	sets  []filterSet
	cols  []sqlPart // conditions on the resources row r
	now   time.Time // the clock of date=ap
	// needs are the index keys the query reads: they must be active
	// (store.activate) before it runs.
	needs []int64
	// reads are the other types the query reads through chains and _has
	// (the key's scopes must allow searching them).
	reads []string
}

// typeNames returns the searched types' names.
func (q *querySpec) typeNames() []string {
	out := make([]string, len(q.types))
	for i, tp := range q.types {
		out[i] = tp.typ
	}
	return out
}

// where returns the WHERE clause selecting the query's live resources
// (table alias r).
func (q *querySpec) where() sqlPart {
	var w sqlPart
	names := q.typeNames()
	typeCol := "r.type"
	var pos, neg []string
	var posArgs, negArgs []any
	for _, s := range q.sets {
		if s.neg {
			neg = append(neg, "r.rid NOT IN ("+s.sql+")")
			negArgs = append(negArgs, s.args...)
		} else {
			pos = append(pos, s.sql)
			posArgs = append(posArgs, s.args...)
		}
	}
	if len(pos) > 0 {
		// Keep SQLite from walking every resource of the type through the
		// (type, id) index: the intersection of the index subqueries is the
		// small side.
		typeCol = "+r.type"
	}
	if len(names) == 1 {
		w.sql = typeCol + " = ?"
		w.args = append(w.args, names[0])
	} else if len(names) < len(resourceTypes) {
		w.sql = typeCol + " IN (" + placeholders(len(names)) + ")"
		for _, n := range names {
			w.args = append(w.args, n)
		}
	} else {
		w.sql = "1"
	}
	w.sql += " AND r.deleted = 0"
	if len(pos) > 0 {
		w.sql += " AND r.rid IN (" + strings.Join(pos, " INTERSECT ") + ")"
		w.args = append(w.args, posArgs...)
	}
	for _, n := range neg {
		w.sql += " AND " + n
	}
	w.args = append(w.args, negArgs...)
	for _, c := range q.cols {
		w.sql += " AND " + c.sql
		w.args = append(w.args, c.args...)
	}
	return w
}

// countSQL returns the query counting the matches. With only index
// filters on one type it needs no resource rows: index rows exist for
// live, current versions of their type only.
func (q *querySpec) countSQL() sqlPart {
	if len(q.types) == 1 && len(q.cols) == 0 && len(q.sets) > 0 && !slices.ContainsFunc(q.sets, func(s filterSet) bool { return s.neg }) {
		var parts []string
		var args []any
		for _, s := range q.sets {
			parts = append(parts, s.sql)
			args = append(args, s.args...)
		}
		return sqlPart{"SELECT count(DISTINCT rid) FROM (" + strings.Join(parts, " INTERSECT ") + ")", args}
	}
	w := q.where()
	return sqlPart{"SELECT count(*) FROM resources r WHERE " + w.sql, w.args}
}

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

// addFilter compiles one filter parameter occurrence (key as sent, value
// as sent) and ANDs it to q. depth counts chain and _has levels.
func (q *querySpec) addFilter(key, value string, depth int) *fhirError {
	s, e := q.filter(key, value, depth)
	if e != nil {
		return e
	}
	if s.sql != "" {
		q.sets = append(q.sets, s)
	}
	return nil
}

// filter compiles one filter parameter into the rids it selects among q's
// types, or a column condition (added to q.cols; the returned set is then
// empty).
func (q *querySpec) filter(key, value string, depth int) (filterSet, *fhirError) {
	if depth > maxChainDepth {
		return filterSet{}, badRequest("Chained parameters and _has nest at most %d deep.", maxChainDepth)
	}
	if rest, ok := strings.CutPrefix(key, "_has:"); ok {
		return q.has(rest, value, depth)
	}
	head, chain, chained := strings.Cut(key, ".")
	name, mod, _ := strings.Cut(head, ":")
	var ps []*param
	for _, tp := range q.types {
		p := tp.byCode[name]
		if p == nil {
			if len(q.types) == 1 {
				return filterSet{}, unknownParam(name, tp)
			}
			e := badRequest("Search parameter '%s' is not defined for every type searched (%s has none).", safeName(name), tp.typ)
			e.unknownParam = true
			return filterSet{}, e
		}
		if !p.supported() {
			return filterSet{}, unsupportedParam(p, tp.typ)
		}
		ps = append(ps, p)
	}
	kind := ps[0].kind
	for _, p := range ps[1:] {
		if p.kind != kind {
			return filterSet{}, badRequest("Search parameter '%s' has different types on the types searched.", safeName(name))
		}
	}
	if chained {
		if kind != kindRef {
			return filterSet{}, badRequest("Parameter %s is not a reference: it cannot be chained.", safeName(name))
		}
		return q.chain(ps, name, mod, chain, value, depth)
	}
	if value == "" && mod != "missing" {
		return filterSet{}, badRequest("Parameter %s has no value.", safeName(name))
	}
	if mod == "missing" {
		return q.missing(ps, name, value)
	}
	switch kind {
	case kindID:
		return filterSet{}, q.idFilter(name, mod, value)
	case kindLastUpdated:
		if mod != "" {
			return filterSet{}, badModifier(name, mod)
		}
		ors, args, e := dateConditions("r.updated", "(r.updated + 1)", name, splitValues(value), q.now)
		if e != nil {
			return filterSet{}, e
		}
		q.cols = append(q.cols, sqlPart{"(" + strings.Join(ors, " OR ") + ")", args})
		return filterSet{}, nil
	}
	cond, sub, neg, e := valueCondition(kind, name, mod, value, q.now)
	if e != nil {
		return filterSet{}, e
	}
	var target string
	if kind == kindRef && mod != "" && mod != "identifier" {
		target = mod
	}
	set, e := q.rowSet(ps, sub, target, cond)
	if e != nil {
		return filterSet{}, e
	}
	return filterSet{sqlPart: set, neg: neg}, nil
}

// rowSet is the rids whose rows of parameters ps (one per type searched),
// sub-key sub and, for references, pointing at target, meet cond.
func (q *querySpec) rowSet(ps []*param, sub int, target string, cond sqlPart) (sqlPart, *fhirError) {
	return rowSelect("rid", q.types, ps, sub, target, cond, &q.needs), nil
}

// rowSelect selects column col of the index rows of parameters ps (ps[i]
// of type tps[i]), sub-key sub, that point at target (references; "" for
// any) and meet cond. It adds the keys it reads to needs.
func rowSelect(col string, tps []*typeParams, ps []*param, sub int, target string, cond sqlPart, needs *[]int64) sqlPart {
	var selects []string
	var args []any
	for i, p := range ps {
		tp := tps[i]
		for _, part := range p.parts {
			t := part.target
			if target != "" {
				if t != "" && t != target {
					continue
				}
				t = target
			}
			k := tp.key(part.atom, sub)
			*needs = append(*needs, k)
			sel := "SELECT " + col + " FROM idx WHERE k = " + strconv.FormatInt(k, 10)
			if t != "" {
				sel += " AND b = ?"
				args = append(args, t)
			}
			if cond.sql != "" {
				sel += " AND (" + cond.sql + ")"
				args = append(args, cond.args...)
			}
			selects = append(selects, sel)
		}
	}
	if len(selects) == 0 {
		// A target no part allows: nothing can match.
		return sqlPart{sql: "SELECT " + col + " FROM idx WHERE 0"}
	}
	return sqlPart{strings.Join(selects, " UNION "), args}
}

// missing compiles param:missing=true|false.
func (q *querySpec) missing(ps []*param, name, value string) (filterSet, *fhirError) {
	var want bool
	switch value {
	case "true":
		want = true
	case "false":
	default:
		return filterSet{}, badRequest("%s:missing takes true or false.", safeName(name))
	}
	switch ps[0].kind {
	case kindID, kindLastUpdated:
		// Every resource has an id and a lastUpdated.
		if want {
			q.cols = append(q.cols, sqlPart{sql: "0"})
		}
		return filterSet{}, nil
	}
	set, e := q.rowSet(ps, subMain, "", sqlPart{})
	if e != nil {
		return filterSet{}, e
	}
	return filterSet{sqlPart: set, neg: want}, nil
}

// idFilter compiles _id (and _id:not).
func (q *querySpec) idFilter(name, mod, value string) *fhirError {
	values := splitValues(value)
	col := sqlPart{sql: "r.id IN (" + placeholders(len(values)) + ")"}
	for _, v := range values {
		col.args = append(col.args, v)
	}
	switch mod {
	case "":
	case "not":
		col.sql = "r.id NOT IN (" + placeholders(len(values)) + ")"
	default:
		return badModifier(name, mod)
	}
	q.cols = append(q.cols, col)
	return nil
}

// chain compiles name[:Type].rest=value: references whose target matches
// rest=value.
func (q *querySpec) chain(ps []*param, name, mod, rest, value string, depth int) (filterSet, *fhirError) {
	targets := map[string]bool{}
	if mod != "" {
		if !knownType(mod) {
			return filterSet{}, badModifier(name, mod)
		}
		targets[mod] = true
	} else {
		for _, p := range ps {
			for _, t := range p.targets() {
				if t != "Resource" {
					targets[t] = true
				}
			}
		}
	}
	inner := strings.SplitN(rest, ".", 2)[0]
	innerName, _, _ := strings.Cut(inner, ":")
	var selects []string
	var args []any
	ordered := make([]string, 0, len(targets))
	for t := range targets {
		ordered = append(ordered, t)
	}
	slices.Sort(ordered)
	for _, t := range ordered {
		tp := searchCatalog().types[t]
		if tp == nil || tp.byCode[innerName] == nil && !strings.HasPrefix(rest, "_has:") {
			continue
		}
		sub := &querySpec{types: []*typeParams{tp}, now: q.now}
		if e := sub.addFilter(rest, value, depth+1); e != nil {
			return filterSet{}, e
		}
		q.needs = append(q.needs, sub.needs...)
		q.reads = append(append(q.reads, t), sub.reads...)
		w := sub.where()
		cond := sqlPart{sql: "a IN (SELECT r.id FROM resources r WHERE " + w.sql + ")", args: w.args}
		set, e := q.rowSet(ps, subMain, t, cond)
		if e != nil {
			return filterSet{}, e
		}
		selects = append(selects, set.sql)
		args = append(args, set.args...)
	}
	if len(selects) == 0 {
		return filterSet{}, badRequest("Chained parameter %s.%s: no type %s may point at has a parameter %s.", safeName(name), safeName(innerName), safeName(name), safeName(innerName))
	}
	return filterSet{sqlPart: sqlPart{strings.Join(selects, " UNION "), args}}, nil
}

// has compiles _has:Type:ref:param=value (rest is after "_has:"): the
// resources some Type points at through ref, where the Type matches
// param=value.
func (q *querySpec) has(rest, value string, depth int) (filterSet, *fhirError) {
	parts := strings.SplitN(rest, ":", 3)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return filterSet{}, badRequest("_has takes _has:Type:reference-parameter:parameter=value.")
	}
	typ, refName, inner := parts[0], parts[1], parts[2]
	tp := searchCatalog().types[typ]
	if tp == nil {
		return filterSet{}, badRequest("_has: unknown resource type '%s'.", safeName(typ))
	}
	ref := tp.byCode[refName]
	if ref == nil || ref.kind != kindRef {
		return filterSet{}, badRequest("_has: %s has no reference parameter '%s'.", typ, safeName(refName))
	}
	if !ref.supported() {
		return filterSet{}, unsupportedParam(ref, typ)
	}
	sub := &querySpec{types: []*typeParams{tp}, now: q.now}
	if e := sub.addFilter(inner, value, depth+1); e != nil {
		return filterSet{}, e
	}
	q.needs = append(q.needs, sub.needs...)
	q.reads = append(append(q.reads, typ), sub.reads...)
	w := sub.where()
	matching := sqlPart{"rid IN (SELECT r.rid FROM resources r WHERE " + w.sql + ")", w.args}
	var selects []string
	var args []any
	for _, qt := range q.types {
		ids := rowSelect("a", []*typeParams{tp}, []*param{ref}, subMain, qt.typ, matching, &q.needs)
		selects = append(selects, "SELECT rid FROM resources WHERE type = ? AND deleted = 0 AND id IN ("+ids.sql+")")
		args = append(append(args, qt.typ), ids.args...)
	}
	return filterSet{sqlPart: sqlPart{strings.Join(selects, " UNION "), args}}, nil
}

// valueCondition compiles the values of one parameter occurrence
// (comma-separated, ORed) into a condition on idx.a and idx.b, the sub-key
// it applies to, and whether the parameter selects the complement (:not).
func valueCondition(kind paramKind, name, mod, value string, now time.Time) (cond sqlPart, sub int, neg bool, e *fhirError) {
	values := splitValues(value)
	var ors []string
	var args []any
	add := func(sql string, a ...any) {
		ors = append(ors, sql)
		args = append(args, a...)
	}
	// addToken matches a token value: code, system|code, system| or |code
	// (a is the code, b the system).
	addToken := func(v string) {
		system, code, hasSystem := cutUnescaped(v)
		switch {
		case !hasSystem:
			add("a = ?", code)
		case code == "":
			add("b = ?", system)
		default:
			add("(a = ? AND b = ?)", code, system)
		}
	}
	switch kind {
	case kindToken:
		switch mod {
		case "", "not":
			neg = mod == "not"
			for _, v := range values {
				addToken(v)
			}
		case "text":
			sub = subText
			for _, v := range values {
				n := normalizeString(v)
				add(`(a >= ? AND a < ?) OR a LIKE ? ESCAPE '\'`, n, n+"\U0010FFFF", "% "+likeEscape(n)+"%")
			}
		case "of-type":
			sub = subExtra
			for _, v := range values {
				parts := strings.SplitN(v, "|", 3)
				if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
					return cond, 0, false, badRequest("%s:of-type takes system|code|value.", safeName(name))
				}
				add("(a = ? AND b = ?)", parts[2], parts[0]+"|"+parts[1])
			}
		case "above", "below", "in", "not-in":
			return cond, 0, false, errf(http.StatusBadRequest, "not-supported", "Modifier ':%s' on %s needs a terminology service, which this server does not have.", mod, safeName(name))
		default:
			return cond, 0, false, badModifier(name, mod)
		}
	case kindString:
		for _, v := range values {
			switch mod {
			case "":
				n := normalizeString(v)
				add("(a >= ? AND a < ?)", n, n+"\U0010FFFF")
			case "exact":
				add("b = ?", v)
			case "contains":
				add(`a LIKE ? ESCAPE '\'`, "%"+likeEscape(normalizeString(v))+"%")
			default:
				return cond, 0, false, badModifier(name, mod)
			}
		}
	case kindRef:
		switch {
		case mod == "identifier":
			sub = subExtra
			for _, v := range values {
				addToken(v)
			}
		case mod == "" || knownType(mod):
			for _, v := range values {
				if i := strings.IndexByte(v, '|'); i >= 0 && (strings.HasPrefix(v, "http:") || strings.HasPrefix(v, "https:")) {
					v = v[:i] // canonical|version
				}
				typ, id := splitReference(v)
				if typ != "" && mod != "" && typ != mod {
					return cond, 0, false, badRequest("Parameter %s:%s has a value of another type.", safeName(name), mod)
				}
				switch {
				case typ == "":
					add("a = ?", id)
				case strings.Contains(v, "://"):
					add("((a = ? AND b = ?) OR (a = ? AND b = ''))", id, typ, v)
				default:
					add("(a = ? AND b = ?)", id, typ)
				}
			}
		case mod == "above" || mod == "below":
			return cond, 0, false, errf(http.StatusBadRequest, "not-supported", "Modifier ':%s' on %s (hierarchies) is not supported.", mod, safeName(name))
		default:
			return cond, 0, false, badModifier(name, mod)
		}
	case kindDate:
		if mod != "" {
			return cond, 0, false, badModifier(name, mod)
		}
		var e *fhirError
		if ors, args, e = dateConditions("a", "b", name, values, now); e != nil {
			return cond, 0, false, e
		}
	case kindNumber, kindQuantity:
		if mod != "" {
			return cond, 0, false, badModifier(name, mod)
		}
		for _, v := range values {
			sql, a, e := numberCondition(kind, name, v)
			if e != nil {
				return cond, 0, false, e
			}
			add(sql, a...)
		}
	case kindURI:
		for _, v := range values {
			switch mod {
			case "":
				add("a = ?", v)
			case "below":
				add("(a >= ? AND a < ?)", v, v+"\U0010FFFF")
			case "above":
				add("substr(?, 1, length(a)) = a", v)
			default:
				return cond, 0, false, badModifier(name, mod)
			}
		}
	}
	return sqlPart{"(" + strings.Join(ors, ") OR (") + ")", args}, sub, neg, nil
}

// numberCondition compiles one number or quantity value:
// [prefix]number[|system|code]. eq (the default) matches the range the
// number's precision implies (100 is [99.5, 100.5), 5.40 is [5.395,
// 5.405)); ap matches within 10% of the number.
func numberCondition(kind paramKind, name, v string) (string, []any, *fhirError) {
	prefix := "eq"
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	num, unit, hasUnit := strings.Cut(v, "|")
	if hasUnit && kind == kindNumber {
		return "", nil, badRequest("Parameter %s is a number: it takes no unit.", safeName(name))
	}
	f, half, ok := parseNumber(num)
	if !ok {
		return "", nil, badRequest("Invalid number in parameter %s: use [prefix]number%s.", safeName(name), map[bool]string{true: "[|system|code]"}[kind == kindQuantity])
	}
	var sql string
	var args []any
	switch prefix {
	case "eq":
		sql, args = "a >= ? AND a < ?", []any{f - half, f + half}
	case "ne":
		sql, args = "NOT (a >= ? AND a < ?)", []any{f - half, f + half}
	case "gt", "sa":
		sql, args = "a > ?", []any{f}
	case "lt", "eb":
		sql, args = "a < ?", []any{f}
	case "ge":
		sql, args = "a >= ?", []any{f}
	case "le":
		sql, args = "a <= ?", []any{f}
	case "ap":
		d := math.Abs(f) / 10
		sql, args = "a >= ? AND a <= ?", []any{f - d, f + d}
	default:
		return "", nil, badRequest("Unknown prefix in parameter %s: use eq ne gt lt ge le sa eb ap.", safeName(name))
	}
	if hasUnit {
		system, code, ok := strings.Cut(unit, "|")
		if !ok || strings.Contains(code, "|") {
			return "", nil, badRequest("Invalid quantity in parameter %s: use [prefix]number|system|code or [prefix]number||code.", safeName(name))
		}
		switch {
		case system != "" && code != "":
			sql += " AND b = ?"
			args = append(args, system+"|"+code)
		case code != "":
			sql += ` AND b LIKE ? ESCAPE '\'`
			args = append(args, "%|"+likeEscape(code))
		case system != "":
			sql += ` AND b LIKE ? ESCAPE '\'`
			args = append(args, likeEscape(system)+"|%")
		}
	}
	return sql, args, nil
}

// parseNumber parses a decimal (or exponent) number and returns it with
// half of its last significant place: "100" → 100, 0.5; "5.40" → 5.4,
// 0.005; "1e2" → 100, 50.
func parseNumber(s string) (f, half float64, ok bool) {
	if s == "" || strings.ContainsAny(s, " _") {
		return 0, 0, false
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, 0, false
	}
	f, _ = r.Float64()
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return 0, 0, false
		}
		exp = e
	}
	decimals := 0
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		decimals = len(mant) - i - 1
	}
	return f, 0.5 * math.Pow(10, float64(exp-decimals)), true
}

func unknownParam(name string, tp *typeParams) *fhirError {
	var names []string
	for _, c := range tp.codes {
		if tp.byCode[c].supported() {
			names = append(names, c)
		}
	}
	e := badRequest("Invalid search parameter '%s' for resource type %s. Supported: %s.", safeName(name), tp.typ, strings.Join(names, ", "))
	e.unknownParam = true
	return e
}

func unsupportedParam(p *param, typ string) *fhirError {
	e := errf(http.StatusBadRequest, "not-supported", "Search parameter '%s' of %s is not supported: %s.", p.code, typ, p.reason)
	e.unknownParam = true
	return e
}

func badModifier(name, mod string) *fhirError {
	return badRequest("Modifier ':%s' is not supported on %s.", safeName(mod), safeName(name))
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

// dateConditions is dateCondition for each of a parameter's comma-separated
// values (ORed by the caller).
func dateConditions(lo, hi, name string, values []string, now time.Time) ([]string, []any, *fhirError) {
	var ors []string
	var args []any
	for _, v := range values {
		cond, a, e := dateCondition(lo, hi, name, v, now)
		if e != nil {
			return nil, nil, e
		}
		ors = append(ors, cond)
		args = append(args, a...)
	}
	return ors, args, nil
}

// dateCondition is the SQL for one date value with its FHIR prefix, over a
// stored range [lo, hi) against the value's range [plo, phi). ap
// ("approximately") matches a stored range that overlaps the value's range
// widened on both sides by 10% of the time between the value and now (at
// least a day), the margin the specification recommends.
func dateCondition(lo, hi, name, v string, now time.Time) (string, []any, *fhirError) {
	prefix := "eq"
	if len(v) > 2 && v[0] >= 'a' && v[0] <= 'z' {
		prefix, v = v[:2], v[2:]
	}
	plo, phi, ok := parseDateRange(v)
	if !ok {
		return "", nil, badRequest("Invalid date in parameter %s: use YYYY, YYYY-MM, YYYY-MM-DD or a dateTime, with an optional prefix eq ne gt lt ge le sa eb ap.", safeName(name))
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
		m := approxMargin(plo, phi, now)
		return "(" + lo + " < ? AND " + hi + " > ?)", []any{phi + m, plo - m}, nil
	}
	return "", nil, badRequest("Unknown date prefix in parameter %s: use eq ne gt lt ge le sa eb ap.", safeName(name))
}

// approxMargin is the widening of date=ap: 10% of the time between the
// value's range and now, at least one day.
func approxMargin(plo, phi int64, now time.Time) int64 {
	n := now.UnixMilli()
	var gap int64
	switch {
	case n < plo:
		gap = plo - n
	case n > phi:
		gap = n - phi
	}
	return max(gap/10, int64(24*time.Hour/time.Millisecond))
}
