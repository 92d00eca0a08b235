// Package registry is the FHIR R4 core specification as data: every resource type and
// datatype with its elements, the value sets of its required bindings, its search
// parameters, the compartments, the core extension definitions and the core profiles.
// It is generated from the HL7 package hl7.fhir.r4.core 4.0.1 (see spec/SOURCES.md and
// `go generate ./registry`) and drives transform's validator, reference handling and
// benchmark data, and fhirstore's search and CapabilityStatement.
//
// R4 returns the registry. Everything reachable from it is shared and read-only: the
// slices and structs it hands out must not be modified. It is safe for concurrent use.
//
// Adding or removing a type, a search parameter or a value set is a change of the
// vendored package data, not of code: the generator takes every resource type,
// datatype, SearchParameter, CompartmentDefinition, extension and profile it finds.
//
// # Normalisations
//
// The registry states the package as published, with these documented exceptions:
//   - Element types given as FHIRPath system types (http://hl7.org/fhirpath/System.String)
//     carry the FHIR type of their structuredefinition-fhir-type extension ("string",
//     "uri"); a resource's root id element has type "id" (the 4.0.1 snapshots say
//     "string", the specification's resource definitions say id). The value element of a
//     primitive type keeps its system type as "System.String", "System.Boolean", ….
//   - Reference and canonical targets are resource type names ("Patient"; "Resource"
//     for any) when they are core StructureDefinitions, else the canonical URL as given.
//   - Value set and profile URLs lose their "|4.0.1" version suffix.
//   - Example SearchParameters and CompartmentDefinitions (id "example…") and the ten
//     SearchParameters without a base are left out.
package registry

import (
	"slices"
	"strings"
)

// Kind is the kind of a Type.
type Kind uint8

// Kinds of types.
const (
	Primitive Kind = iota + 1 // boolean, string, dateTime, … (a JSON primitive plus an optional "_name" object)
	Complex                   // datatypes: HumanName, Quantity, Reference, …; also Element and BackboneElement
	Resource                  // resources, including the abstract Resource and DomainResource
)

func (k Kind) String() string {
	switch k {
	case Primitive:
		return "primitive-type"
	case Complex:
		return "complex-type"
	case Resource:
		return "resource"
	}
	return "unknown"
}

// Unbounded is Element.Max for a maximum cardinality of "*".
const Unbounded = -1

// Type is a resource type or a datatype, as its StructureDefinition's snapshot defines it.
type Type struct {
	Name     string // "Observation", "HumanName", "dateTime"
	URL      string // canonical URL of the StructureDefinition
	Kind     Kind
	Abstract bool   // Resource, DomainResource, Element, BackboneElement, Quantity's parent types
	Base     string // the type it specialises: "DomainResource", "Element", "Quantity" (for Age); "" for Base types
	Regex    string // primitives: the regex of the value (as published); "" otherwise
	// Elements in snapshot order (depth first). Elements[0] is the root (Path == Name);
	// backbone elements are followed by their children.
	Elements []Element
}

// Element is one element definition (ElementDefinition) of a type, an extension or a profile.
type Element struct {
	ID        string // element id; equal to Path except in profiles and extensions, where slices show: "Extension.extension:ombCategory"
	Path      string // "Observation.component.value[x]"
	SliceName string // profiles and extensions: the slice this element defines
	Min       int
	Max       int // Unbounded for "*"
	// Types the element may hold. A choice element (its Path ends in "[x]") has several;
	// its JSON names are the path's last part with the type's code, first letter upper
	// case: valueQuantity. Empty for the root and for ContentReference elements.
	Types []TypeRef
	// ContentReference is the path of the element whose definition this one reuses
	// ("Questionnaire.item" for Questionnaire.item.item); "" otherwise.
	ContentReference string
	Binding          Binding      // Strength "" when the element is not bound
	Constraints      []Constraint // invariants stated on this element (ele-1, obs-6, …)
	Modifier         bool         // isModifier
	Summary          bool         // isSummary
	MustSupport      bool         // profiles
	MaxLength        int          // 0 when not stated
	Fixed            *Value       // profiles and extensions: fixed[x]
	Pattern          *Value       // profiles and extensions: pattern[x]
	Slicing          *Slicing     // profiles and extensions: how the element is sliced
}

