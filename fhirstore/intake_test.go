package fhirstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// liveServer is a Server behind Serve (a real http.Server with its timeouts)
// on a loopback listener.
type liveServer struct {
	srv  *Server
	addr string
	stop func(t testing.TB) // stops serving and closes the server; idempotent
}

func startLive(t testing.TB, opts Options) *liveServer {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Keys == nil && opts.Auth != "none" {
		opts.Keys = []Key{{AccessKeyID: testKeyID, SecretAccessKey: testSecret, Scopes: []string{"system/*.*"}}}
	}
	srv, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	var once sync.Once
	ls := &liveServer{srv: srv, addr: l.Addr().String()}
	ls.stop = func(t testing.TB) {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			if err := srv.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(func() { ls.stop(t) })
	return ls
}

// floodResult is what one hostile connection saw.
type floodResult struct {
	status int   // 0: no answer before the client's timeout
	closed bool  // the server closed the connection after answering
	err    error // why there was no answer
}

// flood opens n connections to addr that each send head (request line and
// headers, announcing a body) and then up to send bytes of the body, and
// never the rest. Each waits up to clientTimeout for an answer and for the
// server to close the connection. peak is the largest HeapInuse seen while
// the connections were open (the server runs in this process).
func flood(t *testing.T, addr, head string, send, n int, clientTimeout time.Duration) (res []floodResult, peak uint64) {
	t.Helper()
	// A soft memory limit makes the collector keep up with the flood's
	// garbage, so that the peak measures what the server holds, not how far
	// the collector lags on a busy machine (272 MiB once, with the race
	// detector beside another package's tests). A server that buffers what
	// the bodies announce (32 MiB each) cannot stay under it.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(128 << 20))
	var maxHeap atomic.Uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		for {
			cur := maxHeap.Load()
			if ms.HeapInuse <= cur || maxHeap.CompareAndSwap(cur, ms.HeapInuse) {
				return
			}
		}
	}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for {
			sample()
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	})
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'a'
	}
	res = make([]floodResult, n)
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		wg.Go(func() {
			deadline := time.Now().Add(clientTimeout)
			_ = c.SetDeadline(deadline)
			// The writer stops at the first error: the server may close
			// the connection while it is still sending.
			go func() {
				if _, err := io.WriteString(c, head); err != nil {
					return
				}
				for left := send; left > 0; {
					k := min(left, len(chunk))
					if _, err := c.Write(chunk[:k]); err != nil {
						return
					}
					left -= k
				}
			}()
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				res[i].err = err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			res[i].status = resp.StatusCode
			// Closed: the next read ends (EOF or reset) before the deadline.
			_, err = br.ReadByte()
			var ne net.Error
			res[i].closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
		})
	}
	wg.Wait()
	sample() // the connections are all still open here
	close(stop)
	sampler.Wait()
	for _, c := range conns {
		c.Close()
	}
	return res, maxHeap.Load()
}

const floodAnnounce = 32 << 20

func floodHead(addr, extra string) string {
	return "PUT /datastore/local/r4/Patient/p1 HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/fhir+json\r\n" +
		extra + fmt.Sprintf("Content-Length: %d\r\n\r\n", floodAnnounce)
}

// TestUnsignedBodyFlood is issue 14's attack: 40 unsigned connections each
// announce a 32 MiB body, send its first 64 KiB and stall. Every one is
// answered 401 and closed before the client's 2 s timeout, without its body
// being read or buffered: the server's heap stays far below 256 MiB (the
// build before the fix read each body into a buffer of the announced size,
// 1.25 GiB in all, and never answered).
func TestUnsignedBodyFlood(t *testing.T) {
	ls := startLive(t, Options{})
	for _, c := range []struct{ name, extra string }{
		{"unsigned", ""},
		{"unknown key", forgedAuth("AKIDNOBODY", true)},
		{"wrong signature over a declared payload hash", forgedAuth(testKeyID, true)},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, peak := flood(t, ls.addr, floodHead(ls.addr, c.extra), 64<<10, 40, 2*time.Second)
			for i, r := range res {
				if r.status != http.StatusUnauthorized || !r.closed {
					t.Errorf("connection %d: status %d, closed %v (%v); want 401 and closed before the client's timeout", i, r.status, r.closed, r.err)
				}
			}
			if peak > 256<<20 {
				t.Errorf("server heap peaked at %d MiB under the flood, want ≤ 256 MiB", peak>>20)
			}
			t.Logf("peak heap in use: %d MiB", peak>>20)
		})
	}
	// The server still serves signed traffic.
	req, _ := http.NewRequest("PUT", "http://"+ls.addr+"/datastore/local/r4/Patient/p1", strings.NewReader(patientJSON))
	req.Header.Set("Content-Type", contentTypeFHIR)
	signRequest(req, []byte(patientJSON), testKeyID, testSecret, testRegion, "", time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("signed PUT after the flood: %d", resp.StatusCode)
	}
}

