package fhirpath

import (
	"fmt"
	"regexp"
	"strings"
)

// SyntaxError is an error in an expression's text, at a byte offset.
type SyntaxError struct {
	Pos int    // byte offset in the expression
	Msg string // what is wrong, never a value from evaluated data
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("fhirpath: at %d: %s", e.Pos, e.Msg) }

func errorAt(pos int, msg string) error { return &SyntaxError{Pos: pos, Msg: msg} }

// op is the kind of an expression node.
type op uint8

const (
	opLiteral op = iota
	opEmpty      // {}
	opThis
	opIndex
	opTotal
	opVar
	opMember  // a[0] (nil: the focus) . name
	opFunc    // a[0] (nil: the focus) . fn(a[1:]...)
	opIndexer // a[0][a[1]]
	opNeg
	opPos
	opPathAgg // fused count()/exists()/empty() of a member or children() (see fuse)
	opDescend // fused a[0].descendants().name, or .as(typ) / .ofType(typ) (see fuse)
	opIs      // a[0] is typ
	opAs      // a[0] as typ
	// Binary operators, a[0] op a[1].
	opMul
	opDiv
	opIntDiv
	opMod
	opAdd
	opSub
	opConcat
	opUnion
	opLT
	opGT
	opLE
	opGE
	opEq
	opNe
	opEquiv
	opNotEquiv
	opIn
	opContains
	opAnd
	opOr
	opXor
	opImplies
)

var opNames = [...]string{
	opMul: "*", opDiv: "/", opIntDiv: "div", opMod: "mod", opAdd: "+", opSub: "-", opConcat: "&",
	opUnion: "|", opLT: "<", opGT: ">", opLE: "<=", opGE: ">=", opEq: "=", opNe: "!=", opEquiv: "~",
	opNotEquiv: "!~", opIn: "in", opContains: "contains", opAnd: "and", opOr: "or", opXor: "xor",
	opImplies: "implies", opIs: "is", opAs: "as",
}

// node is one node of a parsed expression.
type node struct {
	op   op
	pos  int
	name string  // member, function or variable name
	a    []*node // operands; for opMember/opFunc a[0] is the target (nil = the focus)
	lit  Value   // opLiteral
	fn   *funcDef
	typ  typeSpec       // opIs, opAs and type-argument functions
	re   *regexp.Regexp // matches()/replaceMatches() with a literal pattern, compiled once
	memo bool           // evaluated once per Test/Eval and then reused (see hoist)
}

// binding powers of infix operators (higher binds tighter), per the N1 grammar.
func infixOp(t token) (op, int) {
	switch t.kind {
	case tOp:
		switch t.text {
		case "*":
			return opMul, 10
		case "/":
			return opDiv, 10
		case "+":
			return opAdd, 9
		case "-":
			return opSub, 9
		case "&":
			return opConcat, 9
		case "|":
			return opUnion, 7
		case "<":
			return opLT, 6
		case ">":
			return opGT, 6
		case "<=":
			return opLE, 6
		case ">=":
			return opGE, 6
		case "=":
			return opEq, 5
		case "!=":
			return opNe, 5
		case "~":
			return opEquiv, 5
		case "!~":
			return opNotEquiv, 5
		}
	case tIdent:
		switch t.text {
		case "div":
			return opIntDiv, 10
		case "mod":
			return opMod, 10
		case "is":
			return opIs, 8
		case "as":
			return opAs, 8
		case "in":
			return opIn, 4
		case "contains":
			return opContains, 4
		case "and":
			return opAnd, 3
		case "or":
			return opOr, 2
		case "xor":
			return opXor, 2
		case "implies":
			return opImplies, 1
		}
	}
	return 0, 0
}

const maxDepth = 200

type parser struct {
	toks  []token
	i     int
	depth int
}

// parse parses a whole expression.
func parse(src string) (*node, error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	n, err := p.expr(0)
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tEOF {
		return nil, errorAt(t.pos, "unexpected "+describe(t))
	}
	return n, nil
}

func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of expression"
	case tOp, tIdent:
		return "'" + t.text + "'"
	case tString:
		return "string literal"
	case tNumber:
		return "number"
	}
	return "token"
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) peekAt(k int) token {
	if p.i+k < len(p.toks) {
		return p.toks[p.i+k]
	}
	return p.toks[len(p.toks)-1]
}

func (p *parser) isOp(text string) bool {
	t := p.toks[p.i]
	return t.kind == tOp && t.text == text
}

func (p *parser) expect(text string) error {
	if !p.isOp(text) {
		return errorAt(p.peek().pos, "expected '"+text+"', found "+describe(p.peek()))
	}
	p.i++
	return nil
}

func (p *parser) expr(minBP int) (*node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, errorAt(p.peek().pos, "expression nested too deeply")
	}
	left, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		o, bp := infixOp(t)
		if bp == 0 || bp <= minBP {
			return left, nil
		}
		p.i++
		if o == opIs || o == opAs {
			ts, err := p.typeSpecifier()
			if err != nil {
				return nil, err
			}
			left = &node{op: o, pos: t.pos, a: []*node{left}, typ: ts}
			continue
		}
		right, err := p.expr(bp)
		if err != nil {
			return nil, err
		}
		left = &node{op: o, pos: t.pos, a: []*node{left, right}}
	}
}

func (p *parser) unary() (*node, error) {
	t := p.peek()
	if t.kind == tOp && (t.text == "-" || t.text == "+") {
		p.i++
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > maxDepth {
			return nil, errorAt(t.pos, "expression nested too deeply")
		}
		operand, err := p.unary()
		if err != nil {
			return nil, err
		}
		o := opNeg
		if t.text == "+" {
			o = opPos
		}
		return &node{op: o, pos: t.pos, a: []*node{operand}}, nil
	}
	return p.postfix()
}

