package fhirstore

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// search is a compiled search: which resources (querySpec), how they are
// ordered and paged, and what the Bundle holds of them.
type search struct {
	querySpec
	path    string // below the base: "Observation", "" (system), "Patient/1/Observation"
	params  []kv   // the parameters links repeat (paging aside)
	ignored []kv   // unknown or unsupported parameters left out (Prefer: handling=lenient)

	count        int
	summaryCount bool
	totalMode    string // "", "none", "estimate", "accurate"
	sort         []sortKey
	sortKeys     map[string][]int64 // per type, the index keys the sort reads (sortKeysOf)
	offset       int
	offsetPaging bool  // paged by _offset (sorted searches) rather than by rid
	cursor       int64 // rid paging: the page after this rid
	before       int64 // rid paging: the page before this rid
	include      []includeSpec
	revinclude   []includeSpec
	view         resultView
}

// resultView is what of each resource a Bundle or a read returns:
// _summary and _elements.
type resultView struct {
	summary  string   // "", "true", "text", "data", "false"
	elements []string // top-level elements to keep
}

func (v resultView) full() bool {
	return (v.summary == "" || v.summary == "false") && v.elements == nil
}

// sortKey is one key of _sort.
type sortKey struct {
	code string
	desc bool
	ps   []*param // per type searched; nil for _id and _lastUpdated
	kind paramKind
}

// includeSpec is one _include or _revinclude: Type:param[:target], or
// Type:* (every reference parameter of Type).
type includeSpec struct {
	tp      *typeParams
	ps      []*param
	target  string
	iterate bool
}

// searchOptions qualify compileSearch.
type searchOptions struct {
	lenient bool // Prefer: handling=lenient
	now     time.Time
	system  bool // a search across types: _type is allowed
	// compartment limits the search to the compartment of typ/id.
	compartment struct{ typ, id string }
}

// compileSearch parses the parameters of a search of types.
func compileSearch(types []string, pairs []kv, opt searchOptions) (*search, *fhirError) {
	s := &search{count: defaultCount}
	s.now = opt.now
	cat := searchCatalog()
	for _, t := range types {
		s.types = append(s.types, cat.types[t])
	}
	for _, p := range pairs {
		if p.k == "_type" {
			if !opt.system {
				return nil, s.refuse(p, opt, badRequest("_type is a parameter of searches across types (GET [base]?_type=…)."))
			}
			s.types = s.types[:0]
			for t := range strings.SplitSeq(p.v, ",") {
				tp := cat.types[t]
				if tp == nil {
					return nil, badRequest("_type: unknown resource type '%s'.", safeName(t))
				}
				s.types = append(s.types, tp)
			}
			s.params = append(s.params, p)
		}
	}
	if c := opt.compartment; c.typ != "" {
		if e := s.limitToCompartment(c.typ, c.id); e != nil {
			return nil, e
		}
	}
	for _, p := range pairs {
		if p.k == "_type" {
			continue
		}
		e := s.result(p)
		if e == errNotResult {
			e = s.addFilter(p.k, p.v, 0)
		}
		if e != nil {
			if e = s.refuse(p, opt, e); e != nil {
				return nil, e
			}
			continue
		}
		if !strings.HasPrefix(p.k, "_cursor") && p.k != "_before" && p.k != "_offset" && p.k != "_getpagesoffset" {
			s.params = append(s.params, p)
		}
	}
	if len(s.sort) > 0 || s.offset > 0 {
		s.offsetPaging = true
		if s.cursor > 0 || s.before > 0 {
			return nil, badRequest("_sort and _offset page by _offset, not by cursor: follow the links as returned.")
		}
	}
	return s, nil
}

// limitToCompartment keeps the types that can be in the compartment of
// comp/id and adds the filter selecting its resources.
func (s *search) limitToCompartment(comp, id string) *fhirError {
	var keep []*typeParams
	var selects []string
	var args []any
	for _, tp := range s.types {
		set, ok := compartmentSet(tp, comp, id, &s.needs)
		if !ok {
			continue
		}
		keep = append(keep, tp)
		selects = append(selects, set.sql)
		args = append(args, set.args...)
	}
	if len(keep) == 0 {
		return badRequest("%s resources are never in a %s compartment.", strings.Join(s.typeNames(), ", "), comp)
	}
	s.types = keep
	s.sets = append(s.sets, filterSet{sqlPart: sqlPart{strings.Join(selects, " UNION "), args}})
	return nil
}

