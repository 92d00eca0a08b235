package importjob

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	hltypes "github.com/aws/aws-sdk-go-v2/service/healthlake/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/fhirstore"
	"github.com/fhirload/fhirload/internal/testlines"
	"github.com/fhirload/fhirload/internal/testutil"
	"github.com/fhirload/fhirload/pipeline"
)

// world is one test's loopback HealthLake: `fhirload serve`'s store
// in-process (control plane, import jobs), moto for S3, a bucket, and the
// clients and options a Sink needs.
type world struct {
	t      *testing.T
	s3     *s3.Client
	bucket string
	srv    *fhirstore.Server
	addr   string
	hl     *healthlake.Client
	state  string // the sink's state folder
	stop   func()
}

const (
	testKeyID  = "AKIDIMPORTJOBTEST"
	testSecret = "importjob-test-secret"
)

// newWorld starts the store with --chaos-import-reject reject (seed 7).
func newWorld(t *testing.T, reject float64) *world {
	t.Helper()
	ep := testutil.Moto(t)
	c := testutil.S3(ep)
	w := &world{t: t, s3: c, bucket: testutil.Bucket(t, c), state: filepath.Join(t.TempDir(), "state")}
	w.start(reject)
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *world) start(reject float64) {
	t := w.t
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	srv, err := fhirstore.Open(context.Background(), fhirstore.Options{Dir: dir, Auth: "none", S3: w.s3,
		ChaosImportReject: reject, ChaosSeed: 7})
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
	var once sync.Once
	w.srv, w.addr = srv, l.Addr().String()
	w.stop = func() { once.Do(func() { cancel(); <-done; _ = srv.Close() }) }
	w.hl = healthlake.New(healthlake.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://" + w.addr),
		Credentials: credentials.NewStaticCredentialsProvider(testKeyID, testSecret, ""), HTTPClient: &http.Client{Timeout: 30 * time.Second}})
}

// options are a Sink's options in w; run names the run.
func (w *world) options(run string, log *zap.Logger) Options {
	return Options{HealthLake: w.hl, S3: w.s3, DatastoreID: "local", Target: "test/local",
		StagingURL: "s3://" + w.bucket + "/stage", OutputURL: "s3://" + w.bucket + "/out/",
		RoleARN: "arn:aws:iam::123456789012:role/HealthLakeImport", KMSKeyID: "alias/aws/s3", StateDir: w.state,
		ObjectBytes: 32 << 10, PollInterval: 10 * time.Millisecond, PollMax: 50 * time.Millisecond,
		FailureBudget: 5 * time.Second, RunID: run, Logger: log}
}

// open opens a Sink of run.
func (w *world) open(run string) *Sink {
	w.t.Helper()
	s, err := Open(context.Background(), w.options(run, nil))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = s.Close() })
	return s
}

// jobs lists the store's import jobs.
func (w *world) jobs() []hltypes.ImportJobProperties {
	w.t.Helper()
	out, err := w.hl.ListFHIRImportJobs(context.Background(), &healthlake.ListFHIRImportJobsInput{DatastoreId: aws.String("local")})
	if err != nil {
		w.t.Fatal(err)
	}
	return out.ImportJobPropertiesList
}

// keys lists the keys under prefix.
func (w *world) keys(prefix string) []string {
	w.t.Helper()
	return testutil.Keys(w.t, w.s3, w.bucket, prefix)
}

// failureIDs reads the FAILURE records of job: the ids of the resources
// it rejected.
func (w *world) failureIDs(job string) map[string]bool {
	w.t.Helper()
	ids := map[string]bool{}
	for _, k := range w.keys("out/local-FHIR_IMPORT-" + job + "/FAILURE/") {
		o, err := w.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(w.bucket), Key: aws.String(k)})
		if err != nil {
			w.t.Fatal(err)
		}
		b, _ := io.ReadAll(o.Body)
		o.Body.Close()
		for l := range bytes.SplitSeq(bytes.TrimSpace(b), []byte("\n")) {
			// The record carries the line as staged (a chaos rejection
			// names no resource: the line is not parsed).
			var r struct{ Line string }
			var res struct{ ID string }
			if err := json.Unmarshal(l, &r); err != nil {
				w.t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(r.Line), &res); err != nil || res.ID == "" {
				w.t.Fatalf("FAILURE record without the line: %s", l)
			}
			ids[res.ID] = true
		}
	}
	return ids
}

