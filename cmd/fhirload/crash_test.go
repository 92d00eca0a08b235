package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/pipeline"
)

// crashSeed is the seed of the kill points: FHIRLOAD_CRASH_SEED replays a
// failing run, else a new seed is drawn and logged.
func crashSeed(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FHIRLOAD_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FHIRLOAD_CRASH_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("random choices seeded with %d (rerun with FHIRLOAD_CRASH_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// crashInput is a data set in two versions: what was loaded before (v1) and
// what the crashing runs send (v2), with known invalid lines.
type crashInput struct {
	files   map[string][]byte         // file name -> v2 content
	old     map[string][]byte         // file name -> v1 content
	want    map[string]map[string]any // "Type/id" -> v2 resource, meta removed
	invalid map[string][]int64        // file name -> its invalid line numbers
}

// makeCrashInput builds 3 files from the pathling test data (9 Patients,
// 1502 Observations copied 4 times under new ids): v1 as is, v2 with every
// resource changed and 5 invalid lines in each file at places drawn from rng.
func makeCrashInput(t *testing.T, rng *rand.Rand) crashInput {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "shared", "fhir", "pathling")
	var resources [][]byte
	resources = append(resources, testlines.All(t, filepath.Join(dir, "Patient.ndjson"))...)
	obs := testlines.All(t, filepath.Join(dir, "Observation.ndjson.gz"))
	for k := range 4 {
		for _, o := range obs {
			var m map[string]any
			if err := json.Unmarshal(o, &m); err != nil {
				t.Fatal(err)
			}
			m["id"] = fmt.Sprintf("%s-%d", m["id"], k)
			b, _ := json.Marshal(m)
			resources = append(resources, b)
		}
	}
	in := crashInput{files: map[string][]byte{}, old: map[string][]byte{}, want: map[string]map[string]any{}, invalid: map[string][]int64{}}
	const nfiles = 3
	per := (len(resources) + nfiles - 1) / nfiles
	bad := 0
	for f := range nfiles {
		name := fmt.Sprintf("part-%d.ndjson", f)
		chunk := resources[f*per : min((f+1)*per, len(resources))]
		badAt := map[int]bool{}
		for len(badAt) < 5 {
			badAt[rng.IntN(len(chunk)+5)] = true
		}
		var v1, v2 bytes.Buffer
		no := int64(0)
		for i := 0; len(chunk) > 0 || badAt[i]; i++ {
			no++
			if badAt[i] {
				bad++
				// Only v2 has invalid lines: the dead letters are all from the crashing runs.
				v2.WriteString(invalidLine(bad) + "\n")
				in.invalid[name] = append(in.invalid[name], no)
				continue
			}
			r := chunk[0]
			chunk = chunk[1:]
			v1.Write(r)
			v1.WriteByte('\n')
			// v2 changes every resource: a rerun must leave v2 everywhere.
			r2 := bytes.Replace(r, []byte(`{"resourceType":`), []byte(`{"implicitRules":"http://example.org/rules/v2","resourceType":`), 1)
			v2.Write(r2)
			v2.WriteByte('\n')
			var m map[string]any
			if err := json.Unmarshal(r2, &m); err != nil {
				t.Fatal(err)
			}
			delete(m, "meta")
			in.want[fmt.Sprintf("%s/%s", m["resourceType"], m["id"])] = m
		}
		in.files[name], in.old[name] = v2.Bytes(), v1.Bytes()
	}
	return in
}

func invalidLine(n int) string {
	switch n % 3 {
	case 0:
		return fmt.Sprintf(`{"resourceType":"Patient","id":"broken-%d","name":[{"family":`, n)
	case 1:
		return fmt.Sprintf(`{"resourceType":"Observation","id":"invalid-%d","status":"not-a-status","code":{"text":"x"}}`, n)
	}
	return fmt.Sprintf(`{"resourceType":"Patient","id":"bad id %d","name":[{"family":"X","given":["Y"]}]}`, n)
}

// killAfter SIGKILLs p after d unless it exited first; it reports whether
// the kill landed while p was running.
func (p *flProc) killAfter(t *testing.T, d time.Duration) bool {
	t.Helper()
	select {
	case <-p.done:
		return false
	case <-time.After(d):
	}
	p.kill(t)
	return true
}

// crashRounds starts args rounds times and SIGKILLs each at a random point
// within span.
func crashRounds(t *testing.T, rng *rand.Rand, rounds int, span time.Duration, start func() *flProc) {
	t.Helper()
	landed := 0
	for i := range rounds {
		d := time.Duration(rng.Int64N(int64(span)))
		p := start()
		if p.killAfter(t, d) {
			landed++
			t.Logf("round %d: SIGKILL after %v", i, d)
		} else {
			t.Logf("round %d: finished before the kill at %v (exit %d)", i, d, p.cmd.ProcessState.ExitCode())
		}
	}
	if landed == 0 {
		t.Logf("no kill landed mid-run with this seed")
	}
}

// assertStoreEqualsInput checks that the store holds exactly the input's
// resources, each as sent (meta aside), and that the dead letters are
// exactly the invalid lines, each once (a killed run may have stored a line
// that the rerun dead-lettered again: the store shows only the newest).
func assertStoreEqualsInput(t *testing.T, w workspace, in crashInput, uriOf func(name string) string) {
	t.Helper()
	stored := storeBodies(t, filepath.Join(w.dir, "store"))
	mismatched := 0
	for ref, want := range in.want {
		body, ok := stored[ref]
		if !ok {
			t.Errorf("%s: not in the store", ref)
			mismatched++
			continue
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		delete(got, "meta")
		if !reflect.DeepEqual(got, want) {
			if mismatched++; mismatched <= 3 {
				t.Errorf("%s: stored content differs from the last version sent", ref)
			}
		}
	}
	if mismatched > 0 {
		t.Fatalf("%d of %d resources missing or not the last version sent", mismatched, len(in.want))
	}
	if len(stored) != len(in.want) {
		t.Fatalf("the store holds %d resources, the input %d", len(stored), len(in.want))
	}

	want := map[string]bool{}
	for name, lines := range in.invalid {
		for _, no := range lines {
			want[fmt.Sprintf("%s:%d", uriOf(name), no)] = true
		}
	}
	got := map[string]bool{}
	for _, e := range listDeadLetters(t, w) {
		if e.Reason != "parse" && e.Reason != "invalid" {
			t.Errorf("unexpected dead letter %s:%d %s: %s", e.Source.URI, e.Source.Line, e.Reason, e.Message)
		}
		k := fmt.Sprintf("%s:%d", e.Source.URI, e.Source.Line)
		if got[k] {
			t.Errorf("dead letter %s listed twice", k)
		}
		got[k] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("dead letters %v\nwant the invalid lines %v", sortedKeys(got), sortedKeys(want))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// finalRun runs the command to completion and checks the report.
func finalRun(t *testing.T, w workspace, env []string, args ...string) *pipeline.Report {
	t.Helper()
	code, rep, log := runReport(t, w, env, 3*time.Minute, args...)
	if rep == nil {
		t.Fatalf("exit %d, no report\n%s", code, log)
	}
	if code != 2 || rep.Fatal != "" || !rep.Reconciles() {
		t.Fatalf("final run: exit %d, report %+v\n%s", code, *rep, log)
	}
	return rep
}

const crashTarget = "concurrency: 4, batch_size: 50"

func TestCrashDuringRunLocal(t *testing.T) {
	t.Parallel() // a slow end-to-end test that mostly waits on its processes: see parallel_test.go
	bin := fhirloadBinary(t)
	rng := crashSeed(t)
	in := makeCrashInput(t, rng)
	w := newWorkspace(t, crashTarget, "")
	var v1, v2 []string
	for name := range in.files {
		p1, p2 := filepath.Join(w.dir, "v1", name), filepath.Join(w.dir, "v2", name)
		for p, b := range map[string][]byte{p1: in.old[name], p2: in.files[name]} {
			_ = os.MkdirAll(filepath.Dir(p), 0o700)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		v1, v2 = append(v1, p1), append(v2, p2)
	}
	slices.Sort(v1)
	slices.Sort(v2)
	// The store starts with v1 of every resource.
	if code, _, stderr := w.runBin(t, append([]string{"run"}, v1...)...); code != 0 {
		t.Fatalf("v1 load: exit %d\n%s", code, stderr)
	}
	crashRounds(t, rng, 5, 900*time.Millisecond, func() *flProc {
		return startProcess(t, bin, w.dir, nil, append([]string{"run", "--config", w.config}, v2...)...)
	})
	rep := finalRun(t, w, nil, append([]string{"run"}, v2...)...)
	if rep.Loaded != int64(len(in.want)) {
		t.Errorf("final run loaded %d, want %d", rep.Loaded, len(in.want))
	}
	assertStoreEqualsInput(t, w, in, func(name string) string { return "file://" + filepath.Join(w.dir, "v2", name) })
}

// crashS3 is the start of the S3 crash tests: the crash input, its old
// version under v1/ and its new one under v2/ of a moto bucket.
func crashS3(t *testing.T, inProcess bool) (*rand.Rand, crashInput, *motoWorld) {
	t.Helper()
	rng := crashSeed(t)
	in := makeCrashInput(t, rng)
	m := newMotoWorldForProcesses(t)
	if inProcess {
		m = newMotoWorld(t)
	}
	for prefix, files := range map[string]map[string][]byte{"v1/": in.old, "v2/": in.files} {
		for name, b := range files {
			m.put(t, prefix+name, b)
		}
	}
	return rng, in, m
}

func TestCrashDuringRunS3(t *testing.T) {
	t.Parallel() // a slow end-to-end test that mostly waits on its processes: see parallel_test.go
	bin := fhirloadBinary(t)
	rng, in, m := crashS3(t, false)
	w := newWorkspace(t, crashTarget, m.awsYAML())
	if code, _, stderr := runReport(t, w, flowEnv, 3*time.Minute, "run", "s3://"+m.bucket+"/v1/"); code != 0 {
		t.Fatalf("v1 load: exit %d\n%s", code, stderr)
	}
	src := "s3://" + m.bucket + "/v2/"
	crashRounds(t, rng, 5, 900*time.Millisecond, func() *flProc {
		return startProcess(t, bin, w.dir, flowEnv, "run", "--config", w.config, src)
	})
	rep := finalRun(t, w, flowEnv, "run", src)
	if rep.Loaded != int64(len(in.want)) {
		t.Errorf("final run loaded %d, want %d", rep.Loaded, len(in.want))
	}
	assertStoreEqualsInput(t, w, in, func(name string) string { return src + name })
}

func TestCrashDuringWatch(t *testing.T) {
	bin := fhirloadBinary(t)
	rng, in, m := crashS3(t, true) // enqueue runs in-process
	queue := m.queue(t, "crash", false)
	w := flowWorkspace(t, crashTarget, m.awsYAML()+fmt.Sprintf("source: {queue_url: %q, visibility_timeout: 2s, wait_seconds: 1}\n", queue))
	if code, _, stderr := w.runBin(t, "run", "s3://"+m.bucket+"/v1/"); code != 0 {
		t.Fatalf("v1 load: exit %d\n%s", code, stderr)
	}
	var out, errb bytes.Buffer
	if code := realMain([]string{"enqueue", "--config", w.config, "s3://" + m.bucket + "/v2/"}, &out, &errb); code != 0 {
		t.Fatalf("enqueue: %d %s", code, errb.String())
	}
	watch := func() *flProc {
		return startProcess(t, bin, w.dir, flowEnv, "watch", "--config", w.config, "--metrics-addr", "", "--report", filepath.Join(w.dir, "watch-report.json"))
	}
	crashRounds(t, rng, 4, 2500*time.Millisecond, watch)
	// The last worker runs until the queue is drained, then stops on SIGTERM.
	p := watch()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(p.log(), "watching") { // its signal handler is in place
		if time.Now().After(deadline) {
			t.Fatalf("watch did not start\n%s", p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.waitDrained(t, queue, time.Until(deadline), p)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, time.Minute); code != 143 {
		t.Fatalf("watch exit %d\n%s", code, p.log())
	}
	assertStoreEqualsInput(t, w, in, func(name string) string { return "s3://" + m.bucket + "/v2/" + name })
}
