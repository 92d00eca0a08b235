package fhirstore

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestSystemCompartmentEverything(t *testing.T) {
	e := searchWorld(t)
	all := []string{"Organization/org1", "Practitioner/dr1", "Patient/pa", "Patient/pb", "Encounter/en1",
		"Observation/o1", "Observation/o2", "Observation/o3", "Observation/o4", "Observation/o5"}
	for _, c := range []struct {
		query string
		want  []string
	}{
		// System search.
		{"?_type=Patient,Organization", []string{"Patient/pa", "Patient/pb", "Organization/org1"}},
		{"?_type=Patient,Practitioner&_id=pa,dr1,o1", []string{"Patient/pa", "Practitioner/dr1"}},
		{"?_id=o1,pb", []string{"Observation/o1", "Patient/pb"}},
		{"", all},
		{"?_type=Observation&status=preliminary", []string{"Observation/o5"}},
		{"?_type=Patient,Practitioner&_sort=_id", []string{"Practitioner/dr1", "Patient/pa", "Patient/pb"}},
		{"?_type=Patient,Organization,Practitioner&_sort=-_lastUpdated", []string{"Patient/pb", "Patient/pa", "Practitioner/dr1", "Organization/org1"}},
		{"_search?_type=Encounter", []string{"Encounter/en1"}},
		// Compartment search.
		{"Patient/pa/Observation", []string{"Observation/o1", "Observation/o2", "Observation/o3"}},
		{"Patient/pa/Observation?code=8867-4", []string{"Observation/o3"}},
		{"Patient/pb/Observation?_sort=-date", []string{"Observation/o5", "Observation/o4"}},
		{"Patient/pa/Encounter", []string{"Encounter/en1"}},
		{"Patient/pa/*", []string{"Patient/pa", "Encounter/en1", "Observation/o1", "Observation/o2", "Observation/o3"}},
		{"Patient/nobody/Observation", nil},
		{"Encounter/en1/Observation", []string{"Observation/o1"}},
		{"Practitioner/dr1/Observation", []string{"Observation/o1", "Observation/o5"}},
		// $everything: the Patient, its compartment, what those point at.
		{"Patient/pa/$everything", []string{"Patient/pa", "Encounter/en1", "Observation/o1", "Observation/o2", "Observation/o3", "Organization/org1", "Practitioner/dr1"}},
		{"Patient/pb/$everything?_type=Observation", []string{"Observation/o4", "Observation/o5"}},
		{"Patient/$everything", all},
	} {
		t.Run(c.query, func(t *testing.T) {
			b := searchOf(t, e, c.query)
			got, want := b.ids(), slices.Clone(c.want)
			if strings.Contains(c.query, "_sort") {
				if !slices.Equal(got, want) {
					t.Errorf("got  %v\nwant %v", got, want)
				}
				return
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) || b.Total == nil || *b.Total != len(want) {
				t.Errorf("total %v\ngot  %v\nwant %v", b.Total, got, want)
			}
		})
	}
	// A resource no Patient's compartment reaches is not in $everything.
	mustStatus(t, e.do("PUT", "Organization/lonely", []byte(`{"resourceType":"Organization","id":"lonely","name":"Elsewhere"}`)), http.StatusCreated, "lonely")
	if got := searchOf(t, e, "Patient/$everything").ids(); slices.Contains(got, "Organization/lonely") || len(got) != len(all) {
		t.Errorf("Patient/$everything: %v", got)
	}
	// $everything pages.
	b := searchOf(t, e, "Patient/pa/$everything?_count=4")
	first := b.ids()
	if len(first) != 4 || b.link("next") == "" {
		t.Fatalf("page 1: %v, next %q", first, b.link("next"))
	}
	b = searchOf(t, e, b.link("next"))
	if len(b.ids()) != 3 || b.link("next") != "" || b.link("previous") == "" {
		t.Fatalf("page 2: %v", b.ids())
	}
	if b = searchOf(t, e, b.link("previous")); !slices.Equal(b.ids(), first) {
		t.Errorf("previous: %v, want %v", b.ids(), first)
	}

	for _, c := range []struct {
		query string
		want  int
	}{
		{"?gender=male", http.StatusBadRequest},             // not a parameter of every type
		{"?_type=Nope", http.StatusBadRequest},              // unknown type
		{"Patient/pa/Organization", http.StatusBadRequest},  // never in a Patient compartment
		{"Observation/o1/Patient", http.StatusNotFound},     // not a compartment
		{"Patient/nobody/$everything", http.StatusNotFound}, // no such Patient
		{"Observation/$everything", http.StatusNotFound},    // Patient only
		{"Patient/pa/$everything?start=2020", http.StatusBadRequest},
	} {
		r := e.do("GET", c.query, nil)
		mustStatus(t, r, c.want, c.query)
		if r.json(t)["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %s", c.query, r.body)
		}
	}
}
