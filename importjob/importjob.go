package importjob

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/healthlake"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/fhirload/fhirload/internal/durable"
	"github.com/fhirload/fhirload/pipeline"
)

// HealthLake is what the sink needs of the HealthLake control plane;
// *healthlake.Client satisfies it.
type HealthLake interface {
	StartFHIRImportJob(ctx context.Context, in *healthlake.StartFHIRImportJobInput, opts ...func(*healthlake.Options)) (*healthlake.StartFHIRImportJobOutput, error)
	DescribeFHIRImportJob(ctx context.Context, in *healthlake.DescribeFHIRImportJobInput, opts ...func(*healthlake.Options)) (*healthlake.DescribeFHIRImportJobOutput, error)
}

// S3 is what the sink needs of Amazon S3; *s3.Client satisfies it.
type S3 interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, opts ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, opts ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error)
}

// Options configure a Sink. HealthLake, S3, DatastoreID, Target,
// StagingURL, OutputURL, RoleARN, KMSKeyID and StateDir are required.
type Options struct {
	HealthLake HealthLake
	S3         S3
	// DatastoreID is the data store the job imports into.
	DatastoreID string
	// Target names the data store stably across runs (its endpoint and id,
	// never an ephemeral port): a batch is recognised by its content and
	// Target.
	Target string
	// StagingURL (s3://bucket/prefix) is where the staged objects go, in a
	// folder per run; OutputURL is where the job writes its output.
	StagingURL, OutputURL string
	// RoleARN is the job's DataAccessRoleArn; KMSKeyID encrypts its output.
	RoleARN, KMSKeyID string
	// StateDir holds the staging index and the checkpoint of each batch
	// and its job (see the package documentation). It must outlive the
	// process: it is what makes a rerun resume a job rather than start one.
	StateDir string
	// ObjectBytes is the size staged objects are cut at. Default 128 MiB.
	ObjectBytes int64
	// Uploads is how many staged objects are uploaded at once. Default 4.
	Uploads int
	// PollInterval is the first wait between DescribeFHIRImportJob calls;
	// the wait doubles up to PollMax. Defaults 5 s and 1 min.
	PollInterval, PollMax time.Duration
	// FailureBudget is how long the control plane may keep failing
	// (throttling, 5xx, network errors) before Flush gives up. Default 10 min.
	FailureBudget time.Duration
	// JobNamePrefix starts each job's name. Default "fhirload".
	JobNamePrefix string
	// KeepStaged keeps the staged objects once the job's outcome is known
	// (by default they are deleted: they are a copy of the data).
	KeepStaged bool
	// Retention is how long a batch stays in the state folder (Open removes
	// older ones, and their staged objects): a rerun of the same lines
	// after it imports them again. Default 7 days.
	Retention time.Duration
	// RunID names the run's staging folder (default: random).
	RunID  string
	Logger *zap.Logger
}

func (o *Options) defaults() error {
	if o.ObjectBytes <= 0 {
		o.ObjectBytes = 128 << 20
	}
	if o.Uploads <= 0 {
		o.Uploads = 4
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.PollMax < o.PollInterval {
		o.PollMax = max(time.Minute, o.PollInterval)
	}
	if o.FailureBudget <= 0 {
		o.FailureBudget = 10 * time.Minute
	}
	if o.Retention <= 0 {
		o.Retention = 7 * 24 * time.Hour
	}
	if o.JobNamePrefix == "" {
		o.JobNamePrefix = "fhirload"
	}
	if o.RunID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.RunID = hex.EncodeToString(b[:])
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"DatastoreID", o.DatastoreID}, {"Target", o.Target}, {"StagingURL", o.StagingURL},
		{"OutputURL", o.OutputURL}, {"RoleARN", o.RoleARN}, {"KMSKeyID", o.KMSKeyID}, {"StateDir", o.StateDir}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if o.HealthLake == nil {
		missing = append(missing, "HealthLake")
	}
	if o.S3 == nil {
		missing = append(missing, "S3")
	}
	if len(missing) > 0 {
		return fmt.Errorf("importjob: missing options: %s", strings.Join(missing, ", "))
	}
	for _, u := range []string{o.StagingURL, o.OutputURL} {
		if b, _ := splitS3(u); b == "" {
			return fmt.Errorf("importjob: %q is not an s3://bucket/prefix", u)
		}
	}
	return nil
}

