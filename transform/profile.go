package transform

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/registry"
)

// Declared profiles. A resource whose meta.profile names a profile we have (the core
// package's 48, or one of Options.ProfilePackages) is checked against it and against
// the profiles it derives from (bp → vitalsigns → Observation), element by element
// for the elements each profile constrains:
//   - cardinality (min, max), per occurrence of the parent element;
//   - types, when the profile narrows a choice (and Reference targets);
//   - fixed[x] values (equal, no other content) and pattern[x] values (the pattern's
//     content present; a repeating element matches when one of its items does);
//   - required bindings whose value set is fully known (codes, Codings,
//     CodeableConcepts and Quantity units);
//   - the profile's own invariants (vs-1, vs-2, vs-3 …), skipped when the engine
//     classifies them as needing terminology or other resources;
//   - slicing with value, pattern, type and exists discriminators (a path of element
//     names or $this): each slice's cardinality and its own constraints on the items
//     it matches, and closed slicing (no other items). Slices of an extension element
//     are told apart by url. Slicing with a profile discriminator, or a path with
//     functions (resolve(), extension(…)), is not checked (its base element is).
//
// A declared profile we do not have is listed in Resource.UnknownProfiles and is never
// by itself a reason to reject the line. Rejections name the profile's URL as the rule.

// profileDef is a compiled profile.
type profileDef struct {
	url  string
	rule string // the rule rejections name: the URL; "ext:" and the URL for an extension
	typ  string // the constrained type
	root *pElem
	base *profileDef // the profile it derives from; nil when that is the core type
	// skipped lists invariants the engine cannot evaluate over one resource.
	skipped []fhirpath.Skipped
}

// pElem is one element of a profile (or a slice of one), with the elements below it.
type pElem struct {
	id         string // element id, for messages
	name       string // element name ("value" for value[x]); "" for the root
	choice     bool
	typeSlice  string // a type slice of a choice (value[x]:valueQuantity): the type
	defined    bool   // the profile states this element (otherwise it is only a path to one)
	min, max   int
	types      []string
	targets    []string // Reference targets (resource types), nil for any
	fixed, pat any      // decoded JSON
	vs         *valueSetDef
	invs       []pInv
	slicing    *registry.Slicing
	slices     []*pElem
	kids       []*pElem
	extURL     string // a slice of an extension element: the extension's URL (type profile)
	tests      []sliceTest
	decidable  bool // a slice whose membership the discriminators decide (see prepareSlices)
}

type pInv struct {
	key, human string
	expr       *fhirpath.Expr
}

// compileProfile builds a profile's element tree. base is the compiled profile it
// derives from (nil for a core type); coreType is the core definition of its type.
func (d *definitions) compileProfile(p *registry.Profile, reg *registry.Registry) (*profileDef, error) {
	pd := &profileDef{url: p.URL, rule: p.URL, typ: p.Type, root: &pElem{id: p.Type, max: registry.Unbounded}}
	core := reg.Type(p.Type)
	for i := range p.Elements {
		e := &p.Elements[i]
		pe := pd.root
		segs := strings.Split(e.ID, ".")
		for _, s := range segs[1:] {
			name, slice, _ := strings.Cut(s, ":")
			pe = pe.child(name, slice)
		}
		pe.id = e.ID
		pe.defined = true
		pe.min, pe.max = e.Min, e.Max
		for _, tr := range e.Types {
			pe.types = append(pe.types, tr.Code)
			if tr.Code == "Reference" && len(tr.Targets) > 0 && !slices.Contains(tr.Targets, "Resource") {
				for _, target := range tr.Targets {
					if t := d.targetType(target, reg); t != "" {
						pe.targets = append(pe.targets, t)
					}
				}
			}
			if tr.Code == "Extension" && len(tr.Profiles) > 0 && pe.typeSlice == "" {
				pe.extURL = tr.Profiles[0]
			}
		}
		if pe.typeSlice != "" && len(pe.types) == 0 {
			pe.types = []string{pe.typeSlice}
		}
		var err error
		if e.Fixed != nil {
			if pe.fixed, err = decodeValue(e.Fixed.JSON); err != nil {
				return nil, err
			}
		}
		if e.Pattern != nil {
			if pe.pat, err = decodeValue(e.Pattern.JSON); err != nil {
				return nil, err
			}
		}
		if e.Binding.Strength == "required" && e.Binding.ValueSet != "" {
			pe.vs = d.valueSet(e.Binding.ValueSet, reg)
		}
		pe.slicing = e.Slicing
		for _, c := range e.Constraints {
			if c.Severity != "error" || c.Expression == "" || nativeRules[c.Key] || coreHas(core, e.Path, c.Key) {
				continue
			}
			x, err := fhirpath.Compile(c.Expression)
			if err != nil {
				return nil, err
			}
			if cl := x.Class(); cl.Class != fhirpath.Evaluable {
				pd.skipped = append(pd.skipped, fhirpath.Skipped{Invariant: fhirpath.Invariant{Key: c.Key, Severity: c.Severity, Context: e.Path, Expression: c.Expression}, Class: cl})
				continue
			}
			pe.invs = append(pe.invs, pInv{key: c.Key, human: c.Human, expr: x})
		}
	}
	pd.root.prepareSlices()
	return pd, nil
}

