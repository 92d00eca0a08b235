package fhirpath

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Errors that evaluation can wrap (test with errors.Is).
var (
	ErrNeedsTerminology = errors.New("needs a terminology service")
	ErrNeedsResolution  = errors.New("needs the content of a referenced resource")
	ErrNeedsNarrative   = errors.New("htmlChecks() needs Env.HTMLChecks")
	ErrUnsupported      = errors.New("not supported")
	ErrBudget           = errors.New("evaluation budget exceeded (Evaluator.Limit)")
)

// EvalError is an error raised by an expression: a collection where one value was
// required, a type mismatch, or an operation that needs more than the resource. Its
// message never holds a value from the data.
type EvalError struct {
	Pos int    // byte offset of the operator or function in the expression
	Msg string //
	Err error  // one of the Err… sentinels, or nil
}

func (e *EvalError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("fhirpath: at %d: %s: %v", e.Pos, e.Msg, e.Err)
	}
	return fmt.Sprintf("fhirpath: at %d: %s", e.Pos, e.Msg)
}

func (e *EvalError) Unwrap() error { return e.Err }

func evalErr(x *node, msg string) error { return &EvalError{Pos: x.pos, Msg: msg} }

// Env is what evaluation may ask of its caller. Every field is optional.
type Env struct {
	// ResolveURN returns the resource type a urn:uuid: or urn:oid: reference points to
	// (e.g. from a Bundle's fullUrls), for resolve() is T. Without it such references
	// resolve to nothing.
	ResolveURN func(ref []byte) (resourceType string, ok bool)
	// HTMLChecks implements htmlChecks() for a narrative's div node (txt-1, txt-2).
	HTMLChecks func(t *Tree, div NodeID) bool
	// Now is the clock of now(), today() and timeOfDay(); nil means time.Now.
	Now func() time.Time
	// Trace receives trace(name) calls with the traced collection (valid during the call).
	// Nil: trace() only passes its input through. The collection may hold personal data.
	Trace func(name string, c Collection)
}

// Collection is an evaluation result. It is valid until the Evaluator is used again.
type Collection []Value

// Truth is the result of evaluating an expression as a FHIR invariant.
type Truth uint8

// Truth values: an invariant holds when it is True; Empty means unknown (for example a
// comparison of dates of different precisions).
const (
	Empty Truth = iota
	False
	True
)

func (t Truth) String() string { return [...]string{"empty", "false", "true"}[t] }

// Evaluator evaluates compiled expressions over trees. Its scratch memory is reused,
// so steady-state evaluations do not allocate. An Evaluator is not safe for concurrent
// use: give each goroutine its own.
type Evaluator struct {
	Env Env
	// Limit, when positive, bounds the work of the evaluations since the last
	// ResetSteps (see Steps): one that goes past it fails with an error wrapping
	// ErrBudget. It keeps a hostile tree (thousands of items each compared with
	// thousands of others) from costing time quadratic in its size.
	Limit int64

	t     *Tree
	buf   []Value
	str   []byte
	ctx   NodeID
	now   time.Time
	deep  int
	rules *ruleCache
	seen  map[string]struct{} // dedupe's hash set, reused
	memo  []memoEntry         // results of hoisted subexpressions in this evaluation
	memoV []Value
	steps int64
}

// Steps returns the work done since the Evaluator was made or ResetSteps was called:
// expression steps evaluated, items compared and tree nodes walked.
func (e *Evaluator) Steps() int64 { return e.steps }

// ResetSteps sets Steps to zero (a caller does it per tree, with a Limit in
// proportion to the tree's size).
func (e *Evaluator) ResetSteps() { e.steps = 0 }

// memoEntry is the result of a hoisted subexpression (node.memo): memoV[lo:hi].
type memoEntry struct {
	x      *node
	lo, hi int
}

type iter struct {
	this  Value
	index int
	total []Value
}

const maxEvalDepth = 1000

