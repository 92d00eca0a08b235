package transform

import (
	"slices"
	"strings"
	"testing"
)

const (
	extBirthPlace = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
	extBirthTime  = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
	extGeo        = "http://hl7.org/fhir/StructureDefinition/geolocation"
	extOwnPrefix  = "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix"
	extDAR        = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
	extDoNot      = "http://hl7.org/fhir/StructureDefinition/request-doNotPerform"
)

// TestCoreExtensions: a core extension is checked for its value type, cardinality,
// nested extensions, modifier flag and context; each rejection names the extension.
func TestCoreExtensions(t *testing.T) {
	birthPlace := `{"url":"` + extBirthPlace + `","valueAddress":{"city":"Secret1"}}`
	geo := func(nested string) string {
		return `{"resourceType":"Patient","address":[{"extension":[{"url":"` + extGeo + `"` + nested + `}],"city":"Secret1"}]}`
	}
	checkRules(t, Options{Profile: ProfileBase}, []ruleCase{
		{"valid simple extension", `{"resourceType":"Patient","extension":[` + birthPlace + `]}`, "", ""},
		{"valid on a primitive", `{"resourceType":"Patient","birthDate":"1970-01-01","_birthDate":{"extension":[{"url":"` + extBirthTime + `","valueDateTime":"1970-01-01T10:00:00Z"}]}}`, "", ""},
		{"valid on a datatype's primitive", `{"resourceType":"Patient","name":[{"family":"Secret1","_family":{"extension":[{"url":"` + extOwnPrefix + `","valueString":"Secret2"}]}}]}`, "", ""},
		{"valid context Element, anywhere", `{"resourceType":"Patient","gender":"unknown","_gender":{"extension":[{"url":"` + extDAR + `","valueCode":"asked-declined"}]}}`, "", ""},
		{"valid complex extension", geo(`,"extension":[{"url":"latitude","valueDecimal":1.5},{"url":"longitude","valueDecimal":-2.5}]`), "", ""},
		{"valid modifier extension", `{"resourceType":"NutritionOrder","status":"active","intent":"order","patient":{"reference":"Patient/p1"},"dateTime":"2020-01-01","modifierExtension":[{"url":"` + extDoNot + `","valueBoolean":true}]}`, "", ""},

		{"wrong value type", `{"resourceType":"Patient","extension":[{"url":"` + extBirthPlace + `","valueString":"Secret1"}]}`, "ext:" + extBirthPlace, "Patient.extension.value.ofType(string)"},
		{"wrong context: resource", obsHead + `,"extension":[` + birthPlace + `]}`, "ext:" + extBirthPlace, "Observation.extension"},
		{"wrong context: element", `{"resourceType":"Patient","gender":"male","_gender":{"extension":[{"url":"` + extBirthTime + `","valueDateTime":"1970-01-01T10:00:00Z"}]}}`, "ext:" + extBirthTime, "Patient.gender.extension"},
		{"wrong context: datatype", `{"resourceType":"Patient","name":[{"given":["Secret1"],"_given":[{"extension":[{"url":"` + extOwnPrefix + `","valueString":"Secret2"}]}]}]}`, "ext:" + extOwnPrefix, "Patient.name.given.extension"},
		{"more than max", `{"resourceType":"Patient","extension":[` + birthPlace + `,` + birthPlace + `]}`, "ext:" + extBirthPlace, "Patient.extension[0]"},
		{"no value", `{"resourceType":"Patient","extension":[{"url":"` + extBirthPlace + `","extension":[{"url":"city","valueString":"Secret1"}]}]}`, "ext:" + extBirthPlace, "Patient.extension"},
		{"complex with a value", geo(`,"valueString":"Secret2"`), "ext:" + extGeo, "Patient.address.extension"},
		{"complex: required nested missing", geo(`,"extension":[{"url":"latitude","valueDecimal":1.5}]`), "ext:" + extGeo, "Patient.address.extension"},
		{"complex: nested of the wrong type", geo(`,"extension":[{"url":"latitude","valueString":"Secret2"},{"url":"longitude","valueDecimal":-2.5}]`), "ext:" + extGeo, "Patient.address.extension.extension[0].value.ofType(string)"},
		{"complex: nested twice", geo(`,"extension":[{"url":"latitude","valueDecimal":1.5},{"url":"latitude","valueDecimal":1.5},{"url":"longitude","valueDecimal":-2.5}]`), "ext:" + extGeo, "Patient.address.extension.extension[1]"},
		{"modifier extension as extension", `{"resourceType":"NutritionOrder","status":"active","intent":"order","patient":{"reference":"Patient/p1"},"dateTime":"2020-01-01","extension":[{"url":"` + extDoNot + `","valueBoolean":true}]}`, "ext:" + extDoNot, "NutritionOrder.extension"},
		{"extension as modifier extension", `{"resourceType":"Patient","modifierExtension":[` + birthPlace + `]}`, "ext:" + extBirthPlace, "Patient.modifierExtension"},
		{"in a contained resource", obsHead + `,"contained":[{"resourceType":"Specimen","id":"s1","extension":[` + birthPlace + `]}],"specimen":{"reference":"#s1"}}`, "ext:" + extBirthPlace, "Observation.contained.extension"},
	}, "Secret1", "Secret2")
}

