package fhirpath

import "fmt"

// Element describes an element of a FHIR type, as a Typer reports it.
type Element struct {
	Name   string // element name as FHIRPath navigates it: "value" for the JSON property valueQuantity
	Type   string // the concrete FHIR type: "Quantity" for valueQuantity; "Resource" for contained resources
	Path   string // element definition path: "Observation.value[x]"; for a resource its type name
	Choice bool   // a choice element (value[x]): the JSON property name carries the type
	Def    int32  // the Typer's own handle for the definition of this element's children
}

// Typer tells Build how FHIR JSON maps to elements. Its methods are called once per JSON
// property and must not allocate in the common case; returned strings must stay valid
// and unchanged (static tables), because nodes keep them.
//
//   - Resource returns the root element of a resource type (Name "", Type and Path the
//     type name), false for an unknown type.
//   - Element returns the element that the JSON property key names in an object of
//     element parent: for a choice, the key's type suffix chooses Type (valueQuantity →
//     {Name: "value", Type: "Quantity", Choice: true}); a primitive element's own id and
//     extension are children of the primitive (parent is then the primitive element).
//     It returns false for a key that is not an element (resourceType is handled by Build).
//
// An element of Type "Resource" holds a resource whose type Build reads from its
// resourceType.
type Typer interface {
	Resource(resourceType []byte) (Element, bool)
	Element(parent Element, key []byte) (Element, bool)
}

// JSONError is a malformed or unknown piece of a resource's JSON. Its message names the
// byte offset and, for an unknown property, the property name when it is a plain
// identifier; never a value.
type JSONError struct {
	Offset int
	Msg    string
}

func (e *JSONError) Error() string {
	return fmt.Sprintf("fhirpath: json at byte %d: %s", e.Offset, e.Msg)
}

const maxJSONDepth = 100

// plain marks the bytes that need no attention inside a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// Build parses one FHIR resource in JSON into t (resetting it), typing every node with ty.
// FHIR's JSON rules apply: resourceType names the resource and is not an element; a
// _name companion's id and extensions are children of the primitive name (element by
// element for arrays; a primitive may be null where its companion is not); arrays hold
// repeated elements; a choice property (valueQuantity) is the element value of type
// Quantity; a resource-typed element (contained, Bundle.entry.resource) is a resource.
// src must not change while t is in use.
func (t *Tree) Build(src []byte, ty Typer) error {
	t.Reset(src)
	b := builder{t: t, ty: ty, src: src}
	b.ws()
	if b.peek() != '{' {
		return b.err("expected a JSON object")
	}
	if _, err := b.resource(-1, ""); err != nil {
		return err
	}
	b.ws()
	if b.pos != len(src) {
		return b.err("data after the resource")
	}
	return nil
}

type builder struct {
	t     *Tree
	ty    Typer
	src   []byte
	pos   int
	depth int
	comp  []companion
}

// companion is a _name member whose handling waits until its object is complete.
type companion struct {
	key, value int // offsets of the key's first character after '_' (and its end), and of the value
	keyEnd     int
}

func (b *builder) err(msg string) error { return &JSONError{Offset: b.pos, Msg: msg} }

func (b *builder) peek() byte {
	if b.pos < len(b.src) {
		return b.src[b.pos]
	}
	return 0
}

func (b *builder) ws() {
	for b.pos < len(b.src) {
		switch b.src[b.pos] {
		case ' ', '\t', '\n', '\r':
			b.pos++
		default:
			return
		}
	}
}

// str reads a JSON string at pos and returns its content span and whether it has escapes.
func (b *builder) str() (int, int, bool, error) {
	if b.peek() != '"' {
		return 0, 0, false, b.err("expected a string")
	}
	b.pos++
	start := b.pos
	esc := false
	for b.pos < len(b.src) {
		// Plain characters first, in a tight loop.
		i := b.pos
		for i < len(b.src) && plain[b.src[i]] {
			i++
		}
		b.pos = i
		if i >= len(b.src) {
			break
		}
		c := b.src[b.pos]
		switch {
		case c == '"':
			end := b.pos
			b.pos++
			return start, end, esc, nil
		case c == '\\':
			esc = true
			if b.pos+1 >= len(b.src) {
				return 0, 0, false, b.err("unterminated string")
			}
			switch b.src[b.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				b.pos += 2
			case 'u':
				if b.pos+6 > len(b.src) {
					return 0, 0, false, b.err("bad \\u escape")
				}
				for _, h := range b.src[b.pos+2 : b.pos+6] {
					if _, ok := hexVal(h); !ok {
						return 0, 0, false, b.err("bad \\u escape")
					}
				}
				b.pos += 6
			default:
				return 0, 0, false, b.err("bad escape")
			}
		case c < 0x20:
			return 0, 0, false, b.err("control character in string")
		default:
			b.pos++
		}
	}
	return 0, 0, false, b.err("unterminated string")
}