// refuse returns e, or nil when the handling is lenient and e is about an
// unknown or unsupported parameter, which is then reported in the Bundle.
func (s *search) refuse(p kv, opt searchOptions, e *fhirError) *fhirError {
	if opt.lenient && e.unknownParam {
		s.ignored = append(s.ignored, p)
		return nil
	}
	return e
}

// errNotResult says a parameter is not a result parameter.
var errNotResult = &fhirError{}

// result parses a result or paging parameter, or returns errNotResult.
func (s *search) result(p kv) *fhirError {
	name, mod, _ := strings.Cut(p.k, ":")
	switch name {
	case "_count":
		n, err := strconv.Atoi(p.v)
		if err != nil || n < 0 {
			return badRequest("_count must be a non-negative integer.")
		}
		if n == 0 {
			s.summaryCount = true
		}
		s.count = min(max(n, 1), maxCount)
	case "_offset", "_getpagesoffset":
		n, err := strconv.Atoi(p.v)
		if err != nil || n < 0 {
			return badRequest("%s must be a non-negative integer.", name)
		}
		s.offset = n
	case "_cursor", "_before":
		c, err := strconv.ParseInt(p.v, 10, 64)
		if err != nil || c < 0 {
			return badRequest("Invalid %s: use the links as returned.", name)
		}
		if name == "_cursor" {
			s.cursor = c
		} else {
			s.before = c
		}
	case "_total":
		switch p.v {
		case "none", "estimate", "accurate":
			s.totalMode = p.v
		default:
			return badRequest("_total takes none, estimate or accurate.")
		}
	case "_summary":
		switch p.v {
		case "count":
			s.summaryCount = true
		case "true", "text", "data", "false":
			s.view.summary = p.v
		default:
			return badRequest("_summary takes true, text, data, count or false.")
		}
	case "_elements":
		els, e := parseElements(s.typeNames(), p.v)
		if e != nil {
			return e
		}
		s.view.elements = els
	case "_sort":
		return s.parseSort(p.v)
	case "_include", "_revinclude":
		iterate := false
		switch mod {
		case "":
		case "iterate", "recurse":
			iterate = true
		default:
			return badRequest("%s takes the modifier :iterate only.", name)
		}
		inc, e := parseInclude(name, p.v, iterate)
		if e != nil {
			return e
		}
		if name == "_include" {
			s.include = append(s.include, inc)
		} else {
			s.revinclude = append(s.revinclude, inc)
			for _, p := range inc.ps {
				for _, part := range p.parts {
					s.needs = append(s.needs, inc.tp.key(part.atom, subMain))
				}
			}
		}
	case "_format":
		return checkFormat(p.v)
	case "_pretty":
		if p.v != "true" && p.v != "false" {
			return badRequest("_pretty takes true or false.")
		}
	case "_contained":
		if p.v != "false" {
			return errf(http.StatusBadRequest, "not-supported", "_contained=%s is not supported: contained resources are not searched.", safeName(p.v))
		}
	default:
		return errNotResult
	}
	if mod != "" && name != "_include" && name != "_revinclude" {
		return badRequest("%s takes no modifier.", name)
	}
	return nil
}

// parseSort parses _sort: comma-separated parameter names, each with "-"
// for descending order.
func (s *search) parseSort(v string) *fhirError {
	for code := range strings.SplitSeq(v, ",") {
		k := sortKey{}
		if rest, ok := strings.CutPrefix(code, "-"); ok {
			k.desc, code = true, rest
		}
		k.code = code
		for _, tp := range s.types {
			p := tp.byCode[code]
			if p == nil {
				e := unknownParam(code, tp)
				e.text = "_sort: " + e.text
				return e
			}
			if !p.supported() {
				return unsupportedParam(p, tp.typ)
			}
			k.kind = p.kind
			if p.kind != kindID && p.kind != kindLastUpdated {
				k.ps = append(k.ps, p)
			}
		}
		if code == "" {
			return badRequest("_sort has an empty key.")
		}
		s.sort = append(s.sort, k)
	}
	return nil
}

