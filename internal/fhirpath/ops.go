package fhirpath

import (
	"math/big"
	"strings"
	"unicode"
)

// tri is a three-valued comparison result.
type tri int8

const (
	triUnknown tri = -1
	triFalse   tri = 0
	triTrue    tri = 1
)

func isNumber(k Kind) bool { return k == KindInteger || k == KindDecimal }

func isDateKind(k Kind) bool { return k == KindDate || k == KindDateTime }

// eq is FHIRPath equality of two items.
func (e *Evaluator) eq(a, b Value) tri {
	if a.kind == KindNode && b.kind == KindNode && a.n == b.n {
		return triTrue
	}
	a, b = e.sys(a), e.sys(b)
	switch {
	case a.kind == KindNode && b.kind == KindNode:
		return boolTri(e.deepEqual(NodeID(a.n), NodeID(b.n)))
	case a.kind == KindNode || b.kind == KindNode:
		return triFalse
	case isNumber(a.kind) && isNumber(b.kind):
		return boolTri(cmpDecimal(a.dec(), b.dec()) == 0)
	case a.kind == KindString && b.kind == KindString:
		return boolTri(a.str == b.str)
	case a.kind == KindBoolean && b.kind == KindBoolean:
		return boolTri(a.num == b.num)
	case isDateKind(a.kind) && isDateKind(b.kind), a.kind == KindTime && b.kind == KindTime:
		c, ok := e.cmpTemporal(a, b)
		if !ok {
			return triUnknown
		}
		return boolTri(c == 0)
	case a.kind == KindQuantity && b.kind == KindQuantity:
		c, ok := cmpQuantity(a, b)
		if !ok {
			return triUnknown
		}
		return boolTri(c == 0)
	case a.kind == kindRef && b.kind == kindRef:
		return boolTri(a.str == b.str)
	}
	return triFalse
}

func boolTri(b bool) tri {
	if b {
		return triTrue
	}
	return triFalse
}

// equiv is FHIRPath equivalence (~) of two items.
func (e *Evaluator) equiv(a, b Value) bool {
	a, b = e.sys(a), e.sys(b)
	switch {
	case a.kind == KindString && b.kind == KindString:
		return normalizeSpace(a.str) == normalizeSpace(b.str)
	case isNumber(a.kind) && isNumber(b.kind):
		x, y := a.dec(), b.dec()
		s := min(x.s, y.s)
		return cmpDecimal(x.round(s), y.round(s)) == 0
	case isDateKind(a.kind) && isDateKind(b.kind), a.kind == KindTime && b.kind == KindTime:
		c, ok := e.cmpTemporal(a, b)
		return ok && c == 0
	case a.kind == KindQuantity && b.kind == KindQuantity:
		c, ok := cmpQuantity(a, b)
		if ok {
			return c == 0
		}
		// Calendar years and months are equivalent to UCUM's a and mo.
		ua, ub := definiteUnit(a), definiteUnit(b)
		return ua != "" && ua == ub && cmpDecimal(a.dec(), b.dec()) == 0
	}
	return e.eq(a, b) == triTrue
}

func normalizeSpace(s string) string {
	return strings.ToLower(strings.Join(strings.FieldsFunc(s, unicode.IsSpace), " "))
}

// deepEqual compares two elements: equal values and equal children, in order.
func (e *Evaluator) deepEqual(a, b NodeID) bool {
	nodes := e.t.nodes
	na, nb := &nodes[a], &nodes[b]
	if (na.Kind == NoValue) != (nb.Kind == NoValue) {
		return false
	}
	if na.Kind != NoValue {
		x, y := e.sys(nodeValue(a)), e.sys(nodeValue(b))
		if x.kind == KindNode || y.kind == KindNode || e.eq(x, y) != triTrue {
			return false
		}
	}
	ca, cb := na.first, nb.first
	for ca >= 0 && cb >= 0 {
		if nodes[ca].Name != nodes[cb].Name || !e.deepEqual(ca, cb) {
			return false
		}
		ca, cb = nodes[ca].next, nodes[cb].next
	}
	return ca < 0 && cb < 0
}

// cmpTemporal compares two dates, dateTimes or times; ok=false when unknown.
func (e *Evaluator) cmpTemporal(a, b Value) (int, bool) {
	ma, err1 := parseMoment(a.str, a.kind == KindTime)
	mb, err2 := parseMoment(b.str, b.kind == KindTime)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return cmpMoment(ma, mb)
}

// compare orders two items for < > <= >=; ok=false means unknown (empty), err a type
// mismatch.
func (e *Evaluator) compare(x *node, a, b Value) (int, bool, error) {
	a, b = e.sys(a), e.sys(b)
	switch {
	case isNumber(a.kind) && isNumber(b.kind):
		return cmpDecimal(a.dec(), b.dec()), true, nil
	case a.kind == KindString && b.kind == KindString:
		return strings.Compare(a.str, b.str), true, nil
	case isDateKind(a.kind) && isDateKind(b.kind), a.kind == KindTime && b.kind == KindTime:
		c, ok := e.cmpTemporal(a, b)
		return c, ok, nil
	case a.kind == KindQuantity && b.kind == KindQuantity:
		c, ok := cmpQuantity(a, b)
		return c, ok, nil
	case a.kind == KindQuantity && isNumber(b.kind), isNumber(a.kind) && b.kind == KindQuantity:
		// A plain number compares with a Quantity of unit '1' only.
		return 0, false, nil
	}
	return 0, false, evalErr(x, "cannot compare "+kindName(e, a)+" with "+kindName(e, b))
}