// Eval evaluates x with focus (%context, $this) node focus of t and returns the result,
// valid until the next use of e.
func (e *Evaluator) Eval(x *Expr, t *Tree, focus NodeID) (Collection, error) {
	e.start(t, focus)
	e.buf = append(e.buf, nodeValue(focus))
	it := iter{this: e.buf[0], index: 0}
	if err := e.eval(x.root, 0, 1, &it); err != nil {
		return nil, err
	}
	return Collection(e.buf[1:]), nil
}

// Test evaluates x as an invariant on node focus: True or False when the result is one
// Boolean (or, by FHIRPath's singleton rule, one other value: True), Empty when it is
// empty, an error when it has more than one item or evaluation failed.
func (e *Evaluator) Test(x *Expr, t *Tree, focus NodeID) (Truth, error) {
	e.steps++
	if e.Limit > 0 && e.steps > e.Limit {
		return Empty, &EvalError{Pos: 0, Msg: "too much work", Err: ErrBudget}
	}
	e.start(t, focus)
	e.buf = append(e.buf, nodeValue(focus))
	it := iter{this: e.buf[0], index: 0}
	return e.test(x.root, 0, 1, &it)
}

func (e *Evaluator) start(t *Tree, focus NodeID) {
	e.t, e.ctx = t, focus
	e.buf = e.buf[:0]
	e.str = e.str[:0]
	e.now = time.Time{}
	e.deep = 0
	e.memo = e.memo[:0]
	e.memoV = e.memoV[:0]
}

// truth applies singleton evaluation to buf[s:] and truncates it to s.
func (e *Evaluator) truth(x *node, s int) (Truth, error) {
	n := len(e.buf) - s
	switch n {
	case 0:
		return Empty, nil
	case 1:
		v := e.buf[s]
		e.buf = e.buf[:s]
		if v.kind == KindBoolean {
			return boolTruth(v.num != 0), nil
		}
		if v.kind == KindNode {
			nd := &e.t.nodes[v.n]
			if nd.Kind == JSONBool {
				return boolTruth(e.t.Src[nd.Start] == 't'), nil
			}
		}
		return True, nil
	}
	e.buf = e.buf[:s]
	return Empty, evalErr(x, "expected a single boolean, got a collection")
}

func boolTruth(b bool) Truth {
	if b {
		return True
	}
	return False
}

func (e *Evaluator) pushTruth(t Truth) {
	if t != Empty {
		e.buf = append(e.buf, boolValue(t == True))
	}
}

// collapse moves buf[from:] down to to.
func (e *Evaluator) collapse(to, from int) {
	if to == from {
		return
	}
	n := copy(e.buf[to:], e.buf[from:])
	e.buf = e.buf[:to+n]
}

// eval appends the result of x over the focus buf[lo:hi] to buf.
func (e *Evaluator) eval(x *node, lo, hi int, it *iter) error {
	e.steps++
	if e.Limit > 0 && e.steps > e.Limit {
		return &EvalError{Pos: x.pos, Msg: "too much work", Err: ErrBudget}
	}
	e.deep++
	if e.deep > maxEvalDepth {
		e.deep--
		return evalErr(x, "evaluation nested too deeply")
	}
	var err error
	if x.memo {
		err = e.memoized(x, lo, hi, it)
	} else {
		err = e.eval1(x, lo, hi, it)
	}
	e.deep--
	return err
}

// memoized evaluates a hoisted subexpression once per evaluation and then appends the
// remembered result.
func (e *Evaluator) memoized(x *node, lo, hi int, it *iter) error {
	for _, m := range e.memo {
		if m.x == x {
			e.buf = append(e.buf, e.memoV[m.lo:m.hi]...)
			return nil
		}
	}
	s := len(e.buf)
	if err := e.eval1(x, lo, hi, it); err != nil {
		return err
	}
	m := memoEntry{x: x, lo: len(e.memoV)}
	e.memoV = append(e.memoV, e.buf[s:]...)
	m.hi = len(e.memoV)
	e.memo = append(e.memo, m)
	return nil
}

