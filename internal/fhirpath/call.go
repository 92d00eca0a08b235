package fhirpath

import (
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// call evaluates a function invocation.
func (e *Evaluator) call(x *node, lo, hi int, it *iter) error {
	s := len(e.buf)
	inLo, inHi := lo, hi
	if x.a[0] != nil {
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return err
		}
		inLo, inHi = s, len(e.buf)
	}
	out := len(e.buf)
	if err := e.fn(x, lo, hi, it, inLo, inHi); err != nil {
		return err
	}
	e.collapse(s, out)
	return nil
}

// arg evaluates argument i (1-based) with the invocation's focus and returns its range.
func (e *Evaluator) arg(x *node, i, lo, hi int, it *iter) (int, int, error) {
	s := len(e.buf)
	if err := e.eval(x.a[i], lo, hi, it); err != nil {
		return 0, 0, err
	}
	return s, len(e.buf), nil
}

// argSingle evaluates argument i to at most one System value.
func (e *Evaluator) argSingle(x *node, i, lo, hi int, it *iter) (Value, bool, error) {
	s, _, err := e.arg(x, i, lo, hi, it)
	if err != nil {
		return Value{}, false, err
	}
	v, ok, err := e.single(x, s)
	e.buf = e.buf[:s]
	return e.sys(v), ok, err
}

func (e *Evaluator) argString(x *node, i, lo, hi int, it *iter) (string, bool, error) {
	v, ok, err := e.argSingle(x, i, lo, hi, it)
	if err != nil || !ok {
		return "", false, err
	}
	if v.kind != KindString {
		return "", false, evalErr(x, x.name+" takes a string argument")
	}
	return v.str, true, nil
}

func (e *Evaluator) argInt(x *node, i, lo, hi int, it *iter) (int64, bool, error) {
	v, ok, err := e.argSingle(x, i, lo, hi, it)
	if err != nil || !ok {
		return 0, false, err
	}
	if v.kind != KindInteger {
		return 0, false, evalErr(x, x.name+" takes an integer argument")
	}
	return v.num, true, nil
}

// input returns the single System value of the input (ok=false if empty).
func (e *Evaluator) input(x *node, inLo, inHi int) (Value, bool, error) {
	switch inHi - inLo {
	case 0:
		return Value{}, false, nil
	case 1:
		return e.sys(e.buf[inLo]), true, nil
	}
	return Value{}, false, evalErr(x, x.name+"() expects a single value, got a collection")
}

// inputString returns the input as a string: Strings, and FHIR primitives by their text.
func (e *Evaluator) inputString(x *node, inLo, inHi int) (string, bool, error) {
	v, ok, err := e.input(x, inLo, inHi)
	if err != nil || !ok {
		return "", false, err
	}
	if v.kind == KindString {
		return v.str, true, nil
	}
	if v.kind == KindNode {
		if n := &e.t.nodes[v.n]; n.Kind == NoValue && isPrimitiveType(n.Type) {
			// A primitive with only an id or extensions (a data-absent-reason) has no
			// value: the function's input is empty, as for a missing element.
			return "", false, nil
		}
		return "", false, evalErr(x, x.name+"() expects a string")
	}
	return v.String(), true, nil
}

// isPrimitiveType reports whether a FHIR type name is a primitive (lower case: string,
// code, dateTime …).
func isPrimitiveType(t string) bool { return t != "" && t[0] >= 'a' && t[0] <= 'z' }

// lambda evaluates x.a[1] for item i of the input, with $this and $index, and returns
// the start of its result.
func (e *Evaluator) lambda(x *node, arg int, v Value, index int, it *iter) (int, error) {
	s := len(e.buf)
	e.buf = append(e.buf, v)
	sub := iter{this: v, index: index, total: it.total}
	if err := e.eval(x.a[arg], s, s+1, &sub); err != nil {
		return 0, err
	}
	return s + 1, nil
}

func (e *Evaluator) lambdaTruth(x *node, v Value, index int, it *iter) (Truth, error) {
	r, err := e.lambda(x, 1, v, index, it)
	if err != nil {
		return Empty, err
	}
	t, err := e.truth(x, r)
	e.buf = e.buf[:r-1]
	return t, err
}

