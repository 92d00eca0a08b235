package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/pipeline"
)

// startStore serves a file-backed store on loopback (without auth unless
// opts.Auth says otherwise) and returns its base URL and a counter (which
// needs Auth "none").
func startStore(t *testing.T, dir string, opts fhirstore.Options) (string, *storeClient) {
	t.Helper()
	opts.Dir = dir
	if opts.Auth == "" {
		opts.Auth = "none"
	}
	srv, err := fhirstore.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done; _ = srv.Close() })
	base := "http://" + l.Addr().String() + "/datastore/local/r4/"
	return base, &storeClient{t: t, base: base}
}

// SIGTERM during a run: the process drains and exits 143 with a reconciled
// report; a rerun completes the data with nothing lost or duplicated.
func TestSIGTERMDuringRunDrainsAndRerunCompletes(t *testing.T) {
	bin := fhirloadBinary(t)
	dir := t.TempDir()
	// A slow server (latency per request) so that the signal lands mid-run.
	srv := serveStore(t, filepath.Join(dir, "store"), "--chaos-latency", "60ms")
	base, st := srv.base, srv.storeClient
	cfg := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`target: {url: %q, auth: none, batch_size: 10, concurrency: 2}
deadletter: {url: "file://%s/dl"}
log: {level: warn}
`, base, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(dir, "report.json")
	cmd := exec.Command(bin, "run", "--config", cfg, "--report", report, absPath(t, samplePatients), absPath(t, sampleObservations))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return st.count("Observation")+st.count("Patient") >= 50 })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("still running 10 s after SIGTERM\n%s", stderr.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 143 {
		t.Fatalf("exit %d, want 143\n%s", code, stderr.String())
	}
	rep := readReport(t, report)
	if !rep.Interrupted || !rep.Reconciles() || rep.Lines == 0 || rep.Lines >= 16415 {
		t.Fatalf("report after SIGTERM: %+v", rep)
	}
	// Every line the interrupted run read has an outcome: loaded ones are in the store.
	if got := st.count("Patient") + st.count("Observation"); int64(got) < rep.Loaded {
		t.Fatalf("store holds %d resources, report says %d loaded", got, rep.Loaded)
	}

	// Rerun at full speed into the same store: the server without its
	// latency, the default batches.
	srv.close(t)
	srv = serveStoreAt(t, srv.addr, srv.dir)
	st = srv.storeClient
	fast := filepath.Join(dir, "fast.yaml")
	if err := os.WriteFile(fast, []byte(fmt.Sprintf("target: {url: %q, auth: none}\ndeadletter: {url: \"file://%s/dl\"}\nlog: {level: warn}\n", base, dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, "run", "--config", fast, "--report", report, absPath(t, samplePatients), absPath(t, sampleObservations))
	if out, err := cmd.CombinedOutput(); err != nil {
		// A slow store: allow the rerun; the exit code is what matters.
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	rep = readReport(t, report)
	if rep.Loaded != 16415 || rep.DeadLettered != 0 {
		t.Fatalf("rerun report %+v", rep)
	}
	if p, o := st.count("Patient"), st.count("Observation"); p != 100 || o != 16315 {
		t.Fatalf("store holds %d Patients and %d Observations", p, o)
	}
}

func readReport(t *testing.T, path string) *pipeline.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var r pipeline.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// phiValues collects, from FHIR NDJSON, the values that must never reach logs:
// names, birth dates, identifier values, telecom and address values, and
// observation values.
func phiValues(t *testing.T, paths ...string) map[string]bool {
	t.Helper()
	vals := map[string]bool{}
	add := func(s string) {
		if len(s) >= 4 {
			vals[s] = true
		}
	}
	for _, p := range paths {
		testlines.Each(t, p, func(line []byte) bool {
			var r struct {
				ID   string
				Name []struct {
					Family string
					Given  []string
				}
				BirthDate  string
				Identifier []struct{ Value string }
				Telecom    []struct{ Value string }
				Address    []struct {
					Line       []string
					City       string
					PostalCode string
				}
				ValueQuantity *struct {
					Value json.Number
				}
				ValueString string
				Component   []struct {
					ValueQuantity *struct{ Value json.Number }
				}
			}
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber()
			if err := dec.Decode(&r); err != nil {
				t.Fatal(err)
			}
			for _, n := range r.Name {
				add(n.Family)
				for _, g := range n.Given {
					add(g)
				}
			}
			add(r.BirthDate)
			for _, i := range r.Identifier {
				// Synthea uses the resource id as one identifier's value: ids
				// may be logged (they are how an operator finds a resource).
				if i.Value != r.ID {
					add(i.Value)
				}
			}
			for _, c := range r.Telecom {
				add(c.Value)
			}
			for _, a := range r.Address {
				for _, l := range a.Line {
					add(l)
				}
				add(a.City)
			}
			if r.ValueQuantity != nil && strings.Contains(string(r.ValueQuantity.Value), ".") {
				add(string(r.ValueQuantity.Value))
			}
			add(r.ValueString)
			for _, c := range r.Component {
				if c.ValueQuantity != nil && strings.Contains(string(c.ValueQuantity.Value), ".") {
					add(string(c.ValueQuantity.Value))
				}
			}
			return true
		})
	}
	return vals
}

// The redaction guard: the shared Synthea data, loaded with debug logging in
// both formats and with failures of every kind, leaves no PHI in the output.
func TestNoPHIInLogsOrErrors(t *testing.T) {
	phi := phiValues(t, samplePatients, sampleObservations)
	if len(phi) < 1000 {
		t.Fatalf("only %d PHI values collected: the guard would prove nothing", len(phi))
	}
	for _, format := range []string{"json", "console"} {
		t.Run(format, func(t *testing.T) {
			w := newWorkspace(t, "", fmt.Sprintf("log: {level: debug, format: %s}\n", format))
			// Failing lines that carry PHI: a Patient without family, a bad birth
			// date, a duplicate identifier under another id, an invalid observation value.
			bad := filepath.Join(w.dir, "bad.ndjson")
			lines := []string{
				`{"resourceType":"Patient","id":"x1","name":[{"given":["Zebediah"]}],"birthDate":"1931-07-14"}`,
				`{"resourceType":"Patient","id":"x2","name":[{"family":"Quimby","given":["Ottoline"]}],"birthDate":"1931-02-30"}`,
				`{"resourceType":"Observation","id":"x3","status":"final","code":{"text":"t"},"valueQuantity":{"value":"98.76"}}`,
				`{"resourceType":"Patient","id":"x4","identifier":[{"system":"https://github.com/synthetichealth/synthea","value":"6c5d9ca9-54d7-42f5-bfae-a7c19cd217f2"}],"name":[{"family":"Quimby","given":["Ottoline"]}]}`,
			}
			if err := os.WriteFile(bad, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, v := range []string{"Zebediah", "1931-07-14", "Quimby", "Ottoline", "1931-02-30", "98.76"} {
				phi[v] = true
			}
			code, rep, log := w.runBin(t, "run", absPath(t, samplePatients), absPath(t, sampleObservations), bad)
			if code != 2 || rep == nil {
				t.Fatalf("exit %d\n%s", code, tail(log))
			}
			if rep.DeadLetterReasons["duplicate"] != 1 || rep.DeadLetterReasons["invalid"] != 3 {
				t.Fatalf("want 1 duplicate and 3 invalid, got %v", rep.DeadLetterReasons)
			}
			// The operator's listing must be clean too.
			var out, errb bytes.Buffer
			realMain([]string{"deadletter", "ls", "--config", w.config}, &out, &errb)
			text := log + out.String() + errb.String()
			if !strings.Contains(text, "dead-lettered") {
				t.Fatalf("no dead-letter log events: the guard would prove nothing\n%s", tail(text))
			}
			for v := range phi {
				if containsToken(text, v) {
					t.Errorf("PHI value %q appears in the output", v)
				}
			}
		})
	}
}

// containsToken finds v not glued to other digits or letters (so that a
// value such as 72.5 is not found inside a duration like 172.55).
func containsToken(text, v string) bool {
	if !strings.Contains(text, v) {
		return false
	}
	re := regexp.MustCompile(`(^|[^0-9A-Za-z.])` + regexp.QuoteMeta(v) + `($|[^0-9A-Za-z])`)
	return re.MatchString(text)
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

func TestVersionAndConfigCheck(t *testing.T) {
	var out, errb bytes.Buffer
	if code := realMain([]string{"version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "go1.") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	out.Reset()
	if code := realMain([]string{"config", "check", "--config", filepath.Join("..", "..", "pipeline.yaml")}, &out, &errb); code != 0 {
		t.Fatalf("config check: %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "batch_size: 100") {
		t.Fatalf("effective config:\n%s", out.String())
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("target:\n  url: embedded\n  colour: red\n"), 0o600)
	errb.Reset()
	if code := realMain([]string{"config", "check", "--config", bad}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "line 3") || !strings.Contains(errb.String(), "colour") {
		t.Fatalf("bad config: %d %q", code, errb.String())
	}
}

// metricValue reads one sample from a Prometheus text exposition.
func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(l, name)), 64)
			return v
		}
	}
	return -1
}