func (e *Evaluator) eval1(x *node, lo, hi int, it *iter) error {
	switch x.op {
	case opLiteral:
		e.buf = append(e.buf, x.lit)
		return nil
	case opEmpty:
		return nil
	case opThis:
		e.buf = append(e.buf, it.this)
		return nil
	case opIndex:
		e.buf = append(e.buf, intValue(int64(it.index)))
		return nil
	case opTotal:
		e.buf = append(e.buf, it.total...)
		return nil
	case opVar:
		return e.variable(x)
	case opMember:
		return e.member(x, lo, hi, it)
	case opPathAgg:
		return e.pathAgg(x, lo, hi, it)
	case opDescend:
		return e.descendFused(x, lo, hi, it)
	case opFunc:
		return e.call(x, lo, hi, it)
	case opIndexer:
		s := len(e.buf)
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return err
		}
		m := len(e.buf)
		if err := e.eval(x.a[1], lo, hi, it); err != nil {
			return err
		}
		iv, ok, err := e.single(x, m)
		if err != nil {
			return err
		}
		e.buf = e.buf[:m]
		if !ok {
			e.buf = e.buf[:s]
			return nil
		}
		iv = e.sys(iv)
		if iv.kind != KindInteger {
			return evalErr(x, "index must be an integer")
		}
		if iv.num < 0 || iv.num >= int64(m-s) {
			e.buf = e.buf[:s]
			return nil
		}
		e.buf[s] = e.buf[s+int(iv.num)]
		e.buf = e.buf[:s+1]
		return nil
	case opNeg, opPos:
		s := len(e.buf)
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return err
		}
		v, ok, err := e.single(x, s)
		if err != nil || !ok {
			return err
		}
		v = e.sys(v)
		switch v.kind {
		case KindInteger, KindDecimal, KindQuantity:
		default:
			return evalErr(x, "unary "+map[bool]string{true: "-", false: "+"}[x.op == opNeg]+" needs a number")
		}
		if x.op == opNeg {
			v.num = -v.num
		}
		e.buf[s] = v
		e.buf = e.buf[:s+1]
		return nil
	case opIs, opAs:
		s := len(e.buf)
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return err
		}
		return e.typeOp(x, x.op == opIs, s)
	case opAnd, opOr, opImplies, opXor:
		return e.logic(x, lo, hi, it)
	}
	return e.binary(x, lo, hi, it)
}

func (e *Evaluator) variable(x *node) error {
	switch x.name {
	case "context":
		e.buf = append(e.buf, nodeValue(e.ctx))
	case "resource":
		if r := e.t.resourceOf(e.ctx); r >= 0 {
			e.buf = append(e.buf, nodeValue(r))
		}
	case "rootResource":
		if r := e.t.rootResourceOf(e.ctx); r >= 0 {
			e.buf = append(e.buf, nodeValue(r))
		}
	default:
		s, ok := builtinVar(x.name)
		if !ok {
			return evalErr(x, "unknown variable %"+x.name)
		}
		e.buf = append(e.buf, stringValue(s))
	}
	return nil
}

// descendFused evaluates the fused X.descendants().name or X.descendants().as(T): the
// same items in the same order as the unfused expression.
func (e *Evaluator) descendFused(x *node, lo, hi int, it *iter) error {
	s := len(e.buf)
	if x.a[0] != nil {
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return err
		}
		lo, hi = s, len(e.buf)
	}
	out := len(e.buf)
	for i := lo; i < hi; i++ {
		v := e.buf[i]
		if v.kind == kindRef {
			return &EvalError{Pos: x.pos, Msg: "descendants of a resolved reference", Err: ErrNeedsResolution}
		}
		if v.kind == KindNode {
			e.descendKeep(x, NodeID(v.n), false)
		}
	}
	if x.a[0] != nil {
		e.collapse(s, out)
	}
	return nil
}

// descendKeep walks the subtree below n in document order. By name: every descendant
// contributes its children of that name (so n's own children do not: inner is false
// at n). By type: every descendant of the type.
func (e *Evaluator) descendKeep(x *node, n NodeID, inner bool) {
	nodes := e.t.nodes
	if x.name != "" && inner {
		for c := nodes[n].first; c >= 0; c = nodes[c].next {
			if nodes[c].Name == x.name {
				e.buf = append(e.buf, nodeValue(c))
			}
		}
	}
	for c := nodes[n].first; c >= 0; c = nodes[c].next {
		e.steps++
		if x.name == "" && e.matches(nodeValue(c), &x.typ) {
			e.buf = append(e.buf, nodeValue(c))
		}
		e.descendKeep(x, c, true)
	}
}

