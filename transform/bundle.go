package transform

import (
	"io"
	"strconv"
	"unicode/utf8"
)

// BundleEntry is one entry of a Bundle document, as BundleDecoder.Next yields it.
type BundleEntry struct {
	// Index is the entry's position in Bundle.entry, from 0. It plays the role of the
	// line number (the pipeline may report Index+1).
	Index int
	// Offset is the byte offset of the entry's '{' in the (decompressed) document.
	Offset int64
	// FullURL is entry.fullUrl ("" when absent). A urn:uuid: fullUrl gives a resource
	// without an id its id (Stream.NextEntry) and is what references to it are written as.
	FullURL string
	// Method is entry.request.method ("" when absent): POST, PUT, DELETE, …
	Method string
	// Resource is entry.resource, the bytes as in the document (pretty-printed Bundles
	// give multi-line resources; see AppendCompact). It is valid until the next call of
	// Next: copy it to keep it.
	Resource []byte
	// Err is a problem of this entry alone — no resource, a resource that is not an
	// object, an entry larger than the limit — naming the entry, never a value. Resource
	// is nil then. The decoder goes on with the next entry.
	Err *Error
}

// BundleOptions configures a BundleDecoder. Zero values select the defaults.
type BundleOptions struct {
	// MaxEntryBytes bounds one entry (its resource with the rest of the entry object);
	// a larger entry is skipped without being held and yielded with Err. Default 8 MiB,
	// like source.max_line_bytes.
	MaxEntryBytes int
}

// BundleDecoder streams the entries of a JSON document whose top level is a Bundle
// (transaction, batch, collection, searchset, history, document, message): it holds one
// entry at a time, whatever the size of the document. The document's syntax is checked
// as it is read (duplicate keys are not looked for outside entries' resources: the
// validator finds those); a syntax error ends the document. Bundle.resourceType must
// come before Bundle.entry (every known producer writes it first).
type BundleDecoder struct {
	r   io.Reader
	buf []byte
	pos int   // next unread byte
	end int   // end of the data in buf
	off int64 // document offset of buf[0]
	// mark is the start of the entry being held (-1: none); the data from mark on is
	// kept when the buffer is refilled.
	mark     int
	overflow bool // the held entry passed MaxEntryBytes and was dropped
	rerr     error
	max      int

	state    int // stateStart, stateTop, stateEntries, stateAfterEntries, stateDone
	resStart int // the held entry's resource, relative to mark (-1: none)
	resEnd   int
	sawType  bool
	typ      string
	index    int
	entry    BundleEntry
	err      error
	keyBuf   []byte
	entryLoc string
}

const (
	stateStart = iota
	stateTop
	stateEntries
	stateAfterEntries
	stateDone
)

// NewBundleDecoder returns a decoder of the Bundle document read from r.
func NewBundleDecoder(r io.Reader, opts BundleOptions) *BundleDecoder {
	if opts.MaxEntryBytes <= 0 {
		opts.MaxEntryBytes = 8 << 20
	}
	return &BundleDecoder{r: r, buf: make([]byte, 64<<10), mark: -1, max: opts.MaxEntryBytes}
}

// Type returns Bundle.type once it has been read ("" before; producers write it before
// the entries).
func (d *BundleDecoder) Type() string { return d.typ }

// Next returns the next entry. It returns io.EOF after the last entry of a complete
// document. Any other error is a *Error (reason parse) that ends the document: a syntax
// error, a document that is not a Bundle, a read error; it names the entry index and
// the byte offset, never a value. The entry returned is reused by the next call.
func (d *BundleDecoder) Next() (*BundleEntry, error) {
	if d.err != nil {
		return nil, d.err
	}
	d.mark = -1 // release the previous entry
	e, err := d.next()
	if err != nil {
		d.err = err
		d.mark = -1
		return nil, err
	}
	return e, nil
}

