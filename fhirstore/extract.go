package fhirstore

import (
	"cmp"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/fhirload/fhirload/internal/fhirpath"
	spec "github.com/fhirload/fhirload/registry"
)

// The extractor: the index rows of one resource. The resource is parsed
// once into a fhirpath tree (typed by the registry), and every stored
// search parameter of its type is evaluated on it; each value found
// becomes rows by the parameter's kind and the value's FHIR type:
//
//	token      Coding, CodeableConcept (each coding), Identifier, ContactPoint,
//	           code (its system from the element's value set), boolean, string, uri, id
//	           → (code, system); :text rows (CodeableConcept.text, Coding.display,
//	           Identifier.type.text); Identifier :of-type rows (value, type system|code)
//	string     string, markdown, HumanName (family, given, prefix, suffix, text),
//	           Address (line, city, district, state, postalCode, country, text)
//	           → (lower case with runs of spaces collapsed, as sent)
//	date       date, dateTime, instant, Period, Timing (its events and bounds)
//	           → the range [lo, hi) in Unix milliseconds
//	reference  Reference → (id, type) from its literal reference (Reference.type when
//	           the reference does not say), (the whole reference, "") for urn: ones;
//	           Reference.identifier :identifier rows; canonical, uri → (url, "")
//	quantity   Quantity and its profiles → (value, system|code) and (value, |unit)
//	           when the unit differs from the code; Money → (value, ISO 4217|currency)
//	number     integer, decimal → (value, "")
//	uri        uri, url, canonical, oid, uuid → (value, "")
//
// An Extension found by extension('…') stands for its value. Other types
// (Range, SampledData, Attachment, …) give no rows. A value of the wrong
// JSON shape is a 400 naming the element.

// indexRow is one search-index entry: idx.k, and a and b as tag says.
type indexRow struct {
	k      int64
	tag    byte // 's': a, b strings; 'd': a, b the date range lo, hi; 'n': a the number f, b the string s2
	s1, s2 string
	lo, hi int64
	f      float64
}

// values are the row's idx.a and idx.b.
func (r indexRow) values() (any, any) {
	switch r.tag {
	case 'd':
		return r.lo, r.hi
	case 'n':
		return r.f, r.s2
	}
	return r.s1, r.s2
}

// indexer is the scratch memory of one extraction, reused through a pool.
type indexer struct {
	tree fhirpath.Tree
	ev   fhirpath.Evaluator
	loc  []byte
	todo []int
}

var indexers = sync.Pool{New: func() any { return &indexer{} }}

// index checks p's body against its type's elements and fills p.rows.
func (p *parsed) index() *fhirError {
	tp := searchCatalog().types[p.typ]
	x := indexers.Get().(*indexer)
	defer func() {
		x.tree.Reset(nil)
		indexers.Put(x)
	}()
	if err := x.tree.Build(p.body, spec.R4().Typer()); err != nil {
		var je *fhirpath.JSONError
		if errors.As(err, &je) {
			return badRequest("The %s is not valid FHIR R4 JSON: %s (at byte %d).", p.typ, je.Msg, je.Offset)
		}
		return badRequest("The %s is not valid FHIR R4 JSON.", p.typ)
	}
	for _, re := range tp.mandatory {
		if !p.hasAny(re.names) {
			return errf(400, "required", "%s is required.", re.path)
		}
	}
	ex := extraction{x: x, tp: tp, rows: p.rows[:0]}
	// The atoms to evaluate: those that start from a member the resource
	// has, and those that cannot be told from their roots.
	x.todo = append(x.todo[:0], tp.always...)
	for _, m := range p.ms {
		if string(p.body[m.start:m.end]) != "[]" {
			x.todo = append(x.todo, tp.byRoot[m.key]...)
		}
	}
	slices.Sort(x.todo)
	for i, slot := range x.todo {
		if i > 0 && x.todo[i-1] == slot {
			continue
		}
		a := tp.atoms[slot]
		vals, err := x.ev.Eval(a.expr, &x.tree, 0)
		if err != nil {
			// Evaluable expressions fail only on data they cannot apply to
			// (a singleton expected, say): such a value is not indexed.
			continue
		}
		ex.a = a
		for _, v := range vals {
			if e := ex.value(v); e != nil {
				return e
			}
		}
	}
	p.rows = sortRows(ex.rows)
	return nil
}

