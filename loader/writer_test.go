package loader

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

func TestNewValidates(t *testing.T) {
	creds := staticCreds()
	tests := []struct {
		name string
		opts Options
		ok   bool
	}{
		{"https remote", Options{BaseURL: "https://healthlake.us-east-1.amazonaws.com/datastore/x/r4/", Credentials: creds}, true},
		{"http loopback", Options{BaseURL: "http://127.0.0.1:1/datastore/local/r4", Auth: AuthNone}, true},
		{"http localhost", Options{BaseURL: "http://localhost:1/r4/", Auth: AuthNone}, true},
		{"http ipv6 loopback", Options{BaseURL: "http://[::1]:1/r4/", Auth: AuthNone}, true},
		{"http remote refused", Options{BaseURL: "http://healthlake.us-east-1.amazonaws.com/datastore/x/r4/", Credentials: creds}, false},
		{"http private ip refused", Options{BaseURL: "http://10.0.0.1/r4/", Auth: AuthNone}, false},
		{"ftp refused", Options{BaseURL: "ftp://127.0.0.1/", Auth: AuthNone}, false},
		{"sigv4 needs credentials", Options{BaseURL: "https://h/r4/"}, false},
		{"batch size 500", Options{BaseURL: "https://h/r4/", Auth: AuthNone, BatchSize: 500}, true},
		{"batch size 501", Options{BaseURL: "https://h/r4/", Auth: AuthNone, BatchSize: 501}, false},
		{"bad mode", Options{BaseURL: "https://h/r4/", Auth: AuthNone, Mode: "bulk"}, false},
		{"bad auth", Options{BaseURL: "https://h/r4/", Auth: "basic"}, false},
		{"negative rate", Options{BaseURL: "https://h/r4/", Auth: AuthNone, WriteUnitsPerSecond: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := New(tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok %v", err, tt.ok)
			}
			if err == nil {
				if !strings.HasSuffix(w.base, "/") {
					t.Errorf("base %q lacks trailing slash", w.base)
				}
				w.Close()
			}
		})
	}
}

func TestDefaultClientTLS(t *testing.T) {
	w, err := New(Options{BaseURL: "https://example.com/r4/", Auth: AuthNone, Concurrency: 24})
	if err != nil {
		t.Fatal(err)
	}
	tr := w.client.Transport.(*http.Transport)
	if tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || tr.MaxIdleConnsPerHost < 24 || !tr.ForceAttemptHTTP2 || tr.ResponseHeaderTimeout == 0 {
		t.Fatalf("transport not tuned: min TLS %x, idle/host %d", tr.TLSClientConfig.MinVersion, tr.MaxIdleConnsPerHost)
	}

	// A server that offers only TLS 1.1 is refused; the same server with TLS 1.2 is accepted.
	for _, tc := range []struct {
		name   string
		maxVer uint16
		ok     bool
	}{{"tls1.1", tls.VersionTLS11, false}, {"tls1.2", tls.VersionTLS12, true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, `{"resourceType":"CapabilityStatement"}`)
			}))
			srv.TLS = &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tc.maxVer}
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
			srv.StartTLS()
			defer srv.Close()
			w, err := New(Options{BaseURL: srv.URL + "/r4/", Auth: AuthNone, Retry: RetryOptions{Initial: time.Millisecond}, clock: newFakeClock()})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			pool := x509.NewCertPool()
			pool.AddCert(srv.Certificate())
			w.client.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool
			err = w.Check(context.Background())
			if (err == nil) != tc.ok {
				t.Fatalf("Check over %s: %v", tc.name, err)
			}
		})
	}
}

