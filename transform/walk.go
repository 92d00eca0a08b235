package transform

import "github.com/fhirload/fhirload/internal/fhirpath"

// resource validates a whole line holding one resource of any concrete R4 type.
func (v *validator) resource() bool {
	if v.peek() != '{' {
		if v.pos >= len(v.b) {
			return v.syntax("empty line")
		}
		if !v.skip() {
			return false
		}
		return v.fail(ReasonParse, "not a JSON object")
	}
	t, ok := v.findResourceType(true)
	if !ok {
		return false
	}
	v.pos++ // '{'
	v.rootOpen = v.pos
	v.cur = v.tree.Add(-1, fhirpath.Node{Type: v.s.types[t].name, Path: v.s.types[t].name, Resource: true})
	if !v.object(t, true) {
		return false
	}
	if v.peek() != 0 {
		return v.syntax("data after the JSON object")
	}
	return true
}

// findResourceType looks up "resourceType" of the object at pos without consuming it.
// Producers put it first; otherwise the members are skipped until it is found.
func (v *validator) findResourceType(root bool) (int, bool) {
	start := v.pos
	defer func() { v.pos = start }()
	v.pos++
	if v.peek() == '}' {
		return -1, v.fail(ReasonInvalid, "resourceType missing")
	}
	for {
		_, key, ok := v.str()
		if !ok || !v.expect(':') {
			return -1, false
		}
		if string(key) == "resourceType" {
			sp, name, ok := v.str()
			if !ok {
				return -1, v.failAt(ReasonInvalid, "resourceType", "resourceType must be a string")
			}
			_ = sp
			t := v.s.resourceTypeIndex(name)
			if t < 0 {
				return -1, v.failAt(ReasonInvalid, "resourceType", "unknown resource type (not a concrete FHIR R4 type)")
			}
			if root {
				v.root = v.s.types[t].name
			}
			return t, true
		}
		if !v.skip() {
			return -1, false
		}
		switch v.peek() {
		case ',':
			v.pos++
		case '}':
			return -1, v.fail(ReasonInvalid, "resourceType missing")
		default:
			return -1, v.syntax("expected ',' or '}'")
		}
	}
}

