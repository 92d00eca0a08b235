package fhirpath

import (
	"regexp"
	"strings"
)

// Expr is a compiled expression: immutable, safe to evaluate from many goroutines at once
// (each with its own Evaluator).
type Expr struct {
	src   string
	root  *node
	class Classification
}

// String returns the expression's source text.
func (x *Expr) String() string { return x.src }

// Class returns what evaluating the expression needs (see Classify).
func (x *Expr) Class() Classification { return x.class }

// Class says whether an expression can be evaluated over a single resource.
type Class uint8

// Classes, from the most to the least evaluable.
const (
	Evaluable        Class = iota // everything it uses is implemented over one resource
	NeedsNarrative                // uses htmlChecks(): evaluable when Env.HTMLChecks is set
	NeedsResolution               // resolve() whose target's content matters: needs other resources
	NeedsTerminology              // memberOf(): needs a terminology service
	Unsupported                   // uses a function this engine does not implement
	Invalid                       // does not parse
)

var classNames = [...]string{"evaluable", "needs-narrative", "needs-resolution", "needs-terminology", "unsupported", "invalid"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Classification is the result of Classify.
type Classification struct {
	Class    Class
	Function string // the function that decided the class ("memberOf", "resolve", an unknown name)
	Reason   string // for Invalid: the syntax error
}

// Compile parses and checks an expression once for many evaluations. Unknown functions
// and wrong argument counts are errors (*SyntaxError); functions that need something
// outside one resource compile, and Expr.Class says what they need.
func Compile(src string) (*Expr, error) {
	root, err := parse(src)
	if err != nil {
		return nil, err
	}
	x := &Expr{src: src, root: root}
	if err := x.check(root); err != nil {
		return nil, err
	}
	x.class = classify(root)
	x.root = fuse(root)
	hoist(x.root, false)
	return x, nil
}

// hoist marks (node.memo) the largest subexpressions of lambda arguments (the criteria
// of where, select, all, exists, repeat …, evaluated once per item) that do not depend
// on the item: the evaluator computes them once per evaluation instead of once per
// item. dom-3 is the case in point: `contained.where('#'+id in (%resource.descendants()
// .reference | …))` would otherwise walk the whole resource for every contained one.
func hoist(n *node, inLambda bool) {
	if n == nil {
		return
	}
	if inLambda && focusFree(n) {
		switch n.op {
		case opLiteral, opEmpty, opVar:
		default:
			n.memo = true
		}
		return
	}
	for i, a := range n.a {
		hoist(a, inLambda || n.op == opFunc && i > 0 && lambdaArg(n.fn.id, i))
	}
}

// lambdaArg reports whether argument i of a function is evaluated once per input item.
func lambdaArg(id fnID, i int) bool {
	switch id {
	case fnWhere, fnSelect, fnAll, fnExists, fnRepeat, fnAggregate:
		return i == 1
	case fnTrace:
		return i == 2
	}
	return false
}

// focusFree reports whether n's value depends neither on the focus nor on $this,
// $index or $total, only on the tree, the evaluation's context and constants.
func focusFree(n *node) bool {
	switch n.op {
	case opLiteral, opEmpty, opVar:
		return true
	case opThis, opIndex, opTotal:
		return false
	case opMember, opPathAgg, opDescend:
		return n.a[0] != nil && focusFree(n.a[0])
	case opFunc:
		if n.a[0] == nil || n.fn.id == fnTrace || !focusFree(n.a[0]) {
			return false
		}
		if n.fn.args == argType {
			return true // its argument is a type name (n.typ), not an expression
		}
		for i, a := range n.a[1:] {
			if a == nil {
				continue
			}
			if lambdaArg(n.fn.id, i+1) {
				// Its $this and $index are its own items; only $total reaches out.
				if usesTotal(a) {
					return false
				}
			} else if !focusFree(a) {
				return false
			}
		}
		return true
	}
	for _, a := range n.a {
		if a != nil && !focusFree(a) {
			return false
		}
	}
	return true
}

func usesTotal(n *node) bool {
	if n == nil {
		return false
	}
	if n.op == opTotal {
		return true
	}
	for _, a := range n.a {
		if usesTotal(a) {
			return true
		}
	}
	return false
}

// fuse rewrites X.name.count(), .exists() and .empty() (and the same on children()) into
// one step that counts without collecting the children: the commonest shape of FHIR's
// invariants (ele-1, obs-6, dom-2…).
func fuse(n *node) *node {
	if n == nil {
		return nil
	}
	for i, a := range n.a {
		n.a[i] = fuse(a)
	}
	// X.descendants().name and X.descendants().as(T) / ofType(T) walk X's subtree once,
	// keeping what they need, instead of collecting every descendant first (dom-3 does
	// it four times over the whole resource).
	if d := n.a; len(d) > 0 && d[0] != nil && d[0].op == opFunc && d[0].fn.id == fnDescendants && len(d[0].a) == 1 {
		switch {
		case n.op == opMember:
			return &node{op: opDescend, pos: n.pos, name: n.name, a: []*node{d[0].a[0]}}
		case n.op == opFunc && (n.fn.id == fnAs || n.fn.id == fnOfType):
			return &node{op: opDescend, pos: n.pos, typ: n.typ, a: []*node{d[0].a[0]}}
		}
	}
	if n.op != opFunc || len(n.a) != 1 || n.a[0] == nil {
		return n
	}
	switch n.fn.id {
	case fnCount, fnExists, fnEmpty:
	default:
		return n
	}
	t := n.a[0]
	switch {
	case t.op == opMember && !(t.a[0] == nil && t.name[0] >= 'A' && t.name[0] <= 'Z'):
		return &node{op: opPathAgg, pos: n.pos, name: t.name, fn: n.fn, a: []*node{t.a[0]}}
	case t.op == opFunc && t.fn.id == fnChildren && len(t.a) == 1:
		return &node{op: opPathAgg, pos: n.pos, fn: n.fn, a: []*node{t.a[0]}}
	}
	return n
}

// MustCompile is Compile for expressions known to be valid; it panics on an error.
func MustCompile(src string) *Expr {
	x, err := Compile(src)
	if err != nil {
		panic(err)
	}
	return x
}

// Classify tells whether an expression can be evaluated over one resource, and if not,
// what it needs: a narrative hook (htmlChecks), resolution of references to other
// resources (resolve() used for more than the target's type), terminology (memberOf),
// an unsupported function (named), or whether it does not parse.
//
// resolve() is evaluable when only the type of its result is used (is, as, ofType,
// exists, empty, count, and where() criteria built from them): the type comes from the
// reference text (Patient/1, http://…/Patient/1, a local #id, or urn:uuid: through
// Env.ResolveURN).
func Classify(src string) Classification {
	root, err := parse(src)
	if err != nil {
		return Classification{Class: Invalid, Reason: err.Error()}
	}
	x := &Expr{src: src, root: root}
	if err := x.check(root); err != nil {
		var fn string
		if se, ok := err.(*unknownFunc); ok {
			fn = se.name
			return Classification{Class: Unsupported, Function: fn, Reason: "unknown function " + fn}
		}
		return Classification{Class: Invalid, Reason: err.Error()}
	}
	return classify(root)
}

type unknownFunc struct {
	SyntaxError
	name string
}

func (x *Expr) check(n *node) error {
	if n == nil {
		return nil
	}
	if n.op == opVar {
		switch n.name {
		case "context", "resource", "rootResource":
		default:
			if _, ok := builtinVar(n.name); !ok {
				return errorAt(n.pos, "unknown variable %"+n.name)
			}
		}
	}
	if n.op == opFunc {
		fd := funcs[n.name]
		if fd == nil {
			return &unknownFunc{SyntaxError: SyntaxError{Pos: n.pos, Msg: "unknown function " + n.name}, name: n.name}
		}
		n.fn = fd
		argc := len(n.a) - 1
		if argc < fd.min || argc > fd.max {
			return errorAt(n.pos, "wrong number of arguments to "+n.name)
		}
		if fd.args == argType {
			ts, ok := typeArg(n.a[1])
			if !ok {
				return errorAt(n.a[1].pos, n.name+" takes a type name")
			}
			n.typ = ts
			return x.check(n.a[0])
		}
		if fd.id == fnMatches || fd.id == fnReplaceMatches {
			if lit := n.a[1]; lit.op == opLiteral && lit.lit.kind == KindString {
				re, err := compileRegex(lit.lit.str)
				if err != nil {
					return errorAt(lit.pos, "invalid regular expression")
				}
				n.re = re
			}
		}
	}
	for _, a := range n.a {
		if err := x.check(a); err != nil {
			return err
		}
	}
	return nil
}

// compileRegex compiles a FHIRPath regular expression: RE2 syntax, single-line mode ('.'
// matches a newline).
func compileRegex(p string) (*regexp.Regexp, error) { return regexp.Compile("(?s)" + p) }

// typeArg reads a type name argument: Quantity, FHIR.Patient, `System`.String.
func typeArg(n *node) (typeSpec, bool) {
	if n.op != opMember {
		return typeSpec{}, false
	}
	if n.a[0] == nil {
		return newTypeSpec(n.name), true
	}
	if t := n.a[0]; t.op == opMember && t.a[0] == nil && (t.name == "FHIR" || t.name == "System") {
		return newTypeSpec(t.name + "." + n.name), true
	}
	return typeSpec{}, false
}

// classify returns the least evaluable class among the expression's functions.
func classify(root *node) Classification {
	best := Classification{Class: Evaluable}
	var walk func(n, parent *node)
	walk = func(n, parent *node) {
		if n == nil {
			return
		}
		if n.op == opFunc && n.fn != nil {
			c := n.fn.class
			if n.fn.id == fnResolve && typeOnlyUse(root, n) {
				c = Evaluable
			}
			if c > best.Class {
				best = Classification{Class: c, Function: n.fn.name}
			}
		}
		for _, a := range n.a {
			walk(a, n)
		}
	}
	walk(root, nil)
	return best
}

// typeOnlyUse reports whether the result of the resolve() call r is used only for its
// type: as the operand of is/as (whose result is then tested only for existence or
// type), or through ofType/is/as/exists/empty/count invocations.
func typeOnlyUse(root, r *node) bool {
	parent := parentOf(root, r)
	for cur := r; ; {
		if parent == nil {
			return false
		}
		switch {
		case parent.op == opIs && parent.a[0] == cur:
			return true
		case parent.op == opFunc && parent.a[0] == cur && parent.fn != nil:
			switch parent.fn.id {
			case fnIs, fnExists, fnEmpty, fnCount:
				return len(parent.a) == 1 || parent.fn.id == fnIs
			case fnOfType, fnAs:
				cur, parent = parent, parentOf(root, parent)
				continue
			}
			return false
		case parent.op == opAs && parent.a[0] == cur:
			cur, parent = parent, parentOf(root, parent)
			continue
		}
		return false
	}
}

func parentOf(root, n *node) *node {
	var found *node
	var walk func(p *node)
	walk = func(p *node) {
		if p == nil || found != nil {
			return
		}
		for _, a := range p.a {
			if a == n {
				found = p
				return
			}
			walk(a)
		}
	}
	walk(root)
	return found
}

// builtinVar returns the FHIR-defined environment constants.
func builtinVar(name string) (string, bool) {
	switch name {
	case "ucum":
		return "http://unitsofmeasure.org", true
	case "sct":
		return "http://snomed.info/sct", true
	case "loinc":
		return "http://loinc.org", true
	}
	if rest, ok := strings.CutPrefix(name, "vs-"); ok {
		return "http://hl7.org/fhir/ValueSet/" + rest, true
	}
	if rest, ok := strings.CutPrefix(name, "ext-"); ok {
		return "http://hl7.org/fhir/StructureDefinition/" + rest, true
	}
	return "", false
}
