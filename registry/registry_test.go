package registry_test

import (
	"bytes"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/fhirload/fhirload/registry"
	"github.com/fhirload/fhirload/registry/internal/spec"
)

// TestGeneratedIsCurrent: the committed r4.bin is what `go generate ./registry` makes
// from the vendored package (so a change of data without regenerating fails here).
func TestGeneratedIsCurrent(t *testing.T) {
	want, err := spec.Binary("spec/hl7.fhir.r4.core-4.0.1.trimmed.ndjson.gz")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("r4.bin")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("r4.bin is not current: run go generate ./registry")
	}
	again, err := registry.R4().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, want) {
		t.Fatal("decoding and encoding the embedded registry does not give the same bytes")
	}
}

func TestCounts(t *testing.T) {
	r := registry.R4()
	kinds := map[registry.Kind]int{}
	for _, ty := range r.Types() {
		kinds[ty.Kind]++
	}
	got := map[string]int{
		"resource types": len(r.ResourceTypes()),
		"resources":      kinds[registry.Resource], // plus the abstract Resource and DomainResource
		"primitives":     kinds[registry.Primitive],
		"complex types":  kinds[registry.Complex],
		"value sets":     len(r.ValueSets()),
		"search params":  len(r.AllSearchParams()),
		"compartments":   len(r.Compartments()),
		"extensions":     len(r.Extensions()),
		"profiles":       len(r.Profiles()),
	}
	want := map[string]int{
		"resource types": 146, "resources": 148, "primitives": 20, "complex types": 41, "value sets": 256,
		"search params": 1387, "compartments": 5, "extensions": 396, "profiles": 48,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if r.Version() != "4.0.1" {
		t.Fatalf("version %q", r.Version())
	}
}

func TestTypes(t *testing.T) {
	r := registry.R4()
	find := func(typ, path string) *registry.Element {
		t.Helper()
		ty := r.Type(typ)
		if ty == nil {
			t.Fatalf("no type %s", typ)
		}
		for i := range ty.Elements {
			if ty.Elements[i].Path == path {
				return &ty.Elements[i]
			}
		}
		t.Fatalf("no element %s", path)
		return nil
	}
	codes := func(e *registry.Element) []string {
		var out []string
		for _, tr := range e.Types {
			out = append(out, tr.Code)
		}
		return out
	}
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"value[x] types", codes(find("Observation", "Observation.value[x]")), []string{"Quantity", "CodeableConcept", "string", "boolean", "integer", "Range", "Ratio", "SampledData", "time", "dateTime", "Period"}},
		{"value[x] JSON name", find("Observation", "Observation.value[x]").JSONName("Quantity"), "valueQuantity"},
		{"plain JSON name", find("Patient", "Patient.name").JSONName("HumanName"), "name"},
		{"choice", find("Observation", "Observation.value[x]").IsChoice(), true},
		{"status required", find("Observation", "Observation.status").Min, 1},
		{"status binding", find("Observation", "Observation.status").Binding, registry.Binding{Strength: "required", ValueSet: "http://hl7.org/fhir/ValueSet/observation-status"}},
		{"targets", find("Claim", "Claim.provider").Types[0].Targets, []string{"Practitioner", "PractitionerRole", "Organization"}},
		{"any target", find("Provenance", "Provenance.target").Types[0].Targets, []string{"Resource"}},
		{"many", find("Patient", "Patient.name").Max, registry.Unbounded},
		{"content reference", find("Questionnaire", "Questionnaire.item.item").ContentReference, "Questionnaire.item"},
		{"resource id is id", codes(find("Encounter", "Encounter.id")), []string{"id"}},
		{"element id is string", codes(find("Encounter", "Encounter.participant.id")), []string{"string"}},
		{"extension url is uri", codes(find("Extension", "Extension.url")), []string{"uri"}},
		{"primitive value", codes(find("dateTime", "dateTime.value")), []string{"System.DateTime"}},
		{"regex", r.Type("id").Regex, `[A-Za-z0-9\-\.]{1,64}`},
		{"invariant", find("Observation", "Observation").Constraints[len(find("Observation", "Observation").Constraints)-1].Key, "obs-7"},
		{"ele-1", find("Patient", "Patient.name").Constraints[0].Expression, "hasValue() or (children().count() > id.count())"},
		{"modifier", find("Patient", "Patient.active").Modifier, true},
		{"summary", find("Patient", "Patient.birthDate").Summary, true},
		{"base", r.Type("Age").Base, "Quantity"},
		{"abstract", r.Type("DomainResource").Abstract, true},
		{"kind", r.Type("HumanName").Kind, registry.Complex},
		{"is resource", r.IsResourceType("DocumentReference"), true},
		{"abstract is not a resource type", r.IsResourceType("DomainResource"), false},
		{"datatype is not a resource type", r.IsResourceType("HumanName"), false},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
	if !slices.IsSorted(r.ResourceTypes()) {
		t.Error("resource types are not sorted")
	}
}

