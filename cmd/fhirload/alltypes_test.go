package main

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fhirload/fhirload/internal/testlines"
)

// Issue 16: a real HealthLake user's bulk data is every resource type. The
// Synthea population (17 types, 38,970 lines) loads with no configuration
// beyond the workspace's folders, the store holds each type's unique ids,
// cross-type urn:uuid references point at their targets' real types
// (Claim.provider → Organization), searches of the store by patient return
// what the files say (Encounter, Claim, Condition, Immunization, Observation,
// ExplanationOfBenefit, MedicationRequest; several patients), and a second
// run creates nothing. (One load serves every check: it is the suite's
// largest.)
func TestRunEveryResourceType(t *testing.T) {
	t.Parallel() // a slow end-to-end test that mostly waits on its processes: see parallel_test.go
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
	want := map[string]map[string]bool{}                  // type -> ids in the files
	perPatient := map[string]map[string]map[string]bool{} // type → patient id → resource ids
	lines := 0
	for _, f := range files {
		for _, l := range testlines.All(t, f) {
			// Only the elements the test reads: a struct, not a map, keeps
			// parsing 38,970 lines cheap under -race.
			var r struct {
				ResourceType, ID string
				Subject          struct{ Reference string }
				Patient          struct{ Reference string }
			}
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			typ, id := r.ResourceType, r.ID
			if want[typ] == nil {
				want[typ] = map[string]bool{}
			}
			want[typ][id] = true
			lines++
			el, ok := patientElement[typ]
			if !ok {
				continue
			}
			ref := r.Subject.Reference
			if el == "patient" {
				ref = r.Patient.Reference
			}
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
	code, rep, log := w.runBin(t, args...)
	if code != 0 || rep == nil || rep.Lines != int64(lines) || rep.Loaded != int64(lines) {
		t.Fatalf("exit %d, report %+v\n%s", code, rep, tail(log))
	}
	stored := storeBodies(t, filepath.Join(w.dir, "store"))
	got := map[string]int{}
	for ref := range stored {
		got[strings.Split(ref, "/")[0]]++
	}
	for typ, ids := range want {
		if got[typ] != len(ids) {
			t.Errorf("%s: the store holds %d, the files have %d distinct ids", typ, got[typ], len(ids))
		}
	}
	if len(want["Organization"]) != 203 || len(want["Practitioner"]) != 203 {
		t.Errorf("Organization %d, Practitioner %d: the data changed?", len(want["Organization"]), len(want["Practitioner"]))
	}
	// Claim.provider allows Practitioner, PractitionerRole and Organization:
	// the pre-pass index finds that Synthea's providers are Organizations.
	providers := map[string]int{}
	for ref, body := range stored {
		if !strings.HasPrefix(ref, "Claim/") {
			continue
		}
		var c struct{ Provider struct{ Reference string } }
		if err := json.Unmarshal(body, &c); err != nil {
			t.Fatal(err)
		}
		typ, id, _ := strings.Cut(c.Provider.Reference, "/")
		providers[typ]++
		if _, ok := stored[c.Provider.Reference]; !ok || typ != "Organization" {
			t.Fatalf("%s: provider %q (%s) is not a stored Organization", ref, c.Provider.Reference, id)
		}
	}
	if providers["Organization"] != len(want["Claim"]) {
		t.Fatalf("providers %v", providers)
	}

	// The searches go to `fhirload serve` on the run's store folder (the
	// built binary: an in-process store would run under -race, 15x slower),
	// stopped before the second run.
	srv := serveStore(t, filepath.Join(w.dir, "store"))
	checkPatientSearches(t, srv.storeClient, want["Patient"], perPatient)
	srv.close(t)

	code, rep, log = w.runBin(t, args...)
	if code != 0 || rep.Created != 0 || rep.Loaded != int64(lines) {
		t.Fatalf("second run: exit %d %+v\n%s", code, rep, tail(log))
	}
}

// TestRunSyntheaBundles: Synthea's own per-patient transaction Bundles load
// as their entries with no configuration, and again without creating
// anything.
func TestRunSyntheaBundles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "shared", "synthea-bundles", "*.json.gz"))
	if err != nil || len(files) != 3 {
		t.Fatalf("bundles: %d files, %v", len(files), err)
	}
	entries := 0
	for _, f := range files {
		fh, err := os.Open(f)
		must(t, err)
		zr, err := gzip.NewReader(fh)
		must(t, err)
		var b struct{ Entry []json.RawMessage }
		must(t, json.NewDecoder(zr).Decode(&b))
		fh.Close()
		entries += len(b.Entry)
	}
	w := newWorkspace(t, "", "")
	dir := filepath.Dir(absPath(t, files[0]))
	code, rep, log := w.runBin(t, "run", dir)
	if code != 0 || rep == nil || rep.Objects != 3 || rep.Lines != int64(entries) || rep.Loaded != int64(entries) {
		t.Fatalf("exit %d report %+v (want %d entries)\n%s", code, rep, entries, tail(log))
	}
	types := map[string]int{}
	for ref := range storeBodies(t, filepath.Join(w.dir, "store")) {
		types[strings.Split(ref, "/")[0]]++
	}
	names := make([]string, 0, len(types))
	for k := range types {
		names = append(names, k)
	}
	sort.Strings(names)
	if types["Patient"] != 3 || len(types) < 10 {
		t.Fatalf("stored types %v", names)
	}
	code, rep, log = w.runBin(t, "run", dir)
	if code != 0 || rep.Created != 0 {
		t.Fatalf("second run: exit %d %+v\n%s", code, rep, tail(log))
	}
}