func (d *BundleDecoder) next() (*BundleEntry, error) {
	for {
		switch d.state {
		case stateStart:
			if err := d.fillAt(3); err != nil && err != io.EOF {
				return nil, err
			}
			if d.end-d.pos >= 3 && d.buf[d.pos] == 0xEF && d.buf[d.pos+1] == 0xBB && d.buf[d.pos+2] == 0xBF {
				d.pos += 3
			}
			c, err := d.peek()
			if err != nil {
				return nil, d.fail("", "empty document: not a Bundle")
			}
			if c != '{' {
				return nil, d.fail("", "not a JSON object: not a Bundle")
			}
			d.pos++
			d.state = stateTop
			c, err = d.peek()
			if err != nil {
				return nil, err
			}
			if c == '}' {
				return nil, d.fail("", "empty object: not a Bundle")
			}
		case stateTop:
			key, err := d.key()
			if err != nil {
				return nil, err
			}
			switch string(key) {
			case "resourceType":
				v, err := d.stringValue("Bundle.resourceType")
				if err != nil {
					return nil, err
				}
				if v != "Bundle" {
					return nil, d.fail("", "resourceType is not Bundle: not a Bundle document")
				}
				d.sawType = true
			case "type":
				v, err := d.stringValue("Bundle.type")
				if err != nil {
					return nil, err
				}
				d.typ = v
			case "entry":
				if !d.sawType {
					return nil, d.fail("", "entry before resourceType: a Bundle document must start with resourceType")
				}
				c, err := d.peek()
				if err != nil {
					return nil, err
				}
				if c != '[' {
					return nil, d.fail("Bundle.entry", "must be an array")
				}
				d.pos++
				d.state = stateEntries
				c, err = d.peek()
				if err != nil {
					return nil, err
				}
				if c == ']' {
					d.pos++
					d.state = stateTop
					if err := d.afterMember(); err != nil {
						return nil, err
					}
					if d.state == stateDone {
						return nil, io.EOF
					}
				}
				continue
			default:
				if err := d.skip(); err != nil {
					return nil, err
				}
			}
			if err := d.afterMember(); err != nil {
				return nil, err
			}
			if d.state == stateDone {
				return nil, io.EOF
			}
		case stateEntries:
			e, err := d.readEntry()
			if err != nil {
				return nil, err
			}
			c, err := d.peek()
			if err != nil {
				return nil, err
			}
			switch c {
			case ',':
				d.pos++
			case ']':
				d.pos++
				d.state = stateAfterEntries
			default:
				return nil, d.syntax("expected ',' or ']' after an entry")
			}
			// The peek may have moved the buffer: slice the resource now.
			switch {
			case d.overflow && e.Err == nil:
				e.Err = &Error{Reason: ReasonParse, Location: d.entryLoc, Message: "entry larger than " + strconv.Itoa(d.max) + " bytes"}
			case e.Err == nil:
				e.Resource = d.buf[d.mark+d.resStart : d.mark+d.resEnd]
			}
			return e, nil
		case stateAfterEntries:
			d.state = stateTop
			if err := d.afterMember(); err != nil {
				return nil, err
			}
			if d.state == stateDone {
				return nil, io.EOF
			}
		case stateDone:
			return nil, io.EOF
		}
	}
}

// afterMember consumes the ',' or '}' after a top-level member; at '}' it checks that
// only whitespace follows and moves to stateDone.
func (d *BundleDecoder) afterMember() error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	switch c {
	case ',':
		d.pos++
		return nil
	case '}':
		d.pos++
		if !d.sawType {
			return d.fail("", "resourceType missing: not a Bundle document")
		}
		d.state = stateDone
		if _, err := d.peek(); err != io.EOF {
			if err != nil {
				return err
			}
			return d.syntax("data after the Bundle")
		}
		return nil
	}
	return d.syntax("expected ',' or '}'")
}

