package importjob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/fhirload/fhirload/pipeline"
)

// TestSinkImportsAndSettlesEveryItem: the items are staged in several
// objects, one import job loads them, and every item is settled once: the
// lines the job rejected (its FAILURE records) as import-rejected with the
// job's OperationOutcome and status, the rest loaded and in the store. The
// job's progress is logged; the staged objects are deleted afterwards.
func TestSinkImportsAndSettlesEveryItem(t *testing.T) {
	w := newWorld(t, 0.05)
	core, logs := observer.New(zap.InfoLevel)
	s, err := Open(context.Background(), w.options("run-1", zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	items := observations(t, 200)
	write(t, s, items, false)
	if n := waitStaged(w, "stage/run-1/", 3); n < 3 {
		t.Errorf("%d objects staged while writing, want several (objects of 32 KiB)", n)
	}
	st, err := flush(t, s)
	if err != nil {
		t.Fatal(err)
	}
	jobs := w.jobs()
	if len(jobs) != 1 || jobs[0].JobStatus != hltypes.JobStatusCompletedWithErrors {
		t.Fatalf("jobs %+v, want one COMPLETED_WITH_ERRORS", jobs)
	}
	loaded := w.check(st, items, aws.ToString(jobs[0].JobId))
	if loaded == len(items) || loaded == 0 {
		t.Fatalf("%d of %d loaded: the chaos rejected nothing or everything", loaded, len(items))
	}
	if n := w.count("Observation"); n != loaded {
		t.Errorf("the store holds %d Observations, want the %d loaded", n, loaded)
	}
	if keys := w.keys("stage/"); len(keys) != 0 {
		t.Errorf("staged objects left after the job: %v", keys)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	if got["fhirload_import_staged_lines"] != float64(len(items)) || got["fhirload_import_job_imported"] != float64(loaded) ||
		got["fhirload_import_job_rejected"] != float64(len(items)-loaded) || got["fhirload_import_staged_objects"] < 3 {
		t.Errorf("metrics %v", got)
	}
	if p := s.Progress(); p.Staged != int64(len(items)) || p.Status != "COMPLETED_WITH_ERRORS" || p.Imported != int64(loaded) {
		t.Errorf("progress %+v", p)
	}
	for _, msg := range []string{"import job started", "import job ended", "import: settled"} {
		if logs.FilterMessage(msg).Len() == 0 {
			t.Errorf("no %q log line", msg)
		}
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "valueQuantity") || strings.Contains(f.String, "\"subject\"") {
				t.Errorf("log line %q carries resource content: %s", e.Message, f.String)
			}
		}
	}
}

// TestSinkConcurrentWrites: batches written from many goroutines at once
// are each staged once and settled once.
func TestSinkConcurrentWrites(t *testing.T) {
	w := newWorld(t, 0)
	s := w.open("run-1")
	items := observations(t, 400)
	write(t, s, items, true)
	st, err := flush(t, s)
	if err != nil {
		t.Fatal(err)
	}
	jobs := w.jobs()
	if len(jobs) != 1 || jobs[0].JobStatus != hltypes.JobStatusCompleted {
		t.Fatalf("jobs %+v, want one COMPLETED", jobs)
	}
	if loaded := w.check(st, items, aws.ToString(jobs[0].JobId)); loaded != len(items) {
		t.Errorf("%d loaded, want %d", loaded, len(items))
	}
	if n := w.count("Observation"); n != len(items) {
		t.Errorf("the store holds %d Observations, want %d", n, len(items))
	}
}

// killer is the HealthLake control plane with a kill point: when hit, the
// process "dies" there (the Flush's context is canceled, as SIGKILL would
// end it) before or after the call goes through.
type killer struct {
	HealthLake
	at     string // "before-start", "after-start", "poll", ""
	cancel context.CancelFunc
}

func (k *killer) StartFHIRImportJob(ctx context.Context, in *healthlake.StartFHIRImportJobInput, opts ...func(*healthlake.Options)) (*healthlake.StartFHIRImportJobOutput, error) {
	if k.at == "before-start" {
		k.cancel()
		return nil, context.Canceled
	}
	out, err := k.HealthLake.StartFHIRImportJob(ctx, in, opts...)
	if k.at == "after-start" { // the answer is lost
		k.cancel()
		return nil, context.Canceled
	}
	return out, err
}

func (k *killer) DescribeFHIRImportJob(ctx context.Context, in *healthlake.DescribeFHIRImportJobInput, opts ...func(*healthlake.Options)) (*healthlake.DescribeFHIRImportJobOutput, error) {
	if k.at == "poll" {
		k.cancel()
		return nil, context.Canceled
	}
	return k.HealthLake.DescribeFHIRImportJob(ctx, in, opts...)
}

// kill ends s as SIGKILL would: no cleanup, only the lock released.
func kill(s *Sink) {
	s.stage.cancel()
	s.state.close()
}

// TestSinkRerunResumesTheSameJob: a run killed anywhere after its batch is
// staged (before StartFHIRImportJob, with its answer lost, while polling,
// after settling but before the objects were acknowledged) is followed by
// a run over the same lines — arriving in another order, with other
// tokens: it finds the batch, uses the job the first run started (or
// starts it, with the same client token), and settles every item. One
// job is ever listed, the store holds each loaded resource at version 1,
// and the rerun's own copy of the staging is deleted.
func TestSinkRerunResumesTheSameJob(t *testing.T) {
	if testing.Short() {
		t.Skip("five import jobs; run without -short")
	}
	for _, at := range []string{"before-start", "after-start", "poll", "settled"} {
		t.Run(at, func(t *testing.T) {
			w := newWorld(t, 0.05)
			items := observations(t, 200)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := w.options("run-1", nil)
			k := &killer{HealthLake: w.hl, at: at, cancel: cancel}
			opts.HealthLake = k
			s1, err := Open(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			write(t, s1, items, false)
			st := &settled{}
			err = s1.Flush(ctx, st.settle)
			if at == "settled" {
				if err != nil {
					t.Fatal(err)
				}
			} else if !errors.Is(err, context.Canceled) {
				t.Fatalf("Flush at the kill point: %v", err)
			}
			kill(s1)

			// The rerun: the same lines in reverse order, other tokens.
			again := slices.Clone(items)
			slices.Reverse(again)
			for i := range again {
				again[i].Token += 1 << 32
			}
			s2 := w.open("run-2")
			write(t, s2, again, false)
			st2, err := flush(t, s2)
			if err != nil {
				t.Fatal(err)
			}
			jobs := w.jobs()
			if len(jobs) != 1 {
				t.Fatalf("%d import jobs, want the one of the first run", len(jobs))
			}
			loaded := w.check(st2, again, aws.ToString(jobs[0].JobId))
			if n := w.count("Observation"); n != loaded {
				t.Errorf("the store holds %d Observations, want %d", n, loaded)
			}
			if keys := w.keys("stage/"); len(keys) != 0 {
				t.Errorf("staged objects left: %v", keys)
			}
		})
	}
}

// TestSinkChangedContentIsANewBatch: a rerun whose lines differ (one
// resource changed), or that goes to another data store (one deleted and
// created again under the same id has another creation time in Target), is
// a batch of its own: a second job.
func TestSinkChangedContentIsANewBatch(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(items []pipeline.Item, o *Options)
	}{
		{"a resource changed", func(items []pipeline.Item, _ *Options) {
			items[42].Body = []byte(strings.Replace(string(items[42].Body), `"status":"final"`, `"status":"amended"`, 1))
		}},
		{"another data store", func(_ []pipeline.Item, o *Options) { o.Target += "@2026-12-01T00:00:00Z" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 0)
			items := observations(t, 50)
			s1 := w.open("run-1")
			write(t, s1, items, false)
			if _, err := flush(t, s1); err != nil {
				t.Fatal(err)
			}
			_ = s1.Close()
			again := slices.Clone(items)
			opts := w.options("run-2", nil)
			c.change(again, &opts)
			if string(again[42].Body) == string(items[42].Body) && opts.Target == w.options("", nil).Target {
				t.Fatal("the test changed nothing")
			}
			s2, err := Open(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			write(t, s2, again, false)
			st, err := flush(t, s2)
			if err != nil {
				t.Fatal(err)
			}
			if jobs := w.jobs(); len(jobs) != 2 {
				t.Fatalf("%d import jobs, want 2", len(jobs))
			}
			if len(st.out) != len(items) {
				t.Fatalf("settled %d, want %d", len(st.out), len(items))
			}
		})
	}
}

// TestSinkJobFailed: a job that ends FAILED (its output bucket does not
// exist) makes Flush fail with a *JobFailedError and settles nothing; the
// rerun, once the bucket exists, starts a new job and settles every item.
func TestSinkJobFailed(t *testing.T) {
	w := newWorld(t, 0)
	items := observations(t, 50)
	opts := w.options("run-1", nil)
	opts.OutputURL = "s3://no-such-bucket-" + w.bucket + "/out/"
	s1, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s1, items, false)
	st := &settled{}
	err = s1.Flush(context.Background(), st.settle)
	var jf *JobFailedError
	if !errors.As(err, &jf) || jf.Status != "FAILED" || len(st.out) != 0 {
		t.Fatalf("Flush: %v, %d settled; want a JobFailedError and nothing settled", err, len(st.out))
	}
	_ = s1.Close()

	s2 := w.open("run-2")
	write(t, s2, items, false)
	st2, err := flush(t, s2)
	if err != nil {
		t.Fatal(err)
	}
	jobs := w.jobs()
	if len(jobs) != 2 || jobs[0].JobStatus != hltypes.JobStatusFailed || jobs[1].JobStatus != hltypes.JobStatusCompleted {
		t.Fatalf("jobs %+v, want FAILED then COMPLETED", jobs)
	}
	if loaded := w.check(st2, items, aws.ToString(jobs[1].JobId)); loaded != len(items) {
		t.Errorf("%d loaded, want %d", loaded, len(items))
	}
	if keys := w.keys("stage/"); len(keys) != 0 {
		t.Errorf("staged objects left: %v", keys)
	}
}