// splitS3 splits s3://bucket/key into bucket and key ("" bucket when u is
// not an S3 URI).
func splitS3(u string) (bucket, key string) {
	rest, ok := strings.CutPrefix(u, "s3://")
	if !ok {
		return "", ""
	}
	bucket, key, _ = strings.Cut(rest, "/")
	return bucket, key
}

// Sink is the HealthLake import-job sink: a pipeline.DeferredSink. Write
// stages items to S3 and answers Deferred; Flush imports the batch with
// one import job and settles every item from the job's output. See the
// package documentation for the guarantees.
type Sink struct {
	opts     Options
	log      *zap.Logger
	state    *stateDir
	stage    *stager
	progress progress

	// adopted: the staging folder became a batch (or was found to be one
	// already staged): Close no longer deletes what it staged.
	adopted bool
	// spare is this run's staging folder when the batch was staged
	// before: only its index is used (to settle this run's items), and it
	// is removed once they are settled, or at Close.
	spare string
	once  sync.Once
}

// Open opens the state folder (taking its lock: one import-mode run per
// folder), deletes what runs that ended before their batch was staged to
// its end left behind, and starts this run's staging folder.
func Open(ctx context.Context, opts Options) (*Sink, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	st, err := openState(opts.StateDir)
	if err != nil {
		return nil, err
	}
	s := &Sink{opts: opts, log: opts.Logger, state: st}
	s.cleanLeftovers(ctx)
	s.prune(ctx, time.Now().Add(-opts.Retention))
	dir := filepath.Join(st.dir, stagingPfx+opts.RunID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		st.close()
		return nil, fmt.Errorf("import state: %w", err)
	}
	bucket, key := splitS3(opts.StagingURL)
	if key != "" && !strings.HasSuffix(key, "/") {
		key += "/"
	}
	key += opts.RunID + "/"
	s.stage = newStager(opts.S3, dir, bucket, key, opts.ObjectBytes, opts.Uploads)
	if err := writeJSON(filepath.Join(dir, stagingFile), stagingRecord{RunID: opts.RunID, Prefix: s.stage.prefix, Created: time.Now().UTC()}); err != nil {
		_ = os.RemoveAll(dir)
		st.close()
		return nil, fmt.Errorf("import state: %w", err)
	}
	s.log.Info("import mode: staging", zap.String("staging", s.stage.prefix), zap.String("state", st.dir),
		zap.String("datastore", opts.DatastoreID))
	return s, nil
}

