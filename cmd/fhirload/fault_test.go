package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/pipeline"
)

// faultWorkspace is a workspace loading into the FHIR server at base, with a
// retry budget long enough for a hostile network.
func faultWorkspace(t *testing.T, base string) workspace {
	t.Helper()
	w := newWorkspace(t, fmt.Sprintf("url: %q, auth: none", base), "")
	b, err := os.ReadFile(w.config)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("max_elapsed: 5s"), []byte("max_elapsed: 5m"), 1)
	if err := os.WriteFile(w.config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// runReport runs the built binary in w with env added to its environment
// (bounded: a stalled run fails the test instead of hanging it) and returns
// its exit code, report and stderr.
func runReport(t *testing.T, w workspace, env []string, limit time.Duration, args ...string) (int, *pipeline.Report, string) {
	t.Helper()
	report := filepath.Join(w.dir, "report-bin.json")
	abs := make([]string, 0, len(args))
	for _, a := range args {
		if p, err := filepath.Abs(a); err == nil && !strings.HasPrefix(a, "s3://") && a != args[0] {
			a = p
		}
		abs = append(abs, a)
	}
	p := startProcess(t, fhirloadBinary(t), w.dir, env, append([]string{abs[0], "--config", w.config, "--report", report}, abs[1:]...)...)
	code := p.wait(t, limit)
	b, err := os.ReadFile(report)
	if err != nil {
		return code, nil, p.log()
	}
	var rep pipeline.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Reconciles() {
		t.Errorf("report does not reconcile: %+v", rep)
	}
	return code, &rep, p.log()
}

// assertLoadedOnce checks that the (chaos-free) store holds exactly counts
// resources of each type, none at a version above maxVersion(type/id).
func assertLoadedOnce(t *testing.T, st *storeClient, counts map[string]int, maxVersion func(ref string) int) {
	t.Helper()
	for typ, want := range counts {
		vs := st.versions(typ)
		if len(vs) != want {
			t.Errorf("%d %ss stored, want %d", len(vs), typ, want)
		}
		over := 0
		for id, v := range vs {
			n, _ := strconv.Atoi(v)
			if m := maxVersion(typ + "/" + id); n < 1 || n > m {
				if over++; over <= 3 {
					t.Errorf("%s/%s is at version %s, but was sent successfully %d times", typ, id, v, m)
				}
			}
		}
	}
}

// TestChaosServerLoadsEverythingOnce loads the sample's Patients and 3,000
// of its Observations through `fhirload serve --chaos-429 0.2 --chaos-500
// 0.05`: injected failures happen before any write, so every resource must
// end at version 1 and the run must report retries and no dead letter.
func TestChaosServerLoadsEverythingOnce(t *testing.T) {
	t.Parallel() // a slow end-to-end test that mostly waits on its processes: see parallel_test.go
	dir := t.TempDir()
	data := filepath.Join(dir, "served")
	chaos := serveStore(t, data, "--chaos-429", "0.2", "--chaos-500", "0.05")
	w := faultWorkspace(t, chaos.base)
	obs := filepath.Join(dir, "observations.ndjson")
	must(t, os.WriteFile(obs, firstLines(t, sampleObservations, 3000), 0o644))
	code, rep, stderr := runReport(t, w, nil, 4*time.Minute, "run", samplePatients, obs)
	if code != 0 || rep == nil {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if rep.Lines != 3100 || rep.Loaded != 3100 || rep.DeadLettered != 0 || rep.Retries == 0 {
		t.Fatalf("report %+v", rep)
	}
	t.Logf("%d retries, %d throttled", rep.Retries, rep.Throttled)
	chaos.close(t)
	st := serveStore(t, data)
	defer st.close(t)
	assertLoadedOnce(t, st.storeClient, map[string]int{"Patient": 100, "Observation": 3000}, func(string) int { return 1 })
}

// firstLines returns the first n lines of a file (gzipped or not), each
// with its newline.
func firstLines(t *testing.T, path string, n int) []byte {
	t.Helper()
	lines := testlines.All(t, path)
	if len(lines) < n {
		t.Fatalf("%s has %d lines, fewer than %d", path, len(lines), n)
	}
	return append(bytes.Join(lines[:n], []byte("\n")), '\n')
}

// flakyProxy is a TCP proxy that breaks connections: connection n is cut
// mid-request (n%4 == 1) or mid-response (n%4 == 2) after a random number
// of bytes; others pass. It parses what it forwarded whole to the server and
// counts, per "Type/id", the times a resource was sent successfully.
type flakyProxy struct {
	l        net.Listener
	upstream string
	rng      *rand.Rand
	mu       sync.Mutex
	sent     map[string]int
	cuts     map[string]int
	wg       sync.WaitGroup
	conns    int
}

func newFlakyProxy(t *testing.T, upstream string, seed uint64) *flakyProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{l: l, upstream: upstream, rng: rand.New(rand.NewPCG(seed, seed)), sent: map[string]int{}, cuts: map[string]int{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// close stops accepting and waits (bounded) for the relays to end, so every
// request forwarded has been counted.
func (p *flakyProxy) close() {
	p.l.Close()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
}

func (p *flakyProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		n := p.conns
		p.conns++
		limit := int64(1 << 62)
		mode := ""
		switch n % 4 {
		case 1:
			mode, limit = "request", 1+p.rng.Int64N(256<<10)
		case 2:
			mode, limit = "response", 1+p.rng.Int64N(64<<10)
		}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(c, mode, limit) })
	}
}

// serve relays one connection; mode says which direction is cut after limit bytes.
func (p *flakyProxy) serve(c net.Conn, mode string, limit int64) {
	defer c.Close()
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer u.Close()
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() { p.parse(pr) })
	up, down := int64(1<<62), int64(1<<62)
	switch mode {
	case "request":
		up = limit
	case "response":
		down = limit
	}
	done := make(chan string, 2)
	go func() {
		// Client to server, teed to the parser: only bytes the server got.
		_, _ = io.Copy(io.MultiWriter(u, pw), io.LimitReader(c, up))
		pw.Close()
		done <- "request"
	}()
	go func() {
		_, _ = io.Copy(c, io.LimitReader(u, down))
		done <- "response"
	}()
	first := <-done
	// Either side ending ends the connection (a cut closes both at once).
	c.Close()
	u.Close()
	<-done
	wg.Wait()
	if mode != "" && first == mode {
		p.mu.Lock()
		p.cuts[mode]++
		p.mu.Unlock()
	}
}