func (b *builder) colon() error {
	b.ws()
	if b.peek() != ':' {
		return b.err("expected ':'")
	}
	b.pos++
	b.ws()
	return nil
}

// skip skips any JSON value.
func (b *builder) skip() error {
	b.ws()
	switch c := b.peek(); c {
	case '"':
		_, _, _, err := b.str()
		return err
	case '{', '[':
		if !b.enter() {
			return b.err("JSON nested too deeply")
		}
		defer b.leave()
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		b.pos++
		b.ws()
		if b.peek() == closer {
			b.pos++
			return nil
		}
		for {
			if c == '{' {
				if _, _, _, err := b.str(); err != nil {
					return err
				}
				if err := b.colon(); err != nil {
					return err
				}
			}
			if err := b.skip(); err != nil {
				return err
			}
			b.ws()
			switch b.peek() {
			case ',':
				b.pos++
				b.ws()
			case closer:
				b.pos++
				return nil
			default:
				return b.err("expected ',' or '" + string(closer) + "'")
			}
		}
	default:
		_, _, err := b.scalar()
		return err
	}
}

func (b *builder) enter() bool {
	b.depth++
	return b.depth <= maxJSONDepth
}

func (b *builder) leave() { b.depth-- }

// scalar reads a number, true, false or null.
func (b *builder) scalar() (ValueKind, int, error) {
	start := b.pos
	switch c := b.peek(); {
	case c == 't' || c == 'f' || c == 'n':
		for _, w := range [...]string{"true", "false", "null"} {
			if len(b.src)-b.pos >= len(w) && string(b.src[b.pos:b.pos+len(w)]) == w {
				b.pos += len(w)
				if w == "null" {
					return NoValue, start, nil
				}
				return JSONBool, start, nil
			}
		}
	case c == '-' || isDigit(c):
		if c == '-' {
			b.pos++
		}
		if !isDigit(b.peek()) {
			return 0, 0, b.err("malformed number")
		}
		if b.peek() == '0' {
			b.pos++
		} else {
			for isDigit(b.peek()) {
				b.pos++
			}
		}
		if b.peek() == '.' {
			b.pos++
			if !isDigit(b.peek()) {
				return 0, 0, b.err("malformed number")
			}
			for isDigit(b.peek()) {
				b.pos++
			}
		}
		if c := b.peek(); c == 'e' || c == 'E' {
			b.pos++
			if c := b.peek(); c == '+' || c == '-' {
				b.pos++
			}
			if !isDigit(b.peek()) {
				return 0, 0, b.err("malformed number")
			}
			for isDigit(b.peek()) {
				b.pos++
			}
		}
		return JSONNumber, start, nil
	}
	return 0, 0, b.err("expected a JSON value")
}

// findResourceType returns the resourceType of the object at pos without consuming it.
func (b *builder) findResourceType() (int, int, error) {
	save := b.pos
	defer func() { b.pos = save }()
	b.pos++
	b.ws()
	for b.peek() != '}' {
		ks, ke, _, err := b.str()
		if err != nil {
			return 0, 0, err
		}
		if err := b.colon(); err != nil {
			return 0, 0, err
		}
		if string(b.src[ks:ke]) == "resourceType" {
			vs, ve, _, err := b.str()
			if err != nil {
				return 0, 0, b.err("resourceType must be a string")
			}
			return vs, ve, nil
		}
		if err := b.skip(); err != nil {
			return 0, 0, err
		}
		b.ws()
		if b.peek() == ',' {
			b.pos++
			b.ws()
		} else if b.peek() != '}' {
			return 0, 0, b.err("expected ',' or '}'")
		}
	}
	return 0, 0, b.err("resourceType missing")
}

// resource builds the resource object at pos as a child of parent.
func (b *builder) resource(parent NodeID, name string) (NodeID, error) {
	vs, ve, err := b.findResourceType()
	if err != nil {
		return -1, err
	}
	el, ok := b.ty.Resource(b.src[vs:ve])
	if !ok {
		return -1, &JSONError{Offset: vs, Msg: "unknown resource type"}
	}
	id := b.t.Add(parent, Node{Name: name, Type: el.Type, Path: el.Path, Resource: true})
	return id, b.object(id, el, true)
}

