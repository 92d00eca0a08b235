package fhirstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
)

// jobSpec is what StartFHIRImportJob asked for, as persisted with the job.
// The chaos settings are fixed when the job is submitted, so that a resumed
// job rejects the same lines.
type jobSpec struct {
	Input           string  `json:"input"`
	Output          string  `json:"output"`
	KMSKeyID        string  `json:"kms_key_id"`
	RoleARN         string  `json:"role_arn"`
	ValidationLevel string  `json:"validation_level,omitempty"`
	ChaosReject     float64 `json:"chaos_reject,omitempty"`
	ChaosSeed       uint64  `json:"chaos_seed,omitempty"`
}

func decodeSpec(s string) (jobSpec, error) {
	var sp jobSpec
	if err := json.Unmarshal([]byte(s), &sp); err != nil {
		return sp, fmt.Errorf("job spec: %w", err)
	}
	return sp, nil
}

// jobLockFile is held (flock) by the one process of a data directory that
// runs its jobs; other servers on the same folder accept and describe jobs
// but leave running them to the holder.
const jobLockFile = "jobs.lock"

// jobPoll is how often the runner looks for jobs submitted through another
// process, and retries the job lock.
const jobPoll = 2 * time.Second

// jobRunner runs the import jobs of a Server, one at a time, in the order
// they were submitted. A job interrupted by Close (or a crash) is resumed
// when the data directory is next opened: each chunk of lines commits its
// resources, its output records and its place in the file in one SQLite
// transaction of the data store, so a resumed job neither loses nor repeats
// a line.
type jobRunner struct {
	s      *Server
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	live map[string]*liveFile // running job id → the file in progress
	lock *os.File
}

// errInterrupted stops a job where it is, as a crash would (tests).
var errInterrupted = errors.New("import job interrupted")

// liveFile is the progress of the file a running job is reading.
type liveFile struct {
	idx    int
	counts fileCounts
}

func startRunner(s *Server) *jobRunner {
	ctx, cancel := context.WithCancel(context.Background())
	jr := &jobRunner{s: s, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), live: map[string]*liveFile{}}
	go jr.loop(ctx)
	return jr
}

// stop stops the runner and waits for it; a job in progress stays
// IN_PROGRESS, to be resumed.
func (jr *jobRunner) stop() {
	jr.cancel()
	<-jr.done
	if jr.lock != nil {
		_ = jr.lock.Close()
	}
}

// notify wakes the runner: a job was submitted.
func (jr *jobRunner) notify() {
	select {
	case jr.wake <- struct{}{}:
	default:
	}
}