func kindName(e *Evaluator, v Value) string {
	if v.kind == KindNode {
		return e.t.nodes[v.n].Type
	}
	return v.kind.String()
}

// binary evaluates the operators other than the logical ones.
func (e *Evaluator) binary(x *node, lo, hi int, it *iter) error {
	s := len(e.buf)
	if err := e.eval(x.a[0], lo, hi, it); err != nil {
		return err
	}
	m := len(e.buf)
	if err := e.eval(x.a[1], lo, hi, it); err != nil {
		return err
	}
	end := len(e.buf)
	nl, nr := m-s, end-m
	switch x.op {
	case opUnion:
		e.buf = e.buf[:e.dedupe(s, end)]
		return nil
	case opEq, opNe:
		var r tri
		switch {
		case nl == 0 || nr == 0:
			r = triUnknown
		case nl != nr:
			r = triFalse
		default:
			r = triTrue
			for i := 0; i < nl && r == triTrue; i++ {
				switch e.eq(e.buf[s+i], e.buf[m+i]) {
				case triFalse:
					r = triFalse
				case triUnknown:
					r = triUnknown
				}
			}
		}
		e.buf = e.buf[:s]
		if r == triUnknown {
			return nil
		}
		e.buf = append(e.buf, boolValue((r == triTrue) == (x.op == opEq)))
		return nil
	case opEquiv, opNotEquiv:
		r := nl == nr
		if r && nl > 0 {
			r = e.sameItems(s, m, m, end)
		}
		e.buf = e.buf[:s]
		e.buf = append(e.buf, boolValue(r == (x.op == opEquiv)))
		return nil
	case opIn, opContains:
		is, cs, ce := s, m, end // item range start, collection range
		if x.op == opContains {
			is, cs, ce = m, s, m
		}
		if (x.op == opIn && nl == 0) || (x.op == opContains && nr == 0) {
			e.buf = e.buf[:s]
			return nil
		}
		if (x.op == opIn && nl > 1) || (x.op == opContains && nr > 1) {
			return evalErr(x, "expected a single value, got a collection")
		}
		found := e.containsValue(cs, ce, e.buf[is])
		e.buf = e.buf[:s]
		e.buf = append(e.buf, boolValue(found))
		return nil
	case opConcat:
		if nl > 1 || nr > 1 {
			return evalErr(x, "expected a single value, got a collection")
		}
		start := len(e.str)
		for i := s; i < end; i++ {
			v := e.sys(e.buf[i])
			if v.kind != KindString {
				return evalErr(x, "& needs strings")
			}
			e.str = append(e.str, v.str...)
		}
		e.buf = e.buf[:s]
		e.buf = append(e.buf, stringValue(e.newString(start)))
		return nil
	}
	if nl == 0 || nr == 0 {
		e.buf = e.buf[:s]
		return nil
	}
	if nl > 1 || nr > 1 {
		return evalErr(x, "expected a single value, got a collection")
	}
	a, b := e.buf[s], e.buf[m]
	e.buf = e.buf[:s]
	switch x.op {
	case opLT, opGT, opLE, opGE:
		var c int
		if a.kind == KindInteger && b.kind == KindInteger {
			c = cmpInt(a.num, b.num)
		} else {
			var ok bool
			var err error
			c, ok, err = e.compare(x, a, b)
			if err != nil || !ok {
				return err
			}
		}
		var r bool
		switch x.op {
		case opLT:
			r = c < 0
		case opGT:
			r = c > 0
		case opLE:
			r = c <= 0
		default:
			r = c >= 0
		}
		e.buf = append(e.buf, boolValue(r))
		return nil
	}
	v, ok, err := e.arith(x, e.sys(a), e.sys(b))
	if err != nil || !ok {
		return err
	}
	e.buf = append(e.buf, v)
	return nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// containsValue reports whether buf[lo:hi] holds an item equal to v.
// dedupe removes the items of buf[lo:hi] equal to an earlier one, keeping the order,
// and returns the new end. Past a few items, strings (most large collections hold
// strings: descendants' references and URIs for dom-3) are matched through a hash set
// instead of being compared with every kept item; a String equals only a String, so
// the other items are still compared one by one.
func (e *Evaluator) dedupe(lo, hi int) int {
	w := lo
	if hi-lo <= 16 {
		for i := lo; i < hi; i++ {
			if !e.containsValue(lo, w, e.buf[i]) {
				e.buf[w] = e.buf[i]
				w++
			}
		}
		return w
	}
	e.steps += int64(hi - lo)
	if e.seen == nil {
		e.seen = map[string]struct{}{}
	} else {
		clear(e.seen)
	}
	for i := lo; i < hi; i++ {
		v := e.buf[i]
		if sv := e.sys(v); sv.kind == KindString {
			if _, dup := e.seen[sv.str]; dup {
				continue
			}
			e.seen[sv.str] = struct{}{}
		} else if e.containsValue(lo, w, v) {
			continue
		}
		e.buf[w] = v
		w++
	}
	return w
}

func (e *Evaluator) containsValue(lo, hi int, v Value) bool {
	e.steps += int64(hi - lo)
	for i := lo; i < hi; i++ {
		if e.eq(e.buf[i], v) == triTrue {
			return true
		}
	}
	return false
}

// sameItems reports whether two ranges of equal length are equivalent in any order.
func (e *Evaluator) sameItems(al, ah, bl, bh int) bool {
	var used [64]bool
	if bh-bl > len(used) {
		return false
	}
	for i := al; i < ah; i++ {
		found := false
		for j := bl; j < bh; j++ {
			if !used[j-bl] && e.equiv(e.buf[i], e.buf[j]) {
				used[j-bl], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// arith evaluates + - * / div mod on two System values.
func (e *Evaluator) arith(x *node, a, b Value) (Value, bool, error) {
	switch {
	case a.kind == KindInteger && b.kind == KindInteger && x.op != opDiv:
		p, q := a.num, b.num
		var r int64
		switch x.op {
		case opAdd:
			r = p + q
			if (p > 0 && q > 0 && r < 0) || (p < 0 && q < 0 && r >= 0) {
				return Value{}, false, nil
			}
		case opSub:
			r = p - q
			if (p >= 0 && q < 0 && r < 0) || (p < 0 && q > 0 && r >= 0) {
				return Value{}, false, nil
			}
		case opMul:
			r = p * q
			if p != 0 && (r/p != q || (p == -1 && q == -1<<63)) {
				return Value{}, false, nil
			}
		case opIntDiv, opMod:
			if q == 0 || (p == -1<<63 && q == -1) {
				return Value{}, false, nil
			}
			if x.op == opIntDiv {
				r = p / q
			} else {
				r = p % q
			}
		}
		return intValue(r), true, nil
	case isNumber(a.kind) && isNumber(b.kind):
		p, q := a.dec(), b.dec()
		var d decimal
		var ok bool
		switch x.op {
		case opAdd:
			d, ok = addDecimal(p, q, false)
		case opSub:
			d, ok = addDecimal(p, q, true)
		case opMul:
			d, ok = mulDecimal(p, q)
		case opDiv:
			d, ok = divDecimal(p, q)
		case opIntDiv:
			if q.c == 0 {
				return Value{}, false, nil
			}
			r := new(big.Rat).Quo(p.rat(), q.rat())
			i := new(big.Int).Quo(r.Num(), r.Denom())
			if !i.IsInt64() {
				return Value{}, false, nil
			}
			return intValue(i.Int64()), true, nil
		case opMod:
			if q.c == 0 {
				return Value{}, false, nil
			}
			r := new(big.Rat).Quo(p.rat(), q.rat())
			i := new(big.Int).Quo(r.Num(), r.Denom())
			rem := new(big.Rat).Sub(p.rat(), new(big.Rat).Mul(new(big.Rat).SetInt(i), q.rat()))
			d, ok = ratDecimal(rem, max(p.s, q.s))
		}
		if !ok {
			return Value{}, false, nil
		}
		return decimalValue(d), true, nil
	case a.kind == KindString && b.kind == KindString && x.op == opAdd:
		start := len(e.str)
		e.str = append(e.str, a.str...)
		e.str = append(e.str, b.str...)
		return stringValue(e.newString(start)), true, nil
	case isDateKind(a.kind) || a.kind == KindTime:
		if b.kind != KindQuantity || (x.op != opAdd && x.op != opSub) {
			return Value{}, false, evalErr(x, "date arithmetic needs a time quantity")
		}
		return e.addDuration(x, a, b, x.op == opSub)
	case a.kind == KindQuantity && b.kind == KindQuantity && (x.op == opAdd || x.op == opSub):
		if a.str != b.str {
			return Value{}, false, nil
		}
		d, ok := addDecimal(a.dec(), b.dec(), x.op == opSub)
		if !ok {
			return Value{}, false, nil
		}
		q := quantityValue(d, a.str)
		q.flags = a.flags
		return q, true, nil
	case a.kind == KindQuantity && isNumber(b.kind) && (x.op == opMul || x.op == opDiv):
		var d decimal
		var ok bool
		if x.op == opMul {
			d, ok = mulDecimal(a.dec(), b.dec())
		} else {
			d, ok = divDecimal(a.dec(), b.dec())
		}
		if !ok {
			return Value{}, false, nil
		}
		q := quantityValue(d, a.str)
		q.flags = a.flags
		return q, true, nil
	}
	return Value{}, false, evalErr(x, "operator "+opNames[x.op]+" does not apply to "+kindName(e, a)+" and "+kindName(e, b))
}