// Name returns the last part of the element's path: "value[x]", "family".
func (e *Element) Name() string {
	return e.Path[strings.LastIndexByte(e.Path, '.')+1:]
}

// IsChoice reports whether the element is a choice element (value[x]).
func (e *Element) IsChoice() bool { return strings.HasSuffix(e.Path, "[x]") }

// JSONName returns the JSON property name of the element when it holds type code:
// "valueQuantity" for value[x] and Quantity, "family" for a plain element.
func (e *Element) JSONName(code string) string {
	name := e.Name()
	if !e.IsChoice() {
		return name
	}
	return name[:len(name)-3] + strings.ToUpper(code[:1]) + code[1:]
}

// TypeRef is one type an element may hold.
type TypeRef struct {
	Code     string   // type name: "Reference", "string", "id", "BackboneElement"; "System.String" for primitive values
	Profiles []string // profiles the value must conform to (canonical URLs), e.g. SimpleQuantity
	Targets  []string // Reference and canonical: allowed target types ("Patient"; "Resource" for any)
}

// Binding is the value-set binding of a coded element.
type Binding struct {
	Strength string // "required", "extensible", "preferred", "example"; "" when unbound
	ValueSet string // canonical URL, without version; "" when none is given
}

// Constraint is an invariant: a FHIRPath expression that must hold where it is stated.
type Constraint struct {
	Key        string // "obs-6"
	Severity   string // "error" or "warning"
	Human      string // the human description
	Expression string // FHIRPath; "" for the few constraints published without one
	Source     string // URL of the StructureDefinition that defined it ("" when it is this one)
}

// Value is a fixed or pattern value of a profile element: its type and its JSON.
type Value struct {
	Type string // "code", "CodeableConcept", "uri", …
	JSON string // the JSON value as published, e.g. `"8867-4"` or `{"coding":[…]}` (keys sorted)
}

// Slicing says how a sliced element's repetitions are told apart.
type Slicing struct {
	Discriminators []Discriminator
	Rules          string // "closed", "open", "openAtEnd"
	Ordered        bool
}

// Discriminator is one discriminator of a slicing.
type Discriminator struct {
	Type string // "value", "pattern", "type", "profile", "exists"
	Path string // FHIRPath
}

// ValueSet is a value set of a required binding, expanded from the package's CodeSystems.
type ValueSet struct {
	URL  string
	Name string
	// Complete is true when every code could be expanded locally. Otherwise Incomplete
	// says why (an external code system such as UCUM, BCP 13 or ISO 4217, or a value set
	// the package does not contain) and Codes holds only what could be expanded: a
	// validator can check such codes for syntax only.
	Complete   bool
	Incomplete string
	Codes      []Code // sorted by code, then system
}

// Code is one code of a value set.
type Code struct {
	System string
	Code   string
}

// HasCode reports whether the value set contains code in any of its systems.
func (v *ValueSet) HasCode(code string) bool {
	i, ok := slices.BinarySearchFunc(v.Codes, code, func(c Code, code string) int { return strings.Compare(c.Code, code) })
	return ok && i < len(v.Codes)
}

// Contains reports whether the value set contains code in system.
func (v *ValueSet) Contains(system, code string) bool {
	i, _ := slices.BinarySearchFunc(v.Codes, code, func(c Code, code string) int { return strings.Compare(c.Code, code) })
	for ; i < len(v.Codes) && v.Codes[i].Code == code; i++ {
		if v.Codes[i].System == system {
			return true
		}
	}
	return false
}

// Tristate is a boolean that a definition may leave unstated.
type Tristate uint8

// Tristate values.
const (
	Unset Tristate = iota
	False
	True
)

// SearchParam is a SearchParameter of the package.
type SearchParam struct {
	URL         string
	Name        string
	Code        string   // the name used in a search URL: "patient", "_id"
	Base        []string // resource types it applies to ("Resource" and "DomainResource" for every type)
	Type        string   // number, date, string, token, reference, composite, quantity, uri, special
	Expression  string   // FHIRPath over all bases, as published; "" when none is published
	XPathUsage  string   // normal, phonetic, nearby, distance, other
	Targets     []string // reference parameters: the resource types it may point at
	Modifiers   []string
	Comparators []string
	MultipleOr  Tristate
	MultipleAnd Tristate
	Chain       []string
	Components  []SearchComponent // composite parameters
	Description string            // markdown, as published
}

