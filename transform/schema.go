package transform

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/fhirload/fhirload/registry"
)

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

// primitiveKinds maps the R4 primitive types to their checkers.
var primitiveKinds = map[string]kind{
	"boolean": kindBoolean, "integer": kindInteger, "positiveInt": kindPositiveInt,
	"unsignedInt": kindUnsignedInt, "decimal": kindDecimal, "string": kindString,
	"markdown": kindMarkdown, "code": kindCode, "id": kindID, "uri": kindURI,
	"url": kindURL, "canonical": kindCanonical, "oid": kindOID, "uuid": kindUUID,
	"date": kindDate, "dateTime": kindDateTime, "instant": kindInstant, "time": kindTime,
	"base64Binary": kindBase64Binary, "xhtml": kindXHTML,
}

// fieldDef is one JSON property name of a type: a plain element, one type of a choice
// element (valueQuantity), or the "_name" extension companion of a primitive.
type fieldDef struct {
	json    string
	elem    int  // index into typeDef.elems
	kind    kind // primitive kind, kindObject or kindResource
	typ     int  // index into schema.types when kind is kindObject
	primExt bool // "_name": the id/extension part of a primitive
	// node is the FHIRPath node of a value of this field, as registry.Typer reports it
	// (for "_name", the primitive's node; for a resource, Type is set from the data).
	node nodeInfo
}

// nodeInfo is what the walker writes into the fhirpath.Node of a field's value.
type nodeInfo struct {
	name, typ, path string
	choice          bool
}

// elemDef is one element definition: cardinality, choice, binding, reference targets.
type elemDef struct {
	name     string // as in the StructureDefinition: "value[x]"
	min      int
	many     bool // max is "*" (a JSON array)
	choice   bool
	valueSet *valueSetDef // required binding (code and CodeableConcept elements)
	targets  []string     // Reference target types; "Resource" means any
	// refDefault is the type a urn:uuid reference without a type element points at when
	// no Resolver knows its target: the first target type (Observation.subject →
	// Patient, .encounter → Encounter, .performer → Practitioner), except
	// Patient.generalPractitioner → Practitioner; empty where any resource may be
	// referenced (Observation.focus, extensions).
	refDefault string
}

// maxElems and maxFields bound what the walker's bit sets can hold; the schema build
// fails if a definition exceeds them (R4: at most 54 elements, 295 fields).
const (
	maxElems  = 64
	maxFields = 511 // seenSet's last bit marks resourceType
)

// typeDef is a complex type, a resource or a backbone element (named by its path).
type typeDef struct {
	name     string
	resource bool
	fields   []fieldDef // sorted by json
	elems    []elemDef
}

// valueSetDef is a required-binding value set.
type valueSetDef struct {
	url      string
	external bool // codes come from a system not shipped with the spec: check syntax only
	// syntax, for some external systems, is the form of their codes (ISO 4217, BCP 13).
	syntax func([]byte) bool
	codes  []string // sorted
	pairs  []string // "system|code", sorted (CodeableConcept bindings)
}

// schema is the validator's model under one profile, built from the registry. It is
// built once per Transformer and read-only afterwards, so it is safe to share between
// goroutines.
type schema struct {
	types       []typeDef
	valueSets   map[string]*valueSetDef
	resourceIdx map[string]int // concrete resource type name → index into types
	resourceNum map[string]int // concrete resource type name → index into resourceTypes
	// resourceTypes lists the concrete resource types, sorted; a type's position is the
	// type byte of the reference index (see Index).
	resourceTypes []string
	reg           *registry.Registry
	inv           *invariants // shared by every profile

	// types the walker treats specially
	element, reference, identifier, coding, codeableConcept, humanName int
}

// Profile names.
const (
	ProfileBase = "base" // FHIR R4 4.0.1 as published
	ProfileSeed = "seed" // base plus Patient name.family and name.given required (HealthLake section 1.3)
)

