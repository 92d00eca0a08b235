package fhirpath

import (
	"strings"
	"sync"
)

// typeSpec is a type name as written in is/as/ofType: Quantity, FHIR.Patient, System.String.
type typeSpec struct {
	ns   string // "FHIR", "System" or "" (FHIR first, then System)
	name string
	sys  Kind // the System kind the name denotes (0 if none)
	// subs are the FHIR primitive types that derive from a primitive name (uri: url,
	// canonical, oid, uuid), so that as(uri) over descendants() compares a few strings
	// instead of looking the hierarchy up for every node; nil for other names.
	subs []string
	prim bool // name is a FHIR primitive type
}

// primitiveSubs lists, for each FHIR primitive type, the primitives deriving from it
// (computed on first use).
var primitiveSubs = sync.OnceValue(func() map[string][]string {
	m := map[string][]string{}
	for t, base := range fhirBase {
		if t[0] >= 'a' && t[0] <= 'z' {
			if _, ok := m[t]; !ok {
				m[t] = nil // every primitive is a key
			}
			if base[0] >= 'a' && base[0] <= 'z' {
				m[base] = append(m[base], t)
			}
		}
	}
	return m
})

func newTypeSpec(q string) typeSpec {
	ts := typeSpec{name: q}
	if i := strings.IndexByte(q, '.'); i >= 0 {
		ts.ns, ts.name = q[:i], q[i+1:]
	}
	if subs, ok := primitiveSubs()[ts.name]; ok && ts.ns != "System" {
		ts.prim, ts.subs = true, subs
	}
	if ts.ns != "FHIR" {
		switch ts.name {
		case "Boolean":
			ts.sys = KindBoolean
		case "Integer":
			ts.sys = KindInteger
		case "Decimal":
			ts.sys = KindDecimal
		case "String":
			ts.sys = KindString
		case "Date":
			ts.sys = KindDate
		case "DateTime":
			ts.sys = KindDateTime
		case "Time":
			ts.sys = KindTime
		case "Quantity":
			ts.sys = KindQuantity
		}
	}
	return ts
}

// systemKind is the System type a FHIR primitive type converts to.
func systemKind(fhirType string, vk ValueKind) Kind {
	switch vk {
	case JSONBool:
		return KindBoolean
	case JSONNumber:
		switch fhirType {
		case "integer", "positiveInt", "unsignedInt", "integer64":
			return KindInteger
		}
		return KindDecimal
	case JSONString, JSONEscaped:
		switch fhirType {
		case "date":
			return KindDate
		case "dateTime", "instant":
			return KindDateTime
		case "time":
			return KindTime
		}
		return KindString
	}
	return KindNode
}

// isQuantityType reports whether a FHIR type is Quantity or one of its specialisations.
func isQuantityType(t string) bool {
	switch t {
	case "Quantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity", "SimpleQuantity":
		return true
	}
	return false
}

// isSubtype reports whether FHIR type t is u or derives from u (R4 hierarchy, generated
// from the core package into zz_types.go).
func isSubtype(t, u string) bool {
	if t == u {
		return true
	}
	if u != "" && u[0] >= 'a' && u[0] <= 'z' {
		// Only a primitive derives from a primitive, and R4's primitives derive from
		// one another at most one level deep (code → string, url → uri): one lookup,
		// none for a complex type. as(canonical) over descendants() (dom-3) relies on it.
		return t != "" && t[0] >= 'a' && t[0] <= 'z' && fhirBase[t] == u
	}
	for i := 0; t != "" && i < 8; i++ {
		if t == u {
			return true
		}
		t = fhirBase[t]
	}
	return false
}

// matches reports whether v is of type ts. FHIR primitives also match their System
// type (a FHIR boolean is a System.Boolean), since R4's invariants are written that way
// (que-7: "answer is Boolean").
func (e *Evaluator) matches(v Value, ts *typeSpec) bool {
	switch v.kind {
	case kindRef:
		if ts.ns == "System" {
			return false
		}
		return v.str == ts.name || ts.name == "Resource" || (ts.name == "DomainResource" && isSubtype(v.str, "DomainResource"))
	case KindNode:
		n := &e.t.nodes[v.n]
		if ts.ns != "System" {
			if n.Type == ts.name {
				return true
			}
			if n.Resource {
				if ts.name == "Resource" {
					return true
				}
				if ts.name == "DomainResource" {
					return isSubtype(n.Type, "DomainResource") || fhirBase[n.Type] == ""
				}
				return false
			}
			if ts.prim {
				for _, sub := range ts.subs {
					if n.Type == sub {
						return true
					}
				}
			} else if isSubtype(n.Type, ts.name) {
				return true
			}
		}
		if ts.sys != 0 && n.Kind != NoValue {
			return systemKind(n.Type, n.Kind) == ts.sys
		}
		if ts.sys == KindQuantity && ts.ns == "System" {
			return false
		}
		return false
	}
	if ts.ns == "FHIR" {
		return false
	}
	if ts.sys != 0 {
		return v.kind == ts.sys
	}
	return false
}