// SearchComponent is one part of a composite search parameter.
type SearchComponent struct {
	Definition string // URL of the SearchParameter of this part
	Expression string // FHIRPath relative to the composite's expression
}

// ExpressionFor returns the part of the parameter's expression that applies to
// resourceType: the parameter "clinical-patient" has one expression for 32 types
// ("AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient) | …"); for
// CarePlan this returns "CarePlan.subject.where(resolve() is Patient)". Parts rooted at
// Resource or DomainResource apply to every type. It returns the whole expression when
// no part is rooted at a type name, and "" when none applies.
func (p *SearchParam) ExpressionFor(resourceType string) string {
	parts := SplitUnion(p.Expression)
	var keep []string
	rooted := false
	for _, part := range parts {
		root := exprRoot(part)
		if root == "" {
			continue
		}
		rooted = true
		if root == resourceType || root == "Resource" || root == "DomainResource" {
			keep = append(keep, part)
		}
	}
	if !rooted {
		return p.Expression
	}
	return strings.Join(keep, " | ")
}

// SplitUnion splits a FHIRPath expression at its top-level "|" operators
// (outside parentheses, brackets, braces and quoted strings), each part
// trimmed: "A.b | (A.c | A.d)" gives "A.b" and "(A.c | A.d)".
func SplitUnion(expr string) []string {
	var parts []string
	depth, start := 0, 0
	var quote byte
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case quote != 0:
			switch c {
			case '\\':
				i++
			case quote:
				quote = 0
			}
		case c == '\'' || c == '`':
			quote = c
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case c == '|' && depth == 0:
			parts = append(parts, strings.TrimSpace(expr[start:i]))
			start = i + 1
		}
	}
	return append(parts, strings.TrimSpace(expr[start:]))
}

// exprRoot returns the leading identifier of an expression part when it starts with an
// upper-case name followed by "." or the end ("Observation.code", "(Observation.value as
// Quantity)"); "" otherwise.
func exprRoot(part string) string {
	part = strings.TrimLeft(part, "( ")
	i := 0
	for i < len(part) && (part[i] >= 'a' && part[i] <= 'z' || part[i] >= 'A' && part[i] <= 'Z' || part[i] >= '0' && part[i] <= '9') {
		i++
	}
	if i == 0 || part[0] < 'A' || part[0] > 'Z' || i < len(part) && part[i] != '.' && part[i] != ' ' && part[i] != ')' {
		return ""
	}
	return part[:i]
}

// Compartment is a CompartmentDefinition: which resources belong to a compartment, and
// through which search parameters.
type Compartment struct {
	Code      string // the compartment's resource type: Patient, Encounter, RelatedPerson, Practitioner, Device
	URL       string
	Resources []CompartmentResource // sorted by type; every resource type the definition lists
}

// CompartmentResource is one resource type of a compartment. A type listed without
// parameters is never in the compartment.
type CompartmentResource struct {
	Type   string
	Params []string // search parameter codes; "{def}" means the compartment's resource itself
}

// Params returns the search parameters through which a resource of type resourceType
// is in the compartment; nil when it never is.
func (c *Compartment) Params(resourceType string) []string {
	i, ok := slices.BinarySearchFunc(c.Resources, resourceType, func(r CompartmentResource, t string) int { return strings.Compare(r.Type, t) })
	if !ok {
		return nil
	}
	return c.Resources[i].Params
}

// Extension is a core extension definition (a StructureDefinition constraining Extension).
type Extension struct {
	URL      string
	Name     string
	Contexts []Context // where it may be used
	// ContextInvariants are FHIRPath expressions that must hold where it is used.
	ContextInvariants []string
	Min, Max          int      // cardinality of the extension itself (Max Unbounded for "*")
	ValueTypes        []string // allowed value[x] types; empty for a complex extension
	Children          []ExtensionChild
	// Elements is the extension's snapshot (ids show the slices: Extension.extension:ombCategory).
	Elements []Element
}

// Context is one place an extension may be used.
type Context struct {
	Type       string // "element", "extension" or "fhirpath"
	Expression string // "Patient", "Observation.component", an extension URL, a FHIRPath expression
}