// includedTypes lists the types _include and _revinclude may add to a
// page ("*" when a reference may point at any type).
func (s *search) includedTypes() []string {
	var out []string
	for _, inc := range s.include {
		if inc.target != "" {
			out = append(out, inc.target)
			continue
		}
		for _, p := range inc.ps {
			for _, t := range p.targets() {
				if t == "Resource" {
					t = "*"
				}
				out = append(out, t)
			}
		}
	}
	for _, inc := range s.revinclude {
		out = append(out, inc.tp.typ)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// parseInclude parses Type:param[:target] or Type:*.
func parseInclude(name, v string, iterate bool) (includeSpec, *fhirError) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return includeSpec{}, badRequest("%s takes Type:parameter[:target type].", name)
	}
	tp := searchCatalog().types[parts[0]]
	if tp == nil {
		return includeSpec{}, badRequest("%s: unknown resource type '%s'.", name, safeName(parts[0]))
	}
	inc := includeSpec{tp: tp, iterate: iterate}
	if len(parts) == 3 {
		if !knownType(parts[2]) {
			return includeSpec{}, badRequest("%s: unknown target type '%s'.", name, safeName(parts[2]))
		}
		inc.target = parts[2]
	}
	if parts[1] == "*" {
		for _, c := range tp.codes {
			if p := tp.byCode[c]; p.kind == kindRef && p.supported() {
				inc.ps = append(inc.ps, p)
			}
		}
		return inc, nil
	}
	p := tp.byCode[parts[1]]
	if p == nil || p.kind != kindRef {
		return includeSpec{}, badRequest("%s: %s has no reference parameter '%s'.", name, tp.typ, safeName(parts[1]))
	}
	if !p.supported() {
		return includeSpec{}, unsupportedParam(p, tp.typ)
	}
	inc.ps = []*param{p}
	return inc, nil
}

// checkFormat accepts the JSON values of _format and refuses the others
// with 406, as FHIR prescribes.
func checkFormat(v string) *fhirError {
	switch strings.TrimSpace(strings.SplitN(v, ";", 2)[0]) {
	case "json", "application/json", "application/fhir+json", "application/json+fhir":
		return nil
	}
	return errf(http.StatusNotAcceptable, "not-supported", "_format %s is not supported: this server answers in JSON only (_format=json).", safeFormat(v))
}

// safeFormat returns a format value for error text.
func safeFormat(v string) string {
	if len(v) > 64 {
		return "(long value)"
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c > 0x7e {
			return "(value)"
		}
	}
	return v
}

// candidate is a matching resource before its page is cut.
type candidate struct {
	rid     int64
	typ, id string
	updated int64
	keys    []byte
	body    []byte
	sortBy  []any
	mode    string // "match", "include"
}

// maxIncluded bounds the resources _include and _revinclude add to a page.
const maxIncluded = 1000

// resultPage is a page of a search, ready to render.
type resultPage struct {
	total          int64 // -1 when not counted
	entries        []candidate
	next, previous string // links, "" when none
	self           string
	warnings       []string
}

// run executes the search through q and returns the searchset Bundle.
func (s *search) run(ctx context.Context, q querier, base string) ([]byte, error) {
	pg := &resultPage{total: -1, self: s.link(base, "", "")}
	var err error
	switch {
	case s.summaryCount:
		pg.total, err = s.countMatches(ctx, q)
	case s.offsetPaging:
		err = s.runSorted(ctx, q, base, pg)
	default:
		err = s.runByRID(ctx, q, base, pg)
	}
	if err != nil {
		return nil, err
	}
	if err := s.addIncludes(ctx, q, pg); err != nil {
		return nil, err
	}
	return s.render(base, pg), nil
}

func (s *search) countMatches(ctx context.Context, q querier) (int64, error) {
	c := s.countSQL()
	var n int64
	if err := q.QueryRowContext(ctx, c.sql, c.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count search: %w", err)
	}
	return n, nil
}