// TestSinkStoppedBeforeFlush: a run that stops before its batch is staged
// to the end (SIGTERM: Close without Flush) deletes what it staged, in S3
// and in the state folder; a run killed there (no Close) leaves it to the
// next Open, which deletes it. Nothing is imported.
func TestSinkStoppedBeforeFlush(t *testing.T) {
	w := newWorld(t, 0)
	items := observations(t, 150)
	s1 := w.open("run-1")
	write(t, s1, items, false)
	if waitStaged(w, "stage/run-1/", 1) == 0 {
		t.Fatal("nothing staged while writing")
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if keys := w.keys("stage/"); len(keys) != 0 {
		t.Errorf("Close left staged objects: %v", keys)
	}

	s2 := w.open("run-2")
	write(t, s2, items, false)
	if waitStaged(w, "stage/run-2/", 1) == 0 {
		t.Fatal("nothing staged while writing")
	}
	kill(s2)
	s3 := w.open("run-3")
	if keys := w.keys("stage/run-2/"); len(keys) != 0 {
		t.Errorf("the next Open left the killed run's staging: %v", keys)
	}
	if _, err := os.Stat(filepath.Join(w.state, "staging-run-2")); !os.IsNotExist(err) {
		t.Errorf("the killed run's staging folder is still there (%v)", err)
	}
	_ = s3.Close()
	if jobs := w.jobs(); len(jobs) != 0 {
		t.Errorf("%d import jobs, want none", len(jobs))
	}
}

// TestSinkStateLocked: a second sink on the same state folder is refused
// with a clear error while the first is open.
func TestSinkStateLocked(t *testing.T) {
	w := newWorld(t, 0)
	s1 := w.open("run-1")
	_, err := Open(context.Background(), w.options("run-2", nil))
	if err == nil || !strings.Contains(err.Error(), "another fhirload run in import mode") {
		t.Fatalf("second Open: %v", err)
	}
	_ = s1.Close()
	s2 := w.open("run-3")
	_ = s2.Close()
}

// TestSinkNothingStaged: a run whose lines all failed transform starts
// no job.
func TestSinkNothingStaged(t *testing.T) {
	w := newWorld(t, 0)
	s := w.open("run-1")
	st, err := flush(t, s)
	if err != nil || len(st.out) != 0 {
		t.Fatalf("Flush: %v, %d settled", err, len(st.out))
	}
	if jobs := w.jobs(); len(jobs) != 0 {
		t.Errorf("%d import jobs, want none", len(jobs))
	}
}

var _ pipeline.DeferredSink = (*Sink)(nil)

// TestSinkOutputGone: a rerun of a batch whose job's output was deleted
// cannot know which lines the job rejected: Flush fails and names the
// folder, and nothing is settled (or imported again).
func TestSinkOutputGone(t *testing.T) {
	w := newWorld(t, 0)
	items := observations(t, 30)
	s1 := w.open("run-1")
	write(t, s1, items, false)
	if _, err := flush(t, s1); err != nil {
		t.Fatal(err)
	}
	_ = s1.Close()
	for _, k := range w.keys("out/") {
		if _, err := w.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(k)}); err != nil {
			t.Fatal(err)
		}
	}
	s2 := w.open("run-2")
	write(t, s2, items, false)
	st, err := flush(t, s2)
	if err == nil || !strings.Contains(err.Error(), "no manifest.json") || len(st.out) != 0 {
		t.Fatalf("Flush: %v, %d settled; want the missing output named, nothing settled", err, len(st.out))
	}
	if n := len(w.jobs()); n != 1 {
		t.Errorf("%d import jobs, want 1", n)
	}
}