// forgedAuth returns SigV4 headers with a current date, the access key id
// and a made-up signature; with declare, a made-up X-Amz-Content-Sha256.
func forgedAuth(keyID string, declare bool) string {
	now := time.Now().UTC().Format(amzDateFormat)
	signed := "host;x-amz-date"
	h := "X-Amz-Date: " + now + "\r\n"
	if declare {
		signed = "host;x-amz-content-sha256;x-amz-date"
		h += "X-Amz-Content-Sha256: " + strings.Repeat("ab", 32) + "\r\n"
	}
	return h + "Authorization: AWS4-HMAC-SHA256 Credential=" + keyID + "/" + now[:8] + "/us-east-1/healthlake/aws4_request, SignedHeaders=" +
		signed + ", Signature=" + strings.Repeat("0", 64) + "\r\n"
}

// TestBudgetBoundsBodyFlood: a body the server must read — anyone's under
// --auth none, and that of a request signed with a known key whose payload
// hash is not declared (the signature can only be checked at the body's
// end) — is bounded by the budget of buffered bytes and the body deadline.
// 40 connections announce 32 MiB and send all of it but one byte: two at a
// time fit the 64 MiB budget and are answered 408 when their deadline
// passes; a connection that waited a second for budget in vain gets 429
// with Retry-After. All are closed, and the heap stays under 256 MiB.
func TestBudgetBoundsBodyFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 64 MiB and waits for body deadlines; run without -short")
	}
	for _, c := range []struct {
		name  string
		auth  string
		extra string
	}{
		{"auth none", "none", ""},
		{"known key, payload hash not declared", "", forgedAuth(testKeyID, false)},
	} {
		t.Run(c.name, func(t *testing.T) {
			ls := startLive(t, Options{Auth: c.auth, BodyReadTimeout: time.Second})
			res, peak := flood(t, ls.addr, floodHead(ls.addr, c.extra), floodAnnounce-1, 40, 10*time.Second)
			counts := map[int]int{}
			for i, r := range res {
				counts[r.status]++
				if (r.status != http.StatusRequestTimeout && r.status != http.StatusTooManyRequests) || !r.closed {
					t.Errorf("connection %d: status %d, closed %v (%v); want 408 or 429, closed", i, r.status, r.closed, r.err)
				}
			}
			if counts[http.StatusRequestTimeout] == 0 || counts[http.StatusTooManyRequests] == 0 {
				t.Errorf("want some connections admitted (408 when their body stalled) and some refused for want of budget (429): %v", counts)
			}
			if peak > 256<<20 {
				t.Errorf("server heap peaked at %d MiB under the flood, want ≤ 256 MiB", peak>>20)
			}
			t.Logf("statuses %v, peak heap in use: %d MiB", counts, peak>>20)
		})
	}
}

