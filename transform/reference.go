package transform

import (
	"crypto/sha1"
	"slices"
)

// Resolver tells the resource type of a resource of the run by its id: the pipeline
// builds one (an Index) in a pre-pass over all sources, so that a urn:uuid: reference
// becomes Type/id of its actual target whatever the file order. TypeOf gets the id as
// written after "urn:uuid:"; ok is false when no resource of the run has that id (or
// resources of several types do). It must be safe for concurrent use.
type Resolver interface {
	TypeOf(id []byte) (typ string, ok bool)
}

// reference checks the syntax of Reference.reference and records how to rewrite it.
//
// Accepted forms: "Type/id" and "Type/id/_history/vid" (Type an R4 resource type allowed
// by the element's target profiles, id a valid id), absolute URLs, "urn:uuid:" + UUID,
// "urn:oid:" + OID, and "#id" (contained). Rewriting (see the package README):
//   - urn:uuid:X becomes Type/X. With a Resolver, Type is the type of the run's resource
//     X (which the element must allow, and the reference's type element must agree
//     with); when the run has no resource X the reference is kept and counted as
//     unresolved. Without a Resolver, Type is the reference's type element if set, else
//     the element's default (refDefault); references on elements that allow any type
//     and have no type element are kept and counted as unresolved.
//   - under ids: derive, Type/X (also the result of the rule above) becomes
//     Type/{uuid5(Type|X)}: the id the referenced resource gets when it is loaded with
//     ids: derive from a source whose id is X;
//   - everything else (absolute URLs, versioned references, urn:oid:, #contained) is kept.
func (v *validator) reference(ctx *elemDef, sp span, ref, typ []byte) bool {
	anyTarget := ctx == nil || len(ctx.targets) == 0 || slices.Contains(ctx.targets, "Resource")
	var typeName []byte
	if typ != nil && v.s.isResourceType(typ) {
		typeName = typ
		if !anyTarget && !containsName(ctx.targets, typ) {
			return v.failAt(ReasonInvalid, "type", "resource type not allowed for this reference")
		}
	}
	const bad = "invalid reference (expected Type/id, an absolute URL, urn:uuid:, urn:oid: or #id)"
	switch {
	case len(ref) > 0 && ref[0] == '#':
		return true
	case hasPrefix(ref, "urn:uuid:"):
		u := ref[len("urn:uuid:"):]
		if !isUUID(u, true) {
			return v.failAt(ReasonInvalid, "reference", "invalid urn:uuid reference")
		}
		if !v.rewrite {
			return true
		}
		var t string
		switch {
		case v.resolver != nil:
			rt, ok := v.resolver.TypeOf(u)
			if !ok {
				v.unresolved++
				return true
			}
			if !anyTarget && !slices.Contains(ctx.targets, rt) {
				return v.failAt(ReasonInvalid, "reference", "reference to a resource type not allowed here")
			}
			if typeName != nil && string(typeName) != rt {
				return v.failAt(ReasonInvalid, "type", "reference and its type element disagree")
			}
			t = rt
		case typeName != nil:
			t = v.s.typeName(typeName)
		case !anyTarget:
			t = ctx.refDefault
		default:
			v.unresolved++
			return true
		}
		v.edits = append(v.edits, refEdit{at: sp, typ: t, id: u, derive: v.derive})
		return true
	case hasPrefix(ref, "urn:oid:"):
		if checkOID(ref) != "" {
			return v.failAt(ReasonInvalid, "reference", "invalid urn:oid reference")
		}
		return true
	case containsScheme(ref):
		if checkURI(ref) != "" {
			return v.failAt(ReasonInvalid, "reference", bad)
		}
		return true
	}
	// Relative: Type/id or Type/id/_history/vid.
	slash := indexByte(ref, '/')
	if slash < 0 {
		return v.failAt(ReasonInvalid, "reference", bad)
	}
	rtype, rest := ref[:slash], ref[slash+1:]
	id, hist := rest, []byte(nil)
	if j := indexByte(rest, '/'); j >= 0 {
		id, hist = rest[:j], rest[j+1:]
		if !hasPrefix(hist, "_history/") || checkID(hist[len("_history/"):]) != "" {
			return v.failAt(ReasonInvalid, "reference", bad)
		}
	}
	if !v.s.isResourceType(rtype) || checkID(id) != "" {
		return v.failAt(ReasonInvalid, "reference", bad)
	}
	if !anyTarget && !containsName(ctx.targets, rtype) {
		return v.failAt(ReasonInvalid, "reference", "reference to a resource type not allowed here")
	}
	if typeName != nil && string(typeName) != string(rtype) {
		return v.failAt(ReasonInvalid, "type", "reference and its type element disagree")
	}
	if v.rewrite && v.derive && hist == nil {
		v.edits = append(v.edits, refEdit{at: sp, typ: v.s.typeName(rtype), id: id, derive: true})
	}
	return true
}

