package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/fhirload/fhirload/pipeline"
)

// shortRetry makes a failing target exhaust retries in a fraction of a second.
const shortRetry = "retry: {initial: 10ms, max: 50ms, max_elapsed: 300ms}"

// chaosRun loads srcs into `fhirload serve --chaos-500 1` (every request and
// batch entry fails with 500): exit 2, nothing loaded, reconciled. setup, if
// not nil, edits the workspace first. It returns the workspace, the run's
// report and the stopped server, to be restarted on the same address and data.
func chaosRun(t *testing.T, extra string, setup func(workspace), srcs ...string) (workspace, *pipeline.Report, *servedStore) {
	t.Helper()
	chaos := serveStore(t, filepath.Join(t.TempDir(), "store"), "--chaos-500", "1")
	w := flowWorkspace(t, fmt.Sprintf("url: %q, auth: none", chaos.base), extra)
	w.edit(t, "retry: {initial: 10ms, max: 200ms, max_elapsed: 5s}", shortRetry)
	if setup != nil {
		setup(w)
	}
	report := filepath.Join(w.dir, "chaos-report.json")
	code, log := runFhirload(t, w.dir, append([]string{"run", "--config", w.config, "--report", report}, srcs...)...)
	if code != 2 {
		t.Fatalf("run against chaos-500: exit %d, want 2\n%s", code, tail(log))
	}
	rep := readReport(t, report)
	if !rep.Reconciles() || rep.Lines == 0 || rep.Loaded != 0 || rep.DeadLettered != rep.Lines {
		t.Fatalf("chaos run report: %+v", rep)
	}
	chaos.close(t)
	return w, rep, chaos
}

// useS3DeadLetters points the workspace's dead-letter store (and so its
// checkpoints) at s3://bucket/prefix.
func (w workspace) useS3DeadLetters(t *testing.T, m *motoWorld, prefix string) {
	t.Helper()
	w.edit(t, fmt.Sprintf("deadletter: {url: \"file://%s\"}", filepath.Join(w.dir, "deadletter")),
		fmt.Sprintf("deadletter: {url: \"s3://%s/%s\"}", m.bucket, prefix))
}

// replay runs `fhirload replay` to its end and returns its exit code and report.
func (w workspace) replay(t *testing.T, args ...string) (int, *pipeline.Report, string) {
	t.Helper()
	report := filepath.Join(w.dir, "replay-report.json")
	_ = os.Remove(report)
	code, log := runFhirload(t, w.dir, append([]string{"replay", "--config", w.config, "--report", report}, args...)...)
	if _, err := os.Stat(report); err != nil {
		t.Fatalf("replay wrote no report (exit %d)\n%s", code, tail(log))
	}
	rep := readReport(t, report)
	if !rep.Reconciles() {
		t.Errorf("replay report does not reconcile: %+v", rep)
	}
	return code, rep, log
}

// The small real data set of the replay tests: 9 Patients and their 1,502
// Observations (the pathling export, relative references).
var (
	smallPatients     = filepath.Join("..", "..", "testdata", "shared", "fhir", "pathling", "Patient.ndjson")
	smallObservations = filepath.Join("..", "..", "testdata", "shared", "fhir", "pathling", "Observation.ndjson.gz")
)

const smallLines = 1511

// Issue 7: real Synthea data against a server failing every request is
// dead-lettered as retries-exhausted (exit 2). With the server back (same
// data, no chaos), `fhirload replay` loads every line (exit 0), the store
// holds exactly the sample, the dead-letter store is empty, and replaying
// again does nothing. Both dead-letter backends: a local folder and an S3
// prefix (moto).
func TestReplayAfterServerOutageLoadsEverythingOnce(t *testing.T) {
	for _, backend := range []string{"file", "s3"} {
		t.Run(backend, func(t *testing.T) {
			extra, setup := "", func(workspace) {}
			if backend == "s3" {
				m := newMotoWorld(t)
				extra, setup = m.awsYAML(), func(w workspace) { w.useS3DeadLetters(t, m, "dl") }
			}
			w, rep, chaos := chaosRun(t, extra, setup, absPath(t, smallPatients), absPath(t, smallObservations))
			if rep.Lines != smallLines || rep.DeadLetterReasons["retries-exhausted"] != smallLines {
				t.Fatalf("chaos run: %+v, want every line dead-lettered as retries-exhausted", rep)
			}
			if got := w.deadLetterCounts(t); len(got) != 2 || got["retries-exhausted"] != smallLines || got["total"] != smallLines {
				t.Fatalf("dead letters by reason %v", got)
			}
			st := serveStoreAt(t, chaos.addr, chaos.dir)

			code, rep, log := w.replay(t)
			if code != 0 || rep.Lines != smallLines || rep.Loaded != smallLines || rep.Created != smallLines || rep.DeadLettered != 0 {
				t.Fatalf("replay: exit %d %+v\n%s", code, rep, tail(log))
			}
			if p, o := st.count("Patient"), st.count("Observation"); p != 9 || o != 1502 {
				t.Fatalf("store holds %d Patients and %d Observations, want 9 and 1502", p, o)
			}
			wantAllVersion1(t, st.dir, "Patient", 9)
			wantAllVersion1(t, st.dir, "Observation", 1502)
			if left := w.deadLetterCounts(t); left["total"] != 0 {
				t.Fatalf("dead letters left after replay: %v", left)
			}
			code, rep, log = w.replay(t)
			if code != 0 || rep.Lines != 0 || rep.Loaded != 0 {
				t.Fatalf("second replay: exit %d %+v\n%s", code, rep, tail(log))
			}
		})
	}
}

