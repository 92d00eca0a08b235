package main

import (
	"slices"
	"strings"
	"testing"
)

// checkPatientSearches checks, for several patients (the one with the most
// encounters, the one with the fewest, and every twentieth in id order),
// that TYPE?patient=X and TYPE?patient=Patient/X find exactly the resources
// perPatient gives X (type → patient id → resource ids).
func checkPatientSearches(t *testing.T, s *storeClient, patientIDs map[string]bool, perPatient map[string]map[string]map[string]bool) {
	t.Helper()
	var patients []string
	for pid := range patientIDs {
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
		for typ := range perPatient {
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