// TestSinkRetention: a batch recorded longer ago than Options.Retention is
// removed when a sink opens, with its staged objects (kept here by
// KeepStaged); the same lines are then imported again, by a new job.
func TestSinkRetention(t *testing.T) {
	w := newWorld(t, 0)
	items := observations(t, 40)
	opts := w.options("run-1", nil)
	opts.KeepStaged = true
	s1, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s1, items, false)
	if _, err := flush(t, s1); err != nil {
		t.Fatal(err)
	}
	_ = s1.Close()
	if len(w.keys("stage/run-1/")) == 0 {
		t.Fatal("KeepStaged did not keep the staged objects")
	}
	dirs, _ := filepath.Glob(filepath.Join(w.state, batchesDir, "*"))
	if len(dirs) != 1 {
		t.Fatalf("batches %v, want one", dirs)
	}
	var b batchRecord
	if err := readJSON(filepath.Join(dirs[0], batchFile), &b); err != nil {
		t.Fatal(err)
	}
	b.Created = b.Created.Add(-8 * 24 * time.Hour)
	if err := writeJSON(filepath.Join(dirs[0], batchFile), &b); err != nil {
		t.Fatal(err)
	}

	s2 := w.open("run-2") // default retention: 7 days
	if _, err := os.Stat(dirs[0]); !os.IsNotExist(err) {
		t.Errorf("the expired batch is still there (%v)", err)
	}
	if keys := w.keys("stage/run-1/"); len(keys) != 0 {
		t.Errorf("the expired batch's staged objects are still there: %v", keys)
	}
	write(t, s2, items, false)
	st, err := flush(t, s2)
	if err != nil {
		t.Fatal(err)
	}
	if jobs := w.jobs(); len(jobs) != 2 || len(st.out) != len(items) {
		t.Fatalf("%d jobs, %d settled; want a second job settling all %d", len(jobs), len(st.out), len(items))
	}
}