// TestSigV4 recomputes the signature in the server with the SDK signer.
func TestSigV4(t *testing.T) {
	creds := staticCreds()
	var checked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(body)
		hash := hex.EncodeToString(sum[:])
		if got := r.Header.Get("X-Amz-Content-Sha256"); got != hash {
			t.Errorf("content sha256 %q, want %q", got, hash)
		}
		if r.Header.Get("X-Amz-Security-Token") != "session-token" {
			t.Error("session token header missing")
		}
		when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
		if err != nil {
			t.Errorf("X-Amz-Date: %v", err)
		}
		auth := r.Header.Get("Authorization")
		if !strings.Contains(auth, "/us-west-2/healthlake/aws4_request") || !strings.Contains(auth, "x-amz-content-sha256") {
			t.Errorf("authorization %q lacks scope or body hash", auth)
		}
		// Rebuild the request as the client saw it and sign it again.
		re, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
		if ct := r.Header.Get("Content-Type"); ct != "" {
			re.Header.Set("Content-Type", ct)
		}
		re.Header.Set("Accept", r.Header.Get("Accept"))
		re.Header.Set("X-Amz-Content-Sha256", hash)
		re.ContentLength = r.ContentLength
		c, _ := creds.Retrieve(r.Context())
		if err := v4.NewSigner().SignHTTP(r.Context(), c, re, hash, "healthlake", "us-west-2", when); err != nil {
			t.Error(err)
		}
		if re.Header.Get("Authorization") != auth {
			t.Errorf("signature mismatch:\n got %s\nwant %s", auth, re.Header.Get("Authorization"))
		}
		checked.Add(1)
		if r.Method == http.MethodPost {
			batchReply(w, []string{"201 Created", "201 Created"}, nil)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	for _, mode := range []string{ModeBatch, ModeSingle} {
		w, _ := newTestWriter(t, srv, func(o *Options) {
			o.Auth, o.Credentials, o.Region, o.Mode = AuthSigV4, creds, "us-west-2", mode
		})
		out, err := w.Write(context.Background(), items(2))
		if err != nil || !out[0].Loaded || !out[1].Loaded {
			t.Fatalf("%s: %v %+v", mode, err, out)
		}
		if err := w.Check(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if checked.Load() != 1+1+2+1 {
		t.Fatalf("server checked %d requests", checked.Load())
	}
}

// TestBatchMixedOutcomes: only the failed entries of a batch-response are sent again.
func TestBatchMixedOutcomes(t *testing.T) {
	dup := `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"duplicate"}]}`
	var mu sync.Mutex
	var sent [][]string // entry urls per request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/datastore/local/r4/" {
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
		entries := readBundle(t, r)
		mu.Lock()
		var urls []string
		for _, e := range entries {
			if e.Request.Method != http.MethodPut {
				t.Errorf("entry method %s", e.Request.Method)
			}
			urls = append(urls, e.Request.URL)
		}
		sent = append(sent, urls)
		n := len(sent)
		mu.Unlock()
		if n == 1 {
			batchReply(w, []string{"201 Created", "200 OK", "422 Unprocessable Entity", "400 Bad Request", "500 Internal Server Error", "429 Too Many Requests", "409 Conflict"},
				[]string{"", "", dup, `{"resourceType":"OperationOutcome","issue":[{"code":"invalid"}]}`})
			return
		}
		st := make([]string, len(entries))
		for i := range st {
			st[i] = "201 Created"
		}
		batchReply(w, st, nil)
	}))
	defer srv.Close()
	w, _ := newTestWriter(t, srv, nil)
	out, err := w.Write(context.Background(), items(7))
	if err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 || strings.Join(sent[1], ",") != "Observation/obs-4,Observation/obs-5" {
		t.Fatalf("requests %v, want the 500 and 429 entries re-sent alone", sent)
	}
	want := []struct {
		loaded, created bool
		reason          string
		attempts        int
	}{{true, true, "", 1}, {true, false, "", 1}, {false, false, ReasonDuplicate, 1}, {false, false, ReasonRejected, 1}, {true, true, "", 2}, {true, true, "", 2}, {true, false, "", 1}}
	for i, wnt := range want {
		o := out[i]
		if o.Loaded != wnt.loaded || o.Created != wnt.created || o.Reason != wnt.reason || o.Attempts != wnt.attempts {
			t.Errorf("item %d: %+v, want %+v", i, o, wnt)
		}
	}
	if string(out[2].OperationOutcome) != dup || out[2].HTTPStatus != 422 {
		t.Errorf("duplicate keeps outcome: %d %s", out[2].HTTPStatus, out[2].OperationOutcome)
	}
	s := w.Stats()
	if s.Requests != 2 || s.Retries != 2 || s.Throttled != 1 || s.Created != 3 || s.Updated != 2 || s.Failed != 2 ||
		s.RetriesByCause[CauseThrottled] != 1 || s.RetriesByCause[CauseServerError] != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		header func() string
		want   time.Duration
	}{
		{"seconds", func() string { return "7" }, 7 * time.Second},
		{"http date", func() string { return t0.Add(30 * time.Second).Format(http.TimeFormat) }, 30 * time.Second},
	}
	for _, tt := range tests {
		for _, mode := range []string{ModeSingle, ModeBatch} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				var n atomic.Int32
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					if n.Add(1) == 1 {
						w.Header().Set("Retry-After", tt.header())
						w.WriteHeader(http.StatusTooManyRequests)
						return
					}
					if r.Method == http.MethodPost {
						batchReply(w, []string{"201", "201"}, nil)
						return
					}
					w.WriteHeader(http.StatusCreated)
				}))
				defer srv.Close()
				w, clk := newTestWriter(t, srv, func(o *Options) { o.Mode = mode })
				out, err := w.Write(context.Background(), items(2)[:map[string]int{ModeSingle: 1, ModeBatch: 2}[mode]])
				if err != nil || !out[0].Loaded || out[0].Attempts != 2 {
					t.Fatalf("%v %+v", err, out)
				}
				// Backoff alone would wait 1s; the server asked for more.
				if got := clk.elapsed(); got < tt.want || got > tt.want+time.Second {
					t.Fatalf("waited %v (sleeps %v), want about %v", got, clk.sleeps, tt.want)
				}
				if s := w.Stats(); s.Throttled != 1 || s.Limit != DefaultConcurrency/2 {
					t.Fatalf("stats after one 429: %+v", s)
				}
			})
		}
	}
}