// readEntry reads one entry object, holding it in the buffer from its '{' (mark) until
// the next call of Next.
func (d *BundleDecoder) readEntry() (*BundleEntry, error) {
	e := &d.entry
	*e = BundleEntry{Index: d.index}
	d.index++
	d.entryLoc = "Bundle.entry[" + strconv.Itoa(e.Index) + "]"
	c, err := d.peek()
	if err != nil {
		return nil, err
	}
	if c != '{' {
		if err := d.skip(); err != nil {
			return nil, err
		}
		e.Err = &Error{Reason: ReasonInvalid, Location: d.entryLoc, Message: "entry is not an object"}
		return e, nil
	}
	e.Offset = d.off + int64(d.pos)
	d.mark, d.overflow = d.pos, false
	d.pos++
	resStart, resEnd := -1, -1
	c, err = d.peek()
	if err != nil {
		return nil, err
	}
	if c == '}' {
		d.pos++
	} else {
		for {
			key, err := d.key()
			if err != nil {
				return nil, err
			}
			switch string(key) {
			case "fullUrl":
				v, err := d.stringValue(d.entryLoc + ".fullUrl")
				if err != nil {
					return nil, err
				}
				e.FullURL = v
			case "resource":
				c, err := d.peek()
				if err != nil {
					return nil, err
				}
				if c != '{' {
					if err := d.skip(); err != nil {
						return nil, err
					}
					e.Err = &Error{Reason: ReasonInvalid, Location: d.entryLoc + ".resource", Message: "resource is not a JSON object"}
					break
				}
				start := d.pos - d.mark
				if err := d.skip(); err != nil {
					return nil, err
				}
				resStart, resEnd = start, d.pos-d.mark
			case "request":
				if err := d.request(e); err != nil {
					return nil, err
				}
			default:
				if err := d.skip(); err != nil {
					return nil, err
				}
			}
			c, err := d.peek()
			if err != nil {
				return nil, err
			}
			if c == ',' {
				d.pos++
				continue
			}
			if c == '}' {
				d.pos++
				break
			}
			return nil, d.syntax("expected ',' or '}' in an entry")
		}
	}
	switch {
	case d.overflow:
		e.Err = &Error{Reason: ReasonParse, Location: d.entryLoc, Message: "entry larger than " + strconv.Itoa(d.max) + " bytes"}
	case e.Err != nil:
	case resStart < 0:
		e.Err = &Error{Reason: ReasonInvalid, Location: d.entryLoc, Message: "entry has no resource"}
	}
	d.resStart, d.resEnd = resStart, resEnd // sliced by next, once the buffer stops moving
	return e, nil
}

// request reads entry.request, keeping its method.
func (d *BundleDecoder) request(e *BundleEntry) error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	if c != '{' {
		return d.skip()
	}
	d.pos++
	if c, err = d.peek(); err != nil {
		return err
	}
	if c == '}' {
		d.pos++
		return nil
	}
	for {
		key, err := d.key()
		if err != nil {
			return err
		}
		if string(key) == "method" {
			if c, err := d.peek(); err == nil && c == '"' {
				v, err := d.stringValue(d.entryLoc + ".request.method")
				if err != nil {
					return err
				}
				e.Method = v
			} else if err := d.skip(); err != nil {
				return err
			}
		} else if err := d.skip(); err != nil {
			return err
		}
		c, err := d.peek()
		if err != nil {
			return err
		}
		switch c {
		case ',':
			d.pos++
		case '}':
			d.pos++
			return nil
		default:
			return d.syntax("expected ',' or '}' in entry.request")
		}
	}
}

// fill reads more data, keeping buf[keep:] where keep is the held entry's start (or pos).
func (d *BundleDecoder) fill() error {
	if d.rerr != nil {
		return d.rerr
	}
	keep := d.pos
	if d.mark >= 0 {
		keep = d.mark
	}
	if keep > 0 {
		n := copy(d.buf, d.buf[keep:d.end])
		d.off += int64(keep)
		d.pos -= keep
		d.end = n
		if d.mark >= 0 {
			d.mark -= keep
		}
	}
	if d.end == len(d.buf) {
		if d.mark >= 0 && d.end >= d.max {
			// The held entry is too large: drop it and go on scanning its end.
			d.overflow = true
			n := copy(d.buf, d.buf[d.pos:d.end])
			d.off += int64(d.pos)
			d.end = n
			d.pos = 0
			d.mark = -1
		} else {
			nb := make([]byte, min(2*len(d.buf), d.max+64<<10))
			if len(nb) <= len(d.buf) {
				nb = make([]byte, 2*len(d.buf))
			}
			copy(nb, d.buf[:d.end])
			d.buf = nb
		}
	}
	for {
		n, err := d.r.Read(d.buf[d.end:])
		d.end += n
		if err != nil {
			if err == io.EOF {
				d.rerr = io.EOF
			} else {
				d.rerr = &Error{Reason: ReasonParse, Location: d.loc(), Message: "read error at byte " + strconv.FormatInt(d.off+int64(d.end), 10)}
			}
			if n > 0 {
				return nil
			}
			return d.rerr
		}
		if n > 0 {
			return nil
		}
	}
}

