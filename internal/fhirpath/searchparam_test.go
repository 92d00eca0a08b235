package fhirpath_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/fhirpath"
	"github.com/fhirload/fhirload/internal/fhirpath/internal/corpus"
)

// TestSearchParametersOnSyntheaData evaluates every search parameter of every resource type
// of the Synthea sample on its lines: none fails, and the ones a store indexes for
// Observations find what they should.
func TestSearchParametersOnSyntheaData(t *testing.T) {
	sps, err := corpus.SearchParams(".")
	if err != nil {
		t.Fatal(err)
	}
	compiled := map[string]*fhirpath.Expr{}
	for _, sp := range sps {
		if sp.Expression != "" {
			compiled[sp.ID] = fhirpath.MustCompile(sp.Expression)
		}
	}
	// Synthea references are urn:uuid:<id>; a loader knows each id's type from the Bundle.
	patients := map[string]bool{}
	for _, l := range syntheaLines(t, "Patient") {
		tr := build(t, string(l))
		patients["urn:uuid:"+string(tr.Raw(tr.Child(0, "id", 0)))] = true
	}
	ev := fhirpath.Evaluator{Env: fhirpath.Env{ResolveURN: func(ref []byte) (string, bool) {
		if patients[string(ref)] {
			return "Patient", true
		}
		return "Encounter", true
	}}}
	types := []string{"Observation", "Claim", "Encounter", "ExplanationOfBenefit", "MedicationRequest", "Procedure", "Immunization",
		"DiagnosticReport", "Condition", "Organization", "Practitioner", "CareTeam", "CarePlan", "Patient", "AllergyIntolerance", "ImagingStudy", "Device"}
	evaluated := 0
	for _, typ := range types {
		for _, line := range syntheaLines(t, typ) {
			tr := build(t, string(line))
			for _, sp := range sps {
				x := compiled[sp.ID]
				if x == nil || !slices.Contains(sp.Base, typ) {
					continue
				}
				evaluated++
				if _, err := ev.Eval(x, tr, 0); err != nil && !errors.Is(err, fhirpath.ErrNeedsResolution) {
					t.Errorf("%s on %s: %v", sp.ID, typ, err)
				}
			}
		}
	}
	t.Logf("%d search parameter evaluations", evaluated)

	// What a store indexes for a Synthea vital sign.
	tr := build(t, string(vitalSign(t)))
	for _, c := range []struct{ id, want string }{
		{"clinical-patient", "Reference"},
		{"Observation-subject", "Reference"},
		{"clinical-code", "CodeableConcept"},
		{"clinical-date", "dateTime"},
		{"Observation-value-quantity", "Quantity"},
		{"Observation-category", "CodeableConcept"},
		{"clinical-encounter", "Reference"},
		{"Observation-performer", ""},
	} {
		got, err := ev.Eval(compiled[c.id], tr, 0)
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		var types []string
		for _, v := range got {
			types = append(types, tr.Node(v.Node()).Type)
		}
		if strings.Join(types, ",") != c.want {
			t.Errorf("%s found %v, want %s", c.id, types, c.want)
		}
	}
}