// slowS3 holds every PutObject until release is closed.
type slowS3 struct {
	S3
	release chan struct{}
}

func (s slowS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.S3.PutObject(ctx, in, opts...)
}

// TestSinkWriteCanceled: a Write waiting for an upload slot when the run
// abandons its work (ctx canceled) returns the context's error, not a fatal
// one: the run reports interrupted, not failed. The staging can no longer
// be whole, and Close deletes it.
func TestSinkWriteCanceled(t *testing.T) {
	w := newWorld(t, 0)
	opts := w.options("run-1", nil)
	release := make(chan struct{})
	opts.S3, opts.Uploads, opts.ObjectBytes = slowS3{S3: w.s3, release: release}, 1, 1 // every Write seals an object
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	items := observations(t, 2)
	if _, err := s.Write(context.Background(), items[:1]); err != nil { // its upload takes the one slot
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := s.Write(ctx, items[1:]); done <- err }()
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) || errors.Is(err, pipeline.ErrFatal) {
		t.Fatalf("Write: %v; want context.Canceled, not fatal", err)
	}
	close(release)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if keys := w.keys("stage/"); len(keys) != 0 {
		t.Errorf("staged objects left: %v", keys)
	}
}

// lateS3 is a server that stores a PUT its client gave up on: PutObject
// holds until release; canceled before that, it returns the context's
// error, yet the object is stored once release comes. The first listing
// lets release come right after it has listed, and returns once the late
// objects have landed: behind the listing, where a delete cannot see them.
type lateS3 struct {
	S3
	release chan struct{}
	once    sync.Once
	late    sync.WaitGroup
}

