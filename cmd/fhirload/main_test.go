package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/verify"
)

var (
	samplePatients     = filepath.Join("..", "..", "testdata", "sample", "Patient.ndjson.gz")
	sampleObservations = filepath.Join("..", "..", "testdata", "sample", "Observation.ndjson.gz")
)

// workspace is a temporary folder with a pipeline.yaml whose store, dead
// letters and checkpoints live inside it.
type workspace struct {
	dir, config string
}

// target holds extra target keys ("url: ..., auth: none"); extra more YAML.
func newWorkspace(t *testing.T, target, extra string) workspace {
	t.Helper()
	dir := t.TempDir()
	if target != "" {
		target = ", " + target
	}
	if !strings.Contains(extra, "log:") {
		extra += "\nlog: {level: warn}\n"
	}
	cfg := fmt.Sprintf(`target: {data: %q%s}
deadletter: {url: "file://%s"}
retry: {initial: 10ms, max: 200ms, max_elapsed: 5s}
%s`, filepath.Join(dir, "store"), target, filepath.Join(dir, "deadletter"), extra)
	p := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return workspace{dir: dir, config: p}
}

// run runs fhirload in-process and returns the exit code, the report and stderr.
func (w workspace) run(t *testing.T, args ...string) (int, *pipeline.Report, string) {
	t.Helper()
	report := filepath.Join(w.dir, fmt.Sprintf("report-%d.json", len(args)))
	_ = os.Remove(report)
	full := append([]string{args[0], "--config", w.config, "--report", report}, args[1:]...)
	var stdout, stderr bytes.Buffer
	code := realMain(full, &stdout, &stderr)
	var rep pipeline.Report
	if b, err := os.ReadFile(report); err == nil {
		if err := json.Unmarshal(b, &rep); err != nil {
			t.Fatalf("report: %v", err)
		}
		if !rep.Reconciles() {
			t.Errorf("report does not reconcile: %+v", rep)
		}
		return code, &rep, stderr.String()
	}
	return code, nil, stderr.String()
}

// runBin is run through the built binary: the commands of tests that load
// the whole sample run there, outside the race detector's instrumentation of
// the in-process SQLite store (seconds instead of a minute).
func (w workspace) runBin(t *testing.T, args ...string) (int, *pipeline.Report, string) {
	t.Helper()
	return runReport(t, w, nil, 3*time.Minute, args...)
}

// store opens the workspace's embedded store (after a run) and serves it
// without auth for assertions.
func (w workspace) store(t *testing.T) *storeClient {
	t.Helper()
	srv, err := fhirstore.Open(context.Background(), fhirstore.Options{Dir: filepath.Join(w.dir, "store"), Auth: "none"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); _ = srv.Close() })
	return &storeClient{t: t, base: hs.URL + "/datastore/local/r4/"}
}

type storeClient struct {
	t    *testing.T
	base string
}

func (s *storeClient) get(path string, v any) int {
	s.t.Helper()
	resp, err := http.Get(s.base + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			s.t.Fatalf("%s: %v", path, err)
		}
	}
	return resp.StatusCode
}

func (s *storeClient) count(typ string) int {
	s.t.Helper()
	var b struct{ Total int }
	if code := s.get(typ+"?_summary=count", &b); code != 200 {
		s.t.Fatalf("count %s: HTTP %d", typ, code)
	}
	return b.Total
}