func (p *parser) postfix() (*node, error) {
	n, err := p.term()
	if err != nil {
		return nil, err
	}
	for {
		t := p.peek()
		switch {
		case t.kind == tOp && t.text == ".":
			p.i++
			n, err = p.invocation(n)
			if err != nil {
				return nil, err
			}
		case t.kind == tOp && t.text == "[":
			p.i++
			idx, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect("]"); err != nil {
				return nil, err
			}
			n = &node{op: opIndexer, pos: t.pos, a: []*node{n, idx}}
		default:
			return n, nil
		}
	}
}

// invocation parses a member or function call on target (nil: the focus).
func (p *parser) invocation(target *node) (*node, error) {
	t := p.peek()
	if t.kind != tIdent && t.kind != tDelimIdent {
		if t.kind == tSpecial && target == nil {
			p.i++
			return specialNode(t), nil
		}
		return nil, errorAt(t.pos, "expected a name, found "+describe(t))
	}
	p.i++
	if t.kind == tIdent && p.isOp("(") {
		p.i++
		args := []*node{target}
		if !p.isOp(")") {
			for {
				a, err := p.expr(0)
				if err != nil {
					return nil, err
				}
				args = append(args, a)
				if p.isOp(",") {
					p.i++
					continue
				}
				break
			}
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		return &node{op: opFunc, pos: t.pos, name: t.text, a: args}, nil
	}
	return &node{op: opMember, pos: t.pos, name: t.text, a: []*node{target}}, nil
}

func specialNode(t token) *node {
	switch t.text {
	case "this":
		return &node{op: opThis, pos: t.pos}
	case "index":
		return &node{op: opIndex, pos: t.pos}
	}
	return &node{op: opTotal, pos: t.pos}
}

var calendarUnits = map[string]string{
	"year": "year", "years": "year", "month": "month", "months": "month", "week": "week", "weeks": "week",
	"day": "day", "days": "day", "hour": "hour", "hours": "hour", "minute": "minute", "minutes": "minute",
	"second": "second", "seconds": "second", "millisecond": "millisecond", "milliseconds": "millisecond",
}

func (p *parser) term() (*node, error) {
	t := p.peek()
	switch t.kind {
	case tEOF:
		return nil, errorAt(t.pos, "unexpected end of expression")
	case tNumber:
		p.i++
		num, err := parseNumberLiteral(t.text)
		if err != nil {
			return nil, errorAt(t.pos, err.Error())
		}
		next := p.peek()
		if next.kind == tString {
			p.i++
			return &node{op: opLiteral, pos: t.pos, lit: quantityValue(num.dec(), next.text)}, nil
		}
		if next.kind == tIdent {
			if u, ok := calendarUnits[next.text]; ok {
				p.i++
				return &node{op: opLiteral, pos: t.pos, lit: quantityValue(num.dec(), u)}, nil
			}
		}
		return &node{op: opLiteral, pos: t.pos, lit: num}, nil
	case tString:
		p.i++
		return &node{op: opLiteral, pos: t.pos, lit: stringValue(t.text)}, nil
	case tDate, tDateTime, tTime:
		p.i++
		v, err := parseTemporalLiteral(t.kind, t.text)
		if err != nil {
			return nil, errorAt(t.pos, err.Error())
		}
		return &node{op: opLiteral, pos: t.pos, lit: v}, nil
	case tVar:
		p.i++
		return &node{op: opVar, pos: t.pos, name: t.text}, nil
	case tSpecial:
		p.i++
		return specialNode(t), nil
	case tDelimIdent:
		return p.invocation(nil)
	case tIdent:
		switch t.text {
		case "true", "false":
			if !p.peekIsOpAt(1, "(") {
				p.i++
				return &node{op: opLiteral, pos: t.pos, lit: boolValue(t.text == "true")}, nil
			}
		case "and", "or", "xor", "implies", "div", "mod":
			if !p.peekIsOpAt(1, "(") {
				return nil, errorAt(t.pos, "unexpected "+describe(t))
			}
		case "is", "as", "in", "contains":
			if !p.peekIsOpAt(1, "(") {
				return nil, errorAt(t.pos, "unexpected "+describe(t))
			}
		}
		return p.invocation(nil)
	case tOp:
		switch t.text {
		case "(":
			p.i++
			n, err := p.expr(0)
			if err != nil {
				return nil, err
			}
			if err := p.expect(")"); err != nil {
				return nil, err
			}
			return n, nil
		case "{":
			p.i++
			if err := p.expect("}"); err != nil {
				return nil, err
			}
			return &node{op: opEmpty, pos: t.pos}, nil
		}
	}
	return nil, errorAt(t.pos, "unexpected "+describe(t))
}

func (p *parser) peekIsOpAt(k int, text string) bool {
	t := p.peekAt(k)
	return t.kind == tOp && t.text == text
}

// typeSpecifier parses a qualified type name: Quantity, FHIR.Patient, System.String.
func (p *parser) typeSpecifier() (typeSpec, error) {
	var parts []string
	for {
		t := p.peek()
		if t.kind != tIdent && t.kind != tDelimIdent {
			return typeSpec{}, errorAt(t.pos, "expected a type name, found "+describe(t))
		}
		p.i++
		parts = append(parts, t.text)
		if len(parts) == 1 && (t.text == "FHIR" || t.text == "System") && p.isOp(".") &&
			(p.peekAt(1).kind == tIdent || p.peekAt(1).kind == tDelimIdent) {
			p.i++
			continue
		}
		break
	}
	return newTypeSpec(strings.Join(parts, ".")), nil
}