// externalSyntax checks the form of codes of required value sets over external code
// systems that are not in the package.
var externalSyntax = map[string]func([]byte) bool{
	"http://hl7.org/fhir/ValueSet/currencies": isCurrencyCode,
	"http://hl7.org/fhir/ValueSet/mimetypes":  isMediaType,
}

// isCurrencyCode: ISO 4217 alphabetic codes are three upper-case letters.
func isCurrencyCode(b []byte) bool {
	return len(b) == 3 && b[0] >= 'A' && b[0] <= 'Z' && b[1] >= 'A' && b[1] <= 'Z' && b[2] >= 'A' && b[2] <= 'Z'
}

// isMediaType: BCP 13 type "/" subtype, each an RFC 6838 token, then optional
// "; parameter" parts (not checked further).
func isMediaType(b []byte) bool {
	slash, end := -1, len(b)
	for i, c := range b {
		if c == ';' {
			end = i
			break
		}
	}
	for i := 0; i < end; i++ {
		c := b[i]
		switch {
		case c == '/' && slash < 0:
			slash = i
		case isDigit(c) || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '!' || c == '#' || c == '$' || c == '&' ||
			c == '-' || c == '^' || c == '_' || c == '.' || c == '+':
		default:
			return false
		}
	}
	return slash > 0 && slash < end-1
}

// refDefaultOverrides names, per element, the default reference target type where the
// first target listed is not the usual one.
var refDefaultOverrides = map[string]string{
	"Patient.generalPractitioner": "Practitioner",
}

// schemaBuilder turns registry types into typeDefs, each backbone element a type of its own.
type schemaBuilder struct {
	s     *schema
	index map[string]int // type name or backbone path → index into s.types
	queue []string
	err   error
}

// schemaFor returns the schema of a profile, built on first use from the R4 registry and
// shared by every Transformer afterwards (it is read-only): 15 ms and 3.7 MB once, not
// per Transformer.
func schemaFor(profile string) (*schema, error) {
	if profile == ProfileSeed {
		return seedSchema()
	}
	return baseSchema()
}

var (
	baseSchema = sync.OnceValues(func() (*schema, error) { return newSchema(registry.R4(), ProfileBase) })
	seedSchema = sync.OnceValues(func() (*schema, error) { return newSchema(registry.R4(), ProfileSeed) })
)

func newSchema(reg *registry.Registry, profile string) (*schema, error) {
	s := &schema{reg: reg, valueSets: map[string]*valueSetDef{}, resourceIdx: map[string]int{}, resourceNum: map[string]int{}}
	b := &schemaBuilder{s: s, index: map[string]int{}}
	s.resourceTypes = reg.ResourceTypes()
	for i, name := range s.resourceTypes {
		s.resourceNum[name] = i
		b.typeIndex(name)
	}
	for _, name := range []string{"Element", "Reference", "Identifier", "Coding", "CodeableConcept", "HumanName"} {
		b.typeIndex(name)
	}
	for len(b.queue) > 0 && b.err == nil {
		name := b.queue[0]
		b.queue = b.queue[1:]
		b.build(name)
	}
	if b.err != nil {
		return nil, b.err
	}
	for _, name := range s.resourceTypes {
		s.resourceIdx[name] = b.index[name]
	}
	s.element, s.reference, s.identifier = b.index["Element"], b.index["Reference"], b.index["Identifier"]
	s.coding, s.codeableConcept, s.humanName = b.index["Coding"], b.index["CodeableConcept"], b.index["HumanName"]
	if profile == ProfileSeed {
		s.applySeed()
	}
	inv, err := coreInvariants()
	if err != nil {
		return nil, err
	}
	s.inv = inv
	return s, nil
}

// typeIndex returns the index of a type or backbone path, reserving it (and queueing
// its build) on first use.
func (b *schemaBuilder) typeIndex(path string) int {
	if i, ok := b.index[path]; ok {
		return i
	}
	i := len(b.s.types)
	b.s.types = append(b.s.types, typeDef{name: path})
	b.index[path] = i
	b.queue = append(b.queue, path)
	return i
}

func (b *schemaBuilder) fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("transform: schema: "+format, args...)
	}
}

