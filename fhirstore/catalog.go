package fhirstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/fhirload/fhirload/internal/fhirpath"
	spec "github.com/fhirload/fhirload/registry"
)

// The search catalog: for every resource type, the search parameters of the
// R4 core package (registry), how each is indexed, and why a parameter that
// cannot be searched is not. It is built once per process from the registry
// and is the single source of the index layout, the search compiler and the
// CapabilityStatement: adding a SearchParameter to the registry's data adds
// it here, with no code.
//
// The index stores "atoms": the distinct parts of the parameters'
// expressions. A parameter's expression for the type (the part of it
// SearchParam.ExpressionFor gives) is split at its top-level unions, and a
// part "X.where(resolve() is T)" is X with a target T. Each distinct part
// (kind and expression) is compiled once and evaluated on every resource
// written; its values are index rows of its own. A parameter is answered
// from the rows of its parts (those that point at T only, for a targeted
// part): Observation's patient is the rows of Observation.subject that
// point at a Patient, the same rows that answer subject; combo-code is the
// rows of Observation.code and of Observation.component.code, which answer
// code and component-code. So no value is indexed twice.

type paramKind uint8

const (
	kindToken paramKind = iota + 1
	kindString
	kindDate
	kindRef
	kindQuantity
	kindNumber
	kindURI
	kindID          // _id: resources.id
	kindLastUpdated // _lastUpdated: resources.updated
)

var kindNames = map[string]paramKind{
	"token": kindToken, "string": kindString, "date": kindDate, "reference": kindRef,
	"quantity": kindQuantity, "number": kindNumber, "uri": kindURI,
}

func (k paramKind) String() string {
	switch k {
	case kindID:
		return "token"
	case kindLastUpdated:
		return "date"
	}
	for n, v := range kindNames {
		if v == k {
			return n
		}
	}
	return "unknown"
}

// Sub-keys of a stored parameter: its values, and the rows of the
// modifiers that need values of their own.
const (
	subMain   = 0 // token (code, system); string (normalised, as sent); reference (id, type); date (lo, hi); quantity/number (value, system|code)
	subText   = 1 // token :text: the CodeableConcept's text and its codings' displays (normalised, as sent)
	subExtra  = 2 // token :of-type (value, type system|code); reference :identifier (value, system)
	subsPerSP = 4
)

// param is one search parameter of a type.
type param struct {
	code   string
	kind   paramKind
	def    *spec.SearchParam // nil for _id and _lastUpdated
	src    string            // the expression for the type
	parts  []paramPart       // where its rows are
	reason string            // why it cannot be searched; "" when it can
}

// atom is a part of parameter expressions whose values the index stores.
type atom struct {
	kind paramKind
	src  string // the part's expression, without its resolve() filter
	expr *fhirpath.Expr
	slot int // position among the type's atoms: its keys
	// roots are the top-level JSON members the expression starts from
	// (valueQuantity, valueCodeableConcept, … for Observation.value as
	// Quantity); when the resource has none of them the expression finds
	// nothing, so it is not evaluated. nil when that cannot be said.
	roots []string
	// name names the atom in tests and diagnostics: the code of the first
	// parameter that uses it.
	name string
}

// paramPart is an atom whose rows (only those that point at target, when
// set) answer for a parameter.
type paramPart struct {
	atom   *atom
	target string
}

// supported reports whether the parameter can be searched.
func (p *param) supported() bool { return p.reason == "" }

// targets returns the resource types a reference parameter may point at.
func (p *param) targets() []string {
	if p.def == nil {
		return nil
	}
	var out []string
	for _, part := range p.parts {
		if part.target != "" {
			out = append(out, part.target)
		}
	}
	if len(out) > 0 {
		return out
	}
	return p.def.Targets
}

// typeParams is the catalog of one resource type.
type typeParams struct {
	typ    string
	idx    int // position in resourceTypes
	byCode map[string]*param
	atoms  []*atom // by slot
	// byRoot lists, by top-level JSON member, the slots of the atoms that
	// start from it; always those that cannot be told from their roots.
	byRoot    map[string][]int
	always    []int
	codes     []string // every parameter, sorted
	mandatory []requiredElement
	// bindings maps the paths of the type's coded elements to their value
	// set (for the system of a token stored from a bare code); required
	// those whose binding is required and whose value set is complete: a
	// code outside it is refused.
	bindings, required map[string]*spec.ValueSet
	// ident is the key of the identifier parameter's rows (the
	// duplicate-identifier rule); -1 when the type has none.
	ident int64
}