// member navigates to the children named x.name of every item of the target (or focus).
func (e *Evaluator) member(x *node, lo, hi int, it *iter) error {
	s := len(e.buf)
	root := x.a[0] == nil
	if !root {
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return err
		}
		lo, hi = s, len(e.buf)
	}
	out := len(e.buf)
	name := x.name
	typeName := root && name[0] >= 'A' && name[0] <= 'Z'
	nodes := e.t.nodes
	for i := lo; i < hi; i++ {
		v := e.buf[i]
		if v.kind != KindNode {
			if v.kind == kindRef {
				return &EvalError{Pos: x.pos, Msg: "navigating into a resolved reference", Err: ErrNeedsResolution}
			}
			continue
		}
		if typeName {
			n := &nodes[v.n]
			if n.Type == name || (n.Resource && (name == "Resource" || name == "DomainResource")) {
				e.buf = append(e.buf, v)
			}
			continue
		}
		for c := nodes[v.n].first; c >= 0; c = nodes[c].next {
			e.steps++
			if nodes[c].Name == name {
				e.buf = append(e.buf, nodeValue(c))
			}
		}
	}
	if !root {
		e.collapse(s, out)
	}
	return nil
}

// countPath counts the children named x.name (all children if x.name is "") of the
// items of x's target (or of the focus).
func (e *Evaluator) countPath(x *node, lo, hi int, it *iter) (int, error) {
	s := len(e.buf)
	if x.a[0] != nil {
		if err := e.eval(x.a[0], lo, hi, it); err != nil {
			return 0, err
		}
		lo, hi = s, len(e.buf)
	}
	nodes := e.t.nodes
	count := 0
	for i := lo; i < hi; i++ {
		v := e.buf[i]
		if v.kind != KindNode {
			if v.kind == kindRef {
				return 0, &EvalError{Pos: x.pos, Msg: "navigating into a resolved reference", Err: ErrNeedsResolution}
			}
			continue
		}
		for c := nodes[v.n].first; c >= 0; c = nodes[c].next {
			e.steps++
			if x.name == "" || nodes[c].Name == x.name {
				count++
			}
		}
	}
	e.buf = e.buf[:s]
	return count, nil
}

// pathAgg answers count(), exists() or empty() of a fused path (see fuse).
func (e *Evaluator) pathAgg(x *node, lo, hi int, it *iter) error {
	count, err := e.countPath(x, lo, hi, it)
	if err != nil {
		return err
	}
	switch x.fn.id {
	case fnCount:
		e.buf = append(e.buf, intValue(int64(count)))
	case fnExists:
		e.buf = append(e.buf, boolValue(count > 0))
	default:
		e.buf = append(e.buf, boolValue(count == 0))
	}
	return nil
}

