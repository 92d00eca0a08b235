package transform

//go:generate go run ./internal/gen -spec spec -out zz_generated.go

import "slices"

// kind is how a JSON value of a field is checked.
type kind uint8

const (
	kindObject   kind = iota // a complex type or backbone element (typeDef)
	kindResource             // a contained resource
	kindBoolean
	kindInteger
	kindPositiveInt
	kindUnsignedInt
	kindDecimal
	kindString
	kindMarkdown
	kindCode
	kindID
	kindURI
	kindURL
	kindCanonical
	kindOID
	kindUUID
	kindDate
	kindDateTime
	kindInstant
	kindTime
	kindBase64Binary
	kindXHTML
)

// fieldDef is one JSON property name of a type: a plain element, one type of a choice
// element (valueQuantity), or the "_name" extension companion of a primitive.
type fieldDef struct {
	json    string
	elem    int  // index into typeDef.elems
	kind    kind // primitive kind, kindObject or kindResource
	typ     int  // index into schema.types when kind is kindObject
	primExt bool // "_name": the id/extension part of a primitive
}

// elemDef is one element definition: cardinality, choice, binding, reference targets.
type elemDef struct {
	name     string // as in the StructureDefinition: "value[x]"
	min      int
	many     bool // max is "*" (a JSON array)
	choice   bool
	valueSet string   // required binding (code elements only in R4 Patient/Observation)
	targets  []string // Reference target types; "Resource" means any
	// refDefault is the type a urn:uuid reference without a type element points at:
	// the first target profile (Observation.subject → Patient, .encounter → Encounter,
	// .performer → Practitioner), except Patient.generalPractitioner → Practitioner;
	// empty where any resource may be referenced (Observation.focus, extensions).
	refDefault string
}

// typeDef is a complex type, a resource or a backbone element (named by its path).
type typeDef struct {
	name     string
	resource bool
	fields   []fieldDef // sorted by json
	elems    []elemDef
}

// valueSetDef is a required-binding value set expanded at generation time.
type valueSetDef struct {
	external bool     // codes come from a system not shipped with the spec: check syntax only
	codes    []string // sorted
}

// schema is the validator's model under one profile. It is built once per Transformer
// and read-only afterwards, so it is safe to share between goroutines.
type schema struct {
	types         []typeDef
	valueSets     map[string]valueSetDef
	resourceTypes []string
	patient       int
	observation   int
}

// Profile names.
const (
	ProfileBase = "base" // FHIR R4 4.0.1 as published
	ProfileSeed = "seed" // base plus Patient name.family and name.given required (HealthLake section 1.3)
)

func newSchema(profile string) *schema {
	s := &schema{
		types:         generatedTypes(),
		valueSets:     generatedValueSets(),
		resourceTypes: generatedResourceTypes(),
		patient:       typePatient,
		observation:   typeObservation,
	}
	if profile == ProfileSeed {
		s.applySeed()
	}
	return s
}

// applySeed derives the seed profile: Patient.name 1..*, and in each of those names
// family 1..1 and given 1..*. Other HumanNames (Patient.contact.name) are unchanged.
func (s *schema) applySeed() {
	name := cloneType(s.types[typeHumanName])
	name.name = "HumanName"
	setMin(&name, "family", 1)
	setMin(&name, "given", 1)
	s.types = append(s.types, name)
	seedName := len(s.types) - 1

	p := cloneType(s.types[typePatient])
	setMin(&p, "name", 1)
	for i := range p.fields {
		if p.fields[i].json == "name" {
			p.fields[i].typ = seedName
		}
	}
	s.types = append(s.types, p)
	s.patient = len(s.types) - 1
}

func cloneType(t typeDef) typeDef {
	t.fields = slices.Clone(t.fields)
	t.elems = slices.Clone(t.elems)
	return t
}

func setMin(t *typeDef, elem string, min int) {
	for i := range t.elems {
		if t.elems[i].name == elem {
			t.elems[i].min = min
		}
	}
}

// field finds the index of the field named by the JSON key bytes (binary search, no
// allocation), or -1.
func (t *typeDef) field(key []byte) int {
	lo, hi := 0, len(t.fields)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if compareKey(t.fields[m].json, key) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(t.fields) && t.fields[lo].json == string(key) {
		return lo
	}
	return -1
}

// resourceTypeIndex returns the schema type of a resource name, or -1 when the profile
// has no definition for it (only Patient and Observation are generated).
func (s *schema) resourceTypeIndex(name []byte) int {
	switch string(name) {
	case "Patient":
		return s.patient
	case "Observation":
		return s.observation
	}
	return -1
}

func (s *schema) isResourceType(name []byte) bool {
	return sortedContains(s.resourceTypes, name)
}

func (v valueSetDef) contains(code []byte) bool {
	return sortedContains(v.codes, code)
}

func sortedContains(list []string, b []byte) bool {
	lo, hi := 0, len(list)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if compareKey(list[m], b) < 0 {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(list) && list[lo] == string(b)
}

// compareKey compares like strings.Compare without converting b to a string.
func compareKey(s string, b []byte) int {
	n := min(len(s), len(b))
	for i := 0; i < n; i++ {
		if s[i] != b[i] {
			if s[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(s) < len(b):
		return -1
	case len(s) > len(b):
		return 1
	}
	return 0
}