// child returns the element named name below pe (a slice of it when slice is set),
// adding it when the profile names it for the first time.
func (pe *pElem) child(name, slice string) *pElem {
	base := strings.TrimSuffix(name, "[x]")
	k := pe.kid(base)
	if k == nil {
		k = &pElem{id: pe.id + "." + name, name: base, choice: base != name, max: registry.Unbounded}
		pe.kids = append(pe.kids, k)
	}
	if slice == "" {
		return k
	}
	for _, s := range k.slices {
		if s.id == k.id+":"+slice {
			return s
		}
	}
	s := &pElem{id: k.id + ":" + slice, name: base, choice: k.choice, max: registry.Unbounded}
	if k.choice && strings.HasPrefix(slice, base) && len(slice) > len(base) {
		s.typeSlice = strings.ToLower(slice[len(base):len(base)+1]) + slice[len(base)+1:]
		if t := strings.ToUpper(slice[len(base) : len(base)+1]); registryHasType(t + slice[len(base)+1:]) {
			s.typeSlice = t + slice[len(base)+1:]
		}
	}
	k.slices = append(k.slices, s)
	return s
}

func registryHasType(name string) bool { return registry.R4().Type(name) != nil }

// coreHas reports whether the core definitions state invariant key on path, or on the
// root of one of the element's types (qty-3 on a Quantity): the core invariants
// evaluate it already.
func coreHas(core *registry.Type, path, key string) bool {
	if core == nil {
		return false
	}
	has := func(cs []registry.Constraint) bool {
		return slices.ContainsFunc(cs, func(c registry.Constraint) bool { return c.Key == key })
	}
	for i := range core.Elements {
		e := &core.Elements[i]
		if e.Path != path {
			continue
		}
		if has(e.Constraints) {
			return true
		}
		for _, tr := range e.Types {
			if t := registry.R4().Type(tr.Code); t != nil && len(t.Elements) > 0 && has(t.Elements[0].Constraints) {
				return true
			}
		}
		return false
	}
	return false
}

// targetType maps a Reference target (a type name, or the URL of a profile) to a
// resource type.
func (d *definitions) targetType(target string, reg *registry.Registry) string {
	if reg.IsResourceType(target) {
		return target
	}
	if p := d.profileSource(target, reg); p != nil {
		return p.Type
	}
	return ""
}