// Issue 7: killing `replay` midway (SIGKILL: nothing is flushed or released)
// and running it again ends in the same state as an uninterrupted replay:
// everything loaded, nothing left. Entries are retired only after their
// resources are loaded, so the only extra versions are the re-puts of the
// batch in flight at the kill. A second replay started while one holds the
// store's lock is refused rather than processing the same entries.
func TestReplayKilledMidwayThenRerunEndsTheSame(t *testing.T) {
	replayKilledMidway(t, "file")
}

// The same with the dead letters in S3: the killed replay's lease names its
// host, boot and pid, so the rerun on the same machine takes it over at once
// instead of waiting for it to expire.
func TestReplayKilledMidwayThenRerunEndsTheSameS3(t *testing.T) {
	replayKilledMidway(t, "s3")
}

func replayKilledMidway(t *testing.T, backend string) {
	extra, setup := "", func(workspace) {}
	if backend == "s3" {
		m := newMotoWorld(t)
		extra, setup = m.awsYAML(), func(w workspace) { w.useS3DeadLetters(t, m, "dl") }
	}
	w, _, chaos := chaosRun(t, extra, setup, absPath(t, smallPatients), absPath(t, smallObservations))
	// A slow server and small batches: the kill lands while the replay is going.
	st := serveStoreAt(t, chaos.addr, chaos.dir, "--chaos-latency", "100ms")
	w.edit(t, "auth: none", "auth: none, batch_size: 10, concurrency: 4")

	p := startFhirload(t, w.dir, "replay", "--config", w.config)
	waitFor(t, 2*time.Minute, func() bool { return p.exited() || st.count("Observation") >= 300 })
	if code, log := runFhirload(t, w.dir, "replay", "--config", w.config); code != 1 || !strings.Contains(lastLine(log), "lock") {
		t.Errorf("concurrent replay: exit %d, want 1 naming the lock\n%s", code, tail(log))
	}
	p.kill(t)
	if p.cmd.ProcessState.Success() {
		t.Fatalf("replay finished before the kill\n%s", tail(p.log()))
	}
	left := w.deadLetterCounts(t)["total"]
	loaded := st.count("Patient") + st.count("Observation")
	if left == 0 || left == smallLines || loaded >= smallLines {
		t.Fatalf("the kill did not land midway: %d entries left, %d resources loaded", left, loaded)
	}
	t.Logf("killed with %d resources loaded, %d entries left", loaded, left)

	code, rep, log := w.replay(t)
	if code != 0 || rep.Lines != int64(left) || rep.Loaded != rep.Lines {
		t.Fatalf("rerun: exit %d, %+v; want every one of the %d entries left loaded\n%s", code, rep, left, tail(log))
	}
	if p, o := st.count("Patient"), st.count("Observation"); p != 9 || o != 1502 {
		t.Fatalf("store holds %d Patients and %d Observations, want 9 and 1502", p, o)
	}
	if left := w.deadLetterCounts(t); left["total"] != 0 {
		t.Fatalf("dead letters left after the rerun: %v", left)
	}
	v := versionHistogram(t, st.dir, "Observation")
	for k, p := range versionHistogram(t, st.dir, "Patient") {
		v[k] += p
	}
	// Replay runs batches concurrently like a fresh load: what the kill can
	// make it put twice is what was in flight, at most concurrency (4) plus
	// one per CPU batches of 10, written but not yet retired.
	if inFlight := (4 + runtime.GOMAXPROCS(0)) * 10; v[1]+v[2] != smallLines || v[2] > inFlight {
		t.Fatalf("resources by version %v: want at most the batches in flight (%d) re-put", v, inFlight)
	}
}