// fillAt makes sure n bytes from pos are buffered, if the document has them.
func (d *BundleDecoder) fillAt(n int) error {
	for d.end-d.pos < n {
		if err := d.fill(); err != nil {
			return err
		}
	}
	return nil
}

// peek skips whitespace and returns the next byte without consuming it; io.EOF at the
// end of the document.
func (d *BundleDecoder) peek() (byte, error) {
	for {
		for d.pos < d.end {
			switch c := d.buf[d.pos]; c {
			case ' ', '\t', '\n', '\r':
				d.pos++
			default:
				return c, nil
			}
		}
		if err := d.fill(); err != nil {
			if err == io.EOF {
				if d.state == stateDone {
					return 0, io.EOF
				}
				return 0, d.truncated(err)
			}
			return 0, err
		}
	}
}

func (d *BundleDecoder) truncated(err error) error {
	if err == io.EOF && d.state != stateDone && d.state != stateStart {
		return d.syntax("unexpected end of the document")
	}
	return err
}

func (d *BundleDecoder) loc() string {
	if d.state == stateEntries && d.entryLoc != "" {
		return d.entryLoc
	}
	return "Bundle"
}

func (d *BundleDecoder) fail(loc, msg string) error {
	if loc == "" {
		loc = "Bundle"
	}
	return &Error{Reason: ReasonParse, Location: loc, Message: msg}
}

func (d *BundleDecoder) syntax(msg string) error {
	return &Error{Reason: ReasonParse, Location: d.loc(), Message: msg + " at byte " + strconv.FormatInt(d.off+int64(d.pos), 10)}
}

// key reads an object key and the ':' after it. The key is valid until the next read;
// callers switch on string(key), which does not allocate.
func (d *BundleDecoder) key() ([]byte, error) {
	raw, err := d.str()
	if err != nil {
		return nil, err
	}
	c, err := d.peek()
	if err != nil {
		return nil, err
	}
	if c != ':' {
		return nil, d.syntax("expected ':'")
	}
	d.pos++
	return raw, nil
}

// stringValue reads a JSON string value (the keys' values the decoder keeps are short).
func (d *BundleDecoder) stringValue(loc string) (string, error) {
	c, err := d.peek()
	if err != nil {
		return "", err
	}
	if c != '"' {
		return "", d.fail(loc, "must be a JSON string")
	}
	raw, err := d.str()
	if err != nil {
		return "", err
	}
	return string(raw), nil
}

