package verify

import (
	"bytes"
	"strconv"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// DefaultMaxPaths is how many differing paths Compare lists for one resource
// when Comparer.MaxPaths is zero; the rest are counted.
const DefaultMaxPaths = 20

// Comparer decides whether the target holds a resource as fhirload would
// write it. The zero value is ready to use and safe for concurrent use.
//
// The rule (what "equal" means; README.md "Verify" documents it for users):
//
//   - Key order does not matter; whitespace between tokens does not matter.
//   - Strings are compared after JSON unescaping ("\u00e9" equals "é").
//   - Numbers are compared by exact decimal value: 1, 1.0, 1.00 and 1e0 are
//     equal, 0.1 and 0.10000000000000001 are not (no floating point). FHIR
//     makes decimal precision significant and fhirload serve keeps number
//     literals byte for byte, so against serve a precision change cannot
//     happen; a server that re-serialises decimals (a Java BigDecimal or
//     double round trip turns 170.0 into 170) loses precision, not value,
//     and verify does not call that a difference.
//   - Arrays are ordered (FHIR repeating elements keep their order),
//     extensions included; element by element, then each extra or missing
//     index is a difference of its own.
//   - meta of the resource (top level only) holds what the server owns:
//     versionId and lastUpdated are ignored, and so is every meta element
//     the source does not have (a server may add source, tags, security
//     labels, profiles). Every meta element the source has must be there;
//     meta.tag, meta.security and meta.profile are sets: each one of the
//     source's must be present, in any order, extra ones are the server's.
//   - Anything else missing, extra or changed is a difference, reported as
//     a FHIRPath-like path (Patient.name[0].given[1]) — never a value.
type Comparer struct {
	// MaxPaths caps the paths listed per resource (DefaultMaxPaths when 0).
	MaxPaths int
}

// Diff is the result of one comparison.
type Diff struct {
	Paths   []string // the first MaxPaths differing paths, in document order of the source
	Omitted int      // differing paths found beyond MaxPaths
}

// Equal reports whether no difference was found.
func (d Diff) Equal() bool { return len(d.Paths) == 0 && d.Omitted == 0 }

// Compare compares want (the resource as fhirload would write it) with got
// (the resource as the target returned it). Both must be JSON objects; a
// value that is not well-formed JSON compares unequal at its path, never
// panics. typ names the root of the paths (the resource type).
func (c *Comparer) Compare(typ string, want, got []byte) Diff {
	s := statePool.Get().(*state)
	defer statePool.Put(s)
	s.reset(c.maxPaths(), typ)
	s.root(want, got)
	return Diff{Paths: s.paths, Omitted: s.omitted}
}

func (c *Comparer) maxPaths() int {
	if c == nil || c.MaxPaths <= 0 {
		return DefaultMaxPaths
	}
	return c.MaxPaths
}

var statePool = sync.Pool{New: func() any { return &state{} }}

// state is one comparison's scratch space: the current path and reusable
// member lists (one per depth, so a comparison allocates nothing but the
// paths it reports).
type state struct {
	path    []byte
	paths   []string
	omitted int
	max     int
	members [][]member // by depth and side (2*depth for the source, 2*depth+1 for the target)
	depth   int
	sa, sb  []byte // unescape buffers
}

func (s *state) reset(max int, root string) {
	s.path = append(s.path[:0], root...)
	s.paths = nil
	s.omitted = 0
	s.max = max
	s.depth = 0
}

// differ records the current path (with an optional last segment).
func (s *state) differ() {
	if len(s.paths) >= s.max {
		s.omitted++
		return
	}
	s.paths = append(s.paths, string(s.path))
}

// member is one key of an object with its value's span.
type member struct {
	key     []byte // raw, between the quotes
	val     []byte
	escaped bool // key has escapes
	matched bool
}

// root compares the two resources: objects whose top-level meta follows the
// server-owns rule.
func (s *state) root(want, got []byte) {
	want, got = trim(want), trim(got)
	if !isObject(want) || !isObject(got) {
		if !bytes.Equal(want, got) {
			s.differ()
		}
		return
	}
	s.object(want, got, true)
}

// value compares two JSON values at the current path.
func (s *state) value(a, b []byte) {
	a, b = trim(a), trim(b)
	if bytes.Equal(a, b) {
		return // the same bytes are the same value (the common case: serve keeps bytes)
	}
	if len(a) == 0 || len(b) == 0 {
		s.differ()
		return
	}
	switch {
	case a[0] == '{' && b[0] == '{':
		s.object(a, b, false)
	case a[0] == '[' && b[0] == '[':
		s.array(a, b)
	case a[0] == '"' && b[0] == '"':
		if !s.sameString(a, b) {
			s.differ()
		}
	case isNumberStart(a[0]) && isNumberStart(b[0]):
		if !sameNumber(a, b) {
			s.differ()
		}
	default: // different kinds, or true/false/null that are not byte-equal
		s.differ()
	}
}

// object compares two objects member by member, in the order of a (the
// source), then lists b's members that a does not have.
func (s *state) object(a, b []byte, top bool) {
	ma, okA := s.scanObject(a, 0)
	mb, okB := s.scanObject(b, 1)
	if !okA || !okB {
		s.differ()
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	mark := len(s.path)
	for i := range ma {
		j := find(mb, ma[i], i)
		s.appendKey(ma[i])
		switch {
		case j < 0:
			if !(top && isMetaKey(ma[i]) && metaEmpty(ma[i].val)) {
				s.differ() // missing at the target
			}
		case top && isMetaKey(ma[i]):
			mb[j].matched = true
			s.meta(ma[i].val, mb[j].val)
		default:
			mb[j].matched = true
			s.value(ma[i].val, mb[j].val)
		}
		s.path = s.path[:mark]
	}
	for j := range mb {
		if mb[j].matched {
			continue
		}
		if top && isMetaKey(mb[j]) {
			continue // the server's meta, and the source had none
		}
		s.appendKey(mb[j])
		s.differ() // extra at the target
		s.path = s.path[:mark]
	}
}

// meta compares the resource's meta: only what the source set counts.
func (s *state) meta(a, b []byte) {
	a, b = trim(a), trim(b)
	if bytes.Equal(a, b) {
		return
	}
	if !isObject(a) || !isObject(b) {
		s.differ()
		return
	}
	ma, okA := s.scanObject(a, 0)
	mb, okB := s.scanObject(b, 1)
	if !okA || !okB {
		s.differ()
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	mark := len(s.path)
	for i := range ma {
		if keyIs(ma[i], "versionId") || keyIs(ma[i], "lastUpdated") {
			continue
		}
		s.appendKey(ma[i])
		j := find(mb, ma[i], i)
		switch {
		case j < 0:
			s.differ()
		case keyIs(ma[i], "tag") || keyIs(ma[i], "security") || keyIs(ma[i], "profile"):
			s.subset(ma[i].val, mb[j].val)
		default:
			s.value(ma[i].val, mb[j].val)
		}
		s.path = s.path[:mark]
	}
}

// subset checks that every element of array a is in array b (any order).
// An element of a that b lacks is reported at its index in a.
func (s *state) subset(a, b []byte) {
	ea, okA := elements(a)
	eb, okB := elements(b)
	if !okA || !okB {
		s.differ()
		return
	}
	mark := len(s.path)
	for i, x := range ea {
		found := false
		for _, y := range eb {
			if s.equal(x, y) {
				found = true
				break
			}
		}
		if !found {
			s.path = appendIndex(s.path, i)
			s.differ()
			s.path = s.path[:mark]
		}
	}
}

// equal reports whether two values are equal under the rule, recording nothing.
func (s *state) equal(a, b []byte) bool {
	saved, omitted, max := s.paths, s.omitted, s.max
	s.paths, s.omitted, s.max = nil, 0, 0
	s.value(a, b)
	same := s.omitted == 0
	s.paths, s.omitted, s.max = saved, omitted, max
	return same
}

// array compares two arrays element by element.
func (s *state) array(a, b []byte) {
	ea, okA := elements(a)
	eb, okB := elements(b)
	if !okA || !okB {
		s.differ()
		return
	}
	mark := len(s.path)
	for i := range max(len(ea), len(eb)) {
		s.path = appendIndex(s.path, i)
		if i < len(ea) && i < len(eb) {
			s.value(ea[i], eb[i])
		} else {
			s.differ()
		}
		s.path = s.path[:mark]
	}
}

func appendIndex(p []byte, i int) []byte {
	p = append(p, '[')
	p = strconv.AppendInt(p, int64(i), 10)
	return append(p, ']')
}

// appendKey adds ".key" to the path; a key that is not a plain identifier is
// shown as ".?" (keys of a resource are element names, but a server's extra
// key is not ours to print).
func (s *state) appendKey(m member) {
	s.path = append(s.path, '.')
	if m.escaped || !isIdentifier(m.key) {
		s.path = append(s.path, '?')
		return
	}
	s.path = append(s.path, m.key...)
}

func isIdentifier(k []byte) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return true
}

func isMetaKey(m member) bool { return keyIs(m, "meta") }

func keyIs(m member, k string) bool { return !m.escaped && string(m.key) == k }

// metaEmpty reports whether a source meta holds nothing the target must
// keep (only versionId / lastUpdated, which are the server's).
func metaEmpty(v []byte) bool {
	var st state
	ms, ok := st.scanObject(trim(v), 0)
	if !ok {
		return false
	}
	for _, m := range ms {
		if !keyIs(m, "versionId") && !keyIs(m, "lastUpdated") {
			return false
		}
	}
	return true
}

// find returns the index in ms of the member named like m: first at hint
// (objects usually keep their order), else by scan; -1 when absent.
func find(ms []member, m member, hint int) int {
	if hint < len(ms) && !ms[hint].matched && sameKey(ms[hint], m) {
		return hint
	}
	for j := range ms {
		if !ms[j].matched && sameKey(ms[j], m) {
			return j
		}
	}
	return -1
}

func sameKey(a, b member) bool {
	if bytes.Equal(a.key, b.key) {
		return true
	}
	if !a.escaped && !b.escaped {
		return false
	}
	ka, okA := unescape(nil, a.key)
	kb, okB := unescape(nil, b.key)
	return okA && okB && bytes.Equal(ka, kb)
}

// scanObject lists an object's members into the scratch list of the
// current depth and side (valid until the next scan there).
func (s *state) scanObject(b []byte, side int) ([]member, bool) {
	slot := 2*s.depth + side
	for len(s.members) <= slot {
		s.members = append(s.members, nil)
	}
	ms := s.members[slot][:0]
	defer func() { s.members[slot] = ms[:0] }()
	p := 1 // after '{'
	p = skipWS(b, p)
	if p < len(b) && b[p] == '}' {
		return ms, skipWS(b, p+1) == len(b)
	}
	for {
		p = skipWS(b, p)
		if p >= len(b) || b[p] != '"' {
			return ms, false
		}
		end, esc, ok := stringEnd(b, p)
		if !ok {
			return ms, false
		}
		key := b[p+1 : end-1]
		p = skipWS(b, end)
		if p >= len(b) || b[p] != ':' {
			return ms, false
		}
		p = skipWS(b, p+1)
		vend, ok := valueEnd(b, p, 0)
		if !ok {
			return ms, false
		}
		ms = append(ms, member{key: key, val: b[p:vend], escaped: esc})
		p = skipWS(b, vend)
		if p >= len(b) {
			return ms, false
		}
		if b[p] == '}' {
			return ms, skipWS(b, p+1) == len(b)
		}
		if b[p] != ',' {
			return ms, false
		}
		p++
	}
}

// elements lists an array's elements.
func elements(b []byte) ([][]byte, bool) {
	b = trim(b)
	if len(b) < 2 || b[0] != '[' {
		return nil, false
	}
	var out [][]byte
	p := skipWS(b, 1)
	if p < len(b) && b[p] == ']' {
		return out, skipWS(b, p+1) == len(b)
	}
	for {
		p = skipWS(b, p)
		end, ok := valueEnd(b, p, 0)
		if !ok {
			return nil, false
		}
		out = append(out, b[p:end])
		p = skipWS(b, end)
		if p >= len(b) {
			return nil, false
		}
		if b[p] == ']' {
			return out, skipWS(b, p+1) == len(b)
		}
		if b[p] != ',' {
			return nil, false
		}
		p++
	}
}

const maxDepth = 128

// valueEnd returns the end of the JSON value starting at p.
func valueEnd(b []byte, p, depth int) (int, bool) {
	if p >= len(b) || depth > maxDepth {
		return p, false
	}
	switch c := b[p]; {
	case c == '"':
		end, _, ok := stringEnd(b, p)
		return end, ok
	case c == '{' || c == '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		p = skipWS(b, p+1)
		if p < len(b) && b[p] == closing {
			return p + 1, true
		}
		for {
			var ok bool
			if c == '{' {
				if p >= len(b) || b[p] != '"' {
					return p, false
				}
				if p, _, ok = stringEnd(b, p); !ok {
					return p, false
				}
				p = skipWS(b, p)
				if p >= len(b) || b[p] != ':' {
					return p, false
				}
				p = skipWS(b, p+1)
			}
			if p, ok = valueEnd(b, p, depth+1); !ok {
				return p, false
			}
			p = skipWS(b, p)
			if p >= len(b) {
				return p, false
			}
			if b[p] == closing {
				return p + 1, true
			}
			if b[p] != ',' {
				return p, false
			}
			p = skipWS(b, p+1)
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
	return c == ',' || c == '}' || c == ']' || c == ':' || c == '"' || c == '{' || c == '[' || isSpace(c)
}

// stringEnd returns the index after the closing quote of the string at p,
// and whether it has escapes.
func stringEnd(b []byte, p int) (int, bool, bool) {
	esc := false
	for i := p + 1; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i + 1, esc, true
		case '\\':
			esc = true
			i++
		}
	}
	return len(b), esc, false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(b []byte, p int) int {
	for p < len(b) && isSpace(b[p]) {
		p++
	}
	return p
}

func trim(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && isSpace(b[i]) {
		i++
	}
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

func isObject(b []byte) bool { return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}' }

func isNumberStart(c byte) bool { return c == '-' || c >= '0' && c <= '9' }

// sameString compares two JSON string literals by their decoded text.
func (s *state) sameString(a, b []byte) bool {
	if len(a) < 2 || len(b) < 2 || a[len(a)-1] != '"' || b[len(b)-1] != '"' {
		return false
	}
	a, b = a[1:len(a)-1], b[1:len(b)-1]
	if bytes.IndexByte(a, '\\') < 0 && bytes.IndexByte(b, '\\') < 0 {
		return bytes.Equal(a, b)
	}
	var okA, okB bool
	s.sa, okA = unescape(s.sa[:0], a)
	s.sb, okB = unescape(s.sb[:0], b)
	return okA && okB && bytes.Equal(s.sa, s.sb)
}

// unescape decodes the body of a JSON string literal (RFC 8259 escapes,
// \u surrogate pairs; a lone surrogate becomes U+FFFD as encoding/json does).
func unescape(dst, s []byte) ([]byte, bool) {
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

// sameNumber compares two JSON number literals by exact decimal value.
func sameNumber(a, b []byte) bool {
	da, okA := parseDecimal(a)
	db, okB := parseDecimal(b)
	if !okA || !okB {
		return bytes.Equal(a, b)
	}
	return da.neg == db.neg && da.exp == db.exp && bytes.Equal(da.digits, db.digits)
}

// decimal is a number as significant digits × 10^exp, normalised: no
// leading or trailing zeros in digits; zero is no digits, never negative.
type decimal struct {
	neg    bool
	digits []byte // a slice of the literal when possible
	exp    int64
}

// maxExp bounds exponents so that arithmetic on them cannot overflow; a
// literal beyond it compares by its bytes.
const maxExp = 1 << 40

func parseDecimal(b []byte) (decimal, bool) {
	var d decimal
	p := 0
	if p < len(b) && b[p] == '-' {
		d.neg = true
		p++
	}
	intStart := p
	for p < len(b) && b[p] >= '0' && b[p] <= '9' {
		p++
	}
	intPart := b[intStart:p]
	if len(intPart) == 0 {
		return d, false
	}
	var frac []byte
	if p < len(b) && b[p] == '.' {
		p++
		fs := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		frac = b[fs:p]
		if len(frac) == 0 {
			return d, false
		}
	}
	var exp int64
	if p < len(b) && (b[p] == 'e' || b[p] == 'E') {
		p++
		eneg := false
		if p < len(b) && (b[p] == '+' || b[p] == '-') {
			eneg = b[p] == '-'
			p++
		}
		es := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			exp = exp*10 + int64(b[p]-'0')
			if exp > maxExp {
				return d, false
			}
			p++
		}
		if p == es {
			return d, false
		}
		if eneg {
			exp = -exp
		}
	}
	if p != len(b) {
		return d, false
	}
	// digits = intPart ++ frac, value = digits × 10^(exp - len(frac)).
	var digits []byte
	if len(frac) == 0 {
		digits = intPart
	} else {
		digits = make([]byte, 0, len(intPart)+len(frac))
		digits = append(append(digits, intPart...), frac...)
	}
	exp -= int64(len(frac))
	for len(digits) > 0 && digits[0] == '0' {
		digits = digits[1:]
	}
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	if len(digits) == 0 {
		return decimal{}, true // zero, whatever its sign or exponent
	}
	d.digits, d.exp = digits, exp
	return d, true
}
