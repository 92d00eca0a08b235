package main

// End-to-end tests of target.mode import: `fhirload serve` as a process
// (the HealthLake control plane and its import jobs, reading and writing
// S3 on moto), the fhirload binary, and the embedded store.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/internal/testutil"
)

// importInput is the input of the import tests: Patients and Observations
// of the sample in two files, with one invalid line in each (transform
// rejects it before anything is staged).
type importInput struct {
	files   map[string][]byte // name -> content
	where   map[string]string // resource id -> "name:line"
	valid   map[string]int    // type -> resources
	invalid []string          // "name:line" of the invalid lines
}

func makeImportInput(t *testing.T, patients, observations int) importInput {
	t.Helper()
	in := importInput{files: map[string][]byte{}, where: map[string]string{}, valid: map[string]int{}}
	for _, f := range []struct {
		name  string
		lines [][]byte
		bad   int // the invalid line's number
	}{
		{"Patient.ndjson", sampleLines(t, "Patient.ndjson.gz")[:patients], 5},
		{"Observation.ndjson", sampleLines(t, "Observation.ndjson.gz")[:observations], 100},
	} {
		var b bytes.Buffer
		no := 0
		for i, l := range f.lines {
			if no+1 == f.bad {
				no++
				fmt.Fprintf(&b, `{"resourceType":"Observation","id":"bad-%d","status":"not-a-status","code":{"text":"x"}}`+"\n", i)
				in.invalid = append(in.invalid, fmt.Sprintf("%s:%d", f.name, no))
			}
			no++
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			in.where[r.ID] = fmt.Sprintf("%s:%d", f.name, no)
			in.valid[r.ResourceType]++
			b.Write(l)
			b.WriteByte('\n')
		}
		in.files[f.name] = b.Bytes()
	}
	return in
}

func (in importInput) lines() int {
	n := len(in.invalid)
	for _, v := range in.valid {
		n += v
	}
	return n
}

// importServe starts `fhirload serve` (extra flags) whose import jobs use m.
func importServe(t *testing.T, m *motoWorld, extra ...string) *healthlakeServe {
	t.Helper()
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return startHealthlakeServe(t, m, fmt.Sprintf("127.0.0.1:%d", port), filepath.Join(t.TempDir(), "serve"), extra...)
}

// importWorkspace is a workspace whose target is s in target.mode import,
// staging and output in m's bucket; poll is poll_interval and poll_max.
func importWorkspace(t *testing.T, m *motoWorld, s *healthlakeServe, poll string) workspace {
	t.Helper()
	url := "embedded"
	if s != nil {
		url = s.endpoint + "/datastore/local/r4/"
	}
	return flowWorkspace(t, fmt.Sprintf(`url: %q, mode: import, import: {staging_url: "s3://%s/stage", output_url: "s3://%s/out/", `+
		`role_arn: "arn:aws:iam::123456789012:role/HealthLakeImport", kms_key_id: "alias/aws/s3", poll_interval: %s, poll_max: %s, object_bytes: 131072}`,
		url, m.bucket, m.bucket, poll, poll), m.awsYAML())
}

// importJobs lists the import jobs of s's data store local.
func importJobs(t *testing.T, s *healthlakeServe) []hltypes.ImportJobProperties {
	t.Helper()
	out, err := s.sdk().ListFHIRImportJobs(context.Background(), &healthlake.ListFHIRImportJobsInput{DatastoreId: aws.String("local")})
	if err != nil {
		t.Fatal(err)
	}
	return out.ImportJobPropertiesList
}

// rejectedByJob reads the FAILURE records of job: the "name:line" of the
// input line each rejected line was staged from.
func (in importInput) rejectedByJob(t *testing.T, m *motoWorld, job string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, key := range testutil.Keys(t, m.s3, m.bucket, "out/local-FHIR_IMPORT-"+job+"/FAILURE/") {
		for _, r := range m.outputRecords(t, key) {
			var res struct{ ID string }
			line, _ := r["line"].(string)
			if err := json.Unmarshal([]byte(line), &res); err != nil || in.where[res.ID] == "" {
				t.Fatalf("FAILURE record does not carry a line of the input: %v", r)
			}
			out[in.where[res.ID]] = true
		}
	}
	return out
}

// wantStoreExact checks that the store holds every valid resource of in,
// each at version 1.
func (in importInput) wantStoreExact(t *testing.T, dir string) {
	t.Helper()
	for typ, n := range in.valid {
		wantAllVersion1(t, dir, typ, n)
	}
}