// TestUnknownExtensions: lenient mode accepts and lists unknown extension URLs, once
// per line, from every resource of the line; strict mode rejects the line naming it.
func TestUnknownExtensions(t *testing.T) {
	const u1, u2 = "http://example.org/fhir/ext-one", "http://example.org/fhir/ext-two"
	line := `{"resourceType":"Patient","extension":[{"url":"` + u1 + `","valueString":"Secret1"},{"url":"` + u1 + `","valueString":"Secret2"},` +
		`{"url":"` + extBirthPlace + `","valueAddress":{"city":"Secret1"}},{"url":"` + u2 + `","extension":[{"url":"inner","valueString":"Secret1"}]}],` +
		`"name":[{"family":"Secret1","given":["Secret2"]}],"contained":[{"resourceType":"Organization","id":"o","name":"Secret1","extension":[{"url":"` + u2 + `","valueCode":"x"}]}],"managingOrganization":{"reference":"#o"}}`
	tr := mustNew(t, Options{})
	st := tr.NewStream("x")
	for round := 0; round < 2; round++ { // the second line reuses interned strings
		res, _, err := st.Next([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.UnknownExtensions, []string{u1, u2}) {
			t.Fatalf("UnknownExtensions = %q", res.UnknownExtensions)
		}
	}
	res, _, err := st.Next([]byte(patHead + `,"extension":[{"url":"` + extBirthPlace + `","valueAddress":{"city":"Secret1"}}]}`))
	if err != nil || res.UnknownExtensions != nil {
		t.Fatalf("known extensions only: %q, %v", res.UnknownExtensions, err)
	}
	long := "http://example.org/" + strings.Repeat("a", 300)
	res, _, err = st.Next([]byte(patHead + `,"extension":[{"url":"` + long + `","valueString":"x"}]}`))
	if err != nil || !slices.Equal(res.UnknownExtensions, []string{"(unprintable url)"}) {
		t.Fatalf("unprintable: %q, %v", res.UnknownExtensions, err)
	}

	checkRules(t, Options{Extensions: ExtensionsStrict}, []ruleCase{
		{"strict: known", patHead + `,"extension":[{"url":"` + extBirthPlace + `","valueAddress":{"city":"Secret1"}}]}`, "", ""},
		{"strict: unknown", patHead + `,"extension":[{"url":"` + extBirthPlace + `","valueAddress":{"city":"Secret1"}},{"url":"` + u1 + `","valueString":"Secret2"}]}`, "ext:" + u1, "Patient.extension[1]"},
		{"strict: unknown on a primitive", patHead + `,"_gender":{"extension":[{"url":"` + u2 + `","valueString":"Secret2"}]}}`, "ext:" + u2, "Patient.gender.extension"},
		{"strict: unprintable", patHead + `,"extension":[{"url":"http://x/Secret1` + strings.Repeat("a", 300) + `","valueString":"x"}]}`, "ext:(unprintable url)", "Patient.extension"},
	}, "Secret1", "Secret2")

	if _, err := New(Options{Extensions: "loose"}); err == nil {
		t.Error("extensions: loose accepted")
	}
}