func (jr *jobRunner) loop(ctx context.Context) {
	defer close(jr.done)
	t := time.NewTicker(jobPoll)
	defer t.Stop()
	for {
		if jr.tryLock() {
			jr.runPending(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-jr.wake:
		case <-t.C:
		}
	}
}

// tryLock takes the data directory's job lock unless held.
func (jr *jobRunner) tryLock() bool {
	if jr.lock != nil {
		return true
	}
	f, err := os.OpenFile(filepath.Join(jr.s.opts.Dir, jobLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return false
	}
	jr.lock = f
	return true
}

func (jr *jobRunner) runPending(ctx context.Context) {
	for ctx.Err() == nil {
		jobs, err := jr.s.ctl.pending(ctx)
		if err != nil || len(jobs) == 0 {
			return
		}
		if !jr.runImport(ctx, jobs[0]) {
			return // interrupted: left for a later start
		}
	}
}

// progress returns the counts of the file job is reading, if it runs here.
func (jr *jobRunner) progress(job string) (liveFile, bool) {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	lf, ok := jr.live[job]
	if !ok {
		return liveFile{}, false
	}
	return *lf, true
}

func (jr *jobRunner) setLive(job string, lf *liveFile) {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	if lf == nil {
		delete(jr.live, job)
		return
	}
	cp := *lf
	jr.live[job] = &cp
}

// jobError is a reason to fail a whole job. Its text goes into the job's
// Message: S3 error codes, URIs and counts, never resource content.
type jobError struct{ msg string }

func (e *jobError) Error() string { return e.msg }

func failJob(format string, args ...any) error { return &jobError{fmt.Sprintf(format, args...)} }

// runImport runs (or resumes) import job j to its end, or until ctx is
// done. It reports whether the job ended.
func (jr *jobRunner) runImport(ctx context.Context, j jobRecord) bool {
	s := jr.s
	log := s.log.With(zap.String("job", j.id), zap.String("datastore", j.datastore))
	if j.status == jobSubmitted {
		j.status, j.started = jobInProgress, s.now()
		if err := s.ctl.setJobStatus(ctx, j); err != nil {
			log.Error("import job: cannot start", zap.Error(err))
			return false
		}
	}
	log.Info("import job in progress")
	status, err := jr.importFiles(ctx, j)
	if ctx.Err() != nil || errors.Is(err, errInterrupted) {
		log.Info("import job interrupted; it resumes when the server is next started")
		return false
	}
	j.status, j.ended = status, s.now()
	if err != nil {
		var je *jobError
		if errors.As(err, &je) {
			j.message = je.msg
		} else {
			log.Error("import job failed", zap.Error(err))
			j.message = "Internal error: the job could not be completed."
		}
		j.status = jobFailed
	}
	if err := s.ctl.setJobStatus(context.WithoutCancel(ctx), j); err != nil {
		log.Error("import job: cannot record its end; it is done again at the next start", zap.Error(err))
		return false
	}
	log.Info("import job finished", zap.String("status", j.status))
	return true
}

// importFiles does the work of import job j and returns its final status.
func (jr *jobRunner) importFiles(ctx context.Context, j jobRecord) (string, error) {
	s := jr.s
	spec, err := decodeSpec(j.spec)
	if err != nil {
		return jobFailed, err
	}
	st, release, ok := s.reg.acquire(j.datastore)
	if !ok {
		return jobFailed, failJob("The data store %s is not ACTIVE.", j.datastore)
	}
	defer release()
	cli, err := s.s3.client(ctx)
	if err != nil {
		return jobFailed, failJob("S3 is not configured: %s", err)
	}
	out := outputFolder(spec.Output, j.datastore, j.id)
	if !j.listed {
		if err := jr.listInput(ctx, cli, j, spec, out); err != nil {
			return jobFailed, err
		}
	}
	files, err := s.ctl.files(ctx, j.id)
	if err != nil {
		return jobFailed, err
	}
	imp := &importer{jr: jr, st: st, cli: cli, job: j, spec: spec, out: out}
	for i := range files {
		if files[i].done {
			continue
		}
		if err := imp.file(ctx, &files[i]); err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			return jobFailed, err
		}
	}
	if err := imp.manifest(ctx, files); err != nil {
		return jobFailed, err
	}
	if err := dropChunks(ctx, st, j.id, -1); err != nil {
		return jobFailed, err
	}
	for _, f := range files {
		if f.readError || f.counts.failed > 0 {
			return jobCompletedWithErrors, nil
		}
	}
	return jobCompleted, nil
}

// outputFolder is the job's folder under the output URI, named as
// HealthLake names it: {datastoreId}-FHIR_IMPORT-{jobId}/.
func outputFolder(uri, datastore, job string) string {
	if !strings.HasSuffix(uri, "/") {
		uri += "/"
	}
	return uri + datastore + "-" + kindImport + "-" + job + "/"
}

// listInput lists the objects under the input URI (every object but folder
// markers) and records them as the job's files, after checking that the
// output bucket exists.
func (jr *jobRunner) listInput(ctx context.Context, cli S3API, j jobRecord, spec jobSpec, out string) error {
	ob, _, _ := splitS3URI(spec.Output)
	if _, err := cli.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(ob)}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failJob("The output location %s cannot be written: %s.", spec.Output, s3Reason(err))
	}
	bucket, prefix, _ := splitS3URI(spec.Input)
	var files []jobFile
	names := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(cli, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return failJob("The input location %s cannot be listed: %s.", spec.Input, s3Reason(err))
		}
		for _, o := range page.Contents {
			key := aws.ToString(o.Key)
			if strings.HasSuffix(key, "/") || strings.HasPrefix("s3://"+bucket+"/"+key, out) {
				continue
			}
			f := jobFile{idx: len(files), key: key, size: aws.ToInt64(o.Size), etag: aws.ToString(o.ETag)}
			f.output = outputName(strings.TrimPrefix(key, prefix), key, names)
			files = append(files, f)
		}
	}
	if len(files) == 0 {
		return failJob("No input files found under %s.", spec.Input)
	}
	return jr.s.ctl.setFiles(ctx, j.id, files)
}

// outputName is the name of an input file's output under SUCCESS/ and
// FAILURE/: its key below the input prefix, with ".ndjson" appended unless
// it ends so, made unique among the job's files.
func outputName(rel, key string, seen map[string]bool) string {
	rel = strings.TrimLeft(rel, "/")
	if rel == "" {
		rel = path.Base(key)
	}
	if !strings.HasSuffix(rel, ".ndjson") {
		rel += ".ndjson"
	}
	name := rel
	for n := 2; seen[name]; n++ {
		name = strings.TrimSuffix(rel, ".ndjson") + "-" + strconv.Itoa(n) + ".ndjson"
	}
	seen[name] = true
	return name
}