// test evaluates x as a Boolean with singleton evaluation. The shapes FHIR's invariants
// are made of (logic, exists/empty/count of paths, hasValue(), not(), comparisons of
// counts) are answered without collecting values; anything else is evaluated and then
// tested.
func (e *Evaluator) test(x *node, lo, hi int, it *iter) (Truth, error) {
	switch x.op {
	case opAnd, opOr, opImplies, opXor:
		return e.logicTruth(x, lo, hi, it)
	case opPathAgg:
		if x.fn.id != fnCount {
			n, err := e.countPath(x, lo, hi, it)
			if err != nil {
				return Empty, err
			}
			return boolTruth((n > 0) == (x.fn.id == fnExists)), nil
		}
	case opFunc:
		switch {
		case x.fn.id == fnHasValue && x.a[0] == nil:
			if hi-lo != 1 {
				return False, nil
			}
			v := e.buf[lo]
			return boolTruth(v.kind != kindRef && (v.kind != KindNode || e.t.nodes[v.n].Kind != NoValue)), nil
		case x.fn.id == fnNot && x.a[0] != nil:
			t, err := e.test(x.a[0], lo, hi, it)
			switch {
			case err != nil:
				return Empty, err
			case t == True:
				return False, nil
			case t == False:
				return True, nil
			default:
				return Empty, nil
			}
		}
	case opLT, opGT, opLE, opGE, opEq, opNe:
		if (x.op == opEq || x.op == opNe) && boolOperand(x.a[0]) && boolOperand(x.a[1]) {
			l, err := e.test(x.a[0], lo, hi, it)
			if err != nil {
				return Empty, err
			}
			r, err := e.test(x.a[1], lo, hi, it)
			if err != nil {
				return Empty, err
			}
			return boolTruth((l == r) == (x.op == opEq)), nil
		}
		if a, ok := intOperand(x.a[0]); ok {
			if b, ok := intOperand(x.a[1]); ok {
				l, err := e.intOf(a, lo, hi, it)
				if err != nil {
					return Empty, err
				}
				r, err := e.intOf(b, lo, hi, it)
				if err != nil {
					return Empty, err
				}
				var res bool
				switch x.op {
				case opLT:
					res = l < r
				case opGT:
					res = l > r
				case opLE:
					res = l <= r
				case opGE:
					res = l >= r
				case opEq:
					res = l == r
				default:
					res = l != r
				}
				return boolTruth(res), nil
			}
		}
	}
	s := len(e.buf)
	if err := e.eval(x, lo, hi, it); err != nil {
		return Empty, err
	}
	return e.truth(x, s)
}

// boolOperand reports whether x always yields exactly one Boolean: exists() or empty()
// of a path.
func boolOperand(x *node) bool {
	return x.op == opPathAgg && x.fn.id != fnCount
}

// intOperand reports whether x always yields exactly one Integer: a count or an integer
// literal.
func intOperand(x *node) (*node, bool) {
	switch {
	case x.op == opPathAgg && x.fn.id == fnCount:
		return x, true
	case x.op == opLiteral && x.lit.kind == KindInteger:
		return x, true
	}
	return nil, false
}

func (e *Evaluator) intOf(x *node, lo, hi int, it *iter) (int64, error) {
	if x.op == opLiteral {
		return x.lit.num, nil
	}
	n, err := e.countPath(x, lo, hi, it)
	return int64(n), err
}

// single returns the one value of buf[s:] (ok=false if empty, an error if several).
func (e *Evaluator) single(x *node, s int) (Value, bool, error) {
	switch len(e.buf) - s {
	case 0:
		return Value{}, false, nil
	case 1:
		return e.buf[s], true, nil
	}
	return Value{}, false, evalErr(x, "expected a single value, got a collection")
}

// logic evaluates and, or, xor and implies with three-valued logic.
func (e *Evaluator) logic(x *node, lo, hi int, it *iter) error {
	t, err := e.logicTruth(x, lo, hi, it)
	if err != nil {
		return err
	}
	e.pushTruth(t)
	return nil
}

func (e *Evaluator) logicTruth(x *node, lo, hi int, it *iter) (Truth, error) {
	l, err := e.test(x.a[0], lo, hi, it)
	if err != nil {
		return Empty, err
	}
	switch {
	case x.op == opAnd && l == False:
		return False, nil
	case x.op == opOr && l == True:
		return True, nil
	case x.op == opImplies && l == False:
		return True, nil
	}
	r, err := e.test(x.a[1], lo, hi, it)
	if err != nil {
		return Empty, err
	}
	switch x.op {
	case opAnd:
		switch {
		case r == False:
			return False, nil
		case l == True && r == True:
			return True, nil
		}
	case opOr:
		switch {
		case r == True:
			return True, nil
		case l == False && r == False:
			return False, nil
		}
	case opXor:
		if l != Empty && r != Empty {
			return boolTruth(l != r), nil
		}
	case opImplies:
		switch {
		case l == True:
			return r, nil
		case r == True:
			return True, nil
		}
	}
	return Empty, nil
}

