package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/verify"
)

// verifyBin runs `fhirload verify` from the built binary in w and returns
// its exit code, report and stderr.
func verifyBin(t *testing.T, w workspace, limit time.Duration, args ...string) (int, *verify.Report, string) {
	t.Helper()
	report := filepath.Join(w.dir, "verify-report.json")
	_ = os.Remove(report)
	p := startProcess(t, fhirloadBinary(t), w.dir, nil, append([]string{"verify", "--config", w.config, "--report", report}, args...)...)
	code := p.wait(t, limit)
	b, err := os.ReadFile(report)
	if err != nil {
		return code, nil, p.log()
	}
	var rep verify.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Reconciles() {
		t.Errorf("verify report does not reconcile: %+v", rep)
	}
	return code, &rep, p.log()
}

// rest sends one request to a store without auth and returns the body.
func rest(t *testing.T, method, url string, body []byte) []byte {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: HTTP %d %s", method, url, resp.StatusCode, b)
	}
	return b
}

func idOf(t *testing.T, line []byte) string {
	t.Helper()
	var r struct{ ID string }
	if err := json.Unmarshal(line, &r); err != nil || r.ID == "" {
		t.Fatalf("no id in line: %v", err)
	}
	return r.ID
}

// TestVerifySampleAgainstServe is issue 18's proof, on the whole shared
// sample in `fhirload serve`: a clean load verifies with 16,415 matches;
// after 3 Observations are deleted and 2 Patients changed through the REST
// API, verify exits 2 naming exactly those 5 (source line, kind, paths,
// never a value); a rerun of run heals the store and verify is clean
// again; and through --chaos-429 0.2 --chaos-500 0.05 the numbers hold.
func TestVerifySampleAgainstServe(t *testing.T) {
	t.Parallel() // a slow end-to-end test that mostly waits on its processes: see parallel_test.go
	if testing.Short() {
		t.Skip("loads and verifies the whole sample several times")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "served")
	srv := serveStore(t, data)
	w := newWorkspace(t, fmt.Sprintf("url: %q, auth: none", srv.base), "")
	pats, obs := absPath(t, samplePatients), absPath(t, sampleObservations)
	if code, rep, stderr := w.runBin(t, "run", pats, obs); code != 0 || rep.Loaded != 16415 {
		t.Fatalf("load: exit %d %+v\n%s", code, rep, stderr)
	}
	code, rep, stderr := verifyBin(t, w, 3*time.Minute, pats, obs)
	if code != 0 || rep == nil || rep.Matched != 16415 || rep.Verified != 16415 || rep.Lines != 16415 || len(rep.Mismatches) != 0 ||
		rep.ReadMethod != "batch" {
		t.Fatalf("clean load: exit %d %+v\n%s", code, rep, tail(stderr))
	}

	s := loadSample(t)
	deleted := map[int64]string{10: "", 5000: "", 16000: ""} // Observation lines
	for line := range deleted {
		deleted[line] = idOf(t, s.observations[line-1])
		rest(t, http.MethodDelete, srv.base+"Observation/"+deleted[line], nil)
	}
	changed := map[int64][]string{3: {"Patient.gender"}, 77: {"Patient.name[0].family", "Patient.active"}} // Patient lines
	ids := map[int64]string{}
	for line := range changed {
		ids[line] = idOf(t, s.patients[line-1])
		var p map[string]any
		if err := json.Unmarshal(rest(t, http.MethodGet, srv.base+"Patient/"+ids[line], nil), &p); err != nil {
			t.Fatal(err)
		}
		if line == 3 {
			p["gender"] = map[string]string{"male": "female", "female": "male"}[p["gender"].(string)]
		} else {
			p["name"].([]any)[0].(map[string]any)["family"] = "Zqxchangedfamily"
			p["active"] = true
		}
		b, _ := json.Marshal(p)
		rest(t, http.MethodPut, srv.base+"Patient/"+ids[line], b)
	}
	code, rep, stderr = verifyBin(t, w, 3*time.Minute, pats, obs)
	if code != 2 || rep == nil || rep.Missing != 3 || rep.Different != 2 || rep.Matched != 16410 || len(rep.Mismatches) != 5 {
		t.Fatalf("after the changes: exit %d %+v\n%s", code, rep, tail(stderr))
	}
	var want []verify.Mismatch
	for _, line := range []int64{3, 77} {
		want = append(want, verify.Mismatch{Source: "file://" + pats, Line: line, Type: "Patient", ID: ids[line], Kind: "different", Paths: changed[line]})
	}
	for _, line := range []int64{10, 5000, 16000} {
		want = append(want, verify.Mismatch{Source: "file://" + obs, Line: line, Type: "Observation", ID: deleted[line], Kind: "missing"})
	}
	slices.SortFunc(want, func(a, b verify.Mismatch) int {
		return strings.Compare(fmt.Sprint(a.Source, a.Line), fmt.Sprint(b.Source, b.Line))
	})
	gotJSON, _ := json.Marshal(rep.Mismatches)
	wantJSON, _ := json.Marshal(want)
	if !jsonSameSet(t, gotJSON, wantJSON) {
		t.Fatalf("mismatches\n got %s\nwant %s", gotJSON, wantJSON)
	}
	report, _ := os.ReadFile(filepath.Join(w.dir, "verify-report.json"))
	for _, v := range []string{"Zqxchangedfamily", "female\"", "male\""} {
		if strings.Contains(stderr, v) || strings.Contains(string(report), v) {
			t.Errorf("a value (%q) appears in the output or the report", v)
		}
	}
	if !strings.Contains(stderr, fmt.Sprintf("missing file://%s:10 Observation/%s", obs, deleted[10])) {
		t.Errorf("the summary does not name the first missing line:\n%s", tail(stderr))
	}

	if code, rep, stderr := w.runBin(t, "run", pats, obs); code != 0 || rep.Loaded != 16415 || rep.Created != 3 {
		t.Fatalf("the healing rerun: exit %d %+v\n%s", code, rep, stderr)
	}
	if code, rep, stderr := verifyBin(t, w, 3*time.Minute, pats, obs); code != 0 || rep.Matched != 16415 {
		t.Fatalf("after the rerun: exit %d %+v\n%s", code, rep, tail(stderr))
	}

	// The same store behind injected 429s and 500s (each honoured
	// Retry-After costs a second: a slice of the sample keeps this short).
	srv.close(t)
	chaos := serveStore(t, data, "--chaos-429", "0.2", "--chaos-500", "0.05")
	w.edit(t, srv.base, chaos.base)
	w.edit(t, "max_elapsed: 5s", "max_elapsed: 5m")
	slice := filepath.Join(w.dir, "slice.ndjson")
	if err := os.WriteFile(slice, joinLines(s.observations[:3000]), 0o600); err != nil {
		t.Fatal(err)
	}
	code, rep, stderr = verifyBin(t, w, 4*time.Minute, pats, slice)
	if code != 0 || rep == nil || rep.Matched != 3100 || rep.Unreachable != 0 || rep.Retries == 0 {
		t.Fatalf("through chaos: exit %d %+v\n%s", code, rep, tail(stderr))
	}
	t.Logf("through chaos: %d retries, %d throttled, %.1fs", rep.Retries, rep.Throttled, rep.Seconds)
}