// ExtensionChild is one nested extension of a complex extension.
type ExtensionChild struct {
	URL        string // as fixed in the definition: usually a short name ("ombCategory"), or an absolute URL
	Min, Max   int
	ValueTypes []string
}

// Profile is a core profile: a StructureDefinition that constrains a resource or a
// datatype (vitalsigns, bp, bmi, heartrate, SimpleQuantity, …).
type Profile struct {
	URL      string
	Name     string
	Type     string // the constrained type: "Observation", "Quantity"
	Base     string // URL of the definition it constrains further (its own constraints come on top)
	Abstract bool
	// Elements are the elements its differential constrains, as its snapshot states
	// them: cardinality, types, fixed and pattern values, bindings, slicing, invariants.
	// Elements the differential does not name are as in Base.
	Elements []Element
}

// Version is the FHIR version of the registry: "4.0.1".
func (r *Registry) Version() string { return r.version }

// Types returns every type (resources, complex types, primitives), sorted by name.
func (r *Registry) Types() []*Type { return r.types }

// Type returns the type named name ("Observation", "HumanName", "code"), or nil.
func (r *Registry) Type(name string) *Type { return r.typeByName[name] }

// ResourceTypes returns the names of the concrete resource types (145 in R4), sorted.
func (r *Registry) ResourceTypes() []string { return r.resourceTypes }

// IsResourceType reports whether name is a concrete resource type.
func (r *Registry) IsResourceType(name string) bool {
	t := r.typeByName[name]
	return t != nil && t.Kind == Resource && !t.Abstract
}

// ValueSet returns the expanded value set of a required binding by canonical URL
// (without version), or nil when no required binding uses it.
func (r *Registry) ValueSet(url string) *ValueSet {
	if i := strings.IndexByte(url, '|'); i >= 0 {
		url = url[:i]
	}
	return r.valueSets[url]
}

// ValueSets returns every value set of a required binding, sorted by URL.
func (r *Registry) ValueSets() []*ValueSet { return r.valueSetList }

// AllSearchParams returns every search parameter, sorted by URL.
func (r *Registry) AllSearchParams() []*SearchParam {
	r.loadSearch()
	return r.params
}

// SearchParams returns the search parameters of a resource type, sorted by code: those
// whose base is the type, plus those of Resource (and of DomainResource, for types that
// specialise it). A parameter with several bases is returned for each of them; use
// ExpressionFor to get the part of its expression that applies.
func (r *Registry) SearchParams(resourceType string) []*SearchParam {
	r.loadSearch()
	return r.paramsByType[resourceType]
}

// SearchParam returns the parameter with this code for a resource type, or nil.
func (r *Registry) SearchParam(resourceType, code string) *SearchParam {
	r.loadSearch()
	ps := r.paramsByType[resourceType]
	i, ok := slices.BinarySearchFunc(ps, code, func(p *SearchParam, c string) int { return strings.Compare(p.Code, c) })
	if !ok {
		return nil
	}
	return ps[i]
}

// Compartments returns the compartment definitions, sorted by code.
func (r *Registry) Compartments() []*Compartment {
	r.loadSearch()
	return r.compartments
}

// Compartment returns the compartment of a resource type (Patient, Encounter,
// RelatedPerson, Practitioner, Device), or nil.
func (r *Registry) Compartment(code string) *Compartment {
	r.loadSearch()
	for _, c := range r.compartments {
		if c.Code == code {
			return c
		}
	}
	return nil
}

// Extensions returns the core extension definitions, sorted by URL.
func (r *Registry) Extensions() []*Extension {
	r.loadExtensions()
	return r.extensionList
}

// Extension returns the core extension definition with this URL, or nil.
func (r *Registry) Extension(url string) *Extension {
	r.loadExtensions()
	return r.extensions[url]
}

// Profiles returns the core profiles, sorted by URL.
func (r *Registry) Profiles() []*Profile {
	r.loadProfiles()
	return r.profileList
}

// Profile returns the core profile with this canonical URL (version suffix ignored), or nil.
func (r *Registry) Profile(url string) *Profile {
	r.loadProfiles()
	if i := strings.IndexByte(url, '|'); i >= 0 {
		url = url[:i]
	}
	return r.profiles[url]
}