func TestRunLoadsSharedDataIdempotently(t *testing.T) {
	w := newWorkspace(t, "", "")
	code, rep, stderr := w.runBin(t, "run", absPath(t, samplePatients), absPath(t, sampleObservations))
	if code != 0 || rep == nil {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if rep.Lines != 16415 || rep.Loaded != 16415 || rep.Created != 16415 || rep.DeadLettered != 0 || rep.Objects != 2 {
		t.Fatalf("first run: %+v", rep)
	}
	code, rep, stderr = w.runBin(t, "run", absPath(t, samplePatients), absPath(t, sampleObservations))
	if code != 0 || rep.Loaded != 16415 || rep.Created != 0 || rep.Updated != 16415 {
		t.Fatalf("second run: exit %d %+v\n%s", code, rep, stderr)
	}
	st := w.store(t)
	if p, o := st.count("Patient"), st.count("Observation"); p != 100 || o != 16315 {
		t.Fatalf("store holds %d Patients and %d Observations, want 100 and 16315", p, o)
	}
	// References were rewritten from urn:uuid to Patient/ids that resolve.
	var obs struct {
		Subject struct{ Reference string }
	}
	var first struct {
		Entry []struct{ Resource struct{ ID string } }
	}
	st.get("Observation?_count=1", &first)
	if len(first.Entry) != 1 {
		t.Fatal("no Observation")
	}
	st.get("Observation/"+first.Entry[0].Resource.ID, &obs)
	if !strings.HasPrefix(obs.Subject.Reference, "Patient/") || st.get(obs.Subject.Reference, nil) != 200 {
		t.Fatalf("subject %q does not resolve", obs.Subject.Reference)
	}
}

func TestRunObservationsFirstLoadTheSame(t *testing.T) {
	w := newWorkspace(t, "", "")
	code, rep, stderr := w.runBin(t, "run", absPath(t, sampleObservations), absPath(t, samplePatients))
	if code != 0 || rep.Loaded != 16415 || rep.Created != 16415 {
		t.Fatalf("exit %d %+v\n%s", code, rep, stderr)
	}
	st := w.store(t)
	if p, o := st.count("Patient"), st.count("Observation"); p != 100 || o != 16315 {
		t.Fatalf("store holds %d Patients and %d Observations", p, o)
	}
}

const goodPatient = `{"resourceType":"Patient","id":"p1","name":[{"family":"Doe","given":["Jane"]}],"gender":"female","birthDate":"1970-01-01"}`
const goodObservation = `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":170.0,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}`

// TestRunCountsRepeatedResources: a resource on several lines of the sources
// (the same type and id) is loaded, counted in repeated_ids and warned of
// once, without its content: which line the target ends with is not
// defined where they differ. Another type with the same id is another
// resource.
func TestRunCountsRepeatedResources(t *testing.T) {
	w := newWorkspace(t, "", "")
	changed := strings.Replace(goodPatient, `"gender":"female"`, `"gender":"other"`, 1)
	otherType := `{"resourceType":"Observation","id":"p1","status":"final","code":{"text":"c"},"subject":{"reference":"Patient/p1"}}`
	a, b := filepath.Join(w.dir, "a.ndjson"), filepath.Join(w.dir, "b.ndjson")
	if err := os.WriteFile(a, []byte(goodPatient+"\n"+goodObservation+"\n"+goodPatient+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte(changed+"\n"+otherType+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, rep, stderr := w.run(t, "run", a, b)
	if code != 0 || rep.Lines != 5 || rep.Loaded != 5 {
		t.Fatalf("exit %d, report %+v\n%s", code, rep, stderr)
	}
	if rep.RepeatedIDs != 2 { // Patient/p1 twice more
		t.Errorf("repeated_ids %d, want 2", rep.RepeatedIDs)
	}
	if n := strings.Count(stderr, "occur more than once"); n != 1 || !strings.Contains(stderr, `"repeated_ids": 2`) {
		t.Errorf("want one warning with the count:\n%s", stderr)
	}
	if strings.Contains(stderr, "Doe") || strings.Contains(stderr, "1970") {
		t.Errorf("PHI in the log:\n%s", stderr)
	}
	// Verify: the target holds one of Patient/p1's lines, the others are
	// different, and the report says why that can be.
	report := filepath.Join(w.dir, "verify.json")
	var out, errb bytes.Buffer
	if code := realMain([]string{"verify", "--config", w.config, "--report", report, a, b}, &out, &errb); code != 2 {
		t.Fatalf("verify: exit %d, want 2 (a line of p1 differs)\n%s", code, errb.String())
	}
	var vrep verify.Report
	if raw, err := os.ReadFile(report); err != nil || json.Unmarshal(raw, &vrep) != nil {
		t.Fatalf("verify report: %v", err)
	}
	if vrep.RepeatedIDs != 2 || vrep.Different < 1 || vrep.Different > 2 || vrep.Matched != 5-vrep.Different || !vrep.Reconciles() {
		t.Errorf("verify report: repeated_ids %d, matched %d, different %d; want 2, the rest, 1 or 2", vrep.RepeatedIDs, vrep.Matched, vrep.Different)
	}

	// Without repeats: no warning, none counted.
	w2 := newWorkspace(t, "", "")
	code, rep, stderr = w2.run(t, "run", b)
	if code != 0 || rep.RepeatedIDs != 0 || strings.Contains(stderr, "occur more than once") {
		t.Fatalf("exit %d, repeated_ids %d\n%s", code, rep.RepeatedIDs, stderr)
	}
}

func TestRunMixedFileDeadLettersEachBadLine(t *testing.T) {
	w := newWorkspace(t, "", "")
	lines := []string{
		goodPatient,
		"",
		`{"resourceType":"Patient","id":"p2","name":[{"family":"Roe"`, // malformed JSON
		`{"resourceType":"Encounter","id":"e1","status":"finished"}`,  // wrong type
		`{"resourceType":"Patient","id":"p3","name":[{"given":["NoFamily"]}]}`,
		`{"resourceType":"Patient","id":"bad id!","name":[{"family":"X","given":["Y"]}]}`,
		"   ",
		goodObservation,
	}
	src := filepath.Join(w.dir, "mixed.ndjson")
	if err := os.WriteFile(src, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, rep, stderr := w.run(t, "run", src)
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, stderr)
	}
	if rep.Lines != 8 || rep.SkippedBlank != 2 || rep.Loaded != 2 || rep.DeadLettered != 4 {
		t.Fatalf("report %+v", rep)
	}
	if rep.DeadLetterReasons["parse"] != 1 || rep.DeadLetterReasons["invalid"] != 3 {
		t.Fatalf("reasons %v", rep.DeadLetterReasons)
	}
	// Each bad line is in the store with its line number and reason; ls shows no PHI.
	var out, errb bytes.Buffer
	if code := realMain([]string{"deadletter", "ls", "--config", w.config, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("ls: %d %s", code, errb.String())
	}
	got := map[int64]string{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e struct {
			Reason string
			Source struct{ Line int64 }
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("ls --json line %q: %v", l, err)
		}
		got[e.Source.Line] = e.Reason
	}
	want := map[int64]string{3: "parse", 4: "invalid", 5: "invalid", 6: "invalid"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dead letters by line %v, want %v", got, want)
	}
	out.Reset()
	if code := realMain([]string{"deadletter", "ls", "--config", w.config}, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	for _, phi := range []string{"Roe", "NoFamily", "Doe"} {
		if strings.Contains(out.String()+stderr, phi) {
			t.Errorf("%q appears in ls output or logs", phi)
		}
	}
}

func TestRunFatalConditionsExit1WithOneLine(t *testing.T) {
	cases := []struct {
		name, target string
		args         []string
		want         string
	}{
		{"unreachable target", `url: "http://127.0.0.1:1/datastore/x/r4/", auth: none`,
			[]string{samplePatients}, "127.0.0.1:1"},
		{"missing source", "", []string{filepath.Join("nope", "missing.ndjson")}, "missing.ndjson"},
		{"non-loopback http", `url: "http://203.0.113.7/r4/", auth: none`, []string{samplePatients}, "https"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorkspace(t, c.target, "")
			code, _, stderr := w.run(t, append([]string{"run"}, c.args...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, stderr)
			}
			last := lastLine(stderr)
			if !strings.HasPrefix(last, "fhirload: ") || !strings.Contains(last, c.want) {
				t.Fatalf("last line %q does not name %q", last, c.want)
			}
			if entries, _ := filepath.Glob(filepath.Join(w.dir, "deadletter", "*", "*")); len(entries) > 0 {
				data, _ := os.ReadFile(entries[0])
				if len(bytes.TrimSpace(data)) > 0 {
					t.Fatalf("dead letters written: %v", entries)
				}
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestRunFromStdin: `cat file.ndjson | fhirload run -` loads it; its source
// is "stdin" in the report's dead letters, and replay works from the lines
// the entries keep.
func TestRunFromStdin(t *testing.T) {
	w := newWorkspace(t, "", "")
	in := strings.Join([]string{goodPatient, `{"resourceType":"Patient","id":"p9"}`, goodObservation}, "\n") + "\n"
	report := filepath.Join(w.dir, "report.json")
	cmd := exec.Command(fhirloadBinary(t), "run", "--config", w.config, "--report", report, "-")
	cmd.Dir = w.dir
	cmd.Stdin = strings.NewReader(in)
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit %d, want 2 (one invalid line)\n%s", code, out)
	}
	rep := readReport(t, report)
	if rep.Objects != 1 || rep.Lines != 3 || rep.Loaded != 2 || rep.DeadLettered != 1 || !rep.Reconciles() {
		t.Fatalf("report %+v", rep)
	}
	entries := w.deadLetters(t)
	if len(entries) != 1 || entries[0].Source.URI != "stdin" || entries[0].Source.Line != 2 {
		t.Fatalf("dead letters %+v", entries)
	}
	// Fixed in the target's eyes by the base profile: replay loads it from the entry.
	w.edit(t, "log: {level: warn}", "log: {level: warn}\ntransform: {profile: base}")
	if code, rep, stderr := w.run(t, "replay"); code != 0 || rep.Loaded != 1 {
		t.Fatalf("replay exit %d %+v\n%s", code, rep, stderr)
	}
}