// build fills the typeDef of a type name, a backbone path ("Observation.component") or a
// datatype under a core profile ("Quantity|http://…/SimpleQuantity").
func (b *schemaBuilder) build(path string) {
	if base, url, ok := strings.Cut(path, "|"); ok {
		b.buildProfiled(path, base, url)
		return
	}
	b.s.types[b.index[path]] = b.def(path)
}

// def returns the typeDef of a type name or backbone path.
func (b *schemaBuilder) def(path string) typeDef {
	typeName, _, _ := strings.Cut(path, ".")
	rt := b.s.reg.Type(typeName)
	if rt == nil {
		b.fail("no definition of type %s", typeName)
		return typeDef{name: path}
	}
	td := typeDef{name: path, resource: path == typeName && rt.Kind == registry.Resource}
	prefix := path + "."
	for i := range rt.Elements {
		e := &rt.Elements[i]
		if !strings.HasPrefix(e.Path, prefix) || strings.IndexByte(e.Path[len(prefix):], '.') >= 0 || e.Max == 0 {
			continue
		}
		name := e.Path[len(prefix):]
		ge := elemDef{name: name, min: e.Min, many: e.Max != 1, choice: e.IsChoice()}
		if e.Binding.Strength == "required" && e.Binding.ValueSet != "" {
			ge.valueSet = b.valueSet(e.Binding.ValueSet)
		}
		idx := len(td.elems)
		base := strings.TrimSuffix(name, "[x]")
		if e.ContentReference != "" {
			td.fields = append(td.fields, fieldDef{json: base, elem: idx, kind: kindObject, typ: b.typeIndex(e.ContentReference),
				node: nodeInfo{name: base, typ: "BackboneElement", path: e.ContentReference}})
			td.elems = append(td.elems, ge)
			continue
		}
		for _, tr := range e.Types {
			code := tr.Code
			jsonName := e.JSONName(code)
			node := nodeInfo{name: base, typ: code, path: e.Path, choice: ge.choice}
			if code == "Reference" {
				ge.targets = tr.Targets
				if len(tr.Targets) > 0 && tr.Targets[0] != "Resource" {
					ge.refDefault = tr.Targets[0]
				}
				if d, ok := refDefaultOverrides[e.Path]; ok {
					ge.refDefault = d
				}
			}
			switch k, prim := primitiveKinds[code]; {
			case prim:
				td.fields = append(td.fields, fieldDef{json: jsonName, elem: idx, kind: k, node: node})
				// No "_" companion for xhtml, ids and Extension.url (attributes in XML).
				if code != "xhtml" && name != "id" && !(path == "Extension" && name == "url") {
					td.fields = append(td.fields, fieldDef{json: "_" + jsonName, elem: idx, kind: kindObject, typ: b.typeIndex("Element"), primExt: true, node: node})
				}
			case code == "Resource":
				td.fields = append(td.fields, fieldDef{json: jsonName, elem: idx, kind: kindResource, node: node})
			case code == "BackboneElement" || code == "Element":
				td.fields = append(td.fields, fieldDef{json: jsonName, elem: idx, kind: kindObject, typ: b.typeIndex(e.Path), node: node})
			default:
				if b.s.reg.Type(code) == nil {
					b.fail("%s: unknown type %s", e.Path, code)
					return td
				}
				td.fields = append(td.fields, fieldDef{json: jsonName, elem: idx, kind: kindObject, typ: b.datatype(code, tr.Profiles), node: node})
			}
		}
		td.elems = append(td.elems, ge)
	}
	slices.SortFunc(td.fields, func(a, b fieldDef) int { return strings.Compare(a.json, b.json) })
	if len(td.elems) > maxElems || len(td.fields) > maxFields {
		b.fail("%s has %d elements and %d JSON names; the walker holds %d and %d", path, len(td.elems), len(td.fields), maxElems, maxFields)
	}
	return td
}