// fn evaluates the commonest functions; the others are in fnMore, so that this one's
// stack frame stays small.
func (e *Evaluator) fn(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	n := inHi - inLo
	switch x.fn.id {
	case fnEmpty:
		e.buf = append(e.buf, boolValue(n == 0))
	case fnExists:
		if len(x.a) == 1 {
			e.buf = append(e.buf, boolValue(n > 0))
			return nil
		}
		return e.fnMore(x, lo, hi, it, inLo, inHi)
	case fnCount:
		e.buf = append(e.buf, intValue(int64(n)))
	case fnHasValue:
		has := false
		if n == 1 {
			v := e.buf[inLo]
			has = v.kind != KindNode || e.t.nodes[v.n].Kind != NoValue
			if v.kind == kindRef {
				has = false
			}
		}
		e.buf = append(e.buf, boolValue(has))
	case fnChildren:
		nodes := e.t.nodes
		for i := inLo; i < inHi; i++ {
			v := e.buf[i]
			if v.kind != KindNode {
				if v.kind == kindRef {
					return &EvalError{Pos: x.pos, Msg: "children of a resolved reference", Err: ErrNeedsResolution}
				}
				continue
			}
			for c := nodes[v.n].first; c >= 0; c = nodes[c].next {
				e.buf = append(e.buf, nodeValue(c))
			}
		}
	case fnNot:
		t, err := e.truthOf(x, inLo, inHi)
		if err != nil {
			return err
		}
		switch t {
		case True:
			e.buf = append(e.buf, boolValue(false))
		case False:
			e.buf = append(e.buf, boolValue(true))
		}
	default:
		return e.fnMore(x, lo, hi, it, inLo, inHi)
	}
	return nil
}