// object builds the members of the object at pos into node id of element el.
func (b *builder) object(id NodeID, el Element, isResource bool) error {
	if !b.enter() {
		return b.err("JSON nested too deeply")
	}
	b.pos++ // '{'
	b.ws()
	compBase := len(b.comp)
	for b.peek() != '}' {
		ks, ke, _, err := b.str()
		if err != nil {
			return err
		}
		if err := b.colon(); err != nil {
			return err
		}
		key := b.src[ks:ke]
		switch {
		case isResource && string(key) == "resourceType":
			if err := b.skip(); err != nil {
				return err
			}
		case len(key) > 1 && key[0] == '_':
			b.comp = append(b.comp, companion{key: ks + 1, keyEnd: ke, value: b.pos})
			if err := b.skip(); err != nil {
				return err
			}
		default:
			child, ok := b.ty.Element(el, key)
			if !ok {
				return b.unknown(ks, key)
			}
			if err := b.member(id, child); err != nil {
				return err
			}
		}
		b.ws()
		switch b.peek() {
		case ',':
			b.pos++
			b.ws()
			if b.peek() == '}' {
				return b.err("trailing comma")
			}
		case '}':
		default:
			return b.err("expected ',' or '}'")
		}
	}
	end := b.pos + 1
	for i := compBase; i < len(b.comp); i++ {
		c := b.comp[i]
		child, ok := b.ty.Element(el, b.src[c.key:c.keyEnd])
		if !ok {
			return b.unknown(c.key-1, b.src[c.key-1:c.keyEnd])
		}
		b.pos = c.value
		if err := b.companion(id, child); err != nil {
			return err
		}
	}
	b.comp = b.comp[:compBase]
	b.pos = end
	b.leave()
	return nil
}

func (b *builder) unknown(off int, key []byte) error {
	msg := "unknown element"
	if len(key) <= 64 {
		plain := len(key) > 0
		for _, c := range key {
			if !isIdentPart(c) {
				plain = false
				break
			}
		}
		if plain {
			msg += " " + string(key)
		}
	}
	return &JSONError{Offset: off, Msg: msg}
}

// member builds the value of one property (an array: one node per item).
func (b *builder) member(parent NodeID, el Element) error {
	if b.peek() != '[' {
		return b.value(parent, el, false)
	}
	if !b.enter() {
		return b.err("JSON nested too deeply")
	}
	b.pos++
	b.ws()
	for b.peek() != ']' {
		if err := b.value(parent, el, true); err != nil {
			return err
		}
		b.ws()
		switch b.peek() {
		case ',':
			b.pos++
			b.ws()
		case ']':
		default:
			return b.err("expected ',' or ']'")
		}
	}
	b.pos++
	b.leave()
	return nil
}

func (b *builder) value(parent NodeID, el Element, inArray bool) error {
	switch b.peek() {
	case '{':
		if el.Type == "Resource" {
			_, err := b.resource(parent, el.Name)
			return err
		}
		id := b.t.Add(parent, Node{Name: el.Name, Type: el.Type, Path: el.Path, Choice: el.Choice})
		return b.object(id, el, false)
	case '"':
		s, e, esc, err := b.str()
		if err != nil {
			return err
		}
		k := JSONString
		if esc {
			k = JSONEscaped
		}
		b.t.Add(parent, Node{Name: el.Name, Type: el.Type, Path: el.Path, Choice: el.Choice, Kind: k, Start: int32(s), End: int32(e)})
		return nil
	case '[':
		return b.err("nested array")
	default:
		k, s, err := b.scalar()
		if err != nil {
			return err
		}
		if k == NoValue {
			if !inArray {
				return b.err("null is not a value")
			}
			// A null in a primitive array keeps its place for the _ companion's item.
			b.t.Add(parent, Node{Name: el.Name, Type: el.Type, Path: el.Path, Choice: el.Choice})
			return nil
		}
		b.t.Add(parent, Node{Name: el.Name, Type: el.Type, Path: el.Path, Choice: el.Choice, Kind: k, Start: int32(s), End: int32(b.pos)})
		return nil
	}
}

// companion merges a _name value into the primitive nodes named el.Name.
func (b *builder) companion(parent NodeID, el Element) error {
	if b.peek() != '[' {
		return b.companionItem(parent, el, 0)
	}
	b.pos++
	b.ws()
	for i := 0; b.peek() != ']'; i++ {
		if err := b.companionItem(parent, el, i); err != nil {
			return err
		}
		b.ws()
		switch b.peek() {
		case ',':
			b.pos++
			b.ws()
		case ']':
		default:
			return b.err("expected ',' or ']'")
		}
	}
	b.pos++
	return nil
}

func (b *builder) companionItem(parent NodeID, el Element, i int) error {
	if b.peek() == 'n' {
		_, _, err := b.scalar()
		return err
	}
	if b.peek() != '{' {
		return b.err("a _ companion holds objects")
	}
	id := b.t.Child(parent, el.Name, i)
	if id < 0 {
		id = b.t.Add(parent, Node{Name: el.Name, Type: el.Type, Path: el.Path, Choice: el.Choice})
	}
	return b.object(id, el, false)
}