// count is the number of resources of typ in the store.
func (w *world) count(typ string) int {
	w.t.Helper()
	resp, err := http.Get("http://" + w.addr + "/datastore/local/r4/" + typ + "?_summary=count")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b struct{ Total int }
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || resp.StatusCode != 200 {
		w.t.Fatalf("count %s: HTTP %d %v", typ, resp.StatusCode, err)
	}
	return b.Total
}

// observations returns n Observations of the sample as items of source
// "file:///obs.ndjson", line i+1, token 1000+i.
func observations(t testing.TB, n int) []pipeline.Item {
	t.Helper()
	var items []pipeline.Item
	testlines.Each(t, filepath.Join("..", "testdata", "sample", "Observation.ndjson.gz"), func(line []byte) bool {
		var r struct{ ResourceType, ID string }
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		items = append(items, pipeline.Item{Type: r.ResourceType, ID: r.ID, Body: bytes.Clone(line),
			Token: uint64(1000 + len(items)), Source: "file:///obs.ndjson", Line: int64(len(items) + 1)})
		return len(items) < n
	})
	if len(items) != n {
		t.Fatalf("the sample has %d Observations, want %d", len(items), n)
	}
	return items
}

// write writes items to s in batches of 50, one goroutine per batch when
// concurrent.
func write(t *testing.T, s *Sink, items []pipeline.Item, concurrent bool) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(items)/50+1)
	for i := 0; i < len(items); i += 50 {
		batch := items[i:min(i+50, len(items))]
		do := func() {
			outs, err := s.Write(context.Background(), batch)
			if err == nil && len(outs) != len(batch) {
				err = fmt.Errorf("%d outcomes for %d items", len(outs), len(batch))
			}
			for _, o := range outs {
				if err == nil && o.Status != pipeline.Deferred {
					err = fmt.Errorf("outcome %v, want Deferred", o.Status)
				}
			}
			errs <- err
		}
		if concurrent {
			wg.Add(1)
			go func() { defer wg.Done(); do() }()
		} else {
			do()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// settled is what Flush settled, by token.
type settled struct {
	mu  sync.Mutex
	out map[uint64]pipeline.Outcome
	dup []uint64
}

func (s *settled) settle(token uint64, o pipeline.Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		s.out = map[uint64]pipeline.Outcome{}
	}
	if _, ok := s.out[token]; ok {
		s.dup = append(s.dup, token)
	}
	s.out[token] = o
}

// flush flushes s and returns what it settled.
func flush(t *testing.T, s *Sink) (*settled, error) {
	t.Helper()
	st := &settled{}
	err := s.Flush(context.Background(), st.settle)
	return st, err
}

// check asserts that every item was settled once, the failures being
// exactly the resources of job's FAILURE records (import-rejected, with an
// OperationOutcome and the resource named), and returns the count loaded.
func (w *world) check(st *settled, items []pipeline.Item, job string) int {
	t := w.t
	t.Helper()
	if len(st.dup) > 0 || len(st.out) != len(items) {
		t.Fatalf("settled %d items (%d twice), want %d once each", len(st.out), len(st.dup), len(items))
	}
	rejected := w.failureIDs(job)
	loaded := 0
	for _, it := range items {
		o, ok := st.out[it.Token]
		switch {
		case !ok:
			t.Errorf("item %s (line %d) not settled", it.ID, it.Line)
		case rejected[it.ID]:
			if o.Status != pipeline.Failed || o.Reason != "import-rejected" || o.HTTPStatus != 503 || !bytes.Contains(o.OperationOutcome, []byte(`"transient"`)) ||
				o.ResourceType != it.Type || o.ResourceID != it.ID {
				t.Errorf("rejected item %s (line %d): status %d reason %s http %d resource %s/%s outcome %s", it.ID, it.Line,
					o.Status, o.Reason, o.HTTPStatus, o.ResourceType, o.ResourceID, o.OperationOutcome)
			}
		case o.Status != pipeline.Loaded:
			t.Errorf("item %s (line %d): status %d reason %s http %d: %s; want loaded", it.ID, it.Line, o.Status, o.Reason, o.HTTPStatus, o.Message)
		default:
			loaded++
		}
	}
	return loaded
}