// parse reads the HTTP requests that reached the server whole and counts the
// resources they carried.
func (p *flakyProxy) parse(r io.Reader) {
	defer io.Copy(io.Discard, r) //nolint:errcheck // drain so the relay never blocks
	br := bufio.NewReader(r)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		var refs []string
		switch req.Method {
		case http.MethodPut:
			i := strings.Index(req.URL.Path, "/r4/")
			refs = append(refs, req.URL.Path[i+4:])
		case http.MethodPost:
			var b struct {
				Entry []struct{ Request struct{ URL string } }
			}
			if json.Unmarshal(body, &b) == nil {
				for _, e := range b.Entry {
					refs = append(refs, e.Request.URL)
				}
			}
		}
		p.mu.Lock()
		for _, r := range refs {
			p.sent[r]++
		}
		p.mu.Unlock()
	}
}

// TestFlakyNetworkLoadsEverythingOnce loads the sample's Patients and 4,000
// of its Observations through a proxy that cuts connections mid-request and
// mid-response: everything loads, nothing is dead-lettered, and no resource
// has more versions than the times it reached the server whole.
func TestFlakyNetworkLoadsEverythingOnce(t *testing.T) {
	t.Parallel() // a slow end-to-end test that mostly waits on its processes: see parallel_test.go
	rng := crashSeed(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "served")
	st := serveStore(t, data)
	defer st.close(t)
	upstream := strings.TrimPrefix(strings.Split(st.base, "/datastore")[0], "http://")
	proxy := newFlakyProxy(t, upstream, rng.Uint64())
	w := faultWorkspace(t, "http://"+proxy.l.Addr().String()+"/datastore/local/r4/")
	obs := filepath.Join(dir, "observations.ndjson")
	must(t, os.WriteFile(obs, firstLines(t, sampleObservations, 4000), 0o644))
	code, rep, stderr := runReport(t, w, nil, 4*time.Minute, "run", samplePatients, obs)
	if code != 0 || rep == nil {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if rep.Lines != 4100 || rep.Loaded != 4100 || rep.DeadLettered != 0 {
		t.Fatalf("report %+v", rep)
	}
	proxy.close()
	proxy.mu.Lock()
	cuts, conns := fmt.Sprint(proxy.cuts), proxy.conns
	proxy.mu.Unlock()
	t.Logf("%d connections, cuts %s, %d retries", conns, cuts, rep.Retries)
	if proxy.cuts["request"] == 0 || proxy.cuts["response"] == 0 {
		t.Fatalf("the proxy cut no request or no response (%s): the test proves nothing", cuts)
	}
	proxy.mu.Lock()
	sent := proxy.sent
	proxy.mu.Unlock()
	assertLoadedOnce(t, st.storeClient, map[string]int{"Patient": 100, "Observation": 4000}, func(ref string) int { return sent[ref] })
}