// decodeValue decodes a fixed or pattern value's JSON, numbers as json.Number.
func decodeValue(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// checkProfiles checks every resource of the line against the profiles its meta.profile
// declares, and lists the declared profiles it does not know.
func (v *validator) checkProfiles() bool {
	v.unknownProf = v.unknownProf[:0]
	t := &v.tree
	for i := 0; i < t.Len(); i++ {
		r := fhirpath.NodeID(i)
		if !t.Node(r).Resource {
			continue
		}
		meta := t.Child(r, "meta", 0)
		if meta < 0 {
			continue
		}
		for c := t.FirstChild(meta); c >= 0; c = t.NextSibling(c) {
			if t.Node(c).Name != "profile" {
				continue
			}
			url := v.nodeText(c)
			if k := bytes.IndexByte(url, '|'); k >= 0 {
				url = url[:k]
			}
			pd := v.defs.profiles[string(url)]
			if pd == nil {
				// The definition of a core type itself (…/StructureDefinition/Patient)
				// adds nothing to the base checks.
				if typ, ok := v.defs.coreTypes[string(url)]; ok {
					if typ != t.Node(r).Type {
						return v.ruleFail(string(url), c, string(url)+": the definition of "+typ+", not of "+t.Node(r).Type)
					}
					continue
				}
				v.unknownProf = v.addURL(v.unknownProf, url)
				continue
			}
			if pd.typ != t.Node(r).Type {
				return v.ruleFail(pd.url, c, pd.url+": the profile constrains "+pd.typ+", not "+t.Node(r).Type)
			}
			v.declared = pd
			for p := pd; p != nil; p = p.base {
				if !v.checkElems(p, p.root, r) {
					return false
				}
			}
		}
	}
	return true
}

// profFail records a violation of the declared profile v.declared, found by the
// definition of element id in profile pd (the declared one or one it derives from).
func (v *validator) profFail(pd *profileDef, n fhirpath.NodeID, id, what string) bool {
	decl := v.declared
	if decl == nil {
		decl = pd
	}
	msg := decl.rule + ": "
	if id != "" {
		msg += id + ": "
	}
	msg += what
	if pd != decl {
		msg += " (from " + pd.url + ")"
	}
	return v.ruleFail(decl.rule, n, msg)
}

// checkElems checks the element definitions below pe on data node parent (one
// occurrence of pe).
func (v *validator) checkElems(pd *profileDef, pe *pElem, parent fhirpath.NodeID) bool {
	if pe.name == "" && !v.checkItem(pd, pe, parent) {
		return false
	}
	for _, k := range pe.kids {
		mark := len(v.pnodes)
		for c := v.tree.FirstChild(parent); c >= 0; c = v.tree.NextSibling(c) {
			if v.tree.Node(c).Name == k.name {
				v.pnodes = append(v.pnodes, c)
			}
		}
		ok := v.checkItems(pd, k, parent, mark, len(v.pnodes))
		v.pnodes = v.pnodes[:mark]
		if !ok {
			return false
		}
	}
	return true
}

// checkItems checks the items v.pnodes[lo:hi] (children of parent) of element pe: their
// number, each item, and pe's slices.
func (v *validator) checkItems(pd *profileDef, pe *pElem, parent fhirpath.NodeID, lo, hi int) bool {
	n := hi - lo
	if pe.defined {
		if n < pe.min {
			return v.profFail(pd, parent, pe.id, "at least "+strconv.Itoa(pe.min)+" required, found "+strconv.Itoa(n))
		}
		if pe.max != registry.Unbounded && n > pe.max {
			return v.profFail(pd, v.pnodes[lo+pe.max], pe.id, "at most "+strconv.Itoa(pe.max)+" allowed, found "+strconv.Itoa(n))
		}
	}
	for i := lo; i < hi; i++ {
		if !v.checkItem(pd, pe, v.pnodes[i]) || !v.checkElems(pd, pe, v.pnodes[i]) {
			return false
		}
	}
	if len(pe.slices) == 0 || n == 0 && !slices.ContainsFunc(pe.slices, func(s *pElem) bool { return s.defined && s.min > 0 }) {
		return true
	}
	return v.checkSlices(pd, pe, parent, lo, hi)
}

// checkSlices sorts the items v.pnodes[lo:hi] of a sliced element into its slices (the
// first slice an item matches) and checks each slice on its items.
func (v *validator) checkSlices(pd *profileDef, pe *pElem, parent fhirpath.NodeID, lo, hi int) bool {
	for _, s := range pe.slices {
		mark := len(v.pnodes)
		for i := lo; i < hi; i++ {
			item := v.pnodes[i]
			in, known := v.inSlice(s, item)
			if !known {
				v.pnodes = v.pnodes[:mark]
				return true // a discriminator we cannot evaluate: slices not checked
			}
			if in && !v.earlierSlice(pe, s, item) {
				v.pnodes = append(v.pnodes, item)
			}
		}
		ok := v.checkItems(pd, s, parent, mark, len(v.pnodes))
		v.pnodes = v.pnodes[:mark]
		if !ok {
			return false
		}
	}
	if pe.slicing != nil && pe.slicing.Rules == "closed" {
		for i := lo; i < hi; i++ {
			item := v.pnodes[i]
			in := false
			for _, s := range pe.slices {
				if ok, _ := v.inSlice(s, item); ok {
					in = true
					break
				}
			}
			if !in {
				return v.profFail(pd, item, pe.id, "closed slicing, the item is in no slice")
			}
		}
	}
	return true
}

// earlierSlice reports whether item belongs to a slice of pe before s.
func (v *validator) earlierSlice(pe, s *pElem, item fhirpath.NodeID) bool {
	for _, e := range pe.slices {
		if e == s {
			return false
		}
		if in, _ := v.inSlice(e, item); in {
			return true
		}
	}
	return false
}

// sliceTest is one discriminator of a slicing, prepared for one slice: the test an
// item passes to belong to the slice.
type sliceTest struct {
	kind  string   // "value" (value and pattern), "type", "exists"
	path  []string // element names from the item
	exps  []expectation
	types []string
	want  bool // exists: whether the element must exist
}

// prepareSlices computes, once per profile, each slice's tests (sliceTests) and whether
// its membership can be decided at all.
func (pe *pElem) prepareSlices() {
	for _, k := range pe.kids {
		k.prepareSlices()
	}
	for _, s := range pe.slices {
		s.prepareSlices()
		s.decidable = s.typeSlice != "" || s.buildTests(pe)
	}
}

func (pe *pElem) buildTests(parent *pElem) bool {
	isExt := parent.name == "extension" || parent.name == "modifierExtension"
	if pe.extURL != "" && isExt && pe.fixedAt("url") == nil {
		// Slices of extensions are told apart by url: the slice's extension definition.
		pe.tests = []sliceTest{{kind: "value", path: []string{"url"}, exps: []expectation{{depth: 1, value: pe.extURL, exact: true}}}}
		return true
	}
	if parent.slicing == nil || len(parent.slicing.Discriminators) == 0 {
		return false
	}
	for _, d := range parent.slicing.Discriminators {
		path, ok := discriminatorPath(d.Path)
		if !ok {
			return false
		}
		t := sliceTest{path: path}
		switch d.Type {
		case "value", "pattern":
			t.kind = "value"
			t.exps = pe.expectations(path, 0, nil)
			if len(t.exps) == 0 {
				return false
			}
		case "type":
			t.kind = "type"
			if t.types = pe.typesAt(path); len(t.types) == 0 {
				return false
			}
		case "exists":
			e := pe.at(path)
			if e == nil || !e.defined || e.min == 0 && e.max != 0 {
				return false
			}
			t.kind, t.want = "exists", e.min > 0
		default:
			return false
		}
		pe.tests = append(pe.tests, t)
	}
	return true
}

// inSlice reports whether item belongs to slice s, and whether that can be decided.
func (v *validator) inSlice(s *pElem, item fhirpath.NodeID) (in, known bool) {
	if !s.decidable {
		return false, false
	}
	if s.typeSlice != "" {
		return v.tree.Node(item).Type == s.typeSlice, true
	}
	for i := range s.tests {
		t := &s.tests[i]
		switch t.kind {
		case "value":
			matched := false
			for k := range t.exps {
				if v.anyAt(item, t.path[:t.exps[k].depth], t, k) {
					matched = true
					break
				}
			}
			if !matched {
				return false, true
			}
		case "type":
			if !v.anyAt(item, t.path, t, -1) {
				return false, true
			}
		case "exists":
			if v.anyAt(item, t.path, t, -1) != t.want {
				return false, true
			}
		}
	}
	return true, true
}

// anyAt reports whether a node reached from item along path (names) passes test t: for
// "value", matches expectation k; for "type", has one of t.types; for "exists", is there.
func (v *validator) anyAt(item fhirpath.NodeID, path []string, t *sliceTest, k int) bool {
	if len(path) == 0 {
		switch t.kind {
		case "value":
			return v.matchValue(item, t.exps[k].value, t.exps[k].exact)
		case "type":
			return slices.Contains(t.types, v.tree.Node(item).Type)
		}
		return true
	}
	for c := v.tree.FirstChild(item); c >= 0; c = v.tree.NextSibling(c) {
		if v.tree.Node(c).Name == path[0] && v.anyAt(c, path[1:], t, k) {
			return true
		}
	}
	return false
}

// discriminatorPath splits a discriminator path made of element names ("code.coding",
// "url", "$this" → no names); ok is false for paths with functions.
func discriminatorPath(p string) ([]string, bool) {
	if p == "$this" {
		return nil, true
	}
	parts := strings.Split(strings.TrimPrefix(p, "$this."), ".")
	for _, s := range parts {
		if s == "" || strings.ContainsAny(s, "()[]'") {
			return nil, false
		}
	}
	return parts, true
}

// expectation is a fixed or pattern value a slice states at a depth of a
// discriminator path.
type expectation struct {
	depth int
	value any
	exact bool
}

// expectations collects the fixed and pattern values the slice states along path:
// the first one met on each branch (a pattern on an element covers the path below it).
func (pe *pElem) expectations(path []string, depth int, out []expectation) []expectation {
	switch {
	case pe.fixed != nil:
		return append(out, expectation{depth, pe.fixed, true})
	case pe.pat != nil:
		return append(out, expectation{depth, pe.pat, false})
	case depth == len(path):
		return out
	}
	for _, k := range pe.kids {
		if k.name != path[depth] {
			continue
		}
		out = k.expectations(path, depth+1, out)
		for _, s := range k.slices {
			out = s.expectations(path, depth+1, out)
		}
	}
	return out
}

// fixedAt returns the fixed value of the element at a one-name path, or nil.
func (pe *pElem) fixedAt(name string) any {
	for _, k := range pe.kids {
		if k.name == name {
			return k.fixed
		}
	}
	return nil
}

// kid returns pe's child element named name, or nil.
func (pe *pElem) kid(name string) *pElem {
	for _, k := range pe.kids {
		if k.name == name {
			return k
		}
	}
	return nil
}

// at returns the element at path below pe, or nil.
func (pe *pElem) at(path []string) *pElem {
	for _, name := range path {
		next := pe.kid(name)
		if next == nil {
			return nil
		}
		pe = next
	}
	return pe
}

// typesAt returns the types the slice allows at path.
func (pe *pElem) typesAt(path []string) []string {
	if e := pe.at(path); e != nil {
		return e.types
	}
	return nil
}

// checkItem checks one item of element pe: its type, fixed and pattern values,
// binding, reference target and invariants.
func (v *validator) checkItem(pd *profileDef, pe *pElem, id fhirpath.NodeID) bool {
	n := v.tree.Node(id)
	if pe.defined && len(pe.types) > 0 && pe.name != "" && !slices.Contains(pe.types, n.Type) && !(n.Resource && slices.Contains(pe.types, "Resource")) {
		return v.profFail(pd, id, pe.id, "type "+n.Type+" not allowed (allowed: "+strings.Join(pe.types, ", ")+")")
	}
	if pe.fixed != nil && !v.matchValue(id, pe.fixed, true) {
		return v.profFail(pd, id, pe.id, "not the fixed value the profile requires")
	}
	if pe.pat != nil && !v.matchValue(id, pe.pat, false) {
		return v.profFail(pd, id, pe.id, "does not match the profile's required pattern")
	}
	if pe.vs != nil && !pe.vs.external && !v.inValueSet(id, pe.vs) {
		return v.profFail(pd, id, pe.id, "code not in the required value set "+pe.vs.url)
	}
	if len(pe.targets) > 0 && n.Type == "Reference" {
		if ref := v.nodeText(v.tree.Child(id, "reference", 0)); ref != nil {
			if typ := referenceType(ref); typ != "" && !slices.Contains(pe.targets, typ) {
				return v.profFail(pd, id, pe.id, "reference to a resource type the profile does not allow (allowed: "+strings.Join(pe.targets, ", ")+")")
			}
		}
	}
	for _, inv := range pe.invs {
		res, err := v.ev.Test(inv.expr, &v.tree, id)
		if err != nil || res == fhirpath.False {
			msg := inv.key + ": " + inv.human
			if err != nil {
				msg += " (could not be evaluated on this data: " + err.Error() + ")"
			}
			return v.profFail(pd, id, "", msg)
		}
	}
	return true
}

// referenceType returns the resource type of a relative (Type/id) or absolute RESTful
// reference; "" when the text does not say (urn:, #id).
func referenceType(ref []byte) string {
	s := string(ref)
	if strings.HasPrefix(s, "#") || strings.HasPrefix(s, "urn:") {
		return ""
	}
	if i := strings.Index(s, "/_history/"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 {
		return ""
	}
	return parts[len(parts)-2]
}

// inValueSet reports whether a coded item (code, Coding, CodeableConcept, Quantity) has
// a code of the value set: a CodeableConcept needs one such Coding; a Quantity without
// a code, and items of types that carry no code, pass.
func (v *validator) inValueSet(id fhirpath.NodeID, vs *valueSetDef) bool {
	t := &v.tree
	switch n := t.Node(id); n.Type {
	case "code":
		return n.Kind == fhirpath.NoValue || vs.contains(v.nodeText(id))
	case "Coding", "Quantity":
		code := v.nodeText(t.Child(id, "code", 0))
		return code == nil && n.Type == "Quantity" || vs.containsPair(v.nodeText(t.Child(id, "system", 0)), code)
	case "CodeableConcept":
		for c := t.FirstChild(id); c >= 0; c = t.NextSibling(c) {
			if t.Node(c).Name == "coding" && v.inValueSet(c, vs) {
				return true
			}
		}
		return false
	}
	return true
}

// matchValue reports whether data node id matches a decoded fixed (exact) or pattern
// value.
func (v *validator) matchValue(id fhirpath.NodeID, want any, exact bool) bool {
	t := &v.tree
	switch w := want.(type) {
	case map[string]any:
		n := t.Node(id)
		if n.Kind != fhirpath.NoValue {
			return false
		}
		for key, wv := range w {
			mark := len(v.pnodes2)
			for c := t.FirstChild(id); c >= 0; c = t.NextSibling(c) {
				if jsonNameIs(t.Node(c), key) {
					v.pnodes2 = append(v.pnodes2, c)
				}
			}
			kids := v.pnodes2[mark:]
			ok := true
			switch wv := wv.(type) {
			case []any:
				if exact && len(kids) != len(wv) {
					ok = false
				}
				for _, item := range wv {
					if !ok {
						break
					}
					found := false
					for _, k := range kids {
						if v.matchValue(k, item, exact) {
							found = true
							break
						}
					}
					ok = found
				}
			default:
				ok = len(kids) == 1 && v.matchValue(kids[0], wv, exact)
			}
			v.pnodes2 = v.pnodes2[:mark]
			if !ok {
				return false
			}
		}
		if exact {
			for c := t.FirstChild(id); c >= 0; c = t.NextSibling(c) {
				found := false
				for key := range w {
					if jsonNameIs(t.Node(c), key) {
						found = true
						break
					}
				}
				if !found {
					return false
				}
			}
		}
		return true
	case string:
		k := t.Node(id).Kind
		return (k == fhirpath.JSONString || k == fhirpath.JSONEscaped) && string(v.nodeText(id)) == w
	case json.Number:
		if t.Node(id).Kind != fhirpath.JSONNumber {
			return false
		}
		a, err1 := strconv.ParseFloat(string(t.Raw(id)), 64)
		b, err2 := strconv.ParseFloat(string(w), 64)
		return err1 == nil && err2 == nil && a == b
	case bool:
		return t.Node(id).Kind == fhirpath.JSONBool && string(t.Raw(id)) == strconv.FormatBool(w)
	}
	return false
}

// jsonNameIs reports whether node n is written under the JSON property key (valueQuantity
// for the choice element value of type Quantity).
func jsonNameIs(n *fhirpath.Node, key string) bool {
	if !n.Choice {
		return n.Name == key
	}
	return len(key) == len(n.Name)+len(n.Type) && strings.HasPrefix(key, n.Name) && len(n.Type) > 0 &&
		key[len(n.Name)] == upper(n.Type[0]) && key[len(n.Name)+1:] == n.Type[1:]
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// addURL adds a URL to a list of the line's URLs, once, as an interned string.
func (v *validator) addURL(list []string, url []byte) []string {
	for _, u := range list {
		if u == string(url) {
			return list
		}
	}
	s, ok := v.urls[string(url)]
	if !ok {
		s = safeURL(url)
		if v.urls == nil {
			v.urls = map[string]string{}
		}
		if len(v.urls) < maxUnknownURLs {
			v.urls[s] = s
		}
	}
	return append(list, s)
}