// cleanLeftovers deletes the staged objects and folders of stagings that
// never became a batch, and of batches replaced by a newer staging (their
// jobs, if any, ended without importing). A failure is logged: leftovers
// cost storage, they are never imported (every job names its own folder).
func (s *Sink) cleanLeftovers(ctx context.Context) {
	dirs, err := s.state.leftovers()
	if err != nil {
		s.log.Warn("import state: list leftovers", zap.Error(err))
		return
	}
	for _, dir := range dirs {
		var prefix string
		var sr stagingRecord
		var br batchRecord
		if readJSON(filepath.Join(dir, batchFile), &br) == nil {
			prefix = br.Prefix
			if br.StagedDeleted {
				prefix = ""
			}
		} else if readJSON(filepath.Join(dir, stagingFile), &sr) == nil {
			prefix = sr.Prefix
		}
		if bucket, key := splitS3(prefix); bucket != "" {
			if err := deletePrefix(ctx, s.opts.S3, bucket, key); err != nil {
				s.log.Warn("import: delete the objects of an abandoned staging; kept its folder for the next run", zap.String("staging", prefix), zap.Error(err))
				continue
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			s.log.Warn("import state: remove leftover", zap.String("folder", dir), zap.Error(err))
			continue
		}
		s.log.Info("import: removed an abandoned staging", zap.String("folder", filepath.Base(dir)), zap.String("staging", prefix))
	}
}

// prune removes the batches recorded before cutoff, with their staged
// objects if they are still there.
func (s *Sink) prune(ctx context.Context, cutoff time.Time) {
	ents, err := os.ReadDir(filepath.Join(s.state.dir, batchesDir))
	if err != nil {
		s.log.Warn("import state: list batches", zap.Error(err))
		return
	}
	for _, e := range ents {
		if !e.IsDir() || strings.Contains(e.Name(), oldSuffix) {
			continue
		}
		b, ok, err := s.state.loadBatch(e.Name())
		if err != nil || !ok || !b.Created.Before(cutoff) {
			continue
		}
		if bucket, key := splitS3(b.Prefix); bucket != "" && !b.StagedDeleted {
			if err := deletePrefix(ctx, s.opts.S3, bucket, key); err != nil {
				s.log.Warn("import: delete the staged objects of an expired batch; kept it for the next run", zap.String("staging", b.Prefix), zap.Error(err))
				continue
			}
		}
		if err := os.RemoveAll(s.state.batchDir(e.Name())); err != nil {
			s.log.Warn("import state: remove an expired batch", zap.String("batch", e.Name()), zap.Error(err))
			continue
		}
		s.log.Info("import: removed a batch past target.import.state_retention (the same lines would be imported again)",
			zap.String("batch", e.Name()), zap.Time("created", b.Created))
	}
}

// Write implements pipeline.Sink: it stages the items and answers
// Deferred for each. An error (a staged object that cannot be written or
// uploaded) wraps pipeline.ErrFatal, unless ctx ended.
func (s *Sink) Write(ctx context.Context, items []pipeline.Item) ([]pipeline.Outcome, error) {
	bodies := make([][]byte, len(items))
	var fp fingerprint
	var scratch [sha256Size]byte
	for i, it := range items {
		b := it.Body
		if i := indexNewline(b); i >= 0 {
			b = oneLine(b, i)
		}
		bodies[i] = b
		fp.addDigest(lineDigest(scratch[:], it.Source, it.Line, b))
	}
	if err := s.stage.write(ctx, items, bodies, fp); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil, err // the run is being abandoned, not failing
		}
		return nil, errors.Join(pipeline.ErrFatal, err)
	}
	s.progress.staged.Add(int64(len(items)))
	outs := make([]pipeline.Outcome, len(items))
	for i := range outs {
		outs[i].Status = pipeline.Deferred
	}
	return outs, nil
}

const sha256Size = 32

func indexNewline(b []byte) int {
	for i, c := range b {
		if c == '\n' || c == '\r' {
			return i
		}
	}
	return -1
}

// oneLine returns b with its CR and LF bytes replaced by spaces: in valid
// JSON they can only be whitespace between tokens (a string holds them
// escaped), so the resource is the same, on one NDJSON line.
func oneLine(b []byte, from int) []byte {
	out := append([]byte(nil), b...)
	for i := from; i < len(out); i++ {
		if out[i] == '\n' || out[i] == '\r' {
			out[i] = ' '
		}
	}
	return out
}

// Flush implements pipeline.DeferredSink: it finishes the staging, finds
// or starts the batch's import job, waits for it, and settles every item
// written from the job's output. A job that ends FAILED is an error
// (*JobFailedError): the items stay unsettled.
func (s *Sink) Flush(ctx context.Context, settle func(token uint64, o pipeline.Outcome)) error {
	started := time.Now()
	if err := s.stage.finish(ctx); err != nil {
		return err
	}
	st := s.stage
	if st.lines == 0 {
		return nil // nothing passed transform: no job
	}
	s.log.Info("import: staged", zap.Int64("lines", st.lines), zap.Int("objects", len(st.parts)), zap.Int64("bytes", st.bytes),
		zap.String("staging", st.prefix), zap.Duration("took", time.Since(started).Round(time.Millisecond)))
	b, err := s.adopt(ctx)
	if err != nil {
		return err
	}
	j, err := s.runJob(ctx, b)
	if err != nil {
		return err
	}
	o, err := s.readOutcomes(ctx, b, j, s.state.dir)
	if err != nil {
		return err
	}
	defer o.close()
	n, err := s.settleAll(o, settle)
	if err != nil {
		return err
	}
	s.log.Info("import: settled", zap.String("job", j.JobID), zap.Int64("loaded", n.loaded), zap.Int64("rejected", n.rejected),
		zap.Int64("without_outcome", n.unreported), zap.Int64("unmatched_output_records", o.unmatched))
	if j.Imported != n.loadedBatch && !o.trustCounts() {
		s.log.Warn("import: the job's count of imported resources differs from its records", zap.Int64("job_imported", j.Imported),
			zap.Int64("records_imported", n.loadedBatch))
	}
	s.afterSettle(ctx, b)
	return nil
}