// jsonSameSet compares two JSON arrays as sets of their elements.
func jsonSameSet(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y []json.RawMessage
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil || len(x) != len(y) {
		return false
	}
	set := map[string]int{}
	for _, e := range x {
		set[string(e)]++
	}
	for _, e := range y {
		if set[string(e)]--; set[string(e)] < 0 {
			return false
		}
	}
	return true
}

// runVerifyBin runs `fhirload run --verify SOURCE...` from the built binary
// in w and returns its exit code, both reports and stderr.
func runVerifyBin(t *testing.T, w workspace, sources ...string) (int, *pipeline.Report, *verify.Report, string) {
	t.Helper()
	report := filepath.Join(w.dir, "run-verify-report.json")
	_ = os.Remove(report)
	p := startProcess(t, fhirloadBinary(t), w.dir, nil, append([]string{"run", "--verify", "--config", w.config, "--report", report}, sources...)...)
	code := p.wait(t, 3*time.Minute)
	rep, vrep := runVerifyReportOf(t, report)
	return code, rep, vrep, p.log()
}

// runVerifyReportOf reads the report of `run --verify`.
func runVerifyReportOf(t *testing.T, path string) (*pipeline.Report, *verify.Report) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		pipeline.Report
		Verify *verify.Report `json:"verify"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Reconciles() || r.Verify == nil || !r.Verify.Reconciles() {
		t.Fatalf("report does not reconcile: %s", b)
	}
	return &r.Report, r.Verify
}

// TestRunVerify: `run --verify` loads, then verifies the same lines, for
// local files into the embedded store and for standard input; lines that
// were dead-lettered are skipped by the verification, not reported missing.
func TestRunVerify(t *testing.T) {
	lines := strings.Join([]string{goodPatient, `{"resourceType":"Patient","id":"p9"}`, "", goodObservation}, "\n") + "\n"
	for _, mode := range []string{"batch", "single"} {
		t.Run("embedded, local file, "+mode, func(t *testing.T) {
			w := newWorkspace(t, "mode: "+mode, "")
			src := filepath.Join(w.dir, "in.ndjson")
			if err := os.WriteFile(src, []byte(lines), 0o600); err != nil {
				t.Fatal(err)
			}
			report := filepath.Join(w.dir, "report.json")
			var stdout, stderr bytes.Buffer
			code := realMain([]string{"run", "--config", w.config, "--report", report, "--verify", src}, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (one line dead-lettered, the rest verified)\n%s", code, stderr.String())
			}
			rep, vrep := runVerifyReportOf(t, report)
			if rep.Loaded != 2 || rep.DeadLettered != 1 || vrep.Matched != 2 || vrep.Skipped != 1 || vrep.SkippedBlank != 1 ||
				vrep.SkippedReasons["invalid"] != 1 || vrep.Missing+vrep.Different+vrep.Unreachable != 0 || vrep.ExitCode() != 0 {
				t.Fatalf("run %+v\nverify %+v", rep, vrep)
			}
			if !strings.Contains(stderr.String(), "verify "+rep.RunID+": 1 objects, 4 lines: 2 verified (2 matched") {
				t.Fatalf("no verify summary:\n%s", stderr.String())
			}
		})
	}
	t.Run("standard input", func(t *testing.T) {
		w := newWorkspace(t, "", "")
		report := filepath.Join(w.dir, "report.json")
		cmd := exec.Command(fhirloadBinary(t), "run", "--config", w.config, "--report", report, "--verify", "-")
		cmd.Dir = w.dir
		cmd.Stdin = strings.NewReader(lines)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Fatalf("exit %d, want 2\n%s", code, out)
		}
		_, vrep := runVerifyReportOf(t, report)
		if vrep.Lines != 4 || vrep.Matched != 2 || vrep.Skipped != 1 {
			t.Fatalf("verify %+v", vrep)
		}
		if spooled, _ := filepath.Glob(filepath.Join(os.TempDir(), "fhirload-stdin-*")); len(spooled) > 0 {
			t.Errorf("spooled standard input left behind: %v", spooled)
		}
	})
}

// TestRunVerifyS3: run --verify over an S3 prefix reads the objects twice
// (load, then verify) and reports every line matched.
func TestRunVerifyS3(t *testing.T) {
	m := newMotoWorld(t)
	m.put(t, "in/a.ndjson", []byte(goodPatient+"\n"+goodObservation+"\n"))
	m.put(t, "in/b.ndjson.gz", gzipBytes(t, []byte(strings.Replace(goodPatient, `"p1"`, `"p2"`, 1)+"\n")))
	w := flowWorkspace(t, "", m.awsYAML())
	report := filepath.Join(w.dir, "report.json")
	code, log := runFhirload(t, w.dir, "run", "--config", w.config, "--report", report, "--verify", "s3://"+m.bucket+"/in/")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, log)
	}
	rep, vrep := runVerifyReportOf(t, report)
	if rep.Loaded != 3 || vrep.Objects != 2 || vrep.Matched != 3 {
		t.Fatalf("run %+v\nverify %+v", rep, vrep)
	}
}

// TestVerifyWritesNothing: verify stores no dead letter and writes nothing
// to the target, whatever the lines; an unreachable target or refused
// credentials are fatal with one line.
func TestVerifyWritesNothing(t *testing.T) {
	w := newWorkspace(t, "", "")
	src := filepath.Join(w.dir, "in.ndjson")
	if err := os.WriteFile(src, []byte(goodPatient+"\n{\"resourceType\":\n"+goodObservation+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	report := filepath.Join(w.dir, "report.json")
	code := realMain([]string{"verify", "--config", w.config, "--report", report, src}, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2 (nothing loaded yet: missing)\n%s", code, stderr.String())
	}
	var rep verify.Report
	b, _ := os.ReadFile(report)
	if err := json.Unmarshal(b, &rep); err != nil || rep.Missing != 2 || rep.Skipped != 1 || rep.SkippedReasons["parse"] != 1 {
		t.Fatalf("report %s", b)
	}
	if n := w.store(t).count("Patient") + w.store(t).count("Observation"); n != 0 {
		t.Fatalf("verify wrote %d resources", n)
	}
	if segs, _ := filepath.Glob(filepath.Join(w.dir, "deadletter", "*", "*")); len(segs) > 0 {
		t.Fatalf("verify touched the dead-letter store: %v", segs)
	}

	t.Run("unreachable target", func(t *testing.T) {
		w := newWorkspace(t, `url: "http://127.0.0.1:1/datastore/x/r4/", auth: none`, "")
		var stdout, stderr bytes.Buffer
		if code := realMain([]string{"verify", "--config", w.config, src}, &stdout, &stderr); code != 1 ||
			!strings.HasPrefix(lastLine(stderr.String()), "fhirload: ") || !strings.Contains(lastLine(stderr.String()), "127.0.0.1:1") {
			t.Fatalf("exit %d, last line %q", code, lastLine(stderr.String()))
		}
	})
}

// TestVerifyEveryResourceType: run --verify over the Synthea population (17
// types; the first 400 lines of each file) and over Synthea's transaction
// Bundles. Every line is read back; nothing is missing. The population
// names some Organizations and Practitioners on several lines with
// different content (their utilization extensions): the store holds one
// version of each, so the other lines are reported different — and only
// those.
func TestVerifyEveryResourceType(t *testing.T) {
	if testing.Short() {
		t.Skip("loads and verifies 5,000 resources of 17 types")
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "shared", "fhir-all", "*.ndjson.gz"))
	if err != nil || len(files) != 17 {
		t.Fatalf("fhir-all: %d files, %v", len(files), err)
	}
	w := newWorkspace(t, "", "")
	versions := map[string]map[string]bool{} // Type/id -> distinct lines
	lines := 0
	var args []string
	for _, f := range files {
		all := testlines.All(t, f)
		head := all[:min(400, len(all))]
		part := filepath.Join(w.dir, strings.TrimSuffix(filepath.Base(f), ".gz"))
		if err := os.WriteFile(part, joinLines(head), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, part)
		for _, l := range head {
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			key := r.ResourceType + "/" + r.ID
			if versions[key] == nil {
				versions[key] = map[string]bool{}
			}
			versions[key][string(l)] = true
			lines++
		}
	}
	code, rep, vrep, log := runVerifyBin(t, w, args...)
	if code != 2 || rep.Loaded != int64(lines) || vrep.Verified != int64(lines) || vrep.Missing != 0 ||
		vrep.Unreachable != 0 || vrep.Skipped != 0 || vrep.Different == 0 {
		t.Fatalf("exit %d\nrun %+v\nverify %+v\n%s", code, rep, vrep, tail(log))
	}
	for _, m := range vrep.Mismatches {
		if m.Kind != verify.KindDifferent || len(versions[m.Type+"/"+m.ID]) < 2 {
			t.Errorf("mismatch %+v: not a resource the source describes twice", m)
		}
	}
	t.Logf("%d of %d lines name a resource the source describes differently elsewhere", vrep.Different, lines)

	bundles := filepath.Join("..", "..", "testdata", "shared", "synthea-bundles")
	w = newWorkspace(t, "", "")
	code, rep, vrep, log = runVerifyBin(t, w, absPath(t, bundles))
	if code != 0 || vrep.Objects != 3 || vrep.Matched != rep.Loaded || vrep.Matched == 0 {
		t.Fatalf("bundles: exit %d\nrun %+v\nverify %+v\n%s", code, rep, vrep, tail(log))
	}
}