// hasAny reports whether a top-level member with one of names has a value.
func (p *parsed) hasAny(names []string) bool {
	for _, n := range names {
		if raw := find(p.body, p.ms, n); !isNull(raw) && string(raw) != "[]" {
			return true
		}
	}
	return false
}

// bytesString returns b as a string sharing its memory: index values are
// taken from the resource's body, which does not change while its rows are
// in use (they are copied into SQLite before the request ends).
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// sortRows sorts rows in idx key order and drops duplicates.
func sortRows(rows []indexRow) []indexRow {
	slices.SortFunc(rows, compareRows)
	return slices.CompactFunc(rows, func(a, b indexRow) bool { return compareRows(a, b) == 0 })
}

// compareRows orders rows as idx's primary key does (rows of one k have
// one tag).
func compareRows(x, y indexRow) int {
	if c := cmp.Compare(x.k, y.k); c != 0 {
		return c
	}
	switch x.tag {
	case 'd':
		if c := cmp.Compare(x.lo, y.lo); c != 0 {
			return c
		}
		return cmp.Compare(x.hi, y.hi)
	case 'n':
		if c := cmp.Compare(x.f, y.f); c != 0 {
			return c
		}
	default:
		if c := strings.Compare(x.s1, y.s1); c != 0 {
			return c
		}
	}
	return strings.Compare(x.s2, y.s2)
}

// extraction is the state of one resource's extraction.
type extraction struct {
	x    *indexer
	tp   *typeParams
	a    *atom
	rows []indexRow
}

func (ex *extraction) add(sub int, a, b string) {
	if a == "" {
		return
	}
	ex.rows = append(ex.rows, indexRow{k: ex.tp.key(ex.a, sub), tag: 's', s1: a, s2: b})
}

func (ex *extraction) addString(sub int, v string) {
	if n := normalizeString(v); n != "" {
		ex.add(sub, n, v)
	}
}

func (ex *extraction) addDate(lo, hi int64) {
	ex.rows = append(ex.rows, indexRow{k: ex.tp.key(ex.a, subMain), tag: 'd', lo: lo, hi: hi})
}

func (ex *extraction) addNumber(f float64, b string) {
	ex.rows = append(ex.rows, indexRow{k: ex.tp.key(ex.a, subMain), tag: 'n', f: f, s2: b})
}

// invalid is the 400 for a value of the wrong shape at node n.
func (ex *extraction) invalid(n fhirpath.NodeID) *fhirError {
	return badRequest("%s has an invalid value.", jsonLocation(&ex.x.tree, n, ex.x.loc[:0]))
}

// value turns one value of the current parameter into rows.
func (ex *extraction) value(v fhirpath.Value) *fhirError {
	n := v.Node()
	if n < 0 {
		// A value computed by the expression (none of R4's do today).
		if s := v.String(); s != "" && (ex.a.kind == kindToken || ex.a.kind == kindURI) {
			ex.add(subMain, s, "")
		} else if s != "" && ex.a.kind == kindString {
			ex.addString(subMain, s)
		}
		return nil
	}
	return ex.node(n)
}

// node turns one node found by the current parameter into rows.
func (ex *extraction) node(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	node := t.Node(n)
	if node.Type == "Extension" {
		for c := t.FirstChild(n); c >= 0; c = t.NextSibling(c) {
			if t.Node(c).Name == "value" {
				return ex.node(c)
			}
		}
		return nil
	}
	if complexType(node.Type) && node.Kind != fhirpath.NoValue {
		return ex.invalid(n)
	}
	switch ex.a.kind {
	case kindToken:
		return ex.token(n)
	case kindString:
		return ex.str(n)
	case kindDate:
		return ex.date(n)
	case kindRef:
		return ex.reference(n)
	case kindQuantity:
		return ex.quantity(n)
	case kindNumber:
		if !primitiveType(node.Type) {
			return nil // Range and other types give no rows
		}
		s, ok, e := ex.prim(n)
		if e != nil || !ok {
			return e
		}
		if f, ok := indexNumber(s); ok && node.Kind == fhirpath.JSONNumber {
			ex.addNumber(f, "")
		}
	case kindURI:
		if !primitiveType(node.Type) {
			return nil
		}
		s, ok, e := ex.prim(n)
		if e != nil || !ok {
			return e
		}
		ex.add(subMain, s, "")
	}
	return nil
}