// adopt makes the staged batch a batch of the state folder, keyed by its
// content. When the same content was staged before and its job holds (or
// will hold) its outcome, that batch is returned and this run's copy is
// deleted; otherwise this staging becomes the batch (replacing one whose
// job ended without importing).
func (s *Sink) adopt(ctx context.Context) (*batchRecord, error) {
	st := s.stage
	key := batchKey(s.opts.Target, st.fp)
	prev, found, err := s.state.loadBatch(key)
	if err != nil {
		return nil, err
	}
	if found && !prev.needsNewJob() {
		s.log.Info("import: this batch was staged before, by run "+prev.RunID+"; its import job settles it (nothing is imported again)",
			zap.String("batch", key), zap.String("job", prev.job().JobID))
		s.adopted, s.spare = true, st.dir
		if err := deletePrefix(ctx, s.opts.S3, st.bucket, st.keyPrefix); err != nil {
			s.log.Warn("import: delete this run's copy of the staging", zap.String("staging", st.prefix), zap.Error(err))
		}
		return prev, nil
	}
	b := &batchRecord{Version: 1, Key: key, Fingerprint: st.fp.String(), RunID: s.opts.RunID, Created: time.Now().UTC(),
		Datastore: s.opts.DatastoreID, Prefix: st.prefix, OutputURL: s.opts.OutputURL, Lines: st.lines, Bytes: st.bytes,
		Parts: st.parts, Sources: st.sourceList}
	if found {
		b.Jobs = prev.Jobs // the history: the last one ended without importing
		s.log.Info("import: the last job of this batch ended "+prev.job().Status+"; this run's staging replaces it, and a new job imports it",
			zap.String("batch", key), zap.String("previous_job", prev.job().JobID))
	}
	// Record the batch inside the staging folder, then move the folder
	// into batches/ in one rename: a crash leaves either a staging (deleted
	// by the next run) or a whole batch.
	if err := writeJSON(filepath.Join(st.dir, batchFile), b); err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	dest := s.state.batchDir(key)
	if found {
		old := dest + oldSuffix + "-" + s.opts.RunID
		if err := os.Rename(dest, old); err != nil {
			return nil, fmt.Errorf("import state: %w", err)
		}
		defer func() {
			if bucket, k := splitS3(prev.Prefix); bucket != "" && !prev.StagedDeleted {
				if err := deletePrefix(ctx, s.opts.S3, bucket, k); err != nil {
					s.log.Warn("import: delete a replaced staging (retried by the next run)", zap.String("staging", prev.Prefix), zap.Error(err))
					return
				}
			}
			_ = os.RemoveAll(old)
		}()
	}
	if err := os.Rename(st.dir, dest); err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	if err := durable.SyncDir(filepath.Dir(dest)); err != nil {
		return nil, fmt.Errorf("import state: %w", err)
	}
	s.adopted = true
	st.dir = dest
	_ = os.Remove(filepath.Join(dest, stagingFile))
	return b, nil
}

type settleCounts struct {
	loaded, rejected, unreported int64
	loadedBatch                  int64 // lines of the batch the job's records say it imported
}

// settleAll settles every item this run wrote, in the order staged, from
// the outcomes of the batch (this run's, or the same content's staged
// before).
func (s *Sink) settleAll(o *outcomes, settle func(token uint64, out pipeline.Outcome)) (settleCounts, error) {
	var n settleCounts
	for _, bs := range o.reported {
		for _, w := range bs {
			n.loadedBatch += int64(popcount(w))
		}
	}
	n.loadedBatch -= int64(len(o.failed))
	st := s.stage
	rec := make([]byte, idxRecord)
	for _, p := range st.parts {
		f, err := os.Open(filepath.Join(st.dir, idxName(p.Name)))
		if err != nil {
			return n, fmt.Errorf("import state: %w", err)
		}
		br := bufio.NewReaderSize(f, 256<<10)
		for i := int64(0); i < p.Lines; i++ {
			if _, err := io.ReadFull(br, rec); err != nil {
				f.Close()
				return n, fmt.Errorf("import state: %s: %w", idxName(p.Name), err)
			}
			token := binary.LittleEndian.Uint64(rec[0:8])
			line := binary.LittleEndian.Uint32(rec[8:12])
			src := binary.LittleEndian.Uint32(rec[12:16])
			out, err := o.outcome(st.sourceList[src], line)
			if err != nil {
				f.Close()
				return n, err
			}
			switch {
			case out.Status == pipeline.Loaded:
				n.loaded++
			case out.HTTPStatus == 0 && out.OperationOutcome == nil:
				n.unreported++
			default:
				n.rejected++
			}
			settle(token, out)
		}
		f.Close()
	}
	return n, nil
}

