package main

import (
	"fmt"
	"path/filepath"
	"testing"
)

// splitLines cuts lines into n nearly equal parts.
func splitLines(lines [][]byte, n int) [][][]byte {
	parts := make([][][]byte, 0, n)
	for i := range n {
		parts = append(parts, lines[i*len(lines)/n:(i+1)*len(lines)/n])
	}
	return parts
}

// Issue 5: `fhirload run s3://bucket/prefix` over a night's batch of many
// objects, gzip and plain, loads every one of them once and reconciles; keys
// outside the prefix or without an NDJSON suffix are not read.
func TestRunS3PrefixLoadsManyObjects(t *testing.T) {
	m := newMotoWorld(t)
	s := loadSample(t)
	const prefix = "nightly/2024-05-01/"
	var parts [][][]byte
	parts = append(parts, splitLines(s.patients, 2)...)
	parts = append(parts, splitLines(s.observations, 18)...)
	for i, p := range parts {
		body, key := joinLines(p), fmt.Sprintf("%spart-%02d.ndjson", prefix, i)
		if i%2 == 0 {
			body, key = gzipBytes(t, body), key+".gz"
		}
		m.put(t, key, body)
	}
	// Not part of the batch: each would show in the report if it were read.
	bad := []byte("{\"resourceType\":\"Patient\",\"id\":\"not-in-batch\"\nnot json\n")
	m.put(t, prefix+"README.txt", bad)
	m.put(t, prefix+"sub/", nil)
	m.put(t, "nightly/2024-05-02/part-00.ndjson", bad)

	w := flowWorkspace(t, "", m.awsYAML())
	report := filepath.Join(w.dir, "report.json")
	code, log := runFhirload(t, w.dir, "run", "--config", w.config, "--report", report, "s3://"+m.bucket+"/"+prefix)
	if code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, log)
	}
	rep := readReport(t, report)
	if !rep.Reconciles() || rep.Objects != 20 || rep.Lines != 16415 || rep.Loaded != 16415 ||
		rep.Created != 16415 || rep.DeadLettered != 0 {
		t.Fatalf("report: %+v", rep)
	}
	st := serveStore(t, filepath.Join(w.dir, "store"))
	if p, o := st.count("Patient"), st.count("Observation"); p != 100 || o != 16315 {
		t.Fatalf("store holds %d Patients and %d Observations, want 100 and 16315", p, o)
	}
}