func (e *Evaluator) fnMore(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	n := inHi - inLo
	switch x.fn.id {
	case fnExists:
		found := false
		for i := inLo; i < inHi && !found; i++ {
			t, err := e.lambdaTruth(x, e.buf[i], i-inLo, it)
			if err != nil {
				return err
			}
			found = t == True
		}
		e.buf = append(e.buf, boolValue(found))
	case fnAll:
		all := true
		for i := inLo; i < inHi && all; i++ {
			t, err := e.lambdaTruth(x, e.buf[i], i-inLo, it)
			if err != nil {
				return err
			}
			all = t == True
		}
		e.buf = append(e.buf, boolValue(all))
	case fnAllTrue, fnAnyTrue, fnAllFalse, fnAnyFalse:
		want := x.fn.id == fnAllTrue || x.fn.id == fnAnyTrue
		every := x.fn.id == fnAllTrue || x.fn.id == fnAllFalse
		res := every
		for i := inLo; i < inHi; i++ {
			v := e.sys(e.buf[i])
			if v.kind != KindBoolean {
				return evalErr(x, x.name+"() expects booleans")
			}
			if every && (v.num != 0) != want {
				res = false
				break
			}
			if !every && (v.num != 0) == want {
				res = true
				break
			}
		}
		e.buf = append(e.buf, boolValue(res))
	case fnDistinct:
		e.buf = append(e.buf, e.buf[inLo:inHi]...)
		e.buf = e.buf[:e.dedupe(inHi, len(e.buf))]
	case fnIsDistinct:
		e.buf = append(e.buf, e.buf[inLo:inHi]...)
		d := e.dedupe(inHi, len(e.buf)) == len(e.buf)
		e.buf = e.buf[:inHi]
		e.buf = append(e.buf, boolValue(d))
	case fnWhere:
		for i := inLo; i < inHi; i++ {
			v := e.buf[i]
			t, err := e.lambdaTruth(x, v, i-inLo, it)
			if err != nil {
				return err
			}
			if t == True {
				e.buf = append(e.buf, v)
			}
		}
	case fnSelect:
		for i := inLo; i < inHi; i++ {
			r, err := e.lambda(x, 1, e.buf[i], i-inLo, it)
			if err != nil {
				return err
			}
			e.collapse(r-1, r)
		}
	case fnRepeat:
		return e.repeat(x, inLo, inHi, it)
	case fnOfType, fnAs:
		for i := inLo; i < inHi; i++ {
			if e.matches(e.buf[i], &x.typ) {
				e.buf = append(e.buf, e.buf[i])
			}
		}
	case fnIs:
		if n == 0 {
			return nil
		}
		if n > 1 {
			return evalErr(x, "is() expects a single value, got a collection")
		}
		e.buf = append(e.buf, boolValue(e.matches(e.buf[inLo], &x.typ)))
	case fnFirst:
		if n > 0 {
			e.buf = append(e.buf, e.buf[inLo])
		}
	case fnLast:
		if n > 0 {
			e.buf = append(e.buf, e.buf[inHi-1])
		}
	case fnTail:
		for i := inLo + 1; i < inHi; i++ {
			e.buf = append(e.buf, e.buf[i])
		}
	case fnSkip, fnTake:
		k, ok, err := e.argInt(x, 1, lo, hi, it)
		if err != nil || !ok {
			return err
		}
		from, to := inLo, inHi
		if x.fn.id == fnSkip {
			from = inLo + int(max(0, min(k, int64(n))))
		} else {
			to = inLo + int(max(0, min(k, int64(n))))
		}
		for i := from; i < to; i++ {
			e.buf = append(e.buf, e.buf[i])
		}
	case fnSingle:
		if n > 1 {
			return evalErr(x, "single() on a collection of several items")
		}
		if n == 1 {
			e.buf = append(e.buf, e.buf[inLo])
		}
	case fnSubsetOf, fnSupersetOf, fnIntersect, fnExclude, fnUnion, fnCombine:
		return e.setOp(x, lo, hi, it, inLo, inHi)
	case fnIif:
		return e.iif(x, it, inLo, inHi)
	case fnGetValue:
		if n == 1 {
			if v := e.sys(e.buf[inLo]); v.kind != KindNode && v.kind != KindQuantity {
				e.buf = append(e.buf, v)
			}
		}
	case fnDescendants:
		for i := inLo; i < inHi; i++ {
			v := e.buf[i]
			if v.kind == kindRef {
				return &EvalError{Pos: x.pos, Msg: "descendants of a resolved reference", Err: ErrNeedsResolution}
			}
			if v.kind == KindNode {
				e.descend(NodeID(v.n))
			}
		}
	case fnExtension, fnHasExtension:
		url, ok, err := e.argString(x, 1, lo, hi, it)
		if err != nil {
			return err
		}
		found := false
		if ok {
			for i := inLo; i < inHi && !(found && x.fn.id == fnHasExtension); i++ {
				v := e.buf[i]
				if v.kind != KindNode {
					continue
				}
				nodes := e.t.nodes
				for c := nodes[v.n].first; c >= 0; c = nodes[c].next {
					if nodes[c].Name != "extension" {
						continue
					}
					if u := e.t.Child(c, "url", 0); u >= 0 && e.text(&nodes[u]) == url {
						found = true
						if x.fn.id == fnExtension {
							e.buf = append(e.buf, nodeValue(c))
						}
					}
				}
			}
		}
		if x.fn.id == fnHasExtension {
			e.buf = append(e.buf, boolValue(found))
		}
	case fnTrace:
		name, _, err := e.argString(x, 1, lo, hi, it)
		if err != nil {
			return err
		}
		if e.Env.Trace != nil {
			if len(x.a) == 3 {
				s := len(e.buf)
				for i := inLo; i < inHi; i++ {
					r, err := e.lambda(x, 2, e.buf[i], i-inLo, it)
					if err != nil {
						return err
					}
					e.collapse(r-1, r)
				}
				e.Env.Trace(name, Collection(e.buf[s:len(e.buf):len(e.buf)]))
				e.buf = e.buf[:s]
			} else {
				e.Env.Trace(name, Collection(e.buf[inLo:inHi:inHi]))
			}
		}
		for i := inLo; i < inHi; i++ {
			e.buf = append(e.buf, e.buf[i])
		}
	case fnMemberOf:
		return &EvalError{Pos: x.pos, Msg: "memberOf()", Err: ErrNeedsTerminology}
	case fnResolve:
		return e.resolve(inLo, inHi)
	case fnHTMLChecks:
		if e.Env.HTMLChecks == nil {
			return &EvalError{Pos: x.pos, Msg: "htmlChecks()", Err: ErrNeedsNarrative}
		}
		if n == 0 {
			return nil
		}
		if n > 1 || e.buf[inLo].kind != KindNode {
			return evalErr(x, "htmlChecks() expects one narrative div")
		}
		e.buf = append(e.buf, boolValue(e.Env.HTMLChecks(e.t, NodeID(e.buf[inLo].n))))
	case fnConformsTo:
		return e.conformsTo(x, lo, hi, it, inLo, inHi)
	case fnNow, fnToday, fnTimeOfDay:
		e.clock(x.fn.id)
	case fnAggregate:
		return e.aggregate(x, lo, hi, it, inLo, inHi)
	default:
		if x.fn.id >= fnToInteger && x.fn.id <= fnConvertsToTime {
			return e.convert(x, inLo, inHi)
		}
		if x.fn.id >= fnAbs {
			return e.math(x, lo, hi, it, inLo, inHi)
		}
		return e.stringFn(x, lo, hi, it, inLo, inHi)
	}
	return nil
}

