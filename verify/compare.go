package verify

import (
	"bytes"
	"strconv"
	"sync"

	"github.com/fhirload/fhirload/internal/jsonscan"
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
// member lists (two per depth, so a comparison allocates nothing but the
// paths it reports).
type state struct {
	path    []byte
	paths   []string
	omitted int
	max     int
	members [][]jsonscan.Member // by depth and side: 2*depth for the source, 2*depth+1 for the target
	matched [][]bool            // the target's members already paired, by depth
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

// differ records the current path.
func (s *state) differ() {
	if len(s.paths) >= s.max {
		s.omitted++
		return
	}
	s.paths = append(s.paths, string(s.path))
}

// root compares the two resources: objects whose top-level meta follows the
// server-owns rule.
func (s *state) root(want, got []byte) {
	want, got = jsonscan.Trim(want), jsonscan.Trim(got)
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
	a, b = jsonscan.Trim(a), jsonscan.Trim(b)
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

// scan lists the members of both objects into the scratch lists of the
// current depth (valid until the next scan at that depth).
func (s *state) scan(a, b []byte) (ma, mb []jsonscan.Member, matched []bool, ok bool) {
	for len(s.members) <= 2*s.depth+1 {
		s.members = append(s.members, nil)
	}
	for len(s.matched) <= s.depth {
		s.matched = append(s.matched, nil)
	}
	ma, okA := jsonscan.AppendMembers(s.members[2*s.depth][:0], a)
	mb, okB := jsonscan.AppendMembers(s.members[2*s.depth+1][:0], b)
	s.members[2*s.depth], s.members[2*s.depth+1] = ma[:0], mb[:0]
	matched = s.matched[s.depth][:0]
	for range mb {
		matched = append(matched, false)
	}
	s.matched[s.depth] = matched[:0]
	return ma, mb, matched, okA && okB
}

// object compares two objects member by member, in the order of a (the
// source), then lists b's members that a does not have.
func (s *state) object(a, b []byte, top bool) {
	ma, mb, matched, ok := s.scan(a, b)
	if !ok {
		s.differ()
		return
	}
	s.depth++
	defer func() { s.depth-- }()
	mark := len(s.path)
	for i := range ma {
		j := find(mb, matched, ma[i], i)
		s.appendKey(ma[i])
		switch {
		case j < 0:
			if !(top && keyIs(ma[i], "meta") && metaEmpty(ma[i].Value)) {
				s.differ() // missing at the target
			}
		case top && keyIs(ma[i], "meta"):
			matched[j] = true
			s.meta(ma[i].Value, mb[j].Value)
		default:
			matched[j] = true
			s.value(ma[i].Value, mb[j].Value)
		}
		s.path = s.path[:mark]
	}
	for j := range mb {
		if matched[j] || top && keyIs(mb[j], "meta") { // the server's meta, and the source had none
			continue
		}
		s.appendKey(mb[j])
		s.differ() // extra at the target
		s.path = s.path[:mark]
	}
}

// meta compares the resource's meta: only what the source set counts.
func (s *state) meta(a, b []byte) {
	a, b = jsonscan.Trim(a), jsonscan.Trim(b)
	if bytes.Equal(a, b) {
		return
	}
	ma, mb, matched, ok := s.scan(a, b)
	if !ok {
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
		j := find(mb, matched, ma[i], i)
		switch {
		case j < 0:
			s.differ()
		case keyIs(ma[i], "tag") || keyIs(ma[i], "security") || keyIs(ma[i], "profile"):
			matched[j] = true
			s.subset(ma[i].Value, mb[j].Value)
		default:
			matched[j] = true
			s.value(ma[i].Value, mb[j].Value)
		}
		s.path = s.path[:mark]
	}
}

// subset checks that every element of array a is in array b (any order).
// An element of a that b lacks is reported at its index in a.
func (s *state) subset(a, b []byte) {
	ea, okA := jsonscan.AppendElements(nil, a)
	eb, okB := jsonscan.AppendElements(nil, b)
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
	ea, okA := jsonscan.AppendElements(nil, a)
	eb, okB := jsonscan.AppendElements(nil, b)
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
func (s *state) appendKey(m jsonscan.Member) {
	s.path = append(s.path, '.')
	if m.Escaped || !isIdentifier(m.Key) {
		s.path = append(s.path, '?')
		return
	}
	s.path = append(s.path, m.Key...)
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

func keyIs(m jsonscan.Member, k string) bool { return !m.Escaped && string(m.Key) == k }

// metaEmpty reports whether a source meta holds nothing the target must
// keep (only versionId / lastUpdated, which are the server's).
func metaEmpty(v []byte) bool {
	var buf [8]jsonscan.Member
	ms, ok := jsonscan.AppendMembers(buf[:0], v)
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

// find returns the index in ms of the unmatched member named like m: first
// at hint (objects usually keep their order), else by scan; -1 when absent.
func find(ms []jsonscan.Member, matched []bool, m jsonscan.Member, hint int) int {
	if hint < len(ms) && !matched[hint] && sameKey(ms[hint], m) {
		return hint
	}
	for j := range ms {
		if !matched[j] && sameKey(ms[j], m) {
			return j
		}
	}
	return -1
}

func sameKey(a, b jsonscan.Member) bool {
	if bytes.Equal(a.Key, b.Key) {
		return true
	}
	if !a.Escaped && !b.Escaped {
		return false
	}
	ka, okA := jsonscan.Unescape(nil, a.Key)
	kb, okB := jsonscan.Unescape(nil, b.Key)
	return okA && okB && bytes.Equal(ka, kb)
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
	s.sa, okA = jsonscan.Unescape(s.sa[:0], a)
	s.sb, okB = jsonscan.Unescape(s.sb[:0], b)
	return okA && okB && bytes.Equal(s.sa, s.sb)
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