func TestRetriesExhausted(t *testing.T) {
	for _, mode := range []string{ModeBatch, ModeSingle} {
		t.Run(mode, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"code":"transient"}]}`)
			}))
			defer srv.Close()
			// Waits 1, 2, 4, 8, 8 ... within 20s: attempts at 0, 1, 3, 7, 15. (One item in single
			// mode: concurrent items would share and advance the one fake clock.)
			n := map[string]int{ModeBatch: 3, ModeSingle: 1}[mode]
			w, _ := newTestWriter(t, srv, func(o *Options) { o.Mode = mode; o.Retry.MaxElapsed = 20 * time.Second })
			out, err := w.Write(context.Background(), items(n))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range out {
				if o.Loaded || o.Reason != ReasonRetriesExhausted || o.HTTPStatus != 503 || o.Attempts != 5 || len(o.OperationOutcome) == 0 {
					t.Fatalf("outcome %+v", o)
				}
			}
			if s := w.Stats(); s.Failed != int64(n) || s.Retries != int64(4*n) || s.RetriesByCause[CauseServerError] != int64(4*n) {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestFatal(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		mode   string
	}{
		{"401 batch", 401, `{"message":"invalid signature"}`, ModeBatch},
		{"401 single", 401, `{"message":"invalid signature"}`, ModeSingle},
		{"403 batch", 403, `{"message":"denied"}`, ModeBatch},
		{"404 bundle post", 404, `{"resourceType":"OperationOutcome","issue":[{"code":"not-found"}]}`, ModeBatch},
		{"404 datastore single", 404, `{"resourceType":"OperationOutcome","issue":[{"code":"not-found","diagnostics":"Datastore abc does not exist"}]}`, ModeSingle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				io.Copy(io.Discard, r.Body)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			w, clk := newTestWriter(t, srv, func(o *Options) { o.Mode = tt.mode; o.Concurrency = 1 })
			_, err := w.Write(context.Background(), items(5))
			var fe *FatalError
			if !errors.As(err, &fe) || fe.Status != tt.status || !strings.Contains(fe.Error(), "HTTP") {
				t.Fatalf("err %v, want FatalError %d", err, tt.status)
			}
			if n.Load() != 1 || clk.elapsed() != 0 || w.Stats().Failed != 0 {
				t.Fatalf("%d requests, waited %v, %d dead-lettered: fatal must stop at once", n.Load(), clk.elapsed(), w.Stats().Failed)
			}
			if err := w.Check(context.Background()); !errors.As(err, &fe) {
				t.Fatalf("Check: %v", err)
			}
		})
	}
}

func TestCheckUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	w, err := New(Options{BaseURL: url + "/r4/", Auth: AuthNone, clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var fe *FatalError
	if err := w.Check(context.Background()); !errors.As(err, &fe) || fe.Status != 0 || !strings.Contains(fe.Error(), "unreachable") {
		t.Fatalf("Check: %v", err)
	}
}

func TestResource404InSingleModeIsRejected(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"code":"not-found","diagnostics":"Unknown resource type"}]}`)
	}))
	defer srv.Close()
	w, _ := newTestWriter(t, srv, func(o *Options) { o.Mode = ModeSingle })
	out, err := w.Write(context.Background(), items(1))
	if err != nil || out[0].Reason != ReasonRejected || out[0].HTTPStatus != 404 {
		t.Fatalf("%v %+v", err, out)
	}
}