// Issue 7: lines rejected by the transform stay dead-lettered on replay, with
// the same reason and one more attempt; once the mapping is fixed, replay
// loads them (it uses the current transform, not the one recorded).
func TestReplayAfterMappingFixLoadsRejectedLines(t *testing.T) {
	mapping, err := os.ReadFile(filepath.Join("..", "..", "mappings", "synthea-csv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const good, wrong = "map: {M: male, F: female}", "map: {Male: male, Female: female}"
	if !strings.Contains(string(mapping), good) {
		t.Fatalf("mappings/synthea-csv.yaml has no %q", good)
	}
	csv, err := os.ReadFile(filepath.Join("..", "..", "testdata", "shared", "flat", "patients.csv"))
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.SplitAfter(string(csv), "\n")[:11] // the header and 10 patients

	w := flowWorkspace(t, "", "")
	mpath, src := filepath.Join(w.dir, "synthea-csv.yaml"), filepath.Join(w.dir, "patients.csv")
	if err := os.WriteFile(src, []byte(strings.Join(rows, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	// A mapping written for another spelling of the gender codes.
	if err := os.WriteFile(mpath, []byte(strings.Replace(string(mapping), good, wrong, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	w.edit(t, "log: {level: info}", fmt.Sprintf("log: {level: info}\nsource: {format: csv}\ntransform: {mapping: %q, ids: derive}", mpath))

	report := filepath.Join(w.dir, "run.json")
	if code, log := runFhirload(t, w.dir, "run", "--config", w.config, "--report", report, src); code != 2 {
		t.Fatalf("run: exit %d, want 2\n%s", code, tail(log))
	}
	first := w.deadLetters(t)
	if rep := readReport(t, report); rep.Lines != 10 || rep.DeadLettered != 10 || len(first) != 10 {
		t.Fatalf("run: %+v, %d dead letters; want all 10 patients dead-lettered", rep, len(first))
	}
	reason := first[0].Reason
	if reason != "mapping" && reason != "invalid" {
		t.Fatalf("dead-lettered as %q, want mapping or invalid", reason)
	}

	code, rep, log := w.replay(t)
	if code != 2 || rep.Lines != 10 || rep.DeadLettered != 10 || rep.DeadLetterReasons[string(reason)] != 10 {
		t.Fatalf("replay with the same mapping: exit %d %+v\n%s", code, rep, tail(log))
	}
	for _, e := range w.deadLetters(t) {
		if e.Reason != reason || e.Attempts != 2 {
			t.Fatalf("after replay: reason %q attempts %d, want %q and 2", e.Reason, e.Attempts, reason)
		}
	}

	if err := os.WriteFile(mpath, mapping, 0o600); err != nil { // the fix
		t.Fatal(err)
	}
	code, rep, log = w.replay(t)
	if code != 0 || rep.Lines != 10 || rep.Loaded != 10 {
		t.Fatalf("replay with the fixed mapping: exit %d %+v\n%s", code, rep, tail(log))
	}
	if left := w.deadLetters(t); len(left) != 0 {
		t.Fatalf("%d dead letters left", len(left))
	}
	if n := serveStore(t, filepath.Join(w.dir, "store")).count("Patient"); n != 10 {
		t.Fatalf("store holds %d Patients, want 10", n)
	}
}

// Issue 7: the S3 dead-letter backend through the product. A run writes its
// dead letters under s3://bucket/prefix as server-side encrypted objects,
// `deadletter ls` lists them, and replay retires those that now load and
// keeps the others.
func TestReplayWithS3DeadLetterStore(t *testing.T) {
	m := newMotoWorld(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "drop.ndjson")
	if err := os.WriteFile(src, []byte(strings.Join([]string{
		goodPatient,
		strings.Replace(goodPatient, `"p1"`, `"p2"`, 1),
		`{"resourceType":"Encounter","id":"e1","status":"finished"}`, // invalid: stays
		goodObservation,
	}, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, rep, chaos := chaosRun(t, m.awsYAML(), func(w workspace) { w.useS3DeadLetters(t, m, "dead letters") }, src)
	if rep.DeadLetterReasons["retries-exhausted"] != 3 || rep.DeadLetterReasons["invalid"] != 1 {
		t.Fatalf("chaos run reasons %v, want 3 retries-exhausted and 1 invalid", rep.DeadLetterReasons)
	}

	// Every object the store wrote is encrypted at rest; nothing is written locally.
	ctx := context.Background()
	list, err := m.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(m.bucket), Prefix: aws.String("dead letters/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Contents) == 0 {
		t.Fatal("no dead-letter objects in the bucket")
	}
	for _, o := range list.Contents {
		h := m.head(t, aws.ToString(o.Key))
		if h.ServerSideEncryption != s3types.ServerSideEncryptionAes256 {
			t.Errorf("%s: server-side encryption %q, want AES256", aws.ToString(o.Key), h.ServerSideEncryption)
		}
	}
	if _, err := os.Stat(filepath.Join(w.dir, "deadletter")); !os.IsNotExist(err) {
		t.Errorf("a local dead-letter folder was created: %v", err)
	}
	if got := reasons(w.deadLetters(t)); len(got) != 2 || got["retries-exhausted"] != 3 || got["invalid"] != 1 {
		t.Fatalf("deadletter ls by reason %v", got)
	}

	st := serveStoreAt(t, chaos.addr, chaos.dir)
	code, rep, log := w.replay(t)
	if code != 2 || rep.Loaded != 3 || rep.DeadLettered != 1 || rep.DeadLetterReasons["invalid"] != 1 {
		t.Fatalf("replay: exit %d %+v\n%s", code, rep, tail(log))
	}
	left := w.deadLetters(t)
	if len(left) != 1 || left[0].Reason != "invalid" || left[0].Source.Line != 3 || left[0].Attempts != 2 {
		t.Fatalf("after replay: %+v, want the invalid line 3 with 2 attempts", left)
	}
	if st.get("Patient/p1", nil) != 200 || st.get("Patient/p2", nil) != 200 || st.get("Observation/o1", nil) != 200 {
		t.Fatal("replayed resources are not in the store")
	}
}