// runByRID pages in insertion order, by rid: a page is the rids after
// _cursor (or before _before), so paging stays exact while resources are
// added.
func (s *search) runByRID(ctx context.Context, q querier, base string, pg *resultPage) error {
	if s.totalMode != "none" {
		n, err := s.countMatches(ctx, q)
		if err != nil {
			return err
		}
		pg.total = n
	}
	w := s.where()
	query := "SELECT r.rid, r.type, r.id, r.keys, r.body FROM resources r WHERE " + w.sql
	args := w.args
	if s.before > 0 {
		query += " AND r.rid < ? ORDER BY r.rid DESC LIMIT ?"
	} else {
		query += " AND r.rid > ? ORDER BY r.rid LIMIT ?"
	}
	args = append(slices.Clip(args), max(s.cursor, s.before), s.count+1)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.rid, &c.typ, &c.id, &c.keys, &c.body); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		c.mode = "match"
		pg.entries = append(pg.entries, c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("search: %w", err)
	}
	more := len(pg.entries) > s.count
	if more {
		pg.entries = pg.entries[:s.count]
	}
	if s.before > 0 {
		slices.Reverse(pg.entries)
	}
	if len(pg.entries) == 0 {
		if s.before > 0 {
			pg.next = s.link(base, "_cursor", strconv.FormatInt(s.before-1, 10))
		}
		return nil
	}
	first, last := pg.entries[0].rid, pg.entries[len(pg.entries)-1].rid
	if (s.before == 0 && more) || s.before > 0 {
		pg.next = s.link(base, "_cursor", strconv.FormatInt(last, 10))
	}
	if s.cursor > 0 || (s.before > 0 && more) {
		pg.previous = s.link(base, "_before", strconv.FormatInt(first, 10))
	}
	return nil
}

