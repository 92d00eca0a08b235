package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/fhirload/fhirload/deadletter"
	"github.com/fhirload/fhirload/ingest"
	"github.com/fhirload/fhirload/internal/benchkit"
	"github.com/fhirload/fhirload/loader"
	"github.com/fhirload/fhirload/pipeline"
	"github.com/fhirload/fhirload/transform"
)

// benchData writes a synthetic data set (Patients and Observations, ~1 KB
// each) and returns its folder, resource count and size.
func benchData(b *testing.B, patients int) (dir string, resources, size int64) {
	b.Helper()
	dir = b.TempDir()
	pf, err := os.Create(filepath.Join(dir, "Patient.ndjson"))
	if err != nil {
		b.Fatal(err)
	}
	of, err := os.Create(filepath.Join(dir, "Observation.ndjson"))
	if err != nil {
		b.Fatal(err)
	}
	st, err := benchkit.Generate(pf, of, benchkit.GenOptions{Patients: patients, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	if err := pf.Close(); err != nil {
		b.Fatal(err)
	}
	if err := of.Close(); err != nil {
		b.Fatal(err)
	}
	return dir, st.Resources(), st.PatientBytes + st.ObsBytes
}

type pipeCase struct {
	mode        string // batch | single | validate (no writer) | replay (batch, from dead letters)
	batchSize   int
	concurrency int
	latency     time.Duration // added by the no-op server per request
}

// runPipeline runs the whole pipeline — read, validate, map, batch, sign
// (SigV4), send, classify, dead-letter store — over dir into a no-op FHIR
// endpoint on loopback, b.N times.
func runPipeline(b *testing.B, c pipeCase, dir string, resources, size int64) {
	b.Helper()
	ctx := context.Background()
	cfg := pipeline.Defaults()
	cfg.Target.Mode = c.mode
	cfg.Target.BatchSize = c.batchSize
	cfg.Target.Concurrency = c.concurrency
	tr, err := transform.New(transform.Options{Profile: "seed", IDs: "keep"})
	if err != nil {
		b.Fatal(err)
	}
	noop := &benchkit.Noop{Latency: c.latency}
	srv := httptest.NewServer(noop)
	defer srv.Close()
	mode := c.mode
	var entries []deadletter.Entry
	if mode == "replay" {
		mode, entries = "batch", benchEntries(b, dir)
		cfg.Target.Mode = mode
	}
	var w *loader.Writer
	if c.mode != "validate" {
		w, err = loader.New(loader.Options{
			BaseURL: srv.URL + "/datastore/noop/r4/", Auth: loader.AuthSigV4, Region: "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider("AKIDBENCHMARK", "benchmark-secret", ""),
			Mode:        mode, BatchSize: c.batchSize, Concurrency: c.concurrency,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		if err := w.Check(ctx); err != nil {
			b.Fatal(err)
		}
	}
	dl := &memDeadLetters{}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		deps := pipeline.Deps{Config: cfg, Command: "run", RunID: "bench", Transformer: tr, DeadLetters: dl}
		if w != nil {
			deps.Sink = pipeline.LoaderSink{W: w}
		} else {
			deps.Command, deps.DeadLetters = "validate", nil
		}
		var src pipeline.Source
		if entries != nil {
			deps.Command, deps.Replay = "replay", dl
			src = pipeline.NewReplaySource(entries, c.batchSize*c.concurrency, nil)
		} else {
			paths, err := ingest.NewPaths([]string{dir}, ingest.LocalOptions{})
			if err != nil {
				b.Fatal(err)
			}
			src = pipeline.FromIngest(paths)
		}
		r := pipeline.NewRunner(deps)
		rep := r.Run(ctx, src)
		if rep.Loaded != resources || rep.Fatal != "" {
			b.Fatalf("loaded %d of %d (fatal %q, dead-lettered %d)", rep.Loaded, resources, rep.Fatal, rep.DeadLettered)
		}
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	// CPU time of the whole process (the in-process no-op server included):
	// unlike wall time it is not skewed by other processes on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(resources)/float64(b.N), "cpu-ns/resource")
	b.ReportMetric(float64(resources)*float64(b.N)/elapsed.Seconds(), "resources/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(resources)/float64(b.N), "ns/resource")
	if w != nil && noop.Stats().Entries < resources*int64(b.N) {
		b.Fatalf("the endpoint received %d entries, want %d", noop.Stats().Entries, resources*int64(b.N))
	}
}

// BenchmarkPipeline is the full pipeline with the defaults (batch 100,
// concurrency 16), in batch and single mode, and validation alone.
func BenchmarkPipeline(b *testing.B) {
	dir, n, size := benchData(b, 250) // 10,250 resources, ~11 MB
	for _, c := range []pipeCase{
		{mode: "batch", batchSize: 100, concurrency: 16},
		{mode: "single", batchSize: 100, concurrency: 16},
		{mode: "validate", batchSize: 100, concurrency: 16},
	} {
		b.Run(c.mode, func(b *testing.B) { runPipeline(b, c, dir, n, size) })
	}
}

// BenchmarkReplay replays the same lines from dead-letter entries: the same
// runner, batches and sink as a fresh load (compare with
// BenchmarkPipeline/batch: issue 15 asks for >= 0.85x its speed).
func BenchmarkReplay(b *testing.B) {
	dir, n, size := benchData(b, 250)
	runPipeline(b, pipeCase{mode: "replay", batchSize: 100, concurrency: 16}, dir, n, size)
}

// benchEntries turns every line under dir into a dead-letter entry.
func benchEntries(b *testing.B, dir string) []deadletter.Entry {
	b.Helper()
	var out []deadletter.Entry
	for _, name := range []string{"Patient.ndjson", "Observation.ndjson"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		for i, l := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
			out = append(out, deadletter.Entry{ID: fmt.Sprintf("%s-%d", name, i), Reason: deadletter.ReasonRetriesExhausted,
				Stage: deadletter.StageLoad, Source: deadletter.Source{URI: "file://" + filepath.Join(dir, name), Line: int64(i + 1)},
				Line: string(l), Attempts: 1})
		}
	}
	return out
}

// BenchmarkPipelineBatchSize sweeps target.batch_size in batch mode.
func BenchmarkPipelineBatchSize(b *testing.B) {
	dir, n, size := benchData(b, 250)
	for _, bs := range []int{10, 50, 100, 500} {
		b.Run(strconv.Itoa(bs), func(b *testing.B) {
			runPipeline(b, pipeCase{mode: "batch", batchSize: bs, concurrency: 16}, dir, n, size)
		})
	}
}

// BenchmarkPipelineConcurrency sweeps target.concurrency in batch mode, once
// against an instant server and once against one that takes 5 ms per request
// (a remote server's round trip), where concurrency is what hides latency.
func BenchmarkPipelineConcurrency(b *testing.B) {
	dir, n, size := benchData(b, 250)
	for _, lat := range []time.Duration{0, 5 * time.Millisecond} {
		for _, cc := range []int{1, 4, 16, 64} {
			b.Run("latency="+lat.String()+"/"+strconv.Itoa(cc), func(b *testing.B) {
				runPipeline(b, pipeCase{mode: "batch", batchSize: 100, concurrency: cc, latency: lat}, dir, n, size)
			})
		}
	}
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