// object validates the members of an object of type t; pos is just after '{'.
func (v *validator) object(t int, isResource bool) bool {
	if !v.enter() {
		return false
	}
	td := &v.s.types[t]
	var seen seenSet
	var hasValue, hasExt uint64
	arrBase := len(v.arrs)
	isRef := t == v.s.reference
	isCoding := t == v.s.coding && v.cc.vs != nil && v.depth == v.cc.depth+3
	var system, code []byte
	refCtx := v.refCtx
	var refSpan span
	var refVal, typeVal []byte
	refSpan.start = -1
	members := 0

	if v.peek() == '}' {
		v.pos++
		if isResource {
			return v.fail(ReasonInvalid, "resourceType missing")
		}
		return v.fail(ReasonInvalid, "empty object (an element must have a value or children)")
	}
	for {
		ksp, key, ok := v.str()
		if !ok || !v.expect(':') {
			return false
		}
		fi := td.field(key)
		if fi < 0 {
			if isResource && string(key) == "resourceType" {
				if seenResourceType(&seen) {
					return v.fail(ReasonParse, "duplicate key resourceType (ambiguous)")
				}
				if _, _, ok := v.str(); !ok {
					return false
				}
				goto next
			}
			if len(key) != ksp.end-ksp.start {
				return v.failAt(ReasonInvalid, "(unknown key)", "unknown element")
			}
			return v.failAt(ReasonInvalid, safeKey(key), "unknown element")
		}
		{
			f := &td.fields[fi]
			if seen[fi>>6]&(1<<(fi&63)) != 0 {
				return v.failAt(ReasonParse, f.json, "duplicate key (ambiguous)")
			}
			seen[fi>>6] |= 1 << (fi & 63)
			e := &td.elems[f.elem]
			bit := uint64(1) << f.elem
			// merge: the other half of a primitive (its value, or its "_" companion) came
			// first, so its nodes exist already.
			merge := f.primExt && hasValue&bit != 0 || !f.primExt && hasExt&bit != 0
			if f.primExt {
				if e.choice && hasExt&bit != 0 {
					return v.failAt(ReasonInvalid, f.json, "more than one type for "+e.name)
				}
				hasExt |= bit
			} else {
				if e.choice && hasValue&bit != 0 {
					return v.failAt(ReasonInvalid, f.json, "more than one type for "+e.name)
				}
				hasValue |= bit
			}
			v.path = append(v.path, frame{name: f.json, index: -1})
			var sp span
			var val []byte
			if e.many {
				ok = v.array(f, e, merge)
			} else {
				sp, val, ok = v.value(f, e, -1, merge)
			}
			if !ok {
				return false
			}
			v.path = v.path[:len(v.path)-1]
			if isRef && !f.primExt {
				switch f.json {
				case "reference":
					refSpan = sp
					refVal = val
				case "type":
					typeVal = val
				}
			}
			if isCoding && !f.primExt {
				switch f.json {
				case "system":
					system = val
				case "code":
					code = val
				}
			}
			if t == v.s.identifier && v.ident.active && v.depth == 3 && !f.primExt {
				switch f.json {
				case "system":
					v.ident.system = append(v.ident.system[:0], val...)
				case "value":
					v.ident.value = append(v.ident.value[:0], val...)
					v.ident.hasValue = true
				}
			}
			if isResource && v.depth == 1 && f.json == "id" {
				v.idSpan = sp
				v.id = val
			}
		}
	next:
		members++
		switch v.peek() {
		case ',':
			v.pos++
		case '}':
			v.pos++
			goto end
		default:
			return v.syntax("expected ',' or '}'")
		}
	}
end:
	if isResource && !seenResourceType(&seen) {
		return v.fail(ReasonInvalid, "resourceType missing")
	}
	present := hasValue | hasExt
	for i := range td.elems {
		e := &td.elems[i]
		if e.min > 0 && present&(1<<i) == 0 {
			return v.failAt(ReasonInvalid, e.name, "required element missing")
		}
	}
	if len(v.arrs) > arrBase {
		if !v.checkArrays(td, arrBase, hasExt) {
			return false
		}
		v.arrs = v.arrs[:arrBase]
	}
	if isRef && refSpan.start >= 0 {
		if !v.reference(refCtx, refSpan, refVal, typeVal) {
			return false
		}
	}
	if isCoding && code != nil && system != nil && v.cc.vs.containsPair(system, code) {
		v.cc.matched = true
	}
	v.depth--
	return true
}

// seenSet records which fields of an object were seen (maxFields + resourceType).
type seenSet [(maxFields + 1) / 64]uint64

// seenResourceType uses the last bit of the seen set (no type has maxFields fields).
func seenResourceType(seen *seenSet) bool {
	const bit = uint64(1) << 63
	last := len(seen) - 1
	if seen[last]&bit != 0 {
		return true
	}
	seen[last] |= bit
	return false
}

// checkArrays enforces the JSON rules for primitive arrays with "_" companions: equal
// lengths, and null only where the companion carries the content.
func (v *validator) checkArrays(td *typeDef, base int, hasExt uint64) bool {
	arrs := v.arrs[base:]
	for i, a := range arrs {
		if a.ext {
			continue
		}
		if a.null && hasExt&(1<<a.elem) == 0 {
			return v.failAt(ReasonInvalid, td.elems[a.elem].name, "null in a primitive array without a matching _ array")
		}
		for _, b := range arrs[i+1:] {
			if b.elem == a.elem && b.ext && b.n != a.n {
				return v.failAt(ReasonInvalid, td.elems[a.elem].name, "primitive array and its _ array differ in length")
			}
		}
		for _, b := range arrs[:i] {
			if b.elem == a.elem && b.ext && b.n != a.n {
				return v.failAt(ReasonInvalid, td.elems[a.elem].name, "primitive array and its _ array differ in length")
			}
		}
	}
	return true
}