func (ex *extraction) token(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	switch t.Node(n).Type {
	case "Coding":
		return ex.coding(n)
	case "CodeableConcept":
		return ex.concept(n)
	case "Identifier":
		value, e := ex.child(n, "value")
		if e != nil {
			return e
		}
		system, e := ex.child(n, "system")
		if e != nil {
			return e
		}
		ex.add(subMain, value, system)
		typ := t.Child(n, "type", 0)
		if typ < 0 {
			return nil
		}
		if text, e := ex.child(typ, "text"); e != nil {
			return e
		} else if text != "" {
			ex.addString(subText, text)
		}
		for c := t.FirstChild(typ); c >= 0; c = t.NextSibling(c) {
			if t.Node(c).Name != "coding" {
				continue
			}
			code, e := ex.child(c, "code")
			if e != nil {
				return e
			}
			tsys, e := ex.child(c, "system")
			if e != nil {
				return e
			}
			if code != "" && value != "" {
				ex.add(subExtra, value, tsys+"|"+code)
			}
		}
	case "ContactPoint":
		value, e := ex.child(n, "value")
		if e != nil {
			return e
		}
		system, e := ex.child(n, "system")
		if e != nil {
			return e
		}
		ex.add(subMain, value, system)
	default:
		s, ok, e := ex.prim(n)
		if e != nil || !ok {
			return e
		}
		system := ""
		if node := t.Node(n); node.Type == "code" {
			if vs := ex.tp.required[node.Path]; vs != nil && !vs.HasCode(s) {
				return badRequest("%s has a code that is not in its required value set %s.", jsonLocation(t, n, ex.x.loc[:0]), vs.URL)
			}
			if vs := ex.tp.bindings[node.Path]; vs != nil {
				system = systemOf(vs, s)
			}
		}
		ex.add(subMain, s, system)
	}
	return nil
}

// systemOf returns the code system of code in value set vs ("" when the
// value set does not have it, or has it in several systems).
func systemOf(vs *spec.ValueSet, code string) string {
	i, ok := slices.BinarySearchFunc(vs.Codes, code, func(c spec.Code, code string) int { return strings.Compare(c.Code, code) })
	if !ok || i+1 < len(vs.Codes) && vs.Codes[i+1].Code == code {
		return ""
	}
	return vs.Codes[i].System
}

func (ex *extraction) coding(n fhirpath.NodeID) *fhirError {
	code, e := ex.child(n, "code")
	if e != nil {
		return e
	}
	system, e := ex.child(n, "system")
	if e != nil {
		return e
	}
	ex.add(subMain, code, system)
	display, e := ex.child(n, "display")
	if e != nil {
		return e
	}
	ex.addString(subText, display)
	return nil
}

func (ex *extraction) concept(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	for c := t.FirstChild(n); c >= 0; c = t.NextSibling(c) {
		switch t.Node(c).Name {
		case "coding":
			if t.Node(c).Kind != fhirpath.NoValue {
				return ex.invalid(c)
			}
			if e := ex.coding(c); e != nil {
				return e
			}
		case "text":
			if e := ex.primString(subText, c); e != nil {
				return e
			}
		}
	}
	return nil
}

func (ex *extraction) str(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	var parts []string
	switch t.Node(n).Type {
	case "HumanName":
		parts = []string{"family", "given", "prefix", "suffix", "text"}
	case "Address":
		parts = []string{"line", "city", "district", "state", "postalCode", "country", "text"}
	default:
		if !primitiveType(t.Node(n).Type) {
			return nil
		}
		return ex.primString(subMain, n)
	}
	for c := t.FirstChild(n); c >= 0; c = t.NextSibling(c) {
		if !slices.Contains(parts, t.Node(c).Name) {
			continue
		}
		if e := ex.primString(subMain, c); e != nil {
			return e
		}
	}
	return nil
}

// primString indexes the value of primitive node n as a string row of sub.
func (ex *extraction) primString(sub int, n fhirpath.NodeID) *fhirError {
	s, _, e := ex.prim(n)
	if e != nil {
		return e
	}
	ex.addString(sub, s)
	return nil
}