// truthOf applies singleton evaluation to buf[lo:hi] without truncating.
func (e *Evaluator) truthOf(x *node, lo, hi int) (Truth, error) {
	switch hi - lo {
	case 0:
		return Empty, nil
	case 1:
		v := e.sys(e.buf[lo])
		if v.kind == KindBoolean {
			return boolTruth(v.num != 0), nil
		}
		return True, nil
	}
	return Empty, evalErr(x, "expected a single boolean, got a collection")
}

func (e *Evaluator) descend(n NodeID) {
	for c := e.t.nodes[n].first; c >= 0; c = e.t.nodes[c].next {
		e.steps++
		e.buf = append(e.buf, nodeValue(c))
		e.descend(c)
	}
}

// repeat applies the projection to the input, then to every new result, until no new
// items appear; results are unique.
func (e *Evaluator) repeat(x *node, inLo, inHi int, it *iter) error {
	res := len(e.buf)
	expand := func(v Value, index int) error {
		r, err := e.lambda(x, 1, v, index, it)
		if err != nil {
			return err
		}
		end, w := len(e.buf), r-1
		for i := r; i < end; i++ {
			if v := e.buf[i]; !e.containsValue(res, w, v) {
				e.buf[w] = v
				w++
			}
		}
		e.buf = e.buf[:w]
		if w-res > 100000 {
			return evalErr(x, "repeat() produced too many items")
		}
		return nil
	}
	for i := inLo; i < inHi; i++ {
		if err := expand(e.buf[i], i-inLo); err != nil {
			return err
		}
	}
	for q := res; q < len(e.buf); q++ {
		if err := expand(e.buf[q], q-res); err != nil {
			return err
		}
	}
	return nil
}

func (e *Evaluator) setOp(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	oLo, oHi, err := e.arg(x, 1, lo, hi, it)
	if err != nil {
		return err
	}
	res := len(e.buf)
	switch x.fn.id {
	case fnSubsetOf, fnSupersetOf:
		aLo, aHi, bLo, bHi := inLo, inHi, oLo, oHi
		if x.fn.id == fnSupersetOf {
			aLo, aHi, bLo, bHi = oLo, oHi, inLo, inHi
		}
		ok := true
		for i := aLo; i < aHi && ok; i++ {
			ok = e.containsValue(bLo, bHi, e.buf[i])
		}
		e.buf = append(e.buf, boolValue(ok))
	case fnIntersect:
		for i := inLo; i < inHi; i++ {
			v := e.buf[i]
			if e.containsValue(oLo, oHi, v) && !e.containsValue(res, len(e.buf), v) {
				e.buf = append(e.buf, v)
			}
		}
	case fnExclude:
		for i := inLo; i < inHi; i++ {
			if !e.containsValue(oLo, oHi, e.buf[i]) {
				e.buf = append(e.buf, e.buf[i])
			}
		}
	case fnUnion:
		for _, r := range [2][2]int{{inLo, inHi}, {oLo, oHi}} {
			for i := r[0]; i < r[1]; i++ {
				if v := e.buf[i]; !e.containsValue(res, len(e.buf), v) {
					e.buf = append(e.buf, v)
				}
			}
		}
	case fnCombine:
		for _, r := range [2][2]int{{inLo, inHi}, {oLo, oHi}} {
			for i := r[0]; i < r[1]; i++ {
				e.buf = append(e.buf, e.buf[i])
			}
		}
	}
	e.collapse(oLo, res)
	return nil
}

