package transform

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fhirload/fhirload/internal/fhirpath"
)

// maxDepth bounds JSON nesting (objects plus arrays). Real Patients and Observations
// stay under 15; the limit keeps hostile input from growing the stack.
const maxDepth = 64

// frame is one step of the location of the value being checked.
type frame struct {
	name  string
	index int // array index, or -1
}

// span is a byte range of the line.
type span struct{ start, end int }

// refEdit replaces the content of a reference string (between its quotes).
type refEdit struct {
	at     span
	typ    string // resource type written before the slash
	id     []byte // the id as found (points into the line unless it had escapes)
	derive bool   // write the derived id of typ|id instead of id
}

// arrLen remembers the length of a primitive array and of its "_" companion.
type arrLen struct {
	elem, n int
	ext     bool
	null    bool // the value array holds a null
}

// conceptCheck follows a CodeableConcept under a required binding: depth is the
// validator's depth at the concept, so its codings are objects at depth+3.
type conceptCheck struct {
	vs      *valueSetDef
	depth   int
	matched bool
}

// identCapture collects the first identifier of the root resource (id derivation).
type identCapture struct {
	active        bool
	done          bool
	hasValue      bool
	system, value []byte
}

// validator checks one resource. It is reused between lines by one goroutine; its
// slices keep their capacity so a valid line allocates nothing here.
type validator struct {
	s     *schema
	b     []byte
	pos   int
	depth int
	path  []frame
	err   *Error
	root  string // resource type of the root, for locations

	refCtx *elemDef // the element holding the Reference being checked
	cc     conceptCheck
	arrs   []arrLen
	keys   [][]span // per-depth keys of generically skipped objects

	// collected for the output
	rewrite    bool     // record reference edits
	derive     bool     // rewrite references with derived ids
	resolver   Resolver // types of urn:uuid: targets; nil: the element's default
	unresolved int      // urn:uuid: references left as they are
	edits      []refEdit
	rootOpen   int  // offset just after the root '{'
	idSpan     span // content of the root id string; start -1 when absent
	id         []byte
	ident      identCapture

	// The line as FHIRPath sees it, appended to while walking (see rules.go).
	tree fhirpath.Tree
	cur  fhirpath.NodeID // the node whose members are being walked
	ev   fhirpath.Evaluator
	viol []fhirpath.Violation
	off  checks // checks turned off (benchmarks)

	defs      *definitions
	strictExt bool              // Options.Extensions == "strict"
	unknown   []string          // unknown extension URLs of the line, once each
	urls      map[string]string // interned URL strings

	unknownProf     []string          // declared profiles of the line we do not have
	pnodes, pnodes2 []fhirpath.NodeID // stacks of the profile checker
	declared        *profileDef       // the profile being checked (rejections name it)
	idSets          []idSet           // ref-1: ids of the contained resources of resources with many
	stepsPerNode    int64             // the evaluation budget per node (defaultStepsPerNode)
	mergeHint       fhirpath.NodeID   // the node of the array item whose other half is being read
	mergeSteps      int               // siblings visited to find them (tests)
}

func (v *validator) reset(b []byte) {
	v.b = b
	v.pos = 0
	v.depth = 0
	v.path = v.path[:0]
	v.err = nil
	v.root = ""
	v.arrs = v.arrs[:0]
	v.edits = v.edits[:0]
	v.idSpan = span{-1, -1}
	v.id = nil
	v.rootOpen = 0
	v.ident = identCapture{system: v.ident.system[:0], value: v.ident.value[:0]} // keep the buffers
	v.cc = conceptCheck{}
	v.unresolved = 0
	v.tree.Reset(b)
	v.cur = -1
	v.unknown = v.unknown[:0]
	v.unknownProf = v.unknownProf[:0]
	v.declared = nil
}

