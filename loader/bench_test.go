package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fhirload/fhirload/internal/testlines"
)

// sampleItems reads up to n Observations of the repo's Synthea sample.
func sampleItems(tb testing.TB, n int) []Item {
	tb.Helper()
	var out []Item
	testlines.Each(tb, "../testdata/sample/Observation.ndjson.gz", func(l []byte) bool {
		if len(out) == n {
			return false
		}
		var head struct{ ResourceType, ID string }
		line := bytes.Clone(l)
		if err := json.Unmarshal(line, &head); err != nil {
			tb.Fatal(err)
		}
		out = append(out, Item{Type: head.ResourceType, ID: head.ID, Body: line})
		return true
	})
	return out
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// noopServer answers every Bundle with a canned all-201 batch-response of as many entries as the
// Bundle has (up to size; a run's last Bundle is often shorter) and every PUT with 201.
func noopServer(size int, conns *atomic.Int64) *httptest.Server {
	replies := make([][]byte, size+1)
	for n := 1; n <= size; n++ {
		st := make([]string, n)
		for i := range st {
			st[i] = "201 Created"
		}
		rec := httptest.NewRecorder()
		batchReply(rec, st, nil)
		replies[n] = rec.Body.Bytes()
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost {
			n := min(max(bytes.Count(body, []byte(`"request":`)), 1), size)
			w.Header().Set("Content-Type", "application/fhir+json")
			w.Write(replies[n])
			return
		}
		w.WriteHeader(http.StatusCreated)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	return srv
}

func benchWrite(b *testing.B, mode string, batch int, auth string) {
	var conns atomic.Int64
	srv := noopServer(batch, &conns)
	defer srv.Close()
	sample := sampleItems(b, batch)
	opts := Options{BaseURL: srv.URL + "/datastore/local/r4/", Auth: auth, Mode: mode, BatchSize: batch, Concurrency: 16}
	if auth == AuthSigV4 {
		opts.Credentials = staticCreds()
	}
	w, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	per := batch
	if mode == ModeSingle {
		per = 16 // the pipeline hands single mode small slices too; each Write fans out
	}
	var next atomic.Int64
	total := int64(b.N)
	cpu0, start := cpuTime(), time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				n := next.Add(int64(per)) - int64(per)
				if n >= total {
					return
				}
				k := min(int64(per), total-n)
				out, err := w.Write(context.Background(), sample[:k])
				if err != nil || !out[k-1].Loaded {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	el, cpu := time.Since(start), cpuTime()-cpu0
	b.ReportMetric(float64(b.N)/el.Seconds(), "resources/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/resource")
	b.ReportMetric(float64(conns.Load()), "connections")
}

// BenchmarkWriteBatch: one op is one resource; batches of 100 Synthea Observations into a no-op
// endpoint on loopback. CPU per resource includes the in-process server.
func BenchmarkWriteBatch(b *testing.B) {
	for _, auth := range []string{AuthNone, AuthSigV4} {
		b.Run(auth, func(b *testing.B) { benchWrite(b, ModeBatch, 100, auth) })
	}
}

// BenchmarkWriteSingle: one op is one resource, one PUT each.
func BenchmarkWriteSingle(b *testing.B) {
	for _, auth := range []string{AuthNone, AuthSigV4} {
		b.Run(auth, func(b *testing.B) { benchWrite(b, ModeSingle, 16, auth) })
	}
}

func BenchmarkSign(b *testing.B) {
	sample := sampleItems(b, 100)
	body := appendBundle(nil, sample, seq(100))
	w, err := New(Options{BaseURL: "https://healthlake.us-east-1.amazonaws.com/datastore/x/r4/", Credentials: staticCreds()})
	if err != nil {
		b.Fatal(err)
	}
	creds, _ := w.opts.Credentials.Retrieve(context.Background())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, w.base, nil)
		if err := signRequest(context.Background(), w.signer, creds, req, body, "healthlake", "us-east-1", time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeBundle(b *testing.B) {
	sample := sampleItems(b, 100)
	idx := seq(100)
	w, _ := New(Options{BaseURL: "http://127.0.0.1:1/", Auth: AuthNone})
	n := 0
	for b.Loop() {
		buf := getBody(&w.bodies)
		buf.b = appendBundle(buf.b, sample, idx)
		n = len(buf.b)
		buf.release()
	}
	b.SetBytes(int64(n))
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkParseBatchResponse(b *testing.B) {
	st := make([]string, 100)
	for i := range st {
		st[i] = "201 Created"
	}
	rec := httptest.NewRecorder()
	batchReply(rec, st, nil)
	body := rec.Body.Bytes()
	for b.Loop() {
		var br batchResponse
		if err := json.Unmarshal(body, &br); err != nil || len(br.Entry) != 100 {
			b.Fatal(err)
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestEncodeBundleIsValidJSON(t *testing.T) {
	sample := sampleItems(t, 3)
	raw := appendBundle(nil, sample, []int{2, 0})
	var b struct {
		ResourceType, Type string
		Entry              []bundleEntry
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if b.Type != "batch" || len(b.Entry) != 2 || b.Entry[0].Request.URL != "Observation/"+sample[2].ID ||
		!strings.Contains(string(b.Entry[1].Resource), fmt.Sprintf("%q", sample[0].ID)) {
		t.Fatalf("bundle %+v", b)
	}
}