func (e *Evaluator) iif(x *node, it *iter, inLo, inHi int) error {
	if inHi-inLo > 1 {
		return evalErr(x, "iif() on a collection of several items")
	}
	this := it.this
	if inHi > inLo {
		this = e.buf[inLo]
	}
	sub := iter{this: this, index: it.index, total: it.total}
	s := len(e.buf)
	if err := e.eval(x.a[1], inLo, inHi, &sub); err != nil {
		return err
	}
	t, err := e.truth(x, s)
	if err != nil {
		return err
	}
	switch {
	case t == True:
		return e.eval(x.a[2], inLo, inHi, &sub)
	case len(x.a) > 3:
		return e.eval(x.a[3], inLo, inHi, &sub)
	}
	return nil
}

func (e *Evaluator) aggregate(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	totalStart := len(e.buf)
	if len(x.a) > 2 {
		if err := e.eval(x.a[2], lo, hi, it); err != nil {
			return err
		}
	}
	total := append([]Value(nil), e.buf[totalStart:]...)
	e.buf = e.buf[:totalStart]
	for i := inLo; i < inHi; i++ {
		s := len(e.buf)
		v := e.buf[i]
		e.buf = append(e.buf, v)
		sub := iter{this: v, index: i - inLo, total: total}
		if err := e.eval(x.a[1], s, s+1, &sub); err != nil {
			return err
		}
		total = append(total[:0:0], e.buf[s+1:]...)
		e.buf = e.buf[:s]
	}
	e.buf = append(e.buf, total...)
	return nil
}

// resolve turns references into their targets: a local #id into the contained resource;
// Type/id, an absolute URL ending in Type/id (optionally /_history/v) or a urn: (through
// Env.ResolveURN) into a value that knows only the target's type. A Reference's type
// element, when present, names the type.
func (e *Evaluator) resolve(inLo, inHi int) error {
	nodes := e.t.nodes
	for i := inLo; i < inHi; i++ {
		v := e.buf[i]
		if v.kind == kindRef {
			e.buf = append(e.buf, v)
			continue
		}
		var ref string
		declared := ""
		switch v.kind {
		case KindString:
			ref = v.str
		case KindNode:
			n := &nodes[v.n]
			if n.Kind != NoValue {
				ref = e.text(n)
				break
			}
			if c := e.t.Child(NodeID(v.n), "reference", 0); c >= 0 && nodes[c].Kind != NoValue {
				ref = e.text(&nodes[c])
			}
			if c := e.t.Child(NodeID(v.n), "type", 0); c >= 0 && nodes[c].Kind != NoValue {
				declared = e.text(&nodes[c])
			}
		}
		if ref == "" {
			continue
		}
		if ref[0] == '#' {
			if c := e.containedByID(NodeID(v.n), ref[1:]); c >= 0 {
				e.buf = append(e.buf, nodeValue(c))
			}
			continue
		}
		typ := declared
		if typ == "" {
			if strings.HasPrefix(ref, "urn:") {
				if e.Env.ResolveURN != nil {
					typ, _ = e.Env.ResolveURN([]byte(ref))
				}
			} else {
				typ = refType(ref)
			}
		}
		if typ != "" {
			e.buf = append(e.buf, Value{n: -1, kind: kindRef, str: typ})
		}
	}
	return nil
}

// refType returns the resource type of a literal reference: the segment before the id,
// skipping a trailing _history/version.
func refType(ref string) string {
	if i := strings.IndexAny(ref, "?#"); i >= 0 {
		ref = ref[:i]
	}
	parts := strings.Split(ref, "/")
	if len(parts) >= 4 && parts[len(parts)-2] == "_history" {
		parts = parts[:len(parts)-2]
	}
	if len(parts) < 2 {
		return ""
	}
	t := parts[len(parts)-2]
	if t == "" || t[0] < 'A' || t[0] > 'Z' {
		return ""
	}
	for i := 1; i < len(t); i++ {
		if !isIdentPart(t[i]) {
			return ""
		}
	}
	return t
}