// TestRunImportMode: `fhirload run` in target.mode import, over an S3
// prefix and over local files, against `serve --chaos-import-reject 0.01`:
// the invalid lines are dead-lettered before staging, one import job loads
// the rest, the lines it rejected — exactly those of its FAILURE records,
// by source and line — are dead-lettered as import-rejected with the
// verbatim line and the job's OperationOutcome; exit 2, the report
// reconciles, the staged objects are gone. A replay (REST batch Bundles,
// whatever target.mode says) then leaves the store exact.
func TestRunImportMode(t *testing.T) {
	if testing.Short() {
		t.Skip("two import jobs through fhirload serve and moto; run without -short")
	}
	for _, source := range []string{"s3", "local"} {
		t.Run(source, func(t *testing.T) {
			m := newMotoWorld(t)
			s := importServe(t, m, "--chaos-import-reject", "0.01", "--chaos-seed", "7")
			w := importWorkspace(t, m, s, "100ms")
			in := makeImportInput(t, 40, 1500)
			uri := map[string]string{} // name -> source URI
			var args []string
			for name, b := range in.files {
				if source == "s3" {
					m.put(t, "in/"+name, b)
					uri[name] = "s3://" + m.bucket + "/in/" + name
					continue
				}
				p := filepath.Join(w.dir, "in", name)
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
				uri[name] = "file://" + p
				args = append(args, p)
			}
			if source == "s3" {
				args = []string{"s3://" + m.bucket + "/in/"}
			}
			code, rep, log := runReport(t, w, nil, 2*time.Minute, append([]string{"run"}, args...)...)
			if code != 2 || rep == nil {
				t.Fatalf("run: exit %d, want 2\n%s", code, tail(log))
			}
			jobs := importJobs(t, s)
			if len(jobs) != 1 || jobs[0].JobStatus != hltypes.JobStatusCompletedWithErrors {
				t.Fatalf("import jobs %+v, want one COMPLETED_WITH_ERRORS", jobs)
			}
			rejected := in.rejectedByJob(t, m, aws.ToString(jobs[0].JobId))
			if len(rejected) == 0 {
				t.Fatal("the job rejected nothing: the test proves nothing")
			}
			if rep.Lines != int64(in.lines()) || rep.DeadLetterReasons["import-rejected"] != int64(len(rejected)) ||
				rep.DeadLetterReasons["invalid"] != int64(len(in.invalid)) || rep.Loaded != int64(in.lines()-len(in.invalid)-len(rejected)) {
				t.Fatalf("report %+v; want %d lines, %d invalid, %d import-rejected", rep, in.lines(), len(in.invalid), len(rejected))
			}
			byName := map[string]string{}
			for name, u := range uri {
				byName[u] = name
			}
			got := map[string]bool{}
			for _, e := range w.entries(t, deadletter.ReasonImportRejected) {
				at := fmt.Sprintf("%s:%d", byName[e.Source.URI], e.Source.Line)
				got[at] = true
				lines := bytes.Split(in.files[byName[e.Source.URI]], []byte("\n"))
				if e.Stage != "import" || e.HTTPStatus != 503 || !bytes.Contains(e.OperationOutcome, []byte("transient")) ||
					e.Line != string(lines[e.Source.Line-1]) || e.ResourceID == "" || in.where[e.ResourceID] != at {
					t.Errorf("dead letter %s: stage %s status %d resource %s/%s outcome %s; line %.80q, want %.80q",
						at, e.Stage, e.HTTPStatus, e.ResourceType, e.ResourceID, e.OperationOutcome, e.Line, lines[e.Source.Line-1])
				}
			}
			if fmt.Sprint(sortedKeys(got)) != fmt.Sprint(sortedKeys(rejected)) {
				t.Errorf("dead-lettered %v\nthe job rejected %v", sortedKeys(got), sortedKeys(rejected))
			}
			if keys := m.keysUnder(t, "stage/"); len(keys) != 0 {
				t.Errorf("staged objects left: %v", keys)
			}

			// Replay the rejected lines: REST batch Bundles.
			rp := startFhirload(t, w.dir, "replay", "--config", w.config, "--reason", "import-rejected", "--report", filepath.Join(w.dir, "replay.json"))
			if code := rp.wait(t, time.Minute); code != 0 {
				t.Fatalf("replay: exit %d\n%s", code, tail(rp.log()))
			}
			if n := len(w.deadLetters(t)); n != len(in.invalid) {
				t.Errorf("%d dead letters after the replay, want the %d invalid lines", n, len(in.invalid))
			}
			in.wantStoreExact(t, s.dir)
			if n := len(importJobs(t, s)); n != 1 {
				t.Errorf("%d import jobs after the replay, want 1", n)
			}
		})
	}
}

