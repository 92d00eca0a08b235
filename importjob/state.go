package importjob

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fhirload/fhirload/internal/durable"
)

// The state folder (Options.StateDir):
//
//	lock                      flock, held by the one sink open on the folder
//	staging-{run}/            the batch run {run} is staging
//	    staging.json          where its objects go (so an abandoned staging can be deleted)
//	    part-000001.ndjson    the object being written (removed once uploaded)
//	    part-000001.idx       16 bytes per staged line: token, source line, source
//	batches/{key}/            a batch staged to its end, by content (batchKey)
//	    batch.json            its objects, sources, fingerprint and job
//	    part-*.idx
const (
	lockFile    = "lock"
	batchesDir  = "batches"
	stagingPfx  = "staging-"
	stagingFile = "staging.json"
	batchFile   = "batch.json"
	oldSuffix   = ".old"
)

// stagingRecord is staging.json.
type stagingRecord struct {
	RunID   string    `json:"run_id"`
	Prefix  string    `json:"staging_prefix"`
	Created time.Time `json:"created"`
}

// partRecord is one staged object.
type partRecord struct {
	Name  string `json:"name"` // part-000001.ndjson: the object's key below the batch prefix
	Lines int64  `json:"lines"`
	Bytes int64  `json:"bytes"`
}

// jobAttempt is one import job of a batch.
type jobAttempt struct {
	ClientToken string    `json:"client_token"`
	JobID       string    `json:"job_id,omitempty"`
	JobName     string    `json:"job_name"`
	Status      string    `json:"status,omitempty"`
	Message     string    `json:"message,omitempty"`
	Submitted   time.Time `json:"submitted"`
	Ended       time.Time `json:"ended,omitzero"`
	Scanned     int64     `json:"scanned,omitempty"`
	Imported    int64     `json:"imported,omitempty"`
	Failed      int64     `json:"failed,omitempty"`
}

// batchRecord is batch.json: a batch staged to its end and its jobs.
type batchRecord struct {
	Version     int          `json:"version"`
	Key         string       `json:"key"`
	Fingerprint string       `json:"fingerprint"`
	RunID       string       `json:"run_id"` // the run that staged it
	Created     time.Time    `json:"created"`
	Datastore   string       `json:"datastore_id"`
	Prefix      string       `json:"staging_prefix"` // s3://bucket/prefix/{run}/: the job's input
	OutputURL   string       `json:"output_url"`
	Lines       int64        `json:"lines"`
	Bytes       int64        `json:"bytes"`
	Parts       []partRecord `json:"parts"`
	Sources     []string     `json:"sources"`
	// Jobs are the import jobs of the batch, the current one last; a job
	// that ended FAILED is followed by a new one at the next run.
	Jobs []jobAttempt `json:"jobs,omitempty"`
	// StagedDeleted: the staged objects were deleted (the job's outcome
	// was known).
	StagedDeleted bool `json:"staged_deleted,omitempty"`
}

// job returns the batch's current job, or nil.
func (b *batchRecord) job() *jobAttempt {
	if len(b.Jobs) == 0 {
		return nil
	}
	return &b.Jobs[len(b.Jobs)-1]
}

// needsNewJob reports whether the batch has no job that holds or may hold
// its outcome: none was asked for, or the last one ended without importing.
func (b *batchRecord) needsNewJob() bool {
	j := b.job()
	return j == nil || failedStatus(j.Status)
}

// stateDir is an open state folder.
type stateDir struct {
	dir  string
	lock *os.File
}

// openState creates dir (0700) and takes its lock.
func openState(dir string) (*stateDir, error) {
	if err := os.MkdirAll(filepath.Join(dir, batchesDir), 0o700); err != nil {
		return nil, fmt.Errorf("import state %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("import state %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("import state %s: another fhirload run in import mode holds it (%s)", dir, lockFile)
		}
		return nil, fmt.Errorf("import state %s: lock: %w", dir, err)
	}
	return &stateDir{dir: dir, lock: f}, nil
}

func (s *stateDir) close() {
	if s.lock != nil {
		_ = s.lock.Close() // releases the flock
		s.lock = nil
	}
}

func (s *stateDir) batchDir(key string) string { return filepath.Join(s.dir, batchesDir, key) }

// leftovers lists what earlier runs left behind that no batch needs: staging
// folders of runs that ended before their batch was staged to its end, and
// batch folders replaced by a newer staging of the same content.
func (s *stateDir) leftovers() ([]string, error) {
	var out []string
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), stagingPfx) {
			out = append(out, filepath.Join(s.dir, e.Name()))
		}
	}
	ents, err = os.ReadDir(filepath.Join(s.dir, batchesDir))
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.IsDir() && strings.Contains(e.Name(), oldSuffix) {
			out = append(out, filepath.Join(s.dir, batchesDir, e.Name()))
		}
	}
	return out, nil
}

// writeJSON writes v to path durably (durable.WriteFile).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return durable.WriteFile(path, append(b, '\n'))
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// loadBatch reads the batch record of key; ok is false when there is none.
func (s *stateDir) loadBatch(key string) (*batchRecord, bool, error) {
	var b batchRecord
	err := readJSON(filepath.Join(s.batchDir(key), batchFile), &b)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return &b, true, nil
}

// saveBatch writes the batch record into its folder.
func (s *stateDir) saveBatch(b *batchRecord) error {
	if err := writeJSON(filepath.Join(s.batchDir(b.Key), batchFile), b); err != nil {
		return fmt.Errorf("import state: save batch %s: %w", b.Key, err)
	}
	return nil
}