// array validates a JSON array for an element with max "*".
func (v *validator) array(f *fieldDef, e *elemDef, merge bool) bool {
	if v.peek() != '[' {
		return v.fail(ReasonInvalid, "element must be an array (max cardinality *)")
	}
	v.pos++
	if !v.enter() {
		return false
	}
	if v.peek() == ']' {
		return v.fail(ReasonInvalid, "empty array")
	}
	top := len(v.path) - 1
	sawNull := false
	n := 0
	cursor := fhirpath.NodeID(-1) // merge: the node of the previous item
	for {
		v.path[top].index = n
		if merge {
			// The items' nodes exist already (the other half came first): walk them in
			// order rather than looking each up from the first, which would be
			// quadratic in the array's length.
			cursor = v.nextNamed(cursor, f.node.name)
			v.mergeHint = cursor
		}
		if v.peek() == 'n' && (f.primExt || f.kind != kindObject && f.kind != kindResource) {
			if !v.literal("null") {
				return false
			}
			sawNull = true
			if !merge {
				// The item keeps its place for the other array's item at this index.
				v.addNode(f)
			}
		} else {
			identRoot := false
			if v.depth == 2 && f.json == "identifier" && n == 0 && !v.ident.done {
				v.ident.active, identRoot = true, true
			}
			if _, _, ok := v.value(f, e, n, merge); !ok {
				return false
			}
			if identRoot {
				v.ident.active, v.ident.done = false, true
			}
		}
		n++
		switch v.peek() {
		case ',':
			v.pos++
		case ']':
			v.pos++
			v.depth--
			v.path[top].index = -1
			if f.kind != kindObject || f.primExt {
				v.arrs = append(v.arrs, arrLen{elem: f.elem, n: n, ext: f.primExt, null: sawNull && !f.primExt})
			}
			if f.primExt && sawNull && n == 1 {
				return v.fail(ReasonInvalid, "_ array holds only null")
			}
			return true
		default:
			return v.syntax("expected ',' or ']'")
		}
	}
}

// value validates one value of field f (index: its position in an array, or -1) and
// appends its node to the tree (merge: the primitive's node exists already, from its
// other half). It returns the span and decoded content of a string value (for ids and
// references).
func (v *validator) value(f *fieldDef, e *elemDef, index int, merge bool) (span, []byte, bool) {
	c := v.peek()
	if c == '[' {
		return span{}, nil, v.fail(ReasonInvalid, "element must not be an array (max cardinality 1)")
	}
	if c == 'n' {
		if !v.literal("null") {
			return span{}, nil, false
		}
		return span{}, nil, v.fail(ReasonInvalid, "null is not a value")
	}
	switch f.kind {
	case kindObject:
		if c != '{' {
			return span{}, nil, v.wrongType("an object")
		}
		v.pos++
		parent := v.cur
		if f.primExt {
			v.cur = v.primNode(f, index, merge)
		} else {
			v.cur = v.addNode(f)
		}
		var ok bool
		switch {
		case e.valueSet != nil && f.typ == v.s.codeableConcept && !f.primExt:
			ok = v.boundConcept(f, e)
		case f.typ != v.s.reference:
			ok = v.object(f.typ, false)
		default:
			saved := v.refCtx
			v.refCtx = e
			ok = v.object(f.typ, false)
			v.refCtx = saved
		}
		v.cur = parent
		return span{}, nil, ok
	case kindResource:
		if c != '{' {
			return span{}, nil, v.wrongType("a resource object")
		}
		return span{}, nil, v.contained(f)
	case kindBoolean:
		start := v.pos
		var ok bool
		switch c {
		case 't':
			ok = v.literal("true")
		case 'f':
			ok = v.literal("false")
		default:
			return span{}, nil, v.wrongType("true or false")
		}
		if ok {
			v.setPrimitive(f, index, merge, fhirpath.JSONBool, span{start, v.pos})
		}
		return span{}, nil, ok
	case kindInteger, kindPositiveInt, kindUnsignedInt, kindDecimal:
		if c != '-' && !isDigit(c) {
			return span{}, nil, v.wrongType("a JSON number")
		}
		sp, ok := v.number()
		if !ok {
			return span{}, nil, false
		}
		if f.kind != kindDecimal {
			if msg := checkInteger(v.b[sp.start:sp.end], f.kind); msg != "" {
				return span{}, nil, v.fail(ReasonInvalid, msg)
			}
		}
		v.setPrimitive(f, index, merge, fhirpath.JSONNumber, sp)
		return sp, nil, true
	}
	if c != '"' {
		return span{}, nil, v.wrongType("a JSON string")
	}
	sp, val, ok := v.str()
	if !ok {
		return span{}, nil, false
	}
	if msg := checkPrimitive(f.kind, val); msg != "" {
		return span{}, nil, v.fail(ReasonInvalid, msg)
	}
	vk := fhirpath.JSONString
	if len(val) != sp.end-sp.start {
		vk = fhirpath.JSONEscaped
	}
	v.setPrimitive(f, index, merge, vk, sp)
	if f.kind == kindXHTML && !v.narrative(val) {
		return span{}, nil, false
	}
	if e.valueSet != nil && !f.primExt {
		if vs := e.valueSet; !vs.external && !vs.contains(val) || vs.syntax != nil && !vs.syntax(val) {
			return span{}, nil, v.fail(ReasonInvalid, "code not in the required value set "+vs.url)
		}
	}
	return sp, val, true
}

