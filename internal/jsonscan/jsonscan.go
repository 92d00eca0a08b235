// Package jsonscan finds the parts of JSON text — an object's members, an
// array's elements, the end of a value — without decoding it or allocating.
// It checks structure (brackets, quotes, colons, commas, nesting depth) but
// not the spelling of literals: it is for JSON that a parser has already
// accepted or that a server produced, where a structural fault is reported
// (false) and never panics. Verify's comparer and the loader's read path
// use it on every resource they read back.
package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting ValueEnd follows.
const MaxDepth = 128

// IsSpace reports whether c is JSON whitespace.
func IsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// SkipSpace returns the first index at or after p that is not whitespace.
func SkipSpace(b []byte, p int) int {
	for p < len(b) && IsSpace(b[p]) {
		p++
	}
	return p
}

// Trim returns b without leading and trailing whitespace.
func Trim(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && IsSpace(b[i]) {
		i++
	}
	for j > i && IsSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

// StringEnd returns the index after the closing quote of the string
// literal whose opening quote is at p, and whether it has escapes.
func StringEnd(b []byte, p int) (end int, escaped, ok bool) {
	// Most strings have no escape: find the quote with the vectorised
	// IndexByte and check the span for a backslash the same way.
	if j := bytes.IndexByte(b[p+1:], '"'); j >= 0 && bytes.IndexByte(b[p+1:p+1+j], '\\') < 0 {
		return p + 2 + j, false, true
	}
	for i := p + 1; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i + 1, escaped, true
		case '\\':
			escaped = true
			i++
		}
	}
	return len(b), escaped, false
}

// ValueEnd returns the index after the JSON value that starts at p.
func ValueEnd(b []byte, p int) (int, bool) { return valueEnd(b, p, 0) }

func valueEnd(b []byte, p, depth int) (int, bool) {
	if p >= len(b) || depth > MaxDepth {
		return p, false
	}
	switch c := b[p]; c {
	case '"':
		end, _, ok := StringEnd(b, p)
		return end, ok
	case '{', '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		p = SkipSpace(b, p+1)
		if p < len(b) && b[p] == closing {
			return p + 1, true
		}
		for {
			var ok bool
			if c == '{' {
				if p >= len(b) || b[p] != '"' {
					return p, false
				}
				if p, _, ok = StringEnd(b, p); !ok {
					return p, false
				}
				p = SkipSpace(b, p)
				if p >= len(b) || b[p] != ':' {
					return p, false
				}
				p = SkipSpace(b, p+1)
			}
			if p, ok = valueEnd(b, p, depth+1); !ok {
				return p, false
			}
			p = SkipSpace(b, p)
			if p >= len(b) {
				return p, false
			}
			if b[p] == closing {
				return p + 1, true
			}
			if b[p] != ',' {
				return p, false
			}
			p = SkipSpace(b, p+1)
		}
	default: // number, true, false, null
		start := p
		for p < len(b) && !isDelim(b[p]) {
			p++
		}
		return p, p > start
	}
}

func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ':' || c == '"' || c == '{' || c == '[' || IsSpace(c)
}

// Member is one member of an object: its key (raw, between the quotes) and
// its value's bytes.
type Member struct {
	Key     []byte
	Value   []byte
	Escaped bool // Key has escapes
}

// AppendMembers appends the members of the object b (surrounding whitespace
// allowed) to dst, in order. It reports false when b is not an object.
func AppendMembers(dst []Member, b []byte) ([]Member, bool) {
	b = Trim(b)
	if len(b) < 2 || b[0] != '{' {
		return dst, false
	}
	p := SkipSpace(b, 1)
	if p < len(b) && b[p] == '}' {
		return dst, p+1 == len(b)
	}
	for {
		if p >= len(b) || b[p] != '"' {
			return dst, false
		}
		end, esc, ok := StringEnd(b, p)
		if !ok {
			return dst, false
		}
		key := b[p+1 : end-1]
		p = SkipSpace(b, end)
		if p >= len(b) || b[p] != ':' {
			return dst, false
		}
		p = SkipSpace(b, p+1)
		vend, ok := ValueEnd(b, p)
		if !ok {
			return dst, false
		}
		dst = append(dst, Member{Key: key, Value: b[p:vend], Escaped: esc})
		p = SkipSpace(b, vend)
		if p >= len(b) {
			return dst, false
		}
		if b[p] == '}' {
			return dst, p+1 == len(b)
		}
		if b[p] != ',' {
			return dst, false
		}
		p = SkipSpace(b, p+1)
	}
}

// AppendElements appends the elements of the array b (surrounding
// whitespace allowed) to dst, in order. It reports false when b is not an
// array.
func AppendElements(dst [][]byte, b []byte) ([][]byte, bool) {
	b = Trim(b)
	if len(b) < 2 || b[0] != '[' {
		return dst, false
	}
	p := SkipSpace(b, 1)
	if p < len(b) && b[p] == ']' {
		return dst, p+1 == len(b)
	}
	for {
		end, ok := ValueEnd(b, p)
		if !ok {
			return dst, false
		}
		dst = append(dst, b[p:end])
		p = SkipSpace(b, end)
		if p >= len(b) {
			return dst, false
		}
		if b[p] == ']' {
			return dst, p+1 == len(b)
		}
		if b[p] != ',' {
			return dst, false
		}
		p = SkipSpace(b, p+1)
	}
}

// Field returns the value of the first member named key (a plain key
// without escapes) of object b.
func Field(b []byte, key string) ([]byte, bool) {
	var buf [24]Member
	ms, ok := AppendMembers(buf[:0], b)
	if !ok {
		return nil, false
	}
	for _, m := range ms {
		if !m.Escaped && string(m.Key) == key {
			return m.Value, true
		}
	}
	return nil, false
}

// Str returns the text of the JSON string literal b (decoded), false when
// b is not a string.
func Str(b []byte) (string, bool) {
	b = Trim(b)
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	body := b[1 : len(b)-1]
	for _, c := range body {
		if c == '\\' {
			s, ok := Unescape(nil, body)
			return string(s), ok
		}
	}
	return string(body), true
}

// Unescape appends the decoded body of a JSON string literal (between the
// quotes) to dst: RFC 8259 escapes and \u surrogate pairs; a lone
// surrogate becomes U+FFFD, as encoding/json decodes it.
func Unescape(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			continue
		}
		i++
		if i >= len(s) {
			return dst, false
		}
		switch s[i] {
		case '"', '\\', '/':
			dst = append(dst, s[i])
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
			r, ok := hex4(s, i+1)
			if !ok {
				return dst, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(s, i+3); ok && i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						dst = utf8.AppendRune(dst, d)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, false
		}
	}
	return dst, true
}

func hex4(s []byte, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range s[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
