package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/internal/testutil"
	"github.com/fhirload/fhirload/pipeline"
)

// watchYAML is the source section of a worker on queue.
func watchYAML(queue string, visibility time.Duration) string {
	return fmt.Sprintf("source: {queue_url: %q, wait_seconds: 1, visibility_timeout: %s}\n", queue, visibility)
}

// metricsAddr returns a free loopback address for a worker's /metrics.
func metricsAddr(t *testing.T) string {
	t.Helper()
	port, err := testutil.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// Issue 5: the Synthea files dropped into a bucket whose notifications go to
// a queue are loaded by `fhirload watch`, all 16,415 of them; the queue ends
// empty; a second notification for the same object loads nothing new.
func TestWatchLoadsDroppedFilesOnceAndDrainsTheQueue(t *testing.T) {
	m := newMotoWorld(t)
	q := m.queue(t, "drop", true)
	w := flowWorkspace(t, "", m.awsYAML()+watchYAML(q, 30*time.Second))
	report := filepath.Join(w.dir, "watch-report.json")
	p := startFhirload(t, w.dir, "watch", "--config", w.config, "--metrics-addr", metricsAddr(t), "--report", report)

	// As users drop them: the Patients gzipped as shipped, the Observations plain.
	gz, err := os.ReadFile(samplePatients)
	if err != nil {
		t.Fatal(err)
	}
	m.put(t, "drop/2024-05-01/Patient.ndjson.gz", gz)
	m.put(t, "drop/2024-05-01/Observation.ndjson", joinLines(loadSample(t).observations))
	m.waitDrained(t, q, 2*time.Minute, p)

	// SQS delivers at least once: the same notification again.
	m.send(t, q, m.createdEvent(t, "drop/2024-05-01/Observation.ndjson"))
	m.waitDrained(t, q, time.Minute, p)

	if code := p.stop(t); code != 143 {
		t.Fatalf("watch exit %d after SIGTERM, want 143\n%s", code, p.log())
	}
	rep := readReport(t, report)
	if !rep.Reconciles() || rep.Objects != 2 || rep.SkippedObjects != 1 || rep.Lines != 16415 ||
		rep.Loaded != 16415 || rep.Created != 16415 || rep.Updated != 0 || rep.DeadLettered != 0 {
		t.Fatalf("worker report: %+v\n%s", rep, p.log())
	}
	wantAllVersion1(t, filepath.Join(w.dir, "store"), "Patient", 100)
	wantAllVersion1(t, filepath.Join(w.dir, "store"), "Observation", 16315)
}

// Issue 5: what a worker meets in the wild. A notification for an object
// deleted since is dead-lettered as missing-object; a message that is not an
// S3 event is kept verbatim (reason parse, stage receive); an object with bad
// lines loads its good lines and dead-letters the others with their line
// numbers. Each message is deleted, and the worker goes on to load a good
// file dropped afterwards.
func TestWatchDeadLettersWhatItCannotLoadAndKeepsRunning(t *testing.T) {
	m := newMotoWorld(t)
	q := m.queue(t, "wild", true)
	ctx := context.Background()
	// Queued before the worker starts, in this order.
	m.put(t, "in/gone.ndjson", []byte(goodPatient+"\n"))
	if _, err := m.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(m.bucket), Key: aws.String("in/gone.ndjson")}); err != nil {
		t.Fatal(err)
	}
	m.send(t, q, "hello from a misconfigured producer")
	m.put(t, "in/mixed file.ndjson", []byte(strings.Join([]string{
		goodPatient,
		`{"resourceType":"Patient","id":"p2","name":[{"family":"Roe"`,
		`{"resourceType":"Encounter","id":"e1","status":"finished"}`,
	}, "\n")+"\n"))

	w := flowWorkspace(t, "", m.awsYAML()+watchYAML(q, 30*time.Second))
	report := filepath.Join(w.dir, "watch-report.json")
	p := startFhirload(t, w.dir, "watch", "--config", w.config, "--metrics-addr", metricsAddr(t), "--report", report)
	m.waitDrained(t, q, time.Minute, p)
	if p.exited() {
		t.Fatalf("worker exited\n%s", p.log())
	}
	m.put(t, "in/after.ndjson", []byte(goodObservation+"\n"))
	m.waitDrained(t, q, time.Minute, p)
	if code := p.stop(t); code != 143 {
		t.Fatalf("watch exit %d after SIGTERM, want 143\n%s", code, p.log())
	}

	rep := readReport(t, report)
	// The message that is not an event counts as one line, dead-lettered (receive).
	if !rep.Reconciles() || rep.MissingObjects != 1 || rep.Lines != 6 || rep.Loaded != 2 || rep.DeadLettered != 4 ||
		rep.DeadLetterReasons["parse"] != 1 || rep.DeadLetterReasons["invalid"] != 1 ||
		rep.DeadLetterReasons["receive"] != 1 || rep.DeadLetterReasons["missing-object"] != 1 {
		t.Fatalf("worker report: %+v\n%s", rep, p.log())
	}
	type got struct {
		reason, stage, uri string
		line               int64
	}
	var entries []got
	for _, e := range w.deadLetters(t) {
		uri := e.Source.URI
		if strings.HasPrefix(uri, q+"#") {
			uri = "QUEUE#"
		}
		entries = append(entries, got{string(e.Reason), string(e.Stage), uri, e.Source.Line})
	}
	src := "s3://" + m.bucket + "/in/"
	want := []got{
		{"invalid", "transform", src + "mixed file.ndjson", 3},
		{"missing-object", "read", src + "gone.ndjson", 1}, // object-level: the first line not read
		{"parse", "transform", src + "mixed file.ndjson", 2},
		{"receive", "receive", "QUEUE#", 0},
	}
	slices.SortFunc(entries, func(a, b got) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	if !slices.Equal(entries, want) {
		t.Fatalf("dead letters:\n got %v\nwant %v", entries, want)
	}
	st := serveStore(t, filepath.Join(w.dir, "store"))
	if st.get("Patient/p1", nil) != 200 || st.get("Observation/o1", nil) != 200 {
		t.Fatal("the good lines are not in the store")
	}
}