// requiredElement is a top-level element with minimum cardinality 1: its
// JSON names (a choice has several).
type requiredElement struct {
	path  string
	names []string
}

// key is the idx.k of an atom's sub-key.
func (tp *typeParams) key(a *atom, sub int) int64 {
	return int64(tp.idx)<<16 | int64(a.slot*subsPerSP+sub)
}

// catalog is the search catalog of every type.
type catalog struct {
	types       map[string]*typeParams
	fingerprint string
	// common are the parameters every type has (those of Resource), for
	// searches across types.
	common []string
}

// searchCatalog returns the catalog, built on first use.
var searchCatalog = sync.OnceValue(func() *catalog { return buildCatalog(spec.R4()) })

// extractorVersion changes whenever what the index holds for a value
// changes (normalisation, row layout): a data folder indexed with another
// version is reindexed when opened.
const extractorVersion = "3"

func buildCatalog(r *spec.Registry) *catalog {
	c := &catalog{types: map[string]*typeParams{}}
	h := sha256.New()
	fmt.Fprintf(h, "extractor %s\n", extractorVersion)
	for i, typ := range resourceTypes {
		tp := buildType(r, typ, i)
		c.types[typ] = tp
		for _, a := range tp.atoms {
			fmt.Fprintf(h, "%s %d %s %s\n", typ, a.slot, a.kind, a.src)
		}
	}
	c.fingerprint = hex.EncodeToString(h.Sum(nil))
	for _, sp := range r.SearchParams("Resource") {
		if p := c.types["Patient"].byCode[sp.Code]; p != nil && p.supported() {
			c.common = append(c.common, sp.Code)
		}
	}
	return c
}

func buildType(r *spec.Registry, typ string, idx int) *typeParams {
	tp := &typeParams{typ: typ, idx: idx, byCode: map[string]*param{}, bindings: map[string]*spec.ValueSet{}}
	var candidates []*param
	for _, def := range r.SearchParams(typ) {
		p := &param{code: def.Code, def: def, src: def.ExpressionFor(typ)}
		tp.byCode[def.Code] = p
		tp.codes = append(tp.codes, def.Code)
		switch def.Code {
		case "_id":
			p.kind = kindID
			continue
		case "_lastUpdated":
			p.kind = kindLastUpdated
			continue
		}
		kind, ok := kindNames[def.Type]
		switch {
		case def.Type == "composite":
			p.reason = "composite parameters are not supported"
		case def.Type == "special":
			p.reason = "special parameters are not supported"
		case !ok:
			p.reason = "parameters of type " + def.Type + " are not supported"
		case p.src == "":
			p.reason = "the specification gives it no expression"
		case def.XPathUsage == "phonetic":
			p.reason = "phonetic matching is not supported"
		case def.XPathUsage == "nearby" || def.XPathUsage == "distance":
			p.reason = "geographic search is not supported"
		}
		p.kind = kind
		if p.reason != "" {
			continue
		}
		cl := fhirpath.Classify(p.src)
		if cl.Class != fhirpath.Evaluable {
			p.reason = "its expression needs " + cl.Class.String()
			continue
		}
		candidates = append(candidates, p)
	}
	slices.Sort(tp.codes)
	atoms := map[string]*atom{}
	for _, p := range candidates {
		for _, part := range spec.SplitUnion(p.src) {
			base, target := resolveFilter(stripParens(part))
			key := p.kind.String() + " " + base
			a := atoms[key]
			if a == nil {
				x, err := fhirpath.Compile(base)
				if err != nil {
					// Classify parsed the whole: a part that does not compile
					// alone is evaluated whole, as its own atom.
					base, target, key = p.src, "", p.kind.String()+" "+p.src
					if a = atoms[key]; a == nil {
						x = fhirpath.MustCompile(p.src)
					}
				}
				if a == nil {
					a = &atom{kind: p.kind, src: base, expr: x, slot: len(tp.atoms), name: p.code}
					a.roots = atomRoots(r, typ, base, x)
					atoms[key] = a
					tp.atoms = append(tp.atoms, a)
				}
			}
			p.parts = append(p.parts, paramPart{atom: a, target: target})
			if target == "" && a.src == p.src {
				break // evaluated whole
			}
		}
	}
	tp.byRoot = map[string][]int{}
	for _, a := range tp.atoms {
		if a.roots == nil {
			tp.always = append(tp.always, a.slot)
		}
		for _, root := range a.roots {
			tp.byRoot[root] = append(tp.byRoot[root], a.slot)
		}
	}
	tp.mandatory, tp.bindings, tp.required = elementFacts(r, typ)
	tp.ident = -1
	if p := tp.byCode["identifier"]; p != nil && p.kind == kindToken && len(p.parts) == 1 && p.parts[0].target == "" {
		tp.ident = tp.key(p.parts[0].atom, subMain)
	}
	return tp
}