func TestValueSets(t *testing.T) {
	r := registry.R4()
	g := r.ValueSet("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1")
	if g == nil || !g.Complete || len(g.Codes) != 4 || !g.HasCode("male") || g.HasCode("M") ||
		!g.Contains("http://hl7.org/fhir/administrative-gender", "female") || g.Contains("http://x", "female") {
		t.Fatalf("administrative-gender: %+v", g)
	}
	cc := r.ValueSet("http://hl7.org/fhir/ValueSet/condition-clinical")
	if cc == nil || !cc.Contains("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved") {
		t.Fatalf("condition-clinical: %+v", cc)
	}
	incomplete := map[string]bool{}
	for _, v := range r.ValueSets() {
		if !v.Complete {
			incomplete[v.URL] = v.Incomplete != ""
		}
	}
	want := map[string]bool{
		"http://hl7.org/fhir/ValueSet/currencies": true, "http://hl7.org/fhir/ValueSet/mimetypes": true,
		"http://hl7.org/fhir/ValueSet/timezones": true, "http://hl7.org/fhir/ValueSet/ucum-units": true,
		"http://loinc.org/vs/LL379-9": true,
	}
	if !reflect.DeepEqual(incomplete, want) {
		t.Fatalf("incomplete value sets %v, want %v", incomplete, want)
	}
	// is-a filters are expanded from the code system's hierarchy.
	if v := r.ValueSet("http://hl7.org/fhir/ValueSet/all-types"); v == nil || !v.Complete || !v.HasCode("Patient") || !v.HasCode("HumanName") {
		t.Fatalf("all-types: %+v", v)
	}
}

func TestSearchParams(t *testing.T) {
	r := registry.R4()
	for _, rt := range r.ResourceTypes() {
		for _, code := range []string{"_id", "_lastUpdated", "_tag", "_profile", "_security"} {
			if r.SearchParam(rt, code) == nil {
				t.Errorf("%s has no %s", rt, code)
			}
		}
	}
	p := r.SearchParam("CarePlan", "patient")
	if p == nil || p.URL != "http://hl7.org/fhir/SearchParameter/clinical-patient" || p.Type != "reference" {
		t.Fatalf("CarePlan patient: %+v", p)
	}
	tests := []struct{ typ, code, want string }{
		{"CarePlan", "patient", "CarePlan.subject.where(resolve() is Patient)"},
		{"Immunization", "patient", "Immunization.patient"},
		{"Observation", "value-quantity", "(Observation.value as Quantity) | (Observation.value as SampledData)"},
		{"Patient", "_id", "Resource.id"},
		{"Encounter", "date", "Encounter.period"},
	}
	for _, tt := range tests {
		if got := r.SearchParam(tt.typ, tt.code).ExpressionFor(tt.typ); got != tt.want {
			t.Errorf("%s?%s: %q, want %q", tt.typ, tt.code, got, tt.want)
		}
	}
	if got := p.ExpressionFor("Patient"); got != "" {
		t.Errorf("clinical-patient for Patient: %q", got)
	}
	comp := r.SearchParam("Observation", "code-value-quantity")
	if comp.Type != "composite" || len(comp.Components) != 2 || comp.MultipleOr != registry.False {
		t.Fatalf("code-value-quantity: %+v", comp)
	}
	if got := r.SearchParam("Observation", "subject").Targets; !slices.Contains(got, "Patient") {
		t.Fatalf("Observation subject targets %v", got)
	}
}

func TestCompartments(t *testing.T) {
	r := registry.R4()
	var codes []string
	for _, c := range r.Compartments() {
		codes = append(codes, c.Code)
	}
	if want := []string{"Device", "Encounter", "Patient", "Practitioner", "RelatedPerson"}; !slices.Equal(codes, want) {
		t.Fatalf("compartments %v", codes)
	}
	p := r.Compartment("Patient")
	if got := p.Params("Observation"); !slices.Equal(got, []string{"subject", "performer"}) {
		t.Errorf("Patient/Observation %v", got)
	}
	if got := p.Params("Patient"); !slices.Equal(got, []string{"link"}) {
		t.Errorf("Patient/Patient %v", got)
	}
	if got := p.Params("ActivityDefinition"); got != nil {
		t.Errorf("Patient/ActivityDefinition %v", got)
	}
}