// str reads a JSON string at pos and returns its decoded content, which is valid until
// the next read.
func (d *BundleDecoder) str() ([]byte, error) {
	c, err := d.peek()
	if err != nil {
		return nil, err
	}
	if c != '"' {
		return nil, d.syntax("expected a string")
	}
	d.pos++
	d.keyBuf = d.keyBuf[:0]
	escaped := false
	for {
		if d.pos >= d.end {
			if err := d.fill(); err != nil {
				return nil, d.truncated(err)
			}
			continue
		}
		c := d.buf[d.pos]
		switch {
		case c == '"':
			d.pos++
			if escaped {
				return unescape(d.keyBuf), nil
			}
			return d.keyBuf, nil
		case c == '\\':
			if err := d.fillAt(2); err != nil {
				return nil, d.truncated(err)
			}
			escaped = true
			switch d.buf[d.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.keyBuf = append(d.keyBuf, d.buf[d.pos:d.pos+2]...)
				d.pos += 2
			case 'u':
				if err := d.fillAt(6); err != nil {
					return nil, d.truncated(err)
				}
				if !isHex(d.buf[d.pos+2]) || !isHex(d.buf[d.pos+3]) || !isHex(d.buf[d.pos+4]) || !isHex(d.buf[d.pos+5]) {
					return nil, d.syntax("invalid \\u escape")
				}
				d.keyBuf = append(d.keyBuf, d.buf[d.pos:d.pos+6]...)
				d.pos += 6
			default:
				return nil, d.syntax("invalid escape")
			}
		case c < 0x20:
			return nil, d.syntax("control character in a string")
		case c < utf8.RuneSelf:
			d.keyBuf = append(d.keyBuf, c)
			d.pos++
		default:
			if err := d.fillAt(utf8.UTFMax); err != nil && err != io.EOF {
				return nil, err
			}
			r, n := utf8.DecodeRune(d.buf[d.pos:d.end])
			if r == utf8.RuneError && n == 1 {
				return nil, d.syntax("invalid UTF-8")
			}
			d.keyBuf = append(d.keyBuf, d.buf[d.pos:d.pos+n]...)
			d.pos += n
		}
	}
}

// skip checks and consumes one JSON value of any type.
func (d *BundleDecoder) skip() error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	switch c {
	case '{', '[':
		return d.skipContainer()
	case '"':
		return d.skipString()
	case 't':
		return d.literal("true")
	case 'f':
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	if c == '-' || isDigit(c) {
		return d.skipNumber()
	}
	return d.syntax("unexpected character")
}

// skipContainer consumes an object or array with a stack of open brackets (no
// recursion), checking its syntax but not its keys.
func (d *BundleDecoder) skipContainer() error {
	var stack [maxDepth]byte
	depth := 0
	expectValue := true // after '{' a key (string) or '}', after '[' a value or ']'
	for {
		c, err := d.peek()
		if err != nil {
			return err
		}
		if expectValue {
			switch c {
			case '{', '[':
				if depth == maxDepth {
					return d.syntax("JSON nested deeper than " + strconv.Itoa(maxDepth))
				}
				stack[depth] = c
				depth++
				d.pos++
				c2, err := d.peek()
				if err != nil {
					return err
				}
				if c2 == '}' && c == '{' || c2 == ']' && c == '[' {
					d.pos++
					depth--
					expectValue = false
					if depth == 0 {
						return nil
					}
					continue
				}
				if c == '{' {
					if err := d.objectKey(); err != nil {
						return err
					}
				}
				continue
			case '"':
				err = d.skipString()
			case 't':
				err = d.literal("true")
			case 'f':
				err = d.literal("false")
			case 'n':
				err = d.literal("null")
			default:
				if c != '-' && !isDigit(c) {
					return d.syntax("unexpected character")
				}
				err = d.skipNumber()
			}
			if err != nil {
				return err
			}
			expectValue = false
			continue
		}
		// After a value: ',' or the closing bracket of the innermost container.
		top := stack[depth-1]
		switch {
		case c == ',':
			d.pos++
			if top == '{' {
				if err := d.objectKey(); err != nil {
					return err
				}
			}
			expectValue = true
		case c == '}' && top == '{' || c == ']' && top == '[':
			d.pos++
			depth--
			if depth == 0 {
				return nil
			}
		default:
			return d.syntax("expected ',' or a closing bracket")
		}
	}
}

// objectKey consumes a key and its ':' inside skipContainer.
func (d *BundleDecoder) objectKey() error {
	if err := d.skipString(); err != nil {
		return err
	}
	c, err := d.peek()
	if err != nil {
		return err
	}
	if c != ':' {
		return d.syntax("expected ':'")
	}
	d.pos++
	return nil
}