// lineIDs maps each resource id of lines to its 1-based line number.
func lineIDs(t *testing.T, lines [][]byte) map[string]int64 {
	t.Helper()
	ids := make(map[string]int64, len(lines))
	for i, l := range lines {
		var r struct{ ID string }
		if err := json.Unmarshal(l, &r); err != nil || r.ID == "" {
			t.Fatalf("sample line %d has no id", i+1)
		}
		ids[r.ID] = int64(i + 1)
	}
	return ids
}

// Issue 5: a worker SIGKILLed mid-object (no handler runs) and another one
// started: the message comes back after its visibility timeout, the new
// worker resumes after the last checkpointed line, and the store ends with
// every resource exactly once. The only extra versions are the idempotent
// re-puts of the unacknowledged tail: exactly the resources the killed worker
// loaded after its last checkpoint.
func TestWatchWorkerKilledMidObjectResumesAndLoadsOnce(t *testing.T) {
	m := newMotoWorld(t)
	q := m.queue(t, "kill", true)
	// A paced worker, so that the kill lands mid-object; a short visibility
	// timeout, so that the killed worker's message comes back soon.
	w := flowWorkspace(t, "write_units_per_second: 3000", m.awsYAML()+watchYAML(q, 2*time.Second))
	s := loadSample(t)
	gz, err := os.ReadFile(samplePatients)
	if err != nil {
		t.Fatal(err)
	}
	const obsKey = "drop/Observation.ndjson"
	m.put(t, "drop/Patient.ndjson.gz", gz)
	m.put(t, obsKey, joinLines(s.observations))

	cfg, err := pipeline.LoadConfig(w.config)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := ingest.OpenCheckpoints(context.Background(), cfg.CheckpointURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	etag := strings.Trim(aws.ToString(m.head(t, obsKey).ETag), `"`)
	checkpoint := func() ingest.Checkpoint {
		cp, err := cps.Get(context.Background(), "s3://"+m.bucket+"/"+obsKey+"@"+etag)
		if err != nil {
			t.Fatal(err)
		}
		return cp
	}

	addr := metricsAddr(t)
	a := startFhirload(t, w.dir, "watch", "--config", w.config, "--metrics-addr", addr)
	waitFor(t, 2*time.Minute, func() bool {
		return metricValue(t, "http://"+addr+"/metrics", "fhirload_resources_created_total") >= 6000 && checkpoint().Line > 0 || a.exited()
	})
	a.kill(t)
	if a.cmd.ProcessState.Success() {
		t.Fatalf("worker exited by itself\n%s", a.log())
	}

	// Where the killed worker was: its checkpoint, and what it had loaded.
	cp := checkpoint()
	loadedBefore := storeVersions(t, filepath.Join(w.dir, "store"), "Observation")
	if cp.Done || cp.Line <= 0 || int64(len(loadedBefore)) < cp.Line || len(loadedBefore) >= 16315 {
		t.Fatalf("the kill did not land mid-object: checkpoint %+v, %d Observations loaded\n%s", cp, len(loadedBefore), a.log())
	}
	t.Logf("killed after %d Observations loaded, checkpoint at line %d", len(loadedBefore), cp.Line)

	report := filepath.Join(w.dir, "watch-report.json")
	b := startFhirload(t, w.dir, "watch", "--config", w.config, "--metrics-addr", metricsAddr(t), "--report", report)
	m.waitDrained(t, q, 2*time.Minute, b)
	if code := b.stop(t); code != 143 {
		t.Fatalf("second worker exit %d, want 143\n%s", code, b.log())
	}
	rep := readReport(t, report)
	if !rep.Reconciles() || rep.Lines != 16315-cp.Line || rep.DeadLettered != 0 {
		t.Fatalf("second worker read %d lines, want the %d after the checkpoint: %+v\n%s", rep.Lines, 16315-cp.Line, rep, b.log())
	}

	wantAllVersion1(t, filepath.Join(w.dir, "store"), "Patient", 100)
	lineOf := lineIDs(t, s.observations)
	final := storeVersions(t, filepath.Join(w.dir, "store"), "Observation")
	if len(final) != 16315 {
		t.Fatalf("store holds %d Observations, want 16315", len(final))
	}
	bad := 0
	for id, line := range lineOf {
		want := 1
		if _, ok := loadedBefore[id]; ok && line > cp.Line {
			want = 2 // loaded, not yet checkpointed, loaded again
		}
		if final[id] != want {
			if bad++; bad <= 5 {
				t.Errorf("Observation at line %d: version %d, want %d", line, final[id], want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d Observations with an unexpected version", bad)
	}
}

// waitReady waits until a worker's /readyz answers 200.
func waitReady(t *testing.T, addr string, p *flProc) {
	t.Helper()
	waitFor(t, time.Minute, func() bool {
		if p.exited() {
			t.Fatalf("worker exited\n%s", p.log())
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// Issue 5: a nightly batch fanned out with `fhirload enqueue` is shared by
// two `watch` workers writing to one store: each takes part of the messages,
// together they load everything exactly once, and the queue ends empty.
func TestEnqueueFansOutToTwoWorkers(t *testing.T) {
	m := newMotoWorld(t)
	q := m.queue(t, "fanout", false)
	s := loadSample(t)
	m.put(t, "batch/part-00.ndjson.gz", gzipBytes(t, joinLines(s.patients)))
	for i, p := range splitLines(s.observations, 9) {
		m.put(t, fmt.Sprintf("batch/part-%02d.ndjson", i+1), joinLines(p))
	}
	store := serveStore(t, filepath.Join(t.TempDir(), "store"))
	// Paced workers that take one object at a time: neither can finish the
	// batch before the other has polled.
	w := flowWorkspace(t, fmt.Sprintf("url: %q, auth: none, write_units_per_second: 4000", store.base),
		m.awsYAML()+fmt.Sprintf("source: {queue_url: %q, wait_seconds: 1, visibility_timeout: 30s, objects: 1}\n", q))

	var workers []*flProc
	var reports []string
	for i := range 2 {
		addr := metricsAddr(t)
		reports = append(reports, filepath.Join(w.dir, fmt.Sprintf("worker-%d.json", i)))
		p := startFhirload(t, w.dir, "watch", "--config", w.config, "--metrics-addr", addr, "--report", reports[i])
		waitReady(t, addr, p)
		workers = append(workers, p)
	}
	code, out := runFhirload(t, w.dir, "enqueue", "--config", w.config, "--queue", q, "s3://"+m.bucket+"/batch/")
	if code != 0 || !strings.Contains(out, "enqueued 10 objects") {
		t.Fatalf("enqueue: exit %d\n%s", code, out)
	}
	m.waitDrained(t, q, 2*time.Minute, workers...)

	var objects, lines, created int64
	for i, p := range workers {
		if code := p.stop(t); code != 143 {
			t.Fatalf("worker %d exit %d, want 143\n%s", i, code, p.log())
		}
		rep := readReport(t, reports[i])
		t.Logf("worker %d: %d objects, %d lines", i, rep.Objects, rep.Lines)
		if !rep.Reconciles() || rep.DeadLettered != 0 || rep.Objects == 0 {
			t.Errorf("worker %d did not share the work: %+v", i, rep)
		}
		objects, lines, created = objects+rep.Objects, lines+rep.Lines, created+rep.Created
	}
	if objects != 10 || lines != 16415 || created != 16415 {
		t.Fatalf("workers together: %d objects, %d lines, %d created; want 10, 16415, 16415", objects, lines, created)
	}
	if p, o := store.count("Patient"), store.count("Observation"); p != 100 || o != 16315 {
		t.Fatalf("store holds %d Patients and %d Observations, want 100 and 16315", p, o)
	}
	wantAllVersion1(t, store.dir, "Patient", 100)
	wantAllVersion1(t, store.dir, "Observation", 16315)
}