// runSorted reads every match's sort keys from resources.keys (the index
// rows each resource row lists), sorts them, and cuts the page at _offset.
func (s *search) runSorted(ctx context.Context, q querier, base string, pg *resultPage) error {
	// Only the columns the sort reads, in place (no copy per match): the
	// sort values are kept, the type is one of the search's (read only
	// when it searches several), the id only when the sort needs it (the
	// page's ids come with the bodies, loadBodies).
	byID := slices.ContainsFunc(s.sort, func(k sortKey) bool { return k.kind == kindID })
	multi := len(s.types) > 1
	var c candidate
	var typ, id, keys sql.RawBytes
	cols, dest := "r.rid, r.updated, r.keys", []any{&c.rid, &c.updated, &keys}
	if multi {
		cols, dest = cols+", r.type", append(dest, &typ)
	}
	if byID {
		cols, dest = cols+", r.id", append(dest, &id)
	}
	w := s.where()
	rows, err := q.QueryContext(ctx, "SELECT "+cols+" FROM resources r WHERE "+w.sql, w.args...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	all := make([]candidate, 0, 256)
	var slab []any // the sort values of many matches in one allocation
	for rows.Next() {
		c = candidate{}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return fmt.Errorf("search: %w", err)
		}
		c.typ = s.types[0].typ
		if multi {
			for _, t := range s.types {
				if string(typ) == t.typ {
					c.typ = t.typ
					break
				}
			}
		}
		if byID {
			c.id = string(id)
		}
		c.keys = keys
		if len(slab) < len(s.sort) {
			slab = make([]any, 256*len(s.sort))
		}
		c.sortBy, slab = slab[:len(s.sort):len(s.sort)], slab[len(s.sort):]
		s.sortValues(&c)
		c.keys = nil
		all = append(all, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("search: %w", err)
	}
	order := func(x, y *candidate) int {
		for i, k := range s.sort {
			if c := compareSort(x.sortBy[i], y.sortBy[i], k.desc); c != 0 {
				return c
			}
		}
		return cmp.Compare(x.rid, y.rid)
	}
	pg.total = int64(len(all))
	lo := min(s.offset, len(all))
	hi := min(lo+s.count, len(all))
	more := hi < len(all)
	all = firstSorted(all, hi, order)
	if more {
		pg.next = s.link(base, "_offset", strconv.Itoa(hi))
	}
	if lo > 0 {
		pg.previous = s.link(base, "_offset", strconv.Itoa(max(lo-s.count, 0)))
	}
	pg.entries = all[lo:hi]
	for i := range pg.entries {
		pg.entries[i].mode = "match"
	}
	return loadBodies(ctx, q, pg.entries)
}

// firstSorted returns the n first of cs in the order cmp defines, sorted
// (the order is total: cmp breaks ties by rid). A page of 20 of a
// thousand matches keeps the 20 best in a sorted window instead of
// sorting all of them.
func firstSorted(cs []candidate, n int, cmp func(x, y *candidate) int) []candidate {
	if n <= 0 {
		return cs[:0]
	}
	if n*8 >= len(cs) {
		slices.SortFunc(cs, func(x, y candidate) int { return cmp(&x, &y) })
		return cs[:n]
	}
	top := make([]*candidate, 0, n+1)
	for i := range cs {
		c := &cs[i]
		if len(top) == n && cmp(c, top[n-1]) >= 0 {
			continue
		}
		at, _ := slices.BinarySearchFunc(top, c, cmp)
		top = slices.Insert(top, at, c)
		if len(top) > n {
			top = top[:n]
		}
	}
	out := make([]candidate, len(top))
	for i, c := range top {
		out[i] = *c
	}
	return out
}

// sortValues computes c's value for each sort key: the lowest of its
// values for an ascending key, the highest for a descending one (a date's
// range start and end); nil when it has none (sorted last).
func (s *search) sortValues(c *candidate) []any {
	out := c.sortBy
	if len(out) != len(s.sort) {
		out = make([]any, len(s.sort))
		c.sortBy = out
	}
	var rows []keyRow
	decoded := false
	for i, k := range s.sort {
		switch k.kind {
		case kindID:
			out[i] = c.id
			continue
		case kindLastUpdated:
			out[i] = c.updated
			continue
		}
		if !decoded {
			rows, decoded = decodeRowsOf(c.keys, s.sortKeysOf(c.typ)), true
		}
		var tp *typeParams
		var p *param
		for j, t := range s.types {
			if t.typ == c.typ {
				tp, p = t, k.ps[j]
			}
		}
		if p == nil {
			continue
		}
		var best any
		for _, part := range p.parts {
			key := tp.key(part.atom, subMain)
			for _, r := range rows {
				if r.k != key {
					continue
				}
				if part.target != "" && r.b != part.target {
					continue
				}
				v := r.a
				if k.desc && k.kind == kindDate {
					v = r.b
				}
				if best == nil || (compareValue(v, best) < 0) != k.desc {
					best = v
				}
			}
		}
		out[i] = best
	}
	return out
}

// sortKeysOf lists the index keys the sort reads of a resource of type
// typ (computed once per type and search).
func (s *search) sortKeysOf(typ string) []int64 {
	if ks, ok := s.sortKeys[typ]; ok {
		return ks
	}
	ks := []int64{}
	for j, t := range s.types {
		if t.typ != typ {
			continue
		}
		for _, k := range s.sort {
			if k.kind == kindID || k.kind == kindLastUpdated {
				continue
			}
			for _, part := range k.ps[j].parts {
				ks = append(ks, t.key(part.atom, subMain))
			}
		}
	}
	if s.sortKeys == nil {
		s.sortKeys = map[string][]int64{}
	}
	s.sortKeys[typ] = ks
	return ks
}

// compareSort orders two sort values, missing ones last either way.
func compareSort(x, y any, desc bool) int {
	switch {
	case x == nil && y == nil:
		return 0
	case x == nil:
		return 1
	case y == nil:
		return -1
	}
	c := compareValue(x, y)
	if desc {
		return -c
	}
	return c
}

// loadBodies fills the bodies (and keys, type and id) of cs by rid.
func loadBodies(ctx context.Context, q querier, cs []candidate) error {
	if len(cs) == 0 {
		return nil
	}
	byRID := make(map[int64]int, len(cs))
	args := make([]any, 0, len(cs))
	for i, c := range cs {
		byRID[c.rid] = i
		args = append(args, c.rid)
	}
	rows, err := q.QueryContext(ctx, "SELECT rid, type, id, keys, body FROM resources WHERE rid IN ("+placeholders(len(cs))+")", args...)
	if err != nil {
		return fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var rid int64
		var typ, id string
		var keys, body []byte
		if err := rows.Scan(&rid, &typ, &id, &keys, &body); err != nil {
			return fmt.Errorf("search: %w", err)
		}
		i := byRID[rid]
		cs[i].typ, cs[i].id, cs[i].keys, cs[i].body = typ, id, keys, body
	}
	return rows.Err()
}

// addIncludes adds the page's _include and _revinclude resources.
func (s *search) addIncludes(ctx context.Context, q querier, pg *resultPage) error {
	if len(s.include) == 0 && len(s.revinclude) == 0 {
		return nil
	}
	seen := map[int64]bool{}
	for _, c := range pg.entries {
		seen[c.rid] = true
	}
	frontier := slices.Clone(pg.entries)
	added := 0
	for round := 0; len(frontier) > 0 && round < maxChainDepth+1; round++ {
		var next []candidate
		for _, inc := range s.include {
			if round > 0 && !inc.iterate {
				continue
			}
			found, err := includeTargets(ctx, q, inc, frontier)
			if err != nil {
				return err
			}
			next = appendNew(next, found, seen)
		}
		for _, inc := range s.revinclude {
			if round > 0 && !inc.iterate {
				continue
			}
			found, err := revincludeSources(ctx, q, inc, frontier)
			if err != nil {
				return err
			}
			next = appendNew(next, found, seen)
		}
		if added+len(next) > maxIncluded {
			next = next[:maxIncluded-added]
			pg.warnings = append(pg.warnings, fmt.Sprintf("_include and _revinclude added the first %d resources only; page with a smaller _count.", maxIncluded))
		}
		added += len(next)
		for i := range next {
			next[i].mode = "include"
		}
		pg.entries = append(pg.entries, next...)
		frontier = next
	}
	return nil
}

func appendNew(dst, found []candidate, seen map[int64]bool) []candidate {
	for _, c := range found {
		if !seen[c.rid] {
			seen[c.rid] = true
			dst = append(dst, c)
		}
	}
	return dst
}

// includeTargets returns the resources that inc's parameters of the
// resources in from point at.
func includeTargets(ctx context.Context, q querier, inc includeSpec, from []candidate) ([]candidate, error) {
	byType := map[string][]string{}
	for _, c := range from {
		if c.typ != inc.tp.typ {
			continue
		}
		rows := decodeRows(c.keys)
		for _, p := range inc.ps {
			for _, part := range p.parts {
				key := inc.tp.key(part.atom, subMain)
				for _, r := range rows {
					typ, _ := r.b.(string)
					id, _ := r.a.(string)
					if r.k != key || typ == "" || part.target != "" && typ != part.target || inc.target != "" && typ != inc.target {
						continue
					}
					byType[typ] = append(byType[typ], id)
				}
			}
		}
	}
	var out []candidate
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	slices.Sort(types)
	for _, t := range types {
		ids := slices.Compact(slices.Sorted(slices.Values(byType[t])))
		for chunk := range slices.Chunk(ids, 500) {
			args := []any{t}
			for _, id := range chunk {
				args = append(args, id)
			}
			found, err := queryCandidates(ctx, q, "SELECT rid, type, id, keys, body FROM resources WHERE type = ? AND deleted = 0 AND id IN ("+placeholders(len(chunk))+") ORDER BY rid", args)
			if err != nil {
				return nil, err
			}
			out = append(out, found...)
		}
	}
	return out, nil
}

// revincludeSources returns the resources of inc's type whose inc
// parameters point at a resource in to.
func revincludeSources(ctx context.Context, q querier, inc includeSpec, to []candidate) ([]candidate, error) {
	byType := map[string][]any{}
	for _, c := range to {
		if inc.target == "" || c.typ == inc.target {
			byType[c.typ] = append(byType[c.typ], c.id)
		}
	}
	var out []candidate
	types := make([]string, 0, len(byType))
	for t := range byType {
		types = append(types, t)
	}
	slices.Sort(types)
	ps := make([]*param, 0, len(inc.ps))
	tps := make([]*typeParams, 0, len(inc.ps))
	for _, p := range inc.ps {
		ps, tps = append(ps, p), append(tps, inc.tp)
	}
	for _, t := range types {
		for chunk := range slices.Chunk(byType[t], 500) {
			var needs []int64 // activated when the search was compiled
			sel := rowSelect("rid", tps, ps, subMain, t, sqlPart{"a IN (" + placeholders(len(chunk)) + ")", chunk}, &needs)
			found, err := queryCandidates(ctx, q, "SELECT rid, type, id, keys, body FROM resources WHERE rid IN ("+sel.sql+") ORDER BY rid LIMIT ?", append(sel.args, maxIncluded+1))
			if err != nil {
				return nil, err
			}
			out = append(out, found...)
		}
	}
	return out, nil
}

func queryCandidates(ctx context.Context, q querier, query string, args []any) ([]candidate, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("include: %w", err)
	}
	defer rows.Close()
	var out []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.rid, &c.typ, &c.id, &c.keys, &c.body); err != nil {
			return nil, fmt.Errorf("include: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// render writes the searchset Bundle of a page.
func (s *search) render(base string, pg *resultPage) []byte {
	var out bytes.Buffer
	out.WriteString(`{"resourceType":"Bundle","id":"`)
	out.WriteString(newID())
	out.WriteString(`","meta":{"lastUpdated":"`)
	out.WriteString(lastUpdated(s.now))
	out.WriteString(`"},"type":"searchset"`)
	if pg.total >= 0 {
		out.WriteString(`,"total":`)
		out.WriteString(strconv.FormatInt(pg.total, 10))
	}
	out.WriteString(`,"link":[`)
	writeLink(&out, "self", pg.self)
	if pg.next != "" {
		out.WriteByte(',')
		writeLink(&out, "next", pg.next)
	}
	if pg.previous != "" {
		out.WriteByte(',')
		writeLink(&out, "previous", pg.previous)
	}
	out.WriteString("]")
	n := 0
	entry := func() {
		if n == 0 {
			out.WriteString(`,"entry":[`)
		} else {
			out.WriteByte(',')
		}
		n++
	}
	for _, c := range pg.entries {
		entry()
		out.WriteString(`{"fullUrl":`)
		writeJSONString(&out, base+c.typ+"/"+c.id)
		out.WriteString(`,"resource":`)
		out.Write(s.view.apply(c.typ, c.body))
		out.WriteString(`,"search":{"mode":"` + c.mode + `"}}`)
	}
	if len(s.ignored) > 0 || len(pg.warnings) > 0 {
		entry()
		var issues []issue
		for _, p := range s.ignored {
			issues = append(issues, issue{Severity: "warning", Code: "not-supported",
				Details: details{Text: "Parameter '" + safeName(p.k) + "' was ignored (Prefer: handling=lenient): it is unknown or not supported."}})
		}
		for _, w := range pg.warnings {
			issues = append(issues, issue{Severity: "warning", Code: "incomplete", Details: details{Text: w}})
		}
		out.WriteString(`{"resource":`)
		out.Write(outcomeOf(issues))
		out.WriteString(`,"search":{"mode":"outcome"}}`)
	}
	if n > 0 {
		out.WriteString("]")
	}
	out.WriteString("}")
	return out.Bytes()
}

func writeLink(out *bytes.Buffer, rel, u string) {
	out.WriteString(`{"relation":"` + rel + `","url":`)
	writeJSONString(out, u)
	out.WriteString("}")
}

// link is the URL of the search with the paging parameter name=value
// (none when name is "").
func (s *search) link(base, name, value string) string {
	var b strings.Builder
	b.WriteString(base)
	b.WriteString(s.path)
	sep := byte('?')
	for _, p := range s.params {
		b.WriteByte(sep)
		sep = '&'
		b.WriteString(url.QueryEscape(p.k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(p.v))
	}
	if name == "" {
		switch {
		case s.offsetPaging && s.offset > 0:
			name, value = "_offset", strconv.Itoa(s.offset)
		case s.cursor > 0:
			name, value = "_cursor", strconv.FormatInt(s.cursor, 10)
		case s.before > 0:
			name, value = "_before", strconv.FormatInt(s.before, 10)
		}
	}
	if name != "" {
		b.WriteByte(sep)
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(value)
	}
	return b.String()
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
}

// querier is what reads need: the read pool, a read transaction or a write
// transaction.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}