// skipString consumes a JSON string, checking escapes, control characters and UTF-8.
func (d *BundleDecoder) skipString() error {
	c, err := d.peek()
	if err != nil {
		return err
	}
	if c != '"' {
		return d.syntax("expected a string")
	}
	d.pos++
	for {
		if d.pos >= d.end {
			if err := d.fill(); err != nil {
				return d.truncated(err)
			}
			continue
		}
		// Fast path: plain ASCII.
		i := d.pos
		buf := d.buf[:d.end]
		for i < len(buf) && buf[i] >= 0x20 && buf[i] < utf8.RuneSelf && buf[i] != '"' && buf[i] != '\\' {
			i++
		}
		d.pos = i
		if i >= len(buf) {
			continue
		}
		switch c := buf[i]; {
		case c == '"':
			d.pos++
			return nil
		case c == '\\':
			if err := d.fillAt(2); err != nil {
				return d.truncated(err)
			}
			switch d.buf[d.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.pos += 2
			case 'u':
				if err := d.fillAt(6); err != nil {
					return d.truncated(err)
				}
				if !isHex(d.buf[d.pos+2]) || !isHex(d.buf[d.pos+3]) || !isHex(d.buf[d.pos+4]) || !isHex(d.buf[d.pos+5]) {
					return d.syntax("invalid \\u escape")
				}
				d.pos += 6
			default:
				return d.syntax("invalid escape")
			}
		case c < 0x20:
			return d.syntax("control character in a string")
		default:
			if err := d.fillAt(utf8.UTFMax); err != nil && err != io.EOF {
				return err
			}
			r, n := utf8.DecodeRune(d.buf[d.pos:d.end])
			if r == utf8.RuneError && n == 1 {
				return d.syntax("invalid UTF-8")
			}
			d.pos += n
		}
	}
}

func (d *BundleDecoder) literal(word string) error {
	if err := d.fillAt(len(word)); err != nil && err != io.EOF {
		return err
	}
	if d.end-d.pos < len(word) || string(d.buf[d.pos:d.pos+len(word)]) != word {
		return d.syntax("invalid literal")
	}
	d.pos += len(word)
	return nil
}

// skipNumber consumes a JSON number, checking its grammar with a small state machine:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *BundleDecoder) skipNumber() error {
	const (
		start = iota
		minus
		zero
		intDigits
		dot
		fracDigits
		exp
		expSign
		expDigits
	)
	at := d.off + int64(d.pos)
	state := start
	for {
		if d.pos >= d.end {
			if err := d.fill(); err != nil {
				if err == io.EOF {
					break
				}
				return err
			}
			continue
		}
		c := d.buf[d.pos]
		next := -1
		switch {
		case c == '-' && state == start:
			next = minus
		case c == '0' && (state == start || state == minus):
			next = zero
		case isDigit(c) && (state == start || state == minus):
			next = intDigits
		case isDigit(c) && state == intDigits:
			next = intDigits
		case c == '.' && (state == zero || state == intDigits):
			next = dot
		case isDigit(c) && (state == dot || state == fracDigits):
			next = fracDigits
		case (c == 'e' || c == 'E') && (state == zero || state == intDigits || state == fracDigits):
			next = exp
		case (c == '+' || c == '-') && state == exp:
			next = expSign
		case isDigit(c) && (state == exp || state == expSign || state == expDigits):
			next = expDigits
		}
		if next < 0 {
			break
		}
		state = next
		d.pos++
	}
	if state != zero && state != intDigits && state != fracDigits && state != expDigits {
		return &Error{Reason: ReasonParse, Location: d.loc(), Message: "invalid number at byte " + strconv.FormatInt(at, 10)}
	}
	return nil
}

// AppendCompact appends src, a JSON value, to dst without insignificant whitespace: a
// pretty-printed resource of a Bundle document becomes one NDJSON line with the same
// bytes otherwise (key order, number literals and escapes are kept). src must be valid
// JSON (an entry's Resource that Stream.NextEntry accepted is).
func AppendCompact(dst, src []byte) []byte {
	inString := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			dst = append(dst, c)
			switch c {
			case '\\':
				if i+1 < len(src) {
					i++
					dst = append(dst, src[i])
				}
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
		case '"':
			inString = true
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
