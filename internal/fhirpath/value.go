package fhirpath

import (
	"errors"
	"math"
	"math/big"
	"strconv"
)

// Kind is the FHIRPath type of a value: a node of the tree, or one of the System types.
type Kind uint8

// The kinds of values.
const (
	KindNode     Kind = iota // an element or resource of the tree (see Value.Node)
	KindBoolean              // System.Boolean
	KindInteger              // System.Integer
	KindDecimal              // System.Decimal
	KindString               // System.String
	KindDate                 // System.Date
	KindDateTime             // System.DateTime
	KindTime                 // System.Time
	KindQuantity             // System.Quantity

	// kindRef is the result of resolve(): the referenced resource's type (in str), not
	// its content.
	kindRef Kind = 100
)

var kindNames = [...]string{"Node", "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity"}

// String returns the System type name of k ("Node" for tree nodes).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// flags of a Value.
const flagCalendar uint8 = 1 // a Quantity whose unit is a calendar duration keyword (year … millisecond)

// Value is one item of a collection: a node of the tree or a System value. It is small and
// copied by value; a String's text may point into the tree's source or the evaluator's
// scratch memory, so a Value is valid until the tree or the evaluator is reused.
type Value struct {
	n     int32  // node index, -1 for System values
	kind  Kind   //
	prec  uint8  // Decimal and Quantity: digits after the point; temporal: precision
	flags uint8  //
	num   int64  // Boolean 0/1, Integer, Decimal and Quantity coefficient
	str   string // String text, temporal text (ISO 8601, without '@' or 'T' for Time), Quantity unit; resolve(): type
}

func nodeValue(i NodeID) Value     { return Value{n: int32(i), kind: KindNode} }
func boolValue(b bool) Value       { return Value{n: -1, kind: KindBoolean, num: b2i(b)} }
func intValue(i int64) Value       { return Value{n: -1, kind: KindInteger, num: i} }
func stringValue(s string) Value   { return Value{n: -1, kind: KindString, str: s} }
func decimalValue(d decimal) Value { return Value{n: -1, kind: KindDecimal, num: d.c, prec: d.s} }
func temporalValue(k Kind, s string, p uint8) Value {
	return Value{n: -1, kind: k, str: s, prec: p}
}

func quantityValue(d decimal, unit string) Value {
	v := Value{n: -1, kind: KindQuantity, num: d.c, prec: d.s, str: unit}
	if _, ok := calendarUnits[unit]; ok && unit == calendarUnits[unit] {
		v.flags |= flagCalendar
	}
	return v
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Kind returns the value's kind.
func (v Value) Kind() Kind { return v.kind }

// Node returns the tree node of a KindNode value, and -1 for a System value.
func (v Value) Node() NodeID {
	if v.kind != KindNode {
		return -1
	}
	return NodeID(v.n)
}

// Bool returns a Boolean's value.
func (v Value) Bool() bool { return v.num != 0 }

// Int returns an Integer's value.
func (v Value) Int() int64 { return v.num }

// Unit returns a Quantity's unit: a UCUM code, or a calendar keyword (year, month, week,
// day, hour, minute, second, millisecond).
func (v Value) Unit() string {
	if v.kind == KindQuantity {
		return v.str
	}
	return ""
}

// String returns a System value as FHIRPath's toString() writes it (a Quantity as
// "4 'mg'"); for a node it returns "".
func (v Value) String() string {
	switch v.kind {
	case KindBoolean:
		if v.num != 0 {
			return "true"
		}
		return "false"
	case KindInteger:
		return strconv.FormatInt(v.num, 10)
	case KindDecimal:
		return decimal{v.num, v.prec}.String()
	case KindString, KindDate, KindDateTime:
		return v.str
	case KindTime:
		return v.str
	case KindQuantity:
		return decimal{v.num, v.prec}.String() + " '" + v.str + "'"
	}
	return ""
}

func (v Value) dec() decimal {
	if v.kind == KindInteger {
		return decimal{c: v.num}
	}
	return decimal{c: v.num, s: v.prec}
}

// decimal is a fixed-point decimal: c × 10^-s. Literals and data keep up to 18
// significant digits; more are rounded (FHIR data rarely carries more, and FHIRPath only
// promises 8 digits after the point).
type decimal struct {
	c int64
	s uint8
}

const maxScale = 18

var pow10 = func() [19]int64 {
	var p [19]int64
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

var errRange = errors.New("number out of range")

// parseDecimal parses a JSON or FHIRPath number: -?digits(.digits)?([eE][+-]?digits)?.
func parseDecimal(b string) (decimal, error) {
	i := 0
	neg := false
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		neg = b[i] == '-'
		i++
	}
	var c int64
	var s int
	digits := 0 // significant digits kept
	seenDigit := false
	dropped := false
	roundUp := false
	for ; i < len(b) && isDigit(b[i]); i++ {
		seenDigit = true
		d := int64(b[i] - '0')
		if digits == 0 && d == 0 {
			continue
		}
		if digits >= maxScale {
			return decimal{}, errRange
		}
		c = c*10 + d
		digits++
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return decimal{}, errors.New("malformed number")
		}
		for ; i < len(b) && isDigit(b[i]); i++ {
			d := int64(b[i] - '0')
			if digits >= maxScale || s >= maxScale {
				if !dropped {
					roundUp = d >= 5
				}
				dropped = true
				continue
			}
			c = c*10 + d
			s++
			if c != 0 {
				digits++
			}
		}
	}
	if !seenDigit {
		return decimal{}, errors.New("malformed number")
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '-' || b[i] == '+') {
			eneg = b[i] == '-'
			i++
		}
		e := 0
		start := i
		for ; i < len(b) && isDigit(b[i]); i++ {
			if e > 400 {
				return decimal{}, errRange
			}
			e = e*10 + int(b[i]-'0')
		}
		if i == start {
			return decimal{}, errors.New("malformed number")
		}
		if eneg {
			s += e
		} else {
			for ; e > 0 && s > 0; e-- {
				s--
			}
			for ; e > 0; e-- {
				if c > math.MaxInt64/10 {
					return decimal{}, errRange
				}
				c *= 10
			}
		}
		for s > maxScale {
			roundUp = c%10 >= 5
			c /= 10
			s--
		}
	}
	if i != len(b) {
		return decimal{}, errors.New("malformed number")
	}
	if roundUp {
		c++
	}
	if neg {
		c = -c
	}
	return decimal{c: c, s: uint8(s)}, nil
}