// TestBodyAdmission: the budget and the deadline, one request at a time.
func TestBodyAdmission(t *testing.T) {
	ls := startLive(t, Options{Auth: "none", MaxBodyBytes: 1 << 20, MaxBufferedBytes: 1 << 20, BodyReadTimeout: 300 * time.Millisecond})
	base := "http://" + ls.addr + "/datastore/local/r4/"

	// A stalled body holds the whole budget until its deadline: meanwhile a
	// second request waits, then gets 429 with Retry-After.
	head := fmt.Sprintf("PUT /datastore/local/r4/Patient/p1 HTTP/1.1\r\nHost: %s\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n{", ls.addr, 1<<20)
	stalled, err := net.Dial("tcp", ls.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, head); err != nil {
		t.Fatal(err)
	}
	// Once the stalled request holds the whole budget, the next one waits;
	// the deadline (300 ms) is shorter than the wait (1 s), so it is
	// admitted after the stalled one's 408.
	for ls.srv.in.budget.TryAcquire(1) {
		ls.srv.in.budget.Release(1)
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := http.Post(base+"Patient", contentTypeFHIR, strings.NewReader(`{"resourceType":"Patient"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("request after a stalled one timed out: %d, want 201", resp.StatusCode)
	}
	_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	r, err := http.ReadResponse(bufio.NewReader(stalled), nil)
	if err != nil {
		t.Fatalf("stalled request: no answer: %v", err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusRequestTimeout || !bytes.Contains(b, []byte("did not arrive within")) {
		t.Errorf("stalled body: %d %s, want 408", r.StatusCode, b)
	}

	// A chunked body past MaxBodyBytes: 413, its reservation given back.
	ls = startLive(t, Options{Auth: "none", MaxBodyBytes: 1 << 20, MaxBufferedBytes: 1 << 20})
	base = "http://" + ls.addr + "/datastore/local/r4/"
	big := strings.NewReader(`{"resourceType":"Patient","x":"` + strings.Repeat("a", 2<<20) + `"}`)
	req, _ := http.NewRequest("POST", base+"Patient", io.NopCloser(big))
	req.Header.Set("Content-Type", contentTypeFHIR)
	req.ContentLength = -1
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: %d, want 413", resp.StatusCode)
	}
	if !ls.srv.in.budget.TryAcquire(1 << 20) {
		t.Fatal("the budget was not given back after 413")
	}
	ls.srv.in.budget.Release(1 << 20)
}

// TestBudgetBusy: a request that cannot get its share of the buffered-bytes
// budget within a second is answered 429 with Retry-After, before its body
// is read.
func TestBudgetBusy(t *testing.T) {
	ls := startLive(t, Options{Auth: "none", MaxBodyBytes: 1 << 20, MaxBufferedBytes: 1 << 20})
	if !ls.srv.in.budget.TryAcquire(1 << 20) { // another request holds it all
		t.Fatal("fresh budget not available")
	}
	defer ls.srv.in.budget.Release(1 << 20)
	resp, err := http.Post("http://"+ls.addr+"/datastore/local/r4/Patient", contentTypeFHIR, strings.NewReader(`{"resourceType":"Patient"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" || !resp.Close {
		t.Errorf("busy: %d Retry-After %q close %v: %s; want 429, Retry-After 1, connection closed", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, b)
	}
	// A request without a body needs no budget.
	resp, err = http.Get("http://" + ls.addr + "/datastore/local/r4/metadata")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET while the budget is taken: %d", resp.StatusCode)
	}
}

// TestDeclaredPayloadHash: with X-Amz-Content-Sha256 signed, the signature
// is checked before the body is read, and the body must then hash to the
// declared value.
func TestDeclaredPayloadHash(t *testing.T) {
	e := newEnv(t, Options{})
	body := []byte(patientJSON)
	declare := func(h string) reqOpt {
		return reqOpt{pre: func(r *http.Request) { r.Header.Set("X-Amz-Content-Sha256", h) }}
	}
	other := bytes.Replace(body, []byte(`"male"`), []byte(`"other"`), 1)
	for _, c := range []struct {
		name   string
		opt    reqOpt
		status int
		text   string
	}{
		{"declared and signed", declare(sha256Hex(body)), http.StatusCreated, ""},
		{"UNSIGNED-PAYLOAD", declare("UNSIGNED-PAYLOAD"), http.StatusUnauthorized, "hex SHA-256"},
		{"declared, body swapped after signing", reqOpt{pre: declare(sha256Hex(body)).pre, post: func(r *http.Request) {
			r.Body, r.ContentLength = nopCloser(other), int64(len(other))
		}}, http.StatusUnauthorized, "does not match the request body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("PUT", "Patient/p1", body, c.opt)
			if r.status != c.status || !bytes.Contains(r.body, []byte(c.text)) {
				t.Errorf("status %d %s, want %d with %q", r.status, r.body, c.status, c.text)
			}
		})
	}
}