// location renders the current path like FHIRPath: Observation.component[1].code.
func (v *validator) location(extra string) string {
	var sb strings.Builder
	sb.WriteString(v.root)
	for _, f := range v.path {
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(f.name)
		if f.index >= 0 {
			sb.WriteByte('[')
			sb.WriteString(strconv.Itoa(f.index))
			sb.WriteByte(']')
		}
	}
	if extra != "" {
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(extra)
	}
	return sb.String()
}

func (v *validator) fail(reason, msg string) bool {
	return v.failAt(reason, "", msg)
}

func (v *validator) failAt(reason, extra, msg string) bool {
	if v.err == nil {
		v.err = &Error{Reason: reason, Location: v.location(extra), Message: msg}
	}
	return false
}

func (v *validator) syntax(msg string) bool {
	return v.fail(ReasonParse, msg+" at byte "+strconv.Itoa(v.pos))
}

func (v *validator) ws() {
	for v.pos < len(v.b) {
		switch v.b[v.pos] {
		case ' ', '\t', '\n', '\r':
			v.pos++
		default:
			return
		}
	}
}

func (v *validator) peek() byte {
	v.ws()
	if v.pos >= len(v.b) {
		return 0
	}
	return v.b[v.pos]
}

func (v *validator) expect(c byte) bool {
	if v.peek() != c {
		if v.pos >= len(v.b) {
			return v.syntax("unexpected end of JSON")
		}
		return v.syntax("expected '" + string(c) + "'")
	}
	v.pos++
	return true
}

// str scans a JSON string at pos (after whitespace). It returns the span of its raw
// content and the decoded content (raw bytes when there are no escapes, else a copy).
func (v *validator) str() (span, []byte, bool) {
	if v.peek() != '"' {
		return span{}, nil, v.syntax("expected a string")
	}
	v.pos++
	start := v.pos
	escaped := false
	b := v.b
	for {
		if v.pos >= len(b) {
			return span{}, nil, v.syntax("unterminated string")
		}
		c := b[v.pos]
		switch {
		case c == '"':
			sp := span{start, v.pos}
			v.pos++
			if !escaped {
				return sp, b[sp.start:sp.end], true
			}
			return sp, unescape(b[sp.start:sp.end]), true
		case c == '\\':
			escaped = true
			if v.pos+1 >= len(b) {
				return span{}, nil, v.syntax("unterminated string")
			}
			switch b[v.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				v.pos += 2
			case 'u':
				if v.pos+6 > len(b) || !isHex(b[v.pos+2]) || !isHex(b[v.pos+3]) || !isHex(b[v.pos+4]) || !isHex(b[v.pos+5]) {
					return span{}, nil, v.syntax("invalid \\u escape")
				}
				v.pos += 6
			default:
				return span{}, nil, v.syntax("invalid escape")
			}
		case c < 0x20:
			return span{}, nil, v.syntax("control character in string")
		case c < utf8.RuneSelf:
			v.pos++
		default:
			r, n := utf8.DecodeRune(b[v.pos:])
			if r == utf8.RuneError && n == 1 {
				return span{}, nil, v.syntax("invalid UTF-8")
			}
			v.pos += n
		}
	}
}

func isHex(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func hexVal(b []byte) rune {
	var r rune
	for _, c := range b {
		r <<= 4
		switch {
		case isDigit(c):
			r |= rune(c - '0')
		case c >= 'a':
			r |= rune(c-'a') + 10
		default:
			r |= rune(c-'A') + 10
		}
	}
	return r
}

// unescape decodes a syntactically checked string content into a new slice (escapes
// are rare in resources, and the result must survive the next string).
func unescape(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		switch raw[i] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hexVal(raw[i+1 : i+5])
			i += 4
			if r >= 0xD800 && r < 0xDC00 && i+6 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if lo := hexVal(raw[i+3 : i+7]); lo >= 0xDC00 && lo < 0xE000 {
					r = (r-0xD800)<<10 | (lo - 0xDC00) + 0x10000
					i += 6
				}
			}
			out = utf8.AppendRune(out, r) // lone surrogates become U+FFFD
		default:
			out = append(out, raw[i])
		}
	}
	return out
}