// datatype returns the type index of a datatype, or of its variant under a core profile
// that forbids some of its elements (SimpleQuantity: no comparator).
func (b *schemaBuilder) datatype(code string, profiles []string) int {
	for _, url := range profiles {
		if len(profileRemoves(b.s.reg, code, url)) > 0 {
			return b.typeIndex(code + "|" + url)
		}
	}
	return b.typeIndex(code)
}

// profileRemoves returns the names of the direct elements of type code that the core
// profile url sets to max 0.
func profileRemoves(reg *registry.Registry, code, url string) map[string]bool {
	p := reg.Profile(url)
	if p == nil || p.Type != code {
		return nil
	}
	var out map[string]bool
	for _, e := range p.Elements {
		name, ok := strings.CutPrefix(e.ID, code+".")
		if ok && e.Max == 0 && !strings.ContainsAny(name, ".:") {
			if out == nil {
				out = map[string]bool{}
			}
			out[strings.TrimSuffix(name, "[x]")] = true
		}
	}
	return out
}

// buildProfiled builds a datatype without the elements a profile forbids: their JSON
// names (and "_" companions) are unknown elements there.
func (b *schemaBuilder) buildProfiled(key, base, url string) {
	removes := profileRemoves(b.s.reg, base, url)
	td := b.def(base)
	td.fields = slices.DeleteFunc(td.fields, func(f fieldDef) bool {
		name := strings.TrimPrefix(f.json, "_")
		return removes[td.elems[f.elem].name] || removes[name]
	})
	b.s.types[b.index[key]] = td
}

func (b *schemaBuilder) valueSet(url string) *valueSetDef {
	if d, ok := b.s.valueSets[url]; ok {
		return d
	}
	d := newValueSetDef(url, b.s.reg.ValueSet(url))
	d.syntax = externalSyntax[url]
	b.s.valueSets[url] = d
	return d
}

// newValueSetDef is the validator's form of value set url, whose definition is src;
// without one (src nil), or when src does not list every code, it is external.
func newValueSetDef(url string, src *registry.ValueSet) *valueSetDef {
	d := &valueSetDef{url: url, external: src == nil || !src.Complete}
	if src != nil {
		for _, c := range src.Codes {
			d.codes = append(d.codes, c.Code)
			d.pairs = append(d.pairs, c.System+"|"+c.Code)
		}
	}
	slices.Sort(d.codes)
	d.codes = slices.Compact(d.codes)
	slices.Sort(d.pairs)
	return d
}

// applySeed derives the seed profile: Patient.name 1..*, and in each of those names
// family 1..1 and given 1..*. Other HumanNames (Patient.contact.name) are unchanged.
func (s *schema) applySeed() {
	name := cloneType(s.types[s.humanName])
	setMin(&name, "family", 1)
	setMin(&name, "given", 1)
	s.types = append(s.types, name)
	seedName := len(s.types) - 1

	p := cloneType(s.types[s.resourceIdx["Patient"]])
	setMin(&p, "name", 1)
	for i := range p.fields {
		if p.fields[i].json == "name" {
			p.fields[i].typ = seedName
		}
	}
	s.types = append(s.types, p)
	s.resourceIdx["Patient"] = len(s.types) - 1
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

// resourceTypeIndex returns the schema type of a concrete resource type name, or -1.
func (s *schema) resourceTypeIndex(name []byte) int {
	if i, ok := s.resourceIdx[string(name)]; ok {
		return i
	}
	return -1
}

// typeName returns the resource type name as a string without allocating (name must be
// a concrete resource type).
func (s *schema) typeName(name []byte) string {
	if i, ok := s.resourceNum[string(name)]; ok {
		return s.resourceTypes[i]
	}
	return string(name)
}

func (s *schema) isResourceType(name []byte) bool {
	_, ok := s.resourceIdx[string(name)]
	return ok
}

func (v *valueSetDef) contains(code []byte) bool {
	return sortedContains(v.codes, code)
}

// containsPair reports whether system|code is in the value set.
func (v *valueSetDef) containsPair(system, code []byte) bool {
	var buf [256]byte
	return sortedContains(v.pairs, append(append(append(buf[:0], system...), '|'), code...))
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