// containedByID finds the contained resource with the id in the resource holding n (or
// in its container).
func (e *Evaluator) containedByID(n NodeID, id string) NodeID {
	if n < 0 {
		n = e.ctx
	}
	root := e.t.rootResourceOf(n)
	if root < 0 {
		return -1
	}
	nodes := e.t.nodes
	for c := nodes[root].first; c >= 0; c = nodes[c].next {
		if nodes[c].Name != "contained" {
			continue
		}
		if idn := e.t.Child(c, "id", 0); idn >= 0 && e.text(&nodes[idn]) == id {
			return c
		}
	}
	return -1
}

const sdPrefix = "http://hl7.org/fhir/StructureDefinition/"

// conformsTo answers for the core base definitions only: a resource conforms to its own
// type's definition and those it derives from; any other profile is unsupported.
func (e *Evaluator) conformsTo(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	url, ok, err := e.argString(x, 1, lo, hi, it)
	if err != nil || !ok || inHi == inLo {
		return err
	}
	if inHi-inLo > 1 {
		return evalErr(x, "conformsTo() expects a single value, got a collection")
	}
	v := e.buf[inLo]
	typ, found := strings.CutPrefix(url, sdPrefix)
	if !found || (fhirBase[typ] == "" && typ != "Resource" && typ != "Element" && typ != "Base") {
		return &EvalError{Pos: x.pos, Msg: "conformsTo() with a profile", Err: ErrUnsupported}
	}
	ts := newTypeSpec("FHIR." + typ)
	e.buf = append(e.buf, boolValue(e.matches(v, &ts)))
	return nil
}

func (e *Evaluator) clock(id fnID) {
	if e.now.IsZero() {
		if e.Env.Now != nil {
			e.now = e.Env.Now()
		} else {
			e.now = time.Now()
		}
	}
	start := len(e.str)
	switch id {
	case fnNow:
		e.str = e.now.AppendFormat(e.str, "2006-01-02T15:04:05.000Z07:00")
		e.buf = append(e.buf, temporalValue(KindDateTime, e.newString(start), precSecond))
	case fnToday:
		e.str = e.now.AppendFormat(e.str, "2006-01-02")
		e.buf = append(e.buf, temporalValue(KindDate, e.newString(start), precDay))
	default:
		e.str = e.now.AppendFormat(e.str, "15:04:05.000")
		e.buf = append(e.buf, temporalValue(KindTime, e.newString(start), precSecond))
	}
}

func (e *Evaluator) stringFn(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	s, ok, err := e.inputString(x, inLo, inHi)
	if err != nil || !ok {
		return err
	}
	switch x.fn.id {
	case fnMatches, fnReplaceMatches:
		re := x.re
		if re == nil { // a computed pattern: compiled at each evaluation
			p, ok, err := e.argString(x, 1, lo, hi, it)
			if err != nil || !ok {
				return err
			}
			if re, err = compileRegex(p); err != nil {
				return evalErr(x, "invalid regular expression")
			}
		}
		if x.fn.id == fnMatches {
			e.buf = append(e.buf, boolValue(re.MatchString(s)))
			return nil
		}
		sub, ok, err := e.argString(x, 2, lo, hi, it)
		if err != nil || !ok {
			return err
		}
		e.buf = append(e.buf, stringValue(re.ReplaceAllString(s, sub)))
	case fnContains, fnStartsWith, fnEndsWith, fnIndexOf:
		a, ok, err := e.argString(x, 1, lo, hi, it)
		if err != nil || !ok {
			return err
		}
		switch x.fn.id {
		case fnContains:
			e.buf = append(e.buf, boolValue(strings.Contains(s, a)))
		case fnStartsWith:
			e.buf = append(e.buf, boolValue(strings.HasPrefix(s, a)))
		case fnEndsWith:
			e.buf = append(e.buf, boolValue(strings.HasSuffix(s, a)))
		default:
			i := strings.Index(s, a)
			if i > 0 {
				i = utf8.RuneCountInString(s[:i])
			}
			e.buf = append(e.buf, intValue(int64(i)))
		}
	case fnLength:
		e.buf = append(e.buf, intValue(int64(utf8.RuneCountInString(s))))
	case fnSubstring:
		start, ok, err := e.argInt(x, 1, lo, hi, it)
		if err != nil || !ok {
			return err
		}
		runes := utf8.RuneCountInString(s)
		if start < 0 || start >= int64(runes) {
			return nil
		}
		length := int64(runes) - start
		if len(x.a) > 2 {
			l, ok, err := e.argInt(x, 2, lo, hi, it)
			if err != nil {
				return err
			}
			if ok {
				length = max(0, min(l, length))
			}
		}
		b := runeOffset(s, int(start))
		end := runeOffset(s[b:], int(length)) + b
		e.buf = append(e.buf, stringValue(s[b:end]))
	case fnUpper:
		e.buf = append(e.buf, stringValue(strings.ToUpper(s)))
	case fnLower:
		e.buf = append(e.buf, stringValue(strings.ToLower(s)))
	case fnReplace:
		p, ok1, err := e.argString(x, 1, lo, hi, it)
		if err != nil {
			return err
		}
		r, ok2, err := e.argString(x, 2, lo, hi, it)
		if err != nil || !ok1 || !ok2 {
			return err
		}
		e.buf = append(e.buf, stringValue(strings.ReplaceAll(s, p, r)))
	case fnToChars:
		for i, r := range s {
			e.buf = append(e.buf, stringValue(s[i:i+utf8.RuneLen(r)]))
		}
	}
	return nil
}