// atomRoots returns the JSON names of the top-level elements an atom's
// expression starts from, when its result is empty without them: the
// expression is a path from the resource (navigation, as, ofType, where,
// extension()), not a computation that finds something in nothing.
func atomRoots(r *spec.Registry, typ, src string, x *fhirpath.Expr) []string {
	for _, op := range []string{"exists(", "empty(", "count(", "not(", "iif(", " and ", " or ", " implies ", "=", "%", "+", "'"} {
		if strings.Contains(src, op) && op != "'" || op == "'" && strings.Contains(src, "'") && !strings.Contains(src, ".extension('") {
			return nil
		}
	}
	e := stripParens(src)
	for _, prefix := range []string{typ + ".", "Resource.", "DomainResource."} {
		if rest, ok := strings.CutPrefix(e, prefix); ok {
			e = rest
			break
		}
	}
	i := 0
	for i < len(e) && (e[i] >= 'a' && e[i] <= 'z' || e[i] >= 'A' && e[i] <= 'Z' || e[i] >= '0' && e[i] <= '9') {
		i++
	}
	if i == 0 || i < len(e) && e[i] != '.' && e[i] != ' ' && e[i] != ')' && e[i] != '(' {
		return nil
	}
	root := e[:i]
	if i < len(e) && e[i] == '(' { // a function of the resource itself
		return nil
	}
	t := r.Type(typ)
	if t == nil {
		return nil
	}
	var names []string
	for j := range t.Elements {
		el := &t.Elements[j]
		if el.Path == typ+"."+root {
			return []string{root}
		}
		if el.Path == typ+"."+root+"[x]" {
			for _, tr := range el.Types {
				names = append(names, el.JSONName(tr.Code))
			}
			return names
		}
	}
	return nil
}

// elementFacts lists the required top-level elements of typ and the code
// elements bound to a value set (any strength: the value set gives a bare
// code its system).
func elementFacts(r *spec.Registry, typ string) ([]requiredElement, map[string]*spec.ValueSet, map[string]*spec.ValueSet) {
	t := r.Type(typ)
	bindings, required := map[string]*spec.ValueSet{}, map[string]*spec.ValueSet{}
	var req []requiredElement
	if t == nil {
		return nil, bindings, required
	}
	for i := range t.Elements {
		e := &t.Elements[i]
		if e.Binding.ValueSet != "" {
			if vs := r.ValueSet(e.Binding.ValueSet); vs != nil {
				bindings[e.Path] = vs
				if e.Binding.Strength == "required" && vs.Complete {
					required[e.Path] = vs
				}
			}
		}
		if strings.Count(e.Path, ".") != 1 || e.Min < 1 {
			continue
		}
		re := requiredElement{path: e.Path}
		for _, tr := range e.Types {
			re.names = append(re.names, e.JSONName(tr.Code))
		}
		if len(re.names) == 0 {
			re.names = []string{e.Name()}
		}
		req = append(req, re)
	}
	return req, bindings, required
}

// stripParens removes parentheses around a whole expression.
func stripParens(e string) string {
	for len(e) >= 2 && e[0] == '(' && e[len(e)-1] == ')' {
		depth := 0
		whole := true
		for i := 0; i < len(e)-1; i++ {
			switch e[i] {
			case '(':
				depth++
			case ')':
				depth--
			}
			if depth == 0 {
				whole = false
				break
			}
		}
		if !whole {
			break
		}
		e = strings.TrimSpace(e[1 : len(e)-1])
	}
	return e
}

// resolveFilter splits "X.where(resolve() is T)" into X and T; other
// expressions are returned whole with no target.
func resolveFilter(e string) (base, target string) {
	const pre, post = ".where(resolve() is ", ")"
	i := strings.LastIndex(e, pre)
	if i < 0 || !strings.HasSuffix(e, post) {
		return e, ""
	}
	t := e[i+len(pre) : len(e)-len(post)]
	if !knownType(t) {
		return e, ""
	}
	return e[:i], t
}