func containsName(list []string, b []byte) bool {
	for _, s := range list {
		if s == string(b) {
			return true
		}
	}
	return false
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// containsScheme reports an absolute URL: a scheme followed by "://" (http, https, ...).
func containsScheme(b []byte) bool {
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (isDigit(c) || c == '+' || c == '-' || c == '.'):
		case c == ':' && i > 0:
			return hasPrefix(b[i:], "://")
		default:
			return false
		}
	}
	return false
}

// idNamespace is the UUIDv5 namespace of ids derived by fhirload (a fixed random UUID,
// 6f3c1e52-8a4d-4b0e-9d27-51c38e0a7f14).
const idNamespace = "\x6f\x3c\x1e\x52\x8a\x4d\x4b\x0e\x9d\x27\x51\xc3\x8e\x0a\x7f\x14"

// DeriveID returns the id fhirload derives for a resource of type typ whose key is key:
// the UUIDv5 (RFC 9562) of "typ|key" in fhirload's namespace. Under ids: derive the key
// is the source id for FHIR input (else as for a resource without an id) and the
// mapping's key fields joined by "|" for flat records. A resource without an id gets
// the key "system|value" of its first identifier, else "sha256:" and the hex SHA-256 of
// its canonical JSON (see canonicalJSON).
func DeriveID(typ, key string) string {
	var buf [36]byte
	return string(appendDerivedID(buf[:0], typ, []byte(key)))
}

// appendDerivedID appends the 36-character derived id to dst.
func appendDerivedID(dst []byte, typ string, key []byte) []byte {
	var stack [256]byte
	name := append(stack[:0], idNamespace...)
	name = append(name, typ...)
	name = append(name, '|')
	name = append(name, key...)
	sum := sha1.Sum(name)
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	for i := 0; i < 16; i++ {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[sum[i]>>4], hex[sum[i]&0x0f])
	}
	return dst
}

// output builds the body: the line with the id (replaced or inserted) and references
// spliced in; every other byte, number literals included, is copied as is. A nil newID
// keeps the id as it is.
func (v *validator) output(newID []byte) []byte {
	slices.SortFunc(v.edits, func(a, b refEdit) int { return a.at.start - b.at.start })
	size := len(v.b) + len(newID) + 8
	for _, e := range v.edits {
		size += len(e.typ) + 1 + 36 - (e.at.end - e.at.start)
	}
	out := make([]byte, 0, size)
	last := 0
	if newID != nil && v.idSpan.start < 0 {
		out = append(out, v.b[:v.rootOpen]...)
		out = append(out, `"id":"`...)
		out = append(out, newID...)
		out = append(out, `",`...)
		last = v.rootOpen
	}
	idDone := newID == nil || v.idSpan.start < 0
	for _, e := range v.edits {
		if !idDone && v.idSpan.start < e.at.start {
			out = append(out, v.b[last:v.idSpan.start]...)
			out = append(out, newID...)
			last = v.idSpan.end
			idDone = true
		}
		out = append(out, v.b[last:e.at.start]...)
		out = append(out, e.typ...)
		out = append(out, '/')
		if e.derive {
			out = appendDerivedID(out, e.typ, e.id)
		} else {
			out = append(out, e.id...)
		}
		last = e.at.end
	}
	if !idDone {
		out = append(out, v.b[last:v.idSpan.start]...)
		out = append(out, newID...)
		last = v.idSpan.end
	}
	return append(out, v.b[last:]...)
}