func runeOffset(s string, n int) int {
	if n <= 0 {
		return 0
	}
	for i := range s {
		if n == 0 {
			return i
		}
		n--
	}
	return len(s)
}

func (e *Evaluator) math(x *node, lo, hi int, it *iter, inLo, inHi int) error {
	v, ok, err := e.input(x, inLo, inHi)
	if err != nil || !ok {
		return err
	}
	if !isNumber(v.kind) && !(v.kind == KindQuantity && x.fn.id == fnAbs) {
		return evalErr(x, x.name+"() expects a number")
	}
	d := v.dec()
	switch x.fn.id {
	case fnAbs:
		if v.num < 0 {
			v.num = -v.num
		}
		e.buf = append(e.buf, v)
		return nil
	case fnCeiling, fnFloor, fnTruncate:
		q := d.c / pow10[d.s]
		rem := d.c % pow10[d.s]
		if x.fn.id == fnCeiling && rem > 0 {
			q++
		}
		if x.fn.id == fnFloor && rem < 0 {
			q--
		}
		e.buf = append(e.buf, intValue(q))
		return nil
	case fnRound:
		p := int64(0)
		if len(x.a) > 1 {
			pp, ok, err := e.argInt(x, 1, lo, hi, it)
			if err != nil {
				return err
			}
			if ok {
				if pp < 0 {
					return evalErr(x, "round() precision must not be negative")
				}
				p = pp
			}
		}
		r := d
		if p < int64(d.s) {
			r = d.round(uint8(p))
		}
		e.buf = append(e.buf, decimalValue(r))
		return nil
	}
	f := d.float()
	var r float64
	switch x.fn.id {
	case fnSqrt:
		if f < 0 {
			return nil
		}
		r = math.Sqrt(f)
	case fnExp:
		r = math.Exp(f)
	case fnLn:
		if f <= 0 {
			return nil
		}
		r = math.Log(f)
	case fnLog, fnPower:
		b, ok, err := e.argSingle(x, 1, lo, hi, it)
		if err != nil || !ok {
			return err
		}
		if !isNumber(b.kind) {
			return evalErr(x, x.name+"() takes a number argument")
		}
		bf := b.dec().float()
		if x.fn.id == fnLog {
			if f <= 0 || bf <= 0 || bf == 1 {
				return nil
			}
			r = math.Log(f) / math.Log(bf)
		} else {
			r = math.Pow(f, bf)
			if v.kind == KindInteger && b.kind == KindInteger && r == math.Trunc(r) && math.Abs(r) < 1<<62 {
				e.buf = append(e.buf, intValue(int64(r)))
				return nil
			}
		}
	}
	rd, ok := floatDecimal(r)
	if ok {
		e.buf = append(e.buf, decimalValue(rd))
	}
	return nil
}