// number scans a JSON number; the JSON grammar equals the FHIR decimal regex.
func (v *validator) number() (span, bool) {
	b := v.b
	start := v.pos
	i := v.pos
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		v.pos = i
		return span{}, v.syntax("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			v.pos = i
			return span{}, v.syntax("invalid number")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			v.pos = i
			return span{}, v.syntax("invalid number")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	v.pos = i
	return span{start, i}, true
}

func (v *validator) literal(word string) bool {
	if len(v.b)-v.pos < len(word) || string(v.b[v.pos:v.pos+len(word)]) != word {
		return v.syntax("invalid literal")
	}
	v.pos += len(word)
	return true
}

func (v *validator) enter() bool {
	v.depth++
	if v.depth > maxDepth {
		return v.fail(ReasonParse, "JSON nested deeper than "+strconv.Itoa(maxDepth))
	}
	return true
}

// skip checks the syntax of any JSON value (duplicate keys included) without a schema.
func (v *validator) skip() bool {
	switch c := v.peek(); c {
	case '{':
		v.pos++
		if !v.enter() {
			return false
		}
		d := v.depth
		for len(v.keys) <= d {
			v.keys = append(v.keys, nil)
		}
		v.keys[d] = v.keys[d][:0]
		if v.peek() == '}' {
			v.pos++
			v.depth--
			return true
		}
		for {
			sp, key, ok := v.str()
			if !ok {
				return false
			}
			if v.dupKey(d, sp, key) {
				return v.fail(ReasonParse, "duplicate key (ambiguous)")
			}
			if !v.expect(':') || !v.skip() {
				return false
			}
			switch v.peek() {
			case ',':
				v.pos++
			case '}':
				v.pos++
				v.depth--
				return true
			default:
				return v.syntax("expected ',' or '}'")
			}
		}
	case '[':
		v.pos++
		if !v.enter() {
			return false
		}
		if v.peek() == ']' {
			v.pos++
			v.depth--
			return true
		}
		for {
			if !v.skip() {
				return false
			}
			switch v.peek() {
			case ',':
				v.pos++
			case ']':
				v.pos++
				v.depth--
				return true
			default:
				return v.syntax("expected ',' or ']'")
			}
		}
	case '"':
		_, _, ok := v.str()
		return ok
	case 't':
		return v.literal("true")
	case 'f':
		return v.literal("false")
	case 'n':
		return v.literal("null")
	case 0:
		return v.syntax("unexpected end of JSON")
	default:
		_, ok := v.number()
		return ok
	}
}

// dupKey records key in the key list of depth d and reports whether it was there.
// Keys are compared decoded only when either has escapes (rare).
func (v *validator) dupKey(d int, sp span, key []byte) bool {
	raw := v.b[sp.start:sp.end]
	for _, k := range v.keys[d] {
		other := v.b[k.start:k.end]
		if string(other) == string(raw) {
			return true
		}
		if len(raw) != len(key) || containsByte(other, '\\') {
			if unescapedEqual(other, key) {
				return true
			}
		}
	}
	v.keys[d] = append(v.keys[d], sp)
	return false
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

func unescapedEqual(raw, key []byte) bool {
	return string(unescape(raw)) == string(key)
}

// checkSyntax reports a parse error anywhere in the line; it runs only after a schema
// error, so that a line that is not even JSON is reported as parse, not invalid.
func (v *validator) checkSyntax(b []byte) *Error {
	var w validator
	w.keys = v.keys
	w.b = b
	w.root = ""
	if !w.skip() {
		return w.err
	}
	if w.peek() != 0 {
		w.syntax("data after the JSON value")
		return w.err
	}
	return nil
}

// safeKey returns an unknown key for an error location when it looks like an element
// name; anything else (it could be data) is not echoed.
func safeKey(k []byte) string {
	if len(k) == 0 || len(k) > 64 {
		return "(unknown key)"
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '_' || c == '-' || c == '@') {
			return "(unknown key)"
		}
	}
	return string(k)
}