func newLateS3(c S3) *lateS3 { return &lateS3{S3: c, release: make(chan struct{})} }

func (s *lateS3) let() { s.once.Do(func() { close(s.release) }) }

func (s *lateS3) PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	select {
	case <-s.release:
		return s.S3.PutObject(context.Background(), in, opts...)
	case <-ctx.Done():
		b, _ := io.ReadAll(in.Body)
		late := *in
		late.Body = bytes.NewReader(b)
		s.late.Add(1)
		go func() {
			defer s.late.Done()
			<-s.release
			_, _ = s.S3.PutObject(context.Background(), &late, opts...)
		}()
		return nil, ctx.Err()
	}
}

func (s *lateS3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	out, err := s.S3.ListObjectsV2(ctx, in, opts...)
	s.let()
	s.late.Wait()
	return out, err
}

// TestSinkCloseWaitsForUploads: a run stopped while an object is uploading
// (SIGTERM) lets the upload end before it deletes the staging; the build
// before canceled it, and a server that stored the object anyway left it
// in S3 after Close (found under load: TestRunImportSIGTERMWhileStaging).
func TestSinkCloseWaitsForUploads(t *testing.T) {
	w := newWorld(t, 0)
	opts := w.options("run-1", nil)
	late := newLateS3(w.s3)
	opts.S3, opts.Uploads, opts.ObjectBytes = late, 1, 1 // every Write seals an object
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(context.Background(), observations(t, 1)); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, late.let) // the upload takes a while
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	late.late.Wait()
	if keys := w.keys("stage/"); len(keys) != 0 {
		t.Errorf("staged objects left after Close: %v", keys)
	}
}

// TestSinkCloseCutsShortUploads: past the grace, Close cancels the uploads,
// says so, and keeps the staging folder; the next Open deletes what a late
// upload left in S3.
func TestSinkCloseCutsShortUploads(t *testing.T) {
	defer func(g time.Duration) { abortGrace = g }(abortGrace)
	abortGrace = 10 * time.Millisecond
	w := newWorld(t, 0)
	opts := w.options("run-1", nil)
	late := newLateS3(w.s3)
	opts.S3, opts.Uploads, opts.ObjectBytes = late, 1, 1
	s, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(context.Background(), observations(t, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Fatalf("Close: %v; want the uploads cut short", err)
	}
	late.late.Wait()
	if keys := w.keys("stage/run-1/"); len(keys) != 1 {
		t.Fatalf("staged objects after Close: %v; want the late one", keys)
	}
	if _, err := os.Stat(filepath.Join(w.state, "staging-run-1")); err != nil {
		t.Fatalf("the staging folder is gone (%v): the next run could not find the prefix", err)
	}
	_ = w.open("run-2")
	if keys := w.keys("stage/run-1/"); len(keys) != 0 {
		t.Errorf("the next Open left the late object: %v", keys)
	}
}

// waitStaged waits (up to 30 s) until at least n objects are staged under
// prefix and returns how many there are. Sealed objects upload in the
// background while Write goes on, so a count taken right after Write
// depends on how busy the machine is.
func waitStaged(w *world, prefix string, n int) int {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := len(w.keys(prefix))
		if got >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}