// boundConcept validates a CodeableConcept under a required binding: one of its codings
// must have a system and code of the value set (external value sets: not checked).
func (v *validator) boundConcept(f *fieldDef, e *elemDef) bool {
	saved := v.cc
	v.cc = conceptCheck{vs: e.valueSet, depth: v.depth}
	if e.valueSet.external {
		v.cc.vs = nil
	}
	ok := v.object(f.typ, false)
	matched := v.cc.matched
	check := v.cc.vs != nil
	v.cc = saved
	if ok && check && !matched {
		return v.fail(ReasonInvalid, "no coding from the required value set "+e.valueSet.url)
	}
	return ok
}

func (v *validator) wrongType(want string) bool {
	if !v.skip() {
		return false
	}
	return v.fail(ReasonInvalid, "wrong JSON type: expected "+want)
}

// contained validates a contained resource (or Bundle.entry.resource,
// Parameters.parameter.resource) of field f as a full resource of its type.
func (v *validator) contained(f *fieldDef) bool {
	t, ok := v.findResourceType(false)
	if !ok {
		return false
	}
	v.pos++
	parent := v.cur
	name := v.s.types[t].name
	v.cur = v.tree.Add(parent, fhirpath.Node{Name: f.node.name, Type: name, Path: name, Resource: true})
	ok = v.object(t, true)
	v.cur = parent
	return ok
}

// addNode appends the node of a value of field f under the current node.
func (v *validator) addNode(f *fieldDef) fhirpath.NodeID {
	return v.tree.Add(v.cur, fhirpath.Node{Name: f.node.name, Type: f.node.typ, Path: f.node.path, Choice: f.node.choice})
}

// primNode returns the node of the primitive whose "_" companion item index (-1: not an
// array) is being read: the value's node when it came first (merge; in an array, the
// node array found for this item), else a new one.
func (v *validator) primNode(f *fieldDef, index int, merge bool) fhirpath.NodeID {
	if merge {
		id := v.mergeHint
		if index < 0 {
			id = v.tree.Child(v.cur, f.node.name, 0)
		}
		if id >= 0 {
			return id
		}
	}
	return v.addNode(f)
}

// nextNamed returns the next child of the current node named name after prev (-1: the
// first), or -1.
func (v *validator) nextNamed(prev fhirpath.NodeID, name string) fhirpath.NodeID {
	c := v.tree.FirstChild(v.cur)
	if prev >= 0 {
		c = v.tree.NextSibling(prev)
	}
	for ; c >= 0; c = v.tree.NextSibling(c) {
		v.mergeSteps++
		if v.tree.Node(c).Name == name {
			return c
		}
	}
	return -1
}

// setPrimitive records a primitive value: a new node, or the value of the node its "_"
// companion made (merge).
func (v *validator) setPrimitive(f *fieldDef, index int, merge bool, k fhirpath.ValueKind, sp span) {
	id := v.primNode(f, index, merge)
	v.tree.SetValue(id, k, sp.start, sp.end)
}