func TestExtensionsAndProfiles(t *testing.T) {
	r := registry.R4()
	x := r.Extension("http://hl7.org/fhir/StructureDefinition/patient-nationality")
	if x == nil || x.Contexts[0] != (registry.Context{Type: "element", Expression: "Patient"}) || x.Max != registry.Unbounded ||
		len(x.ValueTypes) != 0 || len(x.Children) != 2 || x.Children[0].URL != "code" || x.Children[0].ValueTypes[0] != "CodeableConcept" {
		t.Fatalf("patient-nationality: %+v", x)
	}
	x = r.Extension("http://hl7.org/fhir/StructureDefinition/patient-birthPlace")
	if x == nil || !slices.Equal(x.ValueTypes, []string{"Address"}) || x.Max != 1 {
		t.Fatalf("patient-birthPlace: %+v", x)
	}
	p := r.Profile("http://hl7.org/fhir/StructureDefinition/heartrate")
	if p == nil || p.Type != "Observation" || p.Base != "http://hl7.org/fhir/StructureDefinition/vitalsigns" {
		t.Fatalf("heartrate: %+v", p)
	}
	var code *registry.Element
	for i := range p.Elements {
		if p.Elements[i].ID == "Observation.code.coding:HeartRateCode.code" {
			code = &p.Elements[i]
		}
	}
	if code == nil || code.Fixed == nil || *code.Fixed != (registry.Value{Type: "code", JSON: `"8867-4"`}) || code.Min != 1 {
		t.Fatalf("heartrate code: %+v", code)
	}
	vs := r.Profile("http://hl7.org/fhir/StructureDefinition/vitalsigns")
	keys := map[string]bool{}
	for _, e := range vs.Elements {
		for _, c := range e.Constraints {
			keys[c.Key] = true
		}
	}
	if !keys["vs-2"] || !keys["vs-3"] {
		t.Fatalf("vitalsigns invariants %v", keys)
	}
	if r.Profile("http://hl7.org/fhir/StructureDefinition/SimpleQuantity") == nil {
		t.Fatal("no SimpleQuantity")
	}
}

// TestRoundTrip: a registry built from contents survives MarshalBinary and Decode.
func TestRoundTrip(t *testing.T) {
	c := registry.Contents{
		Version: "x",
		Types: []*registry.Type{
			{Name: "Thing", Kind: registry.Resource, Base: "DomainResource", Elements: []registry.Element{
				{ID: "Thing", Path: "Thing", Max: registry.Unbounded, Constraints: []registry.Constraint{{Key: "a-1", Severity: "error", Human: "h", Expression: "e"}}},
				{ID: "Thing.code", Path: "Thing.code", Min: 1, Max: 1, Types: []registry.TypeRef{{Code: "code"}},
					Binding: registry.Binding{Strength: "required", ValueSet: "http://vs"}, Summary: true},
				{ID: "Thing.ref", Path: "Thing.ref", Max: 1, Types: []registry.TypeRef{{Code: "Reference", Targets: []string{"Thing"}}},
					Constraints: []registry.Constraint{{Key: "b-1"}, {Key: "a-1", Severity: "error", Human: "h", Expression: "e"}}},
			}},
		},
		ValueSets:    []*registry.ValueSet{{URL: "http://vs", Complete: true, Codes: []registry.Code{{System: "s", Code: "a"}}}},
		SearchParams: []*registry.SearchParam{{URL: "u", Code: "code", Base: []string{"Thing"}, Type: "token", Expression: "Thing.code", MultipleOr: registry.True}},
		Compartments: []*registry.Compartment{{Code: "Thing", Resources: []registry.CompartmentResource{{Type: "Thing", Params: []string{"{def}"}}}}},
		Extensions: []*registry.Extension{{URL: "http://x", Max: registry.Unbounded, ValueTypes: []string{"string"},
			Elements: []registry.Element{{ID: "Extension", Path: "Extension", Max: registry.Unbounded}}}},
		Profiles: []*registry.Profile{{URL: "http://p", Type: "Thing", Elements: []registry.Element{
			{ID: "Thing.code", Path: "Thing.code", Min: 1, Max: 1, Fixed: &registry.Value{Type: "code", JSON: `"a"`},
				Slicing: &registry.Slicing{Discriminators: []registry.Discriminator{{Type: "value", Path: "code"}}, Rules: "open"}}}}},
	}
	r, err := registry.New(c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	back, err := registry.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Contents(), r.Contents()) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back.Contents(), r.Contents())
	}
	if back.SearchParam("Thing", "code") == nil || back.Compartment("Thing") == nil || back.Extension("http://x") == nil || back.Profile("http://p") == nil {
		t.Fatal("lookups fail after the round trip")
	}
	// Every truncation and a flipped byte are errors, never a panic.
	for n := 0; n < len(b); n++ {
		if _, err := registry.Decode(b[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	for i := len("FHIRREG3"); i < len(b); i++ {
		bad := bytes.Clone(b)
		bad[i] ^= 0xff
		registry.Decode(bad) // must not panic
	}
}

func TestNewRejectsDuplicates(t *testing.T) {
	ty := func() *registry.Type {
		return &registry.Type{Name: "A", Kind: registry.Complex, Elements: []registry.Element{{ID: "A", Path: "A"}}}
	}
	if _, err := registry.New(registry.Contents{Types: []*registry.Type{ty(), ty()}}); err == nil {
		t.Fatal("duplicate type accepted")
	}
	bad := ty()
	bad.Elements = append(bad.Elements, registry.Element{ID: "B.x", Path: "B.x"})
	if _, err := registry.New(registry.Contents{Types: []*registry.Type{bad}}); err == nil {
		t.Fatal("element outside its type accepted")
	}
}

// BenchmarkDecode measures decoding the whole embedded registry (every section).
func BenchmarkDecode(b *testing.B) {
	bin, err := os.ReadFile("r4.bin")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(bin)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := registry.Decode(bin); err != nil {
			b.Fatal(err)
		}
	}
}