func (ex *extraction) date(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	switch t.Node(n).Type {
	case "date", "dateTime", "instant":
		lo, hi, ok, e := ex.dateRange(n)
		if e != nil || !ok {
			return e
		}
		ex.addDate(lo, hi)
	case "Period":
		lo, hi := int64(minDate), int64(maxDate)
		found := false
		if c := t.Child(n, "start", 0); c >= 0 {
			l, _, ok, e := ex.dateRange(c)
			if e != nil {
				return e
			}
			if ok {
				lo, found = l, true
			}
		}
		if c := t.Child(n, "end", 0); c >= 0 {
			_, h, ok, e := ex.dateRange(c)
			if e != nil {
				return e
			}
			if ok {
				hi, found = h, true
			}
		}
		if found {
			ex.addDate(lo, hi)
		}
	case "Timing":
		lo, hi := int64(maxDate), int64(minDate)
		widen := func(l, h int64) { lo, hi = min(lo, l), max(hi, h) }
		for c := t.FirstChild(n); c >= 0; c = t.NextSibling(c) {
			if t.Node(c).Name != "event" {
				continue
			}
			l, h, ok, e := ex.dateRange(c)
			if e != nil {
				return e
			}
			if ok {
				widen(l, h)
			}
		}
		if r := t.Child(n, "repeat", 0); r >= 0 {
			if b := t.Child(r, "bounds", 0); b >= 0 && t.Node(b).Type == "Period" {
				before := len(ex.rows)
				if e := ex.date(b); e != nil {
					return e
				}
				if len(ex.rows) > before {
					widen(ex.rows[before].lo, ex.rows[before].hi)
					ex.rows = ex.rows[:before]
				}
			}
		}
		if lo <= hi {
			ex.addDate(lo, hi)
		}
	}
	return nil
}

// dateRange parses a date, dateTime or instant node.
func (ex *extraction) dateRange(n fhirpath.NodeID) (lo, hi int64, ok bool, e *fhirError) {
	s, ok, e := ex.prim(n)
	if e != nil || !ok {
		return 0, 0, false, e
	}
	lo, hi, ok = parseDateRange(s)
	typ := ex.x.tree.Node(n).Type
	if !ok || typ == "date" && strings.Contains(s, "T") || typ == "instant" && !strings.Contains(s, "T") {
		return 0, 0, false, badRequest("%s is not a valid %s.", jsonLocation(&ex.x.tree, n, ex.x.loc[:0]), typ)
	}
	return lo, hi, true, nil
}

func (ex *extraction) reference(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	switch t.Node(n).Type {
	case "Reference":
		ref, e := ex.child(n, "reference")
		if e != nil {
			return e
		}
		declared, e := ex.child(n, "type")
		if e != nil {
			return e
		}
		if ref != "" && ref[0] != '#' {
			typ, id := splitReference(ref)
			if typ == "" && !strings.HasPrefix(ref, "urn:") && knownType(declared) && validID(id) {
				typ = declared
			}
			ex.add(subMain, id, typ)
		}
		if idn := t.Child(n, "identifier", 0); idn >= 0 {
			value, e := ex.child(idn, "value")
			if e != nil {
				return e
			}
			system, e := ex.child(idn, "system")
			if e != nil {
				return e
			}
			ex.add(subExtra, value, system)
		}
	case "canonical", "uri", "url", "oid", "uuid":
		s, ok, e := ex.prim(n)
		if e != nil || !ok {
			return e
		}
		if i := strings.IndexByte(s, '|'); i >= 0 { // canonical|version
			s = s[:i]
		}
		ex.add(subMain, s, "")
	}
	return nil
}

func (ex *extraction) quantity(n fhirpath.NodeID) *fhirError {
	t := &ex.x.tree
	typ := t.Node(n).Type
	if !isQuantity(typ) && typ != "Money" {
		return nil
	}
	vn := t.Child(n, "value", 0)
	if vn < 0 {
		return nil
	}
	if k := t.Node(vn).Kind; k != fhirpath.JSONNumber {
		if k == fhirpath.NoValue {
			return nil
		}
		return ex.invalid(vn)
	}
	f, ok := indexNumber(bytesString(t.Raw(vn)))
	if !ok {
		return ex.invalid(vn)
	}
	if typ == "Money" {
		cur, e := ex.child(n, "currency")
		if e != nil {
			return e
		}
		ex.addNumber(f, "urn:iso:std:iso:4217|"+cur)
		return nil
	}
	system, e := ex.child(n, "system")
	if e != nil {
		return e
	}
	code, e := ex.child(n, "code")
	if e != nil {
		return e
	}
	unit, e := ex.child(n, "unit")
	if e != nil {
		return e
	}
	ex.addNumber(f, system+"|"+code)
	if unit != "" && unit != code {
		ex.addNumber(f, "|"+unit)
	}
	return nil
}