// parseNumberLiteral turns a FHIRPath number token into an Integer or a Decimal.
func parseNumberLiteral(text string) (Value, error) {
	for i := 0; i < len(text); i++ {
		if text[i] == '.' {
			d, err := parseDecimal(text)
			if err != nil {
				return Value{}, err
			}
			return decimalValue(d), nil
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return Value{}, errRange
	}
	return intValue(n), nil
}

func (d decimal) String() string {
	neg := d.c < 0
	c := d.c
	if neg {
		c = -c
	}
	s := strconv.FormatInt(c, 10)
	if c < 0 { // MinInt64
		s = s[1:]
	}
	if d.s > 0 {
		for len(s) <= int(d.s) {
			s = "0" + s
		}
		s = s[:len(s)-int(d.s)] + "." + s[len(s)-int(d.s):]
	}
	if neg {
		s = "-" + s
	}
	return s
}

func (d decimal) rat() *big.Rat {
	r := new(big.Rat).SetInt64(d.c)
	if d.s > 0 {
		r.Quo(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(d.s)), nil)))
	}
	return r
}

// align returns both coefficients at the larger scale, or ok=false on overflow.
func align(a, b decimal) (int64, int64, uint8, bool) {
	switch {
	case a.s == b.s:
		return a.c, b.c, a.s, true
	case a.s < b.s:
		x, ok := mul10(a.c, b.s-a.s)
		return x, b.c, b.s, ok
	default:
		y, ok := mul10(b.c, a.s-b.s)
		return a.c, y, a.s, ok
	}
}

func mul10(c int64, n uint8) (int64, bool) {
	if n > maxScale {
		return 0, c == 0
	}
	p := pow10[n]
	r := c * p
	if c != 0 && (r/p != c) {
		return 0, false
	}
	return r, true
}

func cmpDecimal(a, b decimal) int {
	x, y, _, ok := align(a, b)
	if !ok {
		return a.rat().Cmp(b.rat())
	}
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func addDecimal(a, b decimal, sub bool) (decimal, bool) {
	x, y, s, ok := align(a, b)
	if !ok {
		return decimal{}, false
	}
	if sub {
		y = -y
	}
	r := x + y
	if (x > 0 && y > 0 && r < 0) || (x < 0 && y < 0 && r >= 0) {
		return decimal{}, false
	}
	return decimal{c: r, s: s}, true
}

func mulDecimal(a, b decimal) (decimal, bool) {
	r := new(big.Rat).Mul(a.rat(), b.rat())
	return ratDecimal(r, a.s+b.s)
}

// divDecimal divides with 8 digits after the point (FHIRPath's minimum decimal precision).
func divDecimal(a, b decimal) (decimal, bool) {
	if b.c == 0 {
		return decimal{}, false
	}
	r := new(big.Rat).Quo(a.rat(), b.rat())
	return ratDecimal(r, 8)
}

// ratDecimal rounds r half away from zero to at most scale digits after the point,
// dropping trailing zeros beyond the scale needed.
func ratDecimal(r *big.Rat, scale uint8) (decimal, bool) {
	if scale > maxScale {
		scale = maxScale
	}
	num := new(big.Int).Mul(r.Num(), new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
	q, m := new(big.Int).QuoRem(num, r.Denom(), new(big.Int))
	m.Abs(m).Mul(m, big.NewInt(2))
	if m.Cmp(r.Denom()) >= 0 {
		if num.Sign() < 0 {
			q.Sub(q, big.NewInt(1))
		} else {
			q.Add(q, big.NewInt(1))
		}
	}
	if !q.IsInt64() {
		return decimal{}, false
	}
	d := decimal{c: q.Int64(), s: scale}
	for d.s > 0 && d.c%10 == 0 {
		d.c /= 10
		d.s--
	}
	return d, true
}

// round returns d rounded half away from zero to s digits after the point.
func (d decimal) round(s uint8) decimal {
	if d.s <= s {
		return d
	}
	p := pow10[d.s-s]
	q, r := d.c/p, d.c%p
	if 2*r >= p {
		q++
	} else if 2*r <= -p {
		q--
	}
	return decimal{c: q, s: s}
}

func (d decimal) float() float64 {
	f, _ := strconv.ParseFloat(d.String(), 64)
	return f
}

func floatDecimal(f float64) (decimal, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return decimal{}, false
	}
	d, err := parseDecimal(strconv.FormatFloat(f, 'f', -1, 64))
	if err != nil {
		// Very small or very large: keep 18 significant digits.
		d, err = parseDecimal(strconv.FormatFloat(f, 'e', 17, 64))
	}
	return d, err == nil
}