// entries are the workspace's dead letters of reason, lines included
// (`deadletter ls --json` leaves them out).
func (w workspace) entries(t *testing.T, reason deadletter.Reason) []deadletter.Entry {
	t.Helper()
	st, err := deadletter.Open(context.Background(), "file://"+filepath.Join(w.dir, "deadletter"), deadletter.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entries, err := st.List(context.Background(), deadletter.Filter{Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// keysUnder lists the keys of the bucket under prefix.
func (m *motoWorld) keysUnder(t *testing.T, prefix string) []string {
	t.Helper()
	return testutil.Keys(t, m.s3, m.bucket, prefix)
}

// TestRunImportKilledDuringJob: `fhirload run` SIGKILLed once its import
// job is started, then run again over the same files: the rerun finds the
// batch, resumes the same job (one job is ever listed), and its report is
// exact; the store holds every resource once.
func TestRunImportKilledDuringJob(t *testing.T) {
	if testing.Short() {
		t.Skip("an import job through fhirload serve and moto; run without -short")
	}
	m := newMotoWorld(t)
	s := importServe(t, m)
	w := importWorkspace(t, m, s, "1s") // the first poll is a second after the start: the kill comes first
	in := makeImportInput(t, 30, 1200)
	var args []string
	for name, b := range in.files {
		if name == "Observation.ndjson" {
			b = bytes.Replace(b, []byte(`"not-a-status"`), []byte(`"final"`), 1) // no invalid line: an exact report is all loaded
		}
		p := filepath.Join(w.dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	in.valid["Observation"]++
	in.invalid = in.invalid[:1] // the Patient file's
	p := startFhirload(t, w.dir, append([]string{"run", "--config", w.config}, args...)...)
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(p.log(), "import job started") {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("no import job started\n%s", tail(p.log()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.kill(t)
	if n := len(importJobs(t, s)); n != 1 {
		t.Fatalf("%d import jobs after the kill, want 1", n)
	}

	code, rep, log := runReport(t, w, nil, 2*time.Minute, append([]string{"run"}, args...)...)
	if code != 2 || rep == nil {
		t.Fatalf("rerun: exit %d, want 2 (the invalid line)\n%s", code, tail(log))
	}
	if !strings.Contains(log, "this batch was staged before") {
		t.Errorf("the rerun did not find the batch\n%s", tail(log))
	}
	valid := int64(in.lines() - len(in.invalid))
	if rep.Lines != int64(in.lines()) || rep.Loaded != valid || rep.DeadLettered != 1 || rep.DeadLetterReasons["invalid"] != 1 || rep.Unsettled != 0 {
		t.Fatalf("rerun report %+v; want %d lines, %d loaded, 1 invalid", rep, in.lines(), valid)
	}
	jobs := importJobs(t, s)
	if len(jobs) != 1 || jobs[0].JobStatus != hltypes.JobStatusCompleted {
		t.Fatalf("import jobs %+v, want the one of the killed run, COMPLETED", jobs)
	}
	in.wantStoreExact(t, s.dir)
	if keys := m.keysUnder(t, "stage/"); len(keys) != 0 {
		t.Errorf("staged objects left: %v", keys)
	}
}

// TestRunImportSIGTERMWhileStaging: SIGTERM while lines are being staged
// (from standard input) stops the run cleanly: exit 143, the report says
// interrupted and counts the staged lines unsettled (the object is not
// acknowledged), what was staged is deleted from S3 and the state folder,
// and no job is started. A rerun then imports everything with one job.
func TestRunImportSIGTERMWhileStaging(t *testing.T) {
	if testing.Short() {
		t.Skip("an import job through fhirload serve and moto; run without -short")
	}
	m := newMotoWorld(t)
	s := importServe(t, m)
	w := importWorkspace(t, m, s, "100ms")
	obs := sampleLines(t, "Observation.ndjson.gz")[:1000]
	report := filepath.Join(w.dir, "report.json")
	cmd := exec.Command(fhirloadBinary(t), "run", "--config", w.config, "--report", report, "-")
	cmd.Dir, cmd.Env = w.dir, append(os.Environ(), flowEnv...)
	logf, err := os.Create(filepath.Join(w.dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stderr = logf
	stderr := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	if _, err := stdin.Write(ndjsonOf(obs[:600])); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(m.keysUnder(t, "stage/")) == 0 { // staging under way: objects are uploaded as they fill
		if time.Now().After(deadline) {
			t.Fatal("nothing staged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	for !strings.Contains(stderr(), "signal received") { // the input ends only once the run stops
		if time.Now().After(deadline) {
			t.Fatalf("the signal was not taken\n%s", tail(stderr()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stdin.Close()
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 143 {
		t.Fatalf("exit %d, want 143\n%s", code, tail(stderr()))
	}
	var rep struct {
		Lines, Loaded, Unsettled int64
		Interrupted              bool
	}
	b, err := os.ReadFile(report)
	if err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("report: %v", err)
	}
	if !rep.Interrupted || rep.Lines == 0 || rep.Loaded != 0 || rep.Unsettled != rep.Lines {
		t.Fatalf("report %+v: want interrupted, every line read unsettled", rep)
	}
	if keys := m.keysUnder(t, "stage/"); len(keys) != 0 {
		t.Errorf("staged objects left after SIGTERM: %v", keys)
	}
	if left, _ := filepath.Glob(filepath.Join(w.dir, "import", "staging-*")); len(left) != 0 {
		t.Errorf("staging folders left: %v", left)
	}
	if n := len(importJobs(t, s)); n != 0 {
		t.Fatalf("%d import jobs, want none", n)
	}

	p := filepath.Join(w.dir, "obs.ndjson")
	if err := os.WriteFile(p, ndjsonOf(obs), 0o600); err != nil {
		t.Fatal(err)
	}
	code, rrep, log := runReport(t, w, nil, 2*time.Minute, "run", p)
	if code != 0 || rrep.Loaded != int64(len(obs)) {
		t.Fatalf("rerun: exit %d, report %+v\n%s", code, rrep, tail(log))
	}
	if n := len(importJobs(t, s)); n != 1 {
		t.Fatalf("%d import jobs, want 1", n)
	}
	wantAllVersion1(t, s.dir, "Observation", len(obs))
}

// TestImportModeEmbedded: target.mode import into the embedded store
// (its import jobs use fhirload's S3 settings), then the same lines again:
// no second job, every line loaded; and what is checked before anything is
// read: an unknown data store, a staging bucket that does not exist.
func TestImportModeEmbedded(t *testing.T) {
	m := newMotoWorld(t)
	w := importWorkspace(t, m, nil, "20ms")
	in := makeImportInput(t, 20, 0)
	p := filepath.Join(w.dir, "Patient.ndjson")
	if err := os.WriteFile(p, in.files["Patient.ndjson"], 0o600); err != nil {
		t.Fatal(err)
	}
	for run := 1; run <= 2; run++ {
		args := []string{"run", p}
		if run == 2 {
			args = []string{"run", "--verify", p} // verify reads back through REST batch Bundles
		}
		code, rep, stderr := w.run(t, args...)
		if code != 2 || rep == nil || rep.Loaded != 20 || rep.DeadLetterReasons["invalid"] != 1 {
			t.Fatalf("run %d: exit %d, report %+v\n%s", run, code, rep, stderr)
		}
		if run == 2 && !strings.Contains(stderr, "this batch was staged before") {
			t.Errorf("run 2 imported again\n%s", stderr)
		}
		if run == 2 && !strings.Contains(stderr, "20 verified (20 matched, 0 missing, 0 different)") {
			t.Errorf("run --verify did not verify the import\n%s", tail(stderr))
		}
	}
	if n := w.store(t).count("Patient"); n != 20 {
		t.Errorf("the embedded store holds %d Patients, want 20", n)
	}

	for _, c := range []struct{ edit, with, want string }{
		{"import: {staging_url", "import: {datastore_id: nope, staging_url", "data store nope: ResourceNotFoundException"},
		{"staging_url: \"s3://", "staging_url: \"s3://no-such-", "target.import.staging_url: bucket no-such-"},
	} {
		w2 := importWorkspace(t, m, nil, "20ms")
		w2.edit(t, c.edit, c.with)
		code, _, stderr := w2.run(t, "run", p)
		if code != 1 || !strings.Contains(lastLine(stderr), c.want) {
			t.Errorf("exit %d, last line %q; want 1 and %q", code, lastLine(stderr), c.want)
		}
	}
}

// TestWatchRefusesImportMode: watch in target.mode import is a config
// error, with its reason and what to do instead.
func TestWatchRefusesImportMode(t *testing.T) {
	w := newWorkspace(t, `mode: import, import: {staging_url: "s3://b/s", output_url: "s3://b/o", role_arn: "arn:aws:iam::123456789012:role/R", kms_key_id: k}`, "")
	var stdout, stderr bytes.Buffer
	code := realMain([]string{"watch", "--config", w.config, "--queue", "http://127.0.0.1:1/q", "--metrics-addr", ""}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "target.mode import is not supported by watch") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}