// TestWholeBundleRejected: a Bundle refused as a whole is re-sent entry by entry.
func TestWholeBundleRejected(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodPost || strings.HasSuffix(r.URL.Path, "/obs-1") {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"resourceType":"OperationOutcome","issue":[{"code":"invalid"}]}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	w, _ := newTestWriter(t, srv, nil)
	in := items(3)
	in = append(in, Item{Type: "Observation", ID: "bad id/..", Body: []byte(`{}`)})
	out, err := w.Write(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !out[0].Loaded || out[1].Reason != ReasonRejected || !out[2].Loaded || out[3].Reason != ReasonRejected || out[3].Attempts != 0 {
		t.Fatalf("%+v", out)
	}
}

// TestCancel: a request in flight finishes and counts; nothing new starts after cancellation.
func TestCancel(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if n.Add(1) == 1 {
			close(arrived)
			<-release
		}
		batchReply(w, []string{"201", "201", "201"}, nil)
	}))
	defer srv.Close()
	w, _ := newTestWriter(t, srv, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var out []Outcome
	var err error
	go func() { out, err = w.Write(ctx, items(3)); close(done) }()
	<-arrived
	cancel()
	close(release)
	<-done
	if !errors.Is(err, context.Canceled) || !out[0].Loaded || !out[2].Loaded {
		t.Fatalf("err %v out %+v: in-flight request must finish", err, out)
	}
	if _, err := w.Write(ctx, items(3)); !errors.Is(err, context.Canceled) || n.Load() != 1 {
		t.Fatalf("after cancel: %v, %d requests", err, n.Load())
	}
}

func TestWriteTooMany(t *testing.T) {
	w, err := New(Options{BaseURL: "http://127.0.0.1:1/", Auth: AuthNone, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(context.Background(), items(3)); err == nil {
		t.Fatal("3 items with batch size 2 accepted")
	}
}

// TestConcurrentWrites: many goroutines share one Writer; every item is loaded exactly once per send.
func TestConcurrentWrites(t *testing.T) {
	var puts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entries := readBundle(t, r)
		puts.Add(int64(len(entries)))
		st := make([]string, len(entries))
		for i := range st {
			st[i] = "201 Created"
		}
		batchReply(w, st, nil)
	}))
	defer srv.Close()
	w, _ := newTestWriter(t, srv, func(o *Options) { o.Concurrency = 4; o.HTTPClient = nil })
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			out, err := w.Write(context.Background(), items(50))
			if err != nil || !out[49].Loaded {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if s := w.Stats(); puts.Load() != 800 || s.Created != 800 || s.Requests != 16 || s.InFlight != 0 {
		t.Fatalf("puts %d stats %+v", puts.Load(), s)
	}
}

// TestCheckDoesNotTeachThePacer: the preflight probe is not load; a 429 it
// gets (a busy or chaotic server) neither cuts the pace nor sets the gate.
func TestCheckDoesNotTeachThePacer(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"resourceType":"CapabilityStatement"}`)
	}))
	defer srv.Close()
	w, _ := newTestWriter(t, srv, nil)
	if err := w.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 {
		t.Fatalf("%d probes, want 2 (a 429, then a success)", n.Load())
	}
	w.pace.mu.Lock()
	cuts, gate := w.pace.cuts, w.pace.gate
	w.pace.mu.Unlock()
	if cuts != 0 || !gate.IsZero() {
		t.Fatalf("the probe's 429 reached the pacer: %d cuts, gate %v", cuts, gate)
	}
}