// indexNumber is the float64 a JSON number is indexed as. FHIR decimals
// have no limit of digits or range: a number beyond float64's range is
// indexed as the largest (or smallest) float64, one too small as 0.
func indexNumber(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	var ne *strconv.NumError
	if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
		return max(min(f, math.MaxFloat64), -math.MaxFloat64), true
	}
	return f, err == nil
}

func isQuantity(t string) bool {
	switch t {
	case "Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity":
		return true
	}
	return false
}

// child returns the text of n's first child named name ("" when absent).
func (ex *extraction) child(n fhirpath.NodeID, name string) (string, *fhirError) {
	c := ex.x.tree.Child(n, name, 0)
	if c < 0 {
		return "", nil
	}
	s, _, e := ex.prim(c)
	return s, e
}

// prim returns the value of primitive node n as text, checking that its
// JSON kind fits its FHIR type. ok is false when it has no value (only an
// id or extensions).
func (ex *extraction) prim(n fhirpath.NodeID) (string, bool, *fhirError) {
	t := &ex.x.tree
	node := t.Node(n)
	switch node.Kind {
	case fhirpath.NoValue:
		if complexType(node.Type) && t.FirstChild(n) < 0 {
			return "", false, nil
		}
		if !primitiveType(node.Type) {
			return "", false, ex.invalid(n)
		}
		return "", false, nil
	case fhirpath.JSONString:
		if !stringType(node.Type) {
			return "", false, ex.invalid(n)
		}
		return bytesString(t.Raw(n)), true, nil
	case fhirpath.JSONEscaped:
		if !stringType(node.Type) {
			return "", false, ex.invalid(n)
		}
		var s string
		raw := t.Raw(n)
		q := make([]byte, 0, len(raw)+2)
		q = append(append(append(q, '"'), raw...), '"')
		if json.Unmarshal(q, &s) != nil {
			return "", false, ex.invalid(n)
		}
		return s, true, nil
	case fhirpath.JSONNumber:
		switch node.Type {
		case "integer", "positiveInt", "unsignedInt", "decimal", "integer64":
			return bytesString(t.Raw(n)), true, nil
		}
	case fhirpath.JSONBool:
		if node.Type == "boolean" {
			return bytesString(t.Raw(n)), true, nil
		}
	}
	return "", false, ex.invalid(n)
}

// primitiveType reports whether t is a FHIR primitive type (lower case).
func primitiveType(t string) bool { return t != "" && t[0] >= 'a' && t[0] <= 'z' }

// complexType reports whether t is a datatype, a backbone element or a
// resource (upper case).
func complexType(t string) bool { return t != "" && t[0] >= 'A' && t[0] <= 'Z' }

// stringType reports whether the primitive type t is written as a JSON string.
func stringType(t string) bool {
	switch t {
	case "boolean", "integer", "positiveInt", "unsignedInt", "decimal":
		return false
	}
	return primitiveType(t)
}

// jsonLocation names node n by its JSON path: Observation.component[1].valueQuantity.value.
func jsonLocation(t *fhirpath.Tree, n fhirpath.NodeID, dst []byte) string {
	var stack [64]fhirpath.NodeID
	depth := 0
	for c := n; c >= 0 && depth < len(stack); c = t.Parent(c) {
		stack[depth] = c
		depth++
	}
	for k := depth - 1; k >= 0; k-- {
		c := stack[k]
		node := t.Node(c)
		if t.Parent(c) < 0 {
			dst = append(dst, node.Type...)
			continue
		}
		dst = append(dst, '.')
		dst = append(dst, node.Name...)
		if node.Choice && node.Type != "" {
			dst = append(dst, strings.ToUpper(node.Type[:1])...)
			dst = append(dst, node.Type[1:]...)
		}
		idx, count := 0, 0
		for s := t.FirstChild(t.Parent(c)); s >= 0; s = t.NextSibling(s) {
			if t.Node(s).Name == node.Name {
				if s == c {
					idx = count
				}
				count++
			}
		}
		if count > 1 {
			dst = append(dst, '[')
			dst = strconv.AppendInt(dst, int64(idx), 10)
			dst = append(dst, ']')
		}
	}
	return string(dst)
}