func popcount(w uint64) int {
	n := 0
	for ; w != 0; w &= w - 1 {
		n++
	}
	return n
}

// afterSettle deletes the batch's staged objects (unless KeepStaged) and
// this run's spare staging folder.
func (s *Sink) afterSettle(ctx context.Context, b *batchRecord) {
	if !s.opts.KeepStaged && !b.StagedDeleted {
		bucket, key := splitS3(b.Prefix)
		if err := deletePrefix(ctx, s.opts.S3, bucket, key); err != nil {
			s.log.Warn("import: delete the staged objects (kept; they are deleted by hand or by a lifecycle rule)", zap.String("staging", b.Prefix), zap.Error(err))
		} else {
			b.StagedDeleted = true
			if err := s.state.saveBatch(b); err != nil {
				s.log.Warn("import state", zap.Error(err))
			}
		}
	}
	if s.spare != "" {
		_ = os.RemoveAll(s.spare)
		s.spare = ""
	}
}

// Close ends the sink: a staging that never became a batch (the run
// stopped, or failed, before Flush recorded it) is deleted, in S3 and in
// the state folder, so that nothing half-staged is ever imported; then the
// state folder's lock is released.
func (s *Sink) Close() error {
	var err error
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if !s.adopted {
			if err = s.stage.abort(ctx); err != nil {
				s.log.Warn("import: delete the unfinished staging (the next run retries)", zap.String("staging", s.stage.prefix), zap.Error(err))
			} else if s.stage.lines > 0 {
				s.log.Info("import: the run stopped before its batch was staged to the end: the staging is deleted", zap.String("staging", s.stage.prefix))
			}
		} else {
			s.stage.cancel()
			if s.spare != "" {
				_ = os.RemoveAll(s.spare)
			}
		}
		s.state.close()
	})
	return err
}

// progress is what the sink has done so far, for the progress line and
// the metrics.
type progress struct {
	staged                    atomic.Int64
	scanned, imported, failed atomic.Int64
	mu                        sync.Mutex
	jobID, jobStatus          string
}

func (p *progress) setJob(id, status string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.jobID, p.jobStatus = id, status
}

func (p *progress) setCounts(scanned, imported, failed int64) {
	p.scanned.Store(scanned)
	p.imported.Store(imported)
	p.failed.Store(failed)
}

// Progress is a snapshot of what the sink has done.
type Progress struct {
	Staged        int64 // lines staged by this run
	StagedObjects int64 // objects uploaded by this run
	JobID, Status string
	Scanned       int64 // the job's counters
	Imported      int64
	Rejected      int64
}

// Progress returns what the sink has done so far.
func (s *Sink) Progress() Progress {
	p := &s.progress
	p.mu.Lock()
	defer p.mu.Unlock()
	return Progress{Staged: p.staged.Load(), StagedObjects: s.stage.uploaded.Load(), JobID: p.jobID, Status: p.jobStatus,
		Scanned: p.scanned.Load(), Imported: p.imported.Load(), Rejected: p.failed.Load()}
}

// Collectors are the sink's Prometheus metrics, read at scrape time.
func (s *Sink) Collectors() []prometheus.Collector {
	g := func(name, help string, get func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, get)
	}
	return []prometheus.Collector{
		g("fhirload_import_staged_lines", "Lines staged to S3 for the import job by this run.", func() float64 { return float64(s.progress.staged.Load()) }),
		g("fhirload_import_staged_objects", "Staged objects uploaded by this run.", func() float64 { return float64(s.stage.uploaded.Load()) }),
		g("fhirload_import_job_scanned", "Resources the import job has scanned.", func() float64 { return float64(s.progress.scanned.Load()) }),
		g("fhirload_import_job_imported", "Resources the import job has imported.", func() float64 { return float64(s.progress.imported.Load()) }),
		g("fhirload_import_job_rejected", "Resources the import job has rejected.", func() float64 { return float64(s.progress.failed.Load()) }),
	}
}
