package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestServeSearchesSyntheaPopulation (issue 16, serve): after `fhirload
// run` loads the Synthea population (17 types, 38,970 lines; every
// reference a urn:uuid:) into a store, searches of the store by patient
// return what the files say, for several patients, for Encounter, Claim,
// Condition, Immunization, Observation, ExplanationOfBenefit and
// MedicationRequest; and the store holds each type's distinct ids.
func TestServeSearchesSyntheaPopulation(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 38,970 lines with the built binary")
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "shared", "fhir-all", "*.ndjson.gz"))
	if err != nil || len(files) != 17 {
		t.Fatalf("fhir-all: %d files, %v", len(files), err)
	}
	// What the files say: per type, the distinct ids and, per patient, the
	// resources whose patient element points at it.
	patientElement := map[string]string{
		"Encounter": "subject", "Claim": "patient", "Condition": "subject", "Immunization": "patient",
		"Observation": "subject", "ExplanationOfBenefit": "patient", "MedicationRequest": "subject",
	}
	ids := map[string]map[string]bool{}
	perPatient := map[string]map[string]map[string]bool{} // type → patient id → resource ids
	for _, f := range files {
		for _, l := range gunzipLines(t, f) {
			var r map[string]any
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			typ, id := r["resourceType"].(string), r["id"].(string)
			if ids[typ] == nil {
				ids[typ] = map[string]bool{}
			}
			ids[typ][id] = true
			el, ok := patientElement[typ]
			if !ok {
				continue
			}
			ref, _ := r[el].(map[string]any)["reference"].(string)
			pid, ok := strings.CutPrefix(ref, "urn:uuid:")
			if !ok {
				t.Fatalf("%s/%s.%s = %q: not a urn:uuid: reference", typ, id, el, ref)
			}
			if perPatient[typ] == nil {
				perPatient[typ] = map[string]map[string]bool{}
			}
			if perPatient[typ][pid] == nil {
				perPatient[typ][pid] = map[string]bool{}
			}
			perPatient[typ][pid][id] = true
		}
	}
	w := newWorkspace(t, "", "")
	args := []string{"run"}
	for _, f := range files {
		args = append(args, absPath(t, f))
	}
	if code, rep, log := w.runBin(t, args...); code != 0 || rep == nil || rep.Loaded != 38970 {
		t.Fatalf("exit %d, report %+v\n%s", code, rep, tail(log))
	}
	s := w.store(t)
	for typ, want := range ids {
		if got := s.count(typ); got != len(want) {
			t.Errorf("%s: the store holds %d, the files have %d distinct ids", typ, got, len(want))
		}
	}
	// Several patients: the one with the most encounters, the one with
	// the fewest, and every twentieth in id order.
	var patients []string
	for pid := range ids["Patient"] {
		patients = append(patients, pid)
	}
	slices.Sort(patients)
	most, fewest := patients[0], patients[0]
	for _, pid := range patients {
		if len(perPatient["Encounter"][pid]) > len(perPatient["Encounter"][most]) {
			most = pid
		}
		if len(perPatient["Encounter"][pid]) < len(perPatient["Encounter"][fewest]) {
			fewest = pid
		}
	}
	pick := []string{most, fewest}
	for i := 0; i < len(patients); i += 20 {
		pick = append(pick, patients[i])
	}
	for _, pid := range pick {
		for typ := range patientElement {
			want := perPatient[typ][pid]
			for _, q := range []string{typ + "?patient=" + pid, typ + "?patient=Patient/" + pid} {
				got := s.ids(q)
				if len(got) != len(want) {
					t.Errorf("%s: %d resources, the files say %d", q, len(got), len(want))
					continue
				}
				for _, id := range got {
					if !want[id] {
						t.Errorf("%s: found %s/%s, which the files do not give that patient", q, typ, id)
					}
				}
			}
		}
	}
	t.Logf("%d patients checked: %d encounters for the most, %d for the fewest", len(pick), len(perPatient["Encounter"][most]), len(perPatient["Encounter"][fewest]))
}

// ids follows a search's next links and returns the ids of its matches.
func (s *storeClient) ids(query string) []string {
	s.t.Helper()
	var out []string
	next := query
	for pages := 0; next != ""; pages++ {
		var b struct {
			Total int
			Link  []struct{ Relation, URL string }
			Entry []struct {
				Resource struct{ ID string }
				Search   struct{ Mode string }
			}
		}
		if code := s.get(strings.TrimPrefix(next, s.base), &b); code != 200 {
			s.t.Fatalf("%s: HTTP %d", next, code)
		}
		for _, e := range b.Entry {
			if e.Search.Mode == "match" {
				out = append(out, e.Resource.ID)
			}
		}
		next = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				next = l.URL
			}
		}
		if pages > 1000 {
			s.t.Fatalf("%s: more than 1000 pages", query)
		}
	}
	return out
}
