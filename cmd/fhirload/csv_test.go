package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var (
	flatPatients     = filepath.Join("..", "..", "testdata", "shared", "flat", "patients.csv")
	flatObservations = filepath.Join("..", "..", "testdata", "shared", "flat", "observations.csv")
	syntheaMapping   = filepath.Join("..", "..", "mappings", "synthea-csv.yaml")
)

// The Synthea CSV loads through `run` with the shipped mapping, in either
// order: 27 Patients, every observation row loaded or dead-lettered, each
// Observation's subject resolving to its Patient; a rerun creates nothing.
func TestRunSyntheaCSVWithMapping(t *testing.T) {
	mapping, _ := filepath.Abs(syntheaMapping)
	rows := csvRows(t, flatPatients) + csvRows(t, flatObservations)
	for _, order := range [][]string{{flatPatients, flatObservations}, {flatObservations, flatPatients}} {
		t.Run(filepath.Base(order[0])+"-first", func(t *testing.T) {
			w := newWorkspace(t, "", "source: {format: csv, objects: 1}\ntransform: {mapping: "+mapping+", ids: derive}\n")
			code, rep, stderr := w.run(t, append([]string{"run"}, order...)...)
			if code != 0 && code != 2 {
				t.Fatalf("exit %d\n%s", code, stderr)
			}
			if rep.Lines != int64(rows) || rep.Loaded+rep.DeadLettered != int64(rows) {
				t.Fatalf("report %+v, want %d records", rep, rows)
			}
			st := w.store(t)
			if p := st.count("Patient"); p != 27 {
				t.Fatalf("%d Patients, want 27", p)
			}
			obs := st.count("Observation")
			if int64(obs) != rep.Loaded-27 {
				t.Fatalf("%d Observations in the store, report loaded %d", obs, rep.Loaded)
			}
			// Every Observation's subject resolves to a Patient.
			var page struct {
				Entry []struct {
					Resource struct {
						Subject struct{ Reference string }
					}
				}
			}
			st.get("Observation?_count=100", &page)
			if len(page.Entry) == 0 {
				t.Fatal("no Observations")
			}
			for _, e := range page.Entry {
				if ref := e.Resource.Subject.Reference; !strings.HasPrefix(ref, "Patient/") || st.get(ref, nil) != 200 {
					t.Fatalf("subject %q does not resolve", ref)
				}
			}
			code, rep2, stderr := w.run(t, append([]string{"run"}, order...)...)
			if code != 0 && code != 2 || rep2.Created != 0 || rep2.Loaded != rep.Loaded {
				t.Fatalf("rerun: exit %d %+v\n%s", code, rep2, stderr)
			}
			if p, o := st.count("Patient"), st.count("Observation"); p != 27 || o != obs {
				t.Fatalf("after rerun: %d Patients, %d Observations", p, o)
			}
		})
	}
}

func csvRows(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			n++
		}
	}
	return n - 1 // the header
}

// validate checks without writing: exit 2 with counts per reason and
// location, nothing in the store or the dead-letter store.
func TestValidateWritesNothing(t *testing.T) {
	w := newWorkspace(t, "", "")
	src := filepath.Join(w.dir, "v.ndjson")
	_ = os.WriteFile(src, []byte(goodPatient+"\n"+`{"resourceType":"Patient","id":"p3","name":[{"given":["NoFamily"]}]}`+"\n"), 0o600)
	code, rep, stderr := w.run(t, "validate", src)
	if code != 2 || rep.Loaded != 1 || rep.DeadLettered != 1 {
		t.Fatalf("exit %d %+v\n%s", code, rep, stderr)
	}
	if rep.DeadLetterLocations["invalid Patient.name[0].family"] != 1 {
		t.Fatalf("locations %v", rep.DeadLetterLocations)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "store")); !os.IsNotExist(err) {
		t.Fatalf("validate created the store: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "deadletter")); !os.IsNotExist(err) {
		t.Fatalf("validate created the dead-letter store: %v", err)
	}
}

func TestProgressEstimate(t *testing.T) {
	for _, c := range []struct {
		read, total int64
		secs        float64
		want        string
	}{
		{50, 100, 10, "  ETA 10s"},
		{25, 100, 10, "  ETA 30s"},
		{0, 100, 10, ""},
		{100, 100, 10, ""},
		{50, 0, 10, ""},
	} {
		if got := etaText(estimate(c.read, c.total, c.secs)); got != c.want {
			t.Errorf("estimate(%d, %d, %v) = %q, want %q", c.read, c.total, c.secs, got, c.want)
		}
	}
}