// typeOp evaluates "is" (one value) and "as" (filtering, as R4's search parameters use it
// on collections) on buf[s:].
func (e *Evaluator) typeOp(x *node, is bool, s int) error {
	if is {
		v, ok, err := e.single(x, s)
		if err != nil || !ok {
			e.buf = e.buf[:s]
			return err
		}
		e.buf[s] = boolValue(e.matches(v, &x.typ))
		e.buf = e.buf[:s+1]
		return nil
	}
	w := s
	for i := s; i < len(e.buf); i++ {
		if e.matches(e.buf[i], &x.typ) {
			e.buf[w] = e.buf[i]
			w++
		}
	}
	e.buf = e.buf[:w]
	return nil
}

// sys returns a node's System value when it is a FHIR primitive with a value, or a
// Quantity; other values unchanged.
func (e *Evaluator) sys(v Value) Value {
	if v.kind != KindNode {
		return v
	}
	n := &e.t.nodes[v.n]
	if n.Kind == NoValue {
		if isQuantityType(n.Type) {
			return e.nodeQuantity(v)
		}
		return v
	}
	raw := e.t.raw(n)
	switch k := systemKind(n.Type, n.Kind); k {
	case KindBoolean:
		return boolValue(raw == "true")
	case KindInteger:
		if i, ok := parseInt(raw); ok {
			return intValue(i)
		}
		if d, err := parseDecimal(raw); err == nil {
			return decimalValue(d)
		}
		return stringValue(raw)
	case KindDecimal:
		if d, err := parseDecimal(raw); err == nil {
			return decimalValue(d)
		}
		return stringValue(raw)
	case KindString:
		return stringValue(e.text(n))
	default:
		return temporalValue(k, raw, 0)
	}
}

// nodeQuantity converts a FHIR Quantity node to a System.Quantity: its value and its
// code (else its unit). Without a value it stays a node.
func (e *Evaluator) nodeQuantity(v Value) Value {
	nodes := e.t.nodes
	var val, code, unit NodeID = -1, -1, -1
	for c := nodes[v.n].first; c >= 0; c = nodes[c].next {
		switch nodes[c].Name {
		case "value":
			val = c
		case "code":
			code = c
		case "unit":
			unit = c
		}
	}
	if val < 0 || nodes[val].Kind != JSONNumber {
		return v
	}
	d, err := parseDecimal(e.t.raw(&nodes[val]))
	if err != nil {
		return v
	}
	u := "1"
	switch {
	case code >= 0 && nodes[code].Kind != NoValue:
		u = e.text(&nodes[code])
	case unit >= 0 && nodes[unit].Kind != NoValue:
		u = e.text(&nodes[unit])
	}
	q := quantityValue(d, u)
	q.flags &^= flagCalendar
	return q
}

func parseInt(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	neg := false
	i := 0
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		i++
		if len(s) == 1 {
			return 0, false
		}
	}
	var n int64
	for ; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) {
			return 0, false
		}
		if n > (1<<63-1-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// text returns the decoded text of a string node, sharing the source when it has no
// escapes.
func (e *Evaluator) text(n *Node) string {
	raw := e.t.raw(n)
	if n.Kind != JSONEscaped {
		return raw
	}
	start := len(e.str)
	e.str = appendUnescaped(e.str, raw)
	return e.newString(start)
}

// newString returns e.str[start:] as a string. e.str only grows during an evaluation
// (appends write past its length; a reallocation leaves the old array to the strings
// that use it), so earlier strings stay intact until the next evaluation.
func (e *Evaluator) newString(start int) string {
	if len(e.str) == start {
		return ""
	}
	return unsafe.String(&e.str[start], len(e.str)-start)
}

func appendUnescaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			dst = append(dst, c)
			continue
		}
		i++
		switch s[i] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+5 > len(s) {
				return dst
			}
			r := rune(0)
			for _, h := range []byte(s[i+1 : i+5]) {
				d, _ := hexVal(h)
				r = r<<4 | rune(d)
			}
			i += 4
			if r >= 0xD800 && r < 0xDC00 && i+6 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
				r2 := rune(0)
				for _, h := range []byte(s[i+3 : i+7]) {
					d, _ := hexVal(h)
					r2 = r2<<4 | rune(d)
				}
				if r2 >= 0xDC00 && r2 < 0xE000 {
					r = (r-0xD800)<<10 + (r2 - 0xDC00) + 0x10000
					i += 6
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			dst = append(dst, s[i])
		}
	}
	return dst
}
