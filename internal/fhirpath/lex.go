package fhirpath

import (
	"strings"
	"unicode/utf8"
)

// tokKind is the kind of a lexical token.
type tokKind uint8

const (
	tEOF tokKind = iota
	tIdent
	tDelimIdent // `...`
	tString     // '...'
	tNumber     // 12 or 1.5
	tDate       // @2020-01-01
	tDateTime   // @2020-01-01T10:00
	tTime       // @T10:00
	tVar        // %name, %`name`, %'name'
	tSpecial    // $this $index $total
	tOp         // punctuation and symbolic operators
)

type token struct {
	kind tokKind
	pos  int    // byte offset in the expression
	text string // operator text, identifier, decoded string, literal text without '@'
}

// lexer turns an expression into tokens. It never panics on any input.
type lexer struct {
	src  string
	pos  int
	toks []token
}

func lex(src string) ([]token, error) {
	l := &lexer{src: src}
	for {
		if err := l.skipSpace(); err != nil {
			return nil, err
		}
		if l.pos >= len(l.src) {
			l.toks = append(l.toks, token{kind: tEOF, pos: l.pos})
			return l.toks, nil
		}
		if err := l.next(); err != nil {
			return nil, err
		}
	}
}

func (l *lexer) skipSpace() error {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f':
			l.pos++
		case c == '/' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '/':
			for l.pos < len(l.src) && l.src[l.pos] != '\n' {
				l.pos++
			}
		case c == '/' && l.pos+1 < len(l.src) && l.src[l.pos+1] == '*':
			end := strings.Index(l.src[l.pos+2:], "*/")
			if end < 0 {
				return errorAt(l.pos, "unterminated comment")
			}
			l.pos += 2 + end + 2
		default:
			return nil
		}
	}
	return nil
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (l *lexer) emit(k tokKind, start int, text string) {
	l.toks = append(l.toks, token{kind: k, pos: start, text: text})
}

func (l *lexer) next() error {
	start := l.pos
	c := l.src[l.pos]
	switch {
	case isIdentStart(c):
		for l.pos < len(l.src) && isIdentPart(l.src[l.pos]) {
			l.pos++
		}
		l.emit(tIdent, start, l.src[start:l.pos])
		return nil
	case isDigit(c):
		for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
			l.pos++
		}
		if l.pos+1 < len(l.src) && l.src[l.pos] == '.' && isDigit(l.src[l.pos+1]) {
			l.pos++
			for l.pos < len(l.src) && isDigit(l.src[l.pos]) {
				l.pos++
			}
		}
		l.emit(tNumber, start, l.src[start:l.pos])
		return nil
	case c == '\'' || c == '`':
		s, err := l.quoted(c)
		if err != nil {
			return err
		}
		if c == '\'' {
			l.emit(tString, start, s)
		} else {
			if s == "" {
				return errorAt(start, "empty name")
			}
			l.emit(tDelimIdent, start, s)
		}
		return nil
	case c == '@':
		return l.dateTime()
	case c == '%':
		l.pos++
		if l.pos < len(l.src) && (l.src[l.pos] == '`' || l.src[l.pos] == '\'') {
			s, err := l.quoted(l.src[l.pos])
			if err != nil {
				return err
			}
			if s == "" {
				return errorAt(start, "empty name")
			}
			l.emit(tVar, start, s)
			return nil
		}
		p := l.pos
		if p >= len(l.src) || !isIdentStart(l.src[p]) {
			return errorAt(start, "expected a name after %")
		}
		for l.pos < len(l.src) && (isIdentPart(l.src[l.pos]) || l.src[l.pos] == '-') {
			l.pos++
		}
		l.emit(tVar, start, l.src[p:l.pos])
		return nil
	case c == '$':
		l.pos++
		p := l.pos
		for l.pos < len(l.src) && isIdentPart(l.src[l.pos]) {
			l.pos++
		}
		name := l.src[p:l.pos]
		if name != "this" && name != "index" && name != "total" {
			return errorAt(start, "unknown special variable (expected $this, $index or $total)")
		}
		l.emit(tSpecial, start, name)
		return nil
	}
	// Operators: two-character ones first.
	if l.pos+1 < len(l.src) {
		two := l.src[l.pos : l.pos+2]
		switch two {
		case "<=", ">=", "!=", "!~":
			l.pos += 2
			l.emit(tOp, start, two)
			return nil
		}
	}
	switch c {
	case '.', '[', ']', '(', ')', '{', '}', ',', '+', '-', '*', '/', '&', '|', '<', '>', '=', '~':
		l.pos++
		l.emit(tOp, start, l.src[start:l.pos])
		return nil
	}
	if c >= utf8.RuneSelf {
		return errorAt(start, "unexpected character")
	}
	return errorAt(start, "unexpected character "+quoteByte(c))
}

func quoteByte(c byte) string {
	if c < ' ' || c == 0x7f {
		return "(control character)"
	}
	return "'" + string(rune(c)) + "'"
}

// quoted reads a '…' or `…` literal with FHIRPath escapes and returns its decoded text.
func (l *lexer) quoted(q byte) (string, error) {
	start := l.pos
	l.pos++
	var b strings.Builder
	plain := true
	from := l.pos
	for {
		if l.pos >= len(l.src) {
			return "", errorAt(start, "unterminated literal")
		}
		c := l.src[l.pos]
		if c == q {
			var s string
			if plain {
				s = l.src[from:l.pos]
			} else {
				s = b.String()
			}
			l.pos++
			return s, nil
		}
		if c != '\\' {
			if !plain {
				b.WriteByte(c)
			}
			l.pos++
			continue
		}
		if plain {
			plain = false
			b.WriteString(l.src[from:l.pos])
		}
		if l.pos+1 >= len(l.src) {
			return "", errorAt(l.pos, "unterminated escape")
		}
		e := l.src[l.pos+1]
		l.pos += 2
		switch e {
		case '\'', '"', '`', '\\', '/':
			b.WriteByte(e)
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			if l.pos+4 > len(l.src) {
				return "", errorAt(l.pos-2, "bad \\u escape")
			}
			r := rune(0)
			for _, h := range []byte(l.src[l.pos : l.pos+4]) {
				d, ok := hexVal(h)
				if !ok {
					return "", errorAt(l.pos-2, "bad \\u escape")
				}
				r = r<<4 | rune(d)
			}
			l.pos += 4
			b.WriteRune(r)
		default:
			// The grammar allows only the escapes above; other characters stand for themselves
			// in several implementations (e.g. "\." inside regexes written with single escapes).
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
}

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// dateTime reads @date, @dateTime or @Ttime; the text is validated when the literal is
// compiled.
func (l *lexer) dateTime() error {
	start := l.pos
	l.pos++
	p := l.pos
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		if isDigit(c) || c == '-' || c == ':' || c == 'T' || c == '.' || c == '+' || c == 'Z' {
			l.pos++
			continue
		}
		break
	}
	text := l.src[p:l.pos]
	switch {
	case text == "":
		return errorAt(start, "expected a date or time after @")
	case text[0] == 'T':
		l.emit(tTime, start, text[1:])
	case strings.IndexByte(text, 'T') >= 0:
		l.emit(tDateTime, start, text)
	default:
		l.emit(tDate, start, text)
	}
	return nil
}
