package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/pipeline"
)

// BenchmarkCompare compares sample Observations with their stored form
// (meta first, as fhirload serve returns them).
func BenchmarkCompare(b *testing.B) {
	var want, got [][]byte
	var bytes int64
	eachLine(b, "../testdata/sample/Observation.ndjson.gz", 1000, func(line []byte) {
		w := append([]byte(nil), line...)
		want = append(want, w)
		got = append(got, serveShape(b, w))
		bytes += int64(len(w))
	})
	var c Comparer
	b.SetBytes(bytes / int64(len(want)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(want)
		if d := c.Compare("Observation", want[k], got[k]); !d.Equal() {
			b.Fatal(d.Paths)
		}
	}
}

var sampleFiles = []string{
	filepath.Join("..", "testdata", "sample", "Patient.ndjson.gz"),
	filepath.Join("..", "testdata", "sample", "Observation.ndjson.gz"),
}

// storedSample is the sample as a server holds it after a load: the lines
// through the same transform (urn:uuid references rewritten), in the stored
// shape, by "Type/id".
func storedSample(b *testing.B) map[string][]byte {
	b.Helper()
	out := map[string][]byte{}
	sink := &captureSink{out: out, tb: b, mu: make(chan struct{}, 1)}
	r := pipeline.NewRunner(pipeline.Deps{Config: pipeline.Defaults(), Command: "run", Sink: sink})
	p, err := ingest.NewPaths(sampleFiles, ingest.LocalOptions{Suffixes: pipeline.DefaultSuffixes("fhir")})
	if err != nil {
		b.Fatal(err)
	}
	if rep := r.Run(context.Background(), pipeline.FromIngest(p)); rep.Loaded != 16415 {
		b.Fatalf("capture: %+v", rep)
	}
	return out
}

// captureSink keeps what run would write, in the stored shape.
type captureSink struct {
	tb  testing.TB
	mu  chan struct{} // a lock
	out map[string][]byte
}

func (c *captureSink) Write(_ context.Context, items []pipeline.Item) ([]pipeline.Outcome, error) {
	out := make([]pipeline.Outcome, len(items))
	stored := make([][]byte, len(items))
	for i, it := range items {
		stored[i] = serveShape(c.tb, it.Body)
		out[i] = pipeline.Outcome{Status: pipeline.Loaded}
	}
	c.mu <- struct{}{}
	for i, it := range items {
		c.out[it.Type+"/"+it.ID] = stored[i]
	}
	<-c.mu
	return out, nil
}

// cannedServer answers batch Bundles of GETs and _id searches from a map,
// at the cost of a bracket scan and a copy: it measures the client.
func cannedServer(stored map[string][]byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var urls []string
		if r.Method == http.MethodPost {
			var bundle struct {
				Entry []struct{ Request struct{ URL string } }
			}
			body, _ := io.ReadAll(r.Body)
			if err := json.Unmarshal(body, &bundle); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			for _, e := range bundle.Entry {
				urls = append(urls, e.Request.URL)
			}
		} else {
			typ := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
			for _, id := range strings.Split(r.URL.Query().Get("_id"), ",") {
				urls = append(urls, typ+"/"+id)
			}
		}
		var out bytes.Buffer
		kind := "batch-response"
		if r.Method == http.MethodGet {
			kind = "searchset"
		}
		out.WriteString(`{"resourceType":"Bundle","type":"` + kind + `","entry":[`)
		for i, u := range urls {
			if i > 0 {
				out.WriteByte(',')
			}
			out.WriteString(`{"resource":`)
			out.Write(stored[u])
			if r.Method == http.MethodGet {
				out.WriteString(`,"search":{"mode":"match"}}`)
			} else {
				out.WriteString(`,"response":{"status":"200 OK"}}`)
			}
		}
		out.WriteString("]}")
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write(out.Bytes())
	})
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkVerifyClient verifies the whole sample (16,415 resources: read,
// transform, batch, sign, read back, compare) against a canned server that
// answers from memory: the client's cost alone, per read method.
func BenchmarkVerifyClient(b *testing.B) {
	stored := storedSample(b)
	srv := httptest.NewServer(cannedServer(stored))
	defer srv.Close()
	for _, method := range []string{loader.ReadBatch, loader.ReadSearch} {
		b.Run(method, func(b *testing.B) {
			benchVerify(b, srv.URL+"/datastore/local/r4/", method)
		})
	}
}

func benchVerify(b *testing.B, base, method string) {
	cfg := pipeline.Defaults()
	rd, err := loader.NewReader(loader.Options{BaseURL: base, Auth: loader.AuthSigV4, BatchSize: cfg.Target.BatchSize,
		Concurrency: cfg.Target.Concurrency, Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCH", "secret", "")},
		loader.ReadOptions{Method: method})
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	var n int64
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		sink := NewSink(LoaderReader{R: rd}, Options{})
		r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "verify", Sink: sink})
		p, err := ingest.NewPaths(sampleFiles, ingest.LocalOptions{Suffixes: pipeline.DefaultSuffixes("fhir")})
		if err != nil {
			b.Fatal(err)
		}
		rep := NewReport(r.Run(context.Background(), pipeline.FromIngest(p)), sink)
		if rep.Matched != 16415 {
			b.Fatalf("report %+v", rep)
		}
		n += rep.Verified
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "resources/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(n)*100, "cpu-ms/100res")
}

// BenchmarkVerifyServe verifies the whole sample against the local FHIR
// store (fhirload serve, in-process on loopback, SigV4 verified), per read
// method: client and server share the process and its CPUs.
func BenchmarkVerifyServe(b *testing.B) {
	ctx := context.Background()
	b.Setenv("AWS_ACCESS_KEY_ID", "AKIDBENCH")
	b.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	srv, err := fhirstore.Open(ctx, fhirstore.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	base := hs.URL + "/datastore/local/r4/"
	cfg := pipeline.Defaults()
	w, err := loader.New(loader.Options{BaseURL: base, BatchSize: cfg.Target.BatchSize, Concurrency: cfg.Target.Concurrency,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCH", "secret", "")})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	p, err := ingest.NewPaths(sampleFiles, ingest.LocalOptions{Suffixes: pipeline.DefaultSuffixes("fhir")})
	if err != nil {
		b.Fatal(err)
	}
	r := pipeline.NewRunner(pipeline.Deps{Config: cfg, Command: "run", Sink: pipeline.LoaderSink{W: w}, DeadLetters: nopDeadLetters{}})
	if rep := r.Run(ctx, pipeline.FromIngest(p)); rep.Loaded != 16415 {
		b.Fatalf("load: %+v", rep)
	}
	for _, method := range []string{loader.ReadBatch, loader.ReadSearch} {
		b.Run(method, func(b *testing.B) { benchVerify(b, base, method) })
	}
}

type nopDeadLetters struct{}

func (nopDeadLetters) Put(context.Context, ...deadletter.Entry) error { return nil }
