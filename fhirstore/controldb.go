package fhirstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// controlFile is the control plane's database in the data directory: the
// data stores created through CreateFHIRDatastore and the import jobs, with
// the files of each job and what became of them. The default data store
// (Options.DatastoreID, Dir/fhirstore.db) is not in it.
const controlFile = "control.db"

const controlSchema = `
CREATE TABLE IF NOT EXISTS meta (
	k TEXT PRIMARY KEY,
	v TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datastores (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL DEFAULT '',
	status       TEXT NOT NULL,
	created      INTEGER NOT NULL,
	client_token TEXT NOT NULL DEFAULT '',
	props        TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS jobs (
	id           TEXT PRIMARY KEY,
	kind         TEXT NOT NULL,
	datastore    TEXT NOT NULL,
	name         TEXT NOT NULL DEFAULT '',
	status       TEXT NOT NULL,
	submitted    INTEGER NOT NULL,
	started      INTEGER NOT NULL DEFAULT 0,
	ended        INTEGER NOT NULL DEFAULT 0,
	client_token TEXT NOT NULL DEFAULT '',
	message      TEXT NOT NULL DEFAULT '',
	spec         TEXT NOT NULL,
	listed       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_datastore ON jobs (datastore, submitted);
CREATE TABLE IF NOT EXISTS job_files (
	job            TEXT NOT NULL,
	idx            INTEGER NOT NULL,
	key            TEXT NOT NULL,
	size           INTEGER NOT NULL,
	etag           TEXT NOT NULL,
	output         TEXT NOT NULL,
	done           INTEGER NOT NULL DEFAULT 0,
	read_error     INTEGER NOT NULL DEFAULT 0,
	scanned        INTEGER NOT NULL DEFAULT 0,
	imported       INTEGER NOT NULL DEFAULT 0,
	failed         INTEGER NOT NULL DEFAULT 0,
	imported_bytes INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (job, idx)
) WITHOUT ROWID;
`

// controlDB is the control plane's persistent state.
type controlDB struct {
	db *sql.DB
}

func openControl(ctx context.Context, dir string) (*controlDB, error) {
	path := filepath.Join(dir, controlFile)
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("control database: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open control database: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, controlSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("create control schema: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			_ = os.Chmod(path+suffix, 0o600)
		}
	}
	return &controlDB{db: db}, nil
}

func (c *controlDB) close() error { return c.db.Close() }

// defaultCreated is the creation time of the default data store: the first
// time a server opened this data directory.
func (c *controlDB) defaultCreated(ctx context.Context, now time.Time) (time.Time, error) {
	if _, err := c.db.ExecContext(ctx, `INSERT OR IGNORE INTO meta (k, v) VALUES ('default_created', ?)`, fmt.Sprint(now.UnixMilli())); err != nil {
		return time.Time{}, fmt.Errorf("record creation time: %w", err)
	}
	var ms int64
	if err := c.db.QueryRowContext(ctx, `SELECT CAST(v AS INTEGER) FROM meta WHERE k = 'default_created'`).Scan(&ms); err != nil {
		return time.Time{}, fmt.Errorf("read creation time: %w", err)
	}
	return time.UnixMilli(ms).UTC(), nil
}

// dsRecord is a created data store as persisted.
type dsRecord struct {
	id, name, status string
	created          time.Time
	clientToken      string
	props            string // JSON: the optional configurations, and ErrorCause
}

func (c *controlDB) datastores(ctx context.Context) ([]dsRecord, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT id, name, status, created, client_token, props FROM datastores ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list data stores: %w", err)
	}
	defer rows.Close()
	var out []dsRecord
	for rows.Next() {
		var r dsRecord
		var ms int64
		if err := rows.Scan(&r.id, &r.name, &r.status, &ms, &r.clientToken, &r.props); err != nil {
			return nil, fmt.Errorf("list data stores: %w", err)
		}
		r.created = time.UnixMilli(ms).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

func (c *controlDB) putDatastore(ctx context.Context, r dsRecord) error {
	_, err := c.db.ExecContext(ctx, `INSERT INTO datastores (id, name, status, created, client_token, props) VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET status = excluded.status, props = excluded.props`,
		r.id, r.name, r.status, r.created.UnixMilli(), r.clientToken, r.props)
	if err != nil {
		return fmt.Errorf("save data store: %w", err)
	}
	return nil
}

// kindImport is the kind of import jobs (the only kind so far), as in
// their output folder's name.
const kindImport = "FHIR_IMPORT"

// Job statuses (the API's JobStatus values that this server uses).
const (
	jobSubmitted           = "SUBMITTED"
	jobInProgress          = "IN_PROGRESS"
	jobCompleted           = "COMPLETED"
	jobCompletedWithErrors = "COMPLETED_WITH_ERRORS"
	jobFailed              = "FAILED"
)

// jobRecord is an import or export job as persisted.
type jobRecord struct {
	id, kind, datastore, name, status string
	submitted, started, ended         time.Time
	clientToken, message              string
	spec                              string // JSON: jobSpec
	listed                            bool   // its input files are in job_files
}

const jobColumns = `id, kind, datastore, name, status, submitted, started, ended, client_token, message, spec, listed`

func scanJob(sc interface{ Scan(...any) error }) (jobRecord, error) {
	var j jobRecord
	var sub, start, end int64
	err := sc.Scan(&j.id, &j.kind, &j.datastore, &j.name, &j.status, &sub, &start, &end, &j.clientToken, &j.message, &j.spec, &j.listed)
	j.submitted = time.UnixMilli(sub).UTC()
	if start > 0 {
		j.started = time.UnixMilli(start).UTC()
	}
	if end > 0 {
		j.ended = time.UnixMilli(end).UTC()
	}
	return j, err
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// insertJob stores a new job, unless one of the same kind has the same
// client token: then it returns that one and false.
func (c *controlDB) insertJob(ctx context.Context, j jobRecord) (jobRecord, bool, error) {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return jobRecord{}, false, fmt.Errorf("save job: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if j.clientToken != "" {
		old, err := scanJob(tx.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE kind = ? AND client_token = ?`, j.kind, j.clientToken))
		if err == nil {
			return old, false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return jobRecord{}, false, fmt.Errorf("look up client token: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (`+jobColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.id, j.kind, j.datastore, j.name, j.status, ms(j.submitted), ms(j.started), ms(j.ended), j.clientToken, j.message, j.spec, j.listed); err != nil {
		return jobRecord{}, false, fmt.Errorf("save job: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return jobRecord{}, false, fmt.Errorf("save job: %w", err)
	}
	return j, true, nil
}

// job returns the job id of kind in datastore, or false.
func (c *controlDB) job(ctx context.Context, kind, datastore, id string) (jobRecord, bool, error) {
	j, err := scanJob(c.db.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ? AND kind = ? AND datastore = ?`, id, kind, datastore))
	if errors.Is(err, sql.ErrNoRows) {
		return jobRecord{}, false, nil
	}
	if err != nil {
		return jobRecord{}, false, fmt.Errorf("read job: %w", err)
	}
	return j, true, nil
}

// jobs lists the jobs of kind in datastore, oldest first.
func (c *controlDB) jobs(ctx context.Context, kind, datastore string) ([]jobRecord, error) {
	return c.queryJobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE kind = ? AND datastore = ? ORDER BY submitted, rowid`, kind, datastore)
}

// pending lists the import jobs not yet finished, in the order they were
// submitted.
func (c *controlDB) pending(ctx context.Context) ([]jobRecord, error) {
	return c.queryJobs(ctx, `SELECT `+jobColumns+` FROM jobs WHERE kind = ? AND status IN (?, ?) ORDER BY submitted, rowid`,
		kindImport, jobSubmitted, jobInProgress)
}

// active reports whether datastore has a job not yet finished.
func (c *controlDB) active(ctx context.Context, datastore string) (bool, error) {
	var n int
	err := c.db.QueryRowContext(ctx, `SELECT count(*) FROM jobs WHERE datastore = ? AND status IN ('SUBMITTED', 'IN_PROGRESS')`, datastore).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up jobs: %w", err)
	}
	return n > 0, nil
}

func (c *controlDB) queryJobs(ctx context.Context, q string, args ...any) ([]jobRecord, error) {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []jobRecord
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// setJobStatus moves a job to status (with its message and times).
func (c *controlDB) setJobStatus(ctx context.Context, j jobRecord) error {
	_, err := c.db.ExecContext(ctx, `UPDATE jobs SET status = ?, message = ?, started = ?, ended = ? WHERE id = ?`,
		j.status, j.message, ms(j.started), ms(j.ended), j.id)
	if err != nil {
		return fmt.Errorf("save job status: %w", err)
	}
	return nil
}

// jobFile is one input file of an import job and what became of it.
type jobFile struct {
	idx       int
	key       string // object key
	size      int64
	etag      string
	output    string // name of its output files under SUCCESS/ and FAILURE/
	done      bool   // its outputs are written and its counts final
	readError bool   // it could not be read to its end
	counts    fileCounts
}

// fileCounts are the line counts of one input file (or part of one).
type fileCounts struct {
	scanned, imported, failed int64
	importedBytes             int64
}

func (a *fileCounts) add(b fileCounts) {
	a.scanned += b.scanned
	a.imported += b.imported
	a.failed += b.failed
	a.importedBytes += b.importedBytes
}

// setFiles records the input files of job (listed once, at its start).
func (c *controlDB) setFiles(ctx context.Context, job string, files []jobFile) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save job files: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `DELETE FROM job_files WHERE job = ?`, job); err != nil {
		return fmt.Errorf("save job files: %w", err)
	}
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO job_files (job, idx, key, size, etag, output) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("save job files: %w", err)
	}
	defer stmt.Close()
	for _, f := range files {
		if _, err := stmt.ExecContext(ctx, job, f.idx, f.key, f.size, f.etag, f.output); err != nil {
			return fmt.Errorf("save job files: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE jobs SET listed = 1 WHERE id = ?`, job); err != nil {
		return fmt.Errorf("save job files: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save job files: %w", err)
	}
	return nil
}

// files returns the input files of job, in order.
func (c *controlDB) files(ctx context.Context, job string) ([]jobFile, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT idx, key, size, etag, output, done, read_error, scanned, imported, failed, imported_bytes
		FROM job_files WHERE job = ? ORDER BY idx`, job)
	if err != nil {
		return nil, fmt.Errorf("read job files: %w", err)
	}
	defer rows.Close()
	var out []jobFile
	for rows.Next() {
		var f jobFile
		if err := rows.Scan(&f.idx, &f.key, &f.size, &f.etag, &f.output, &f.done, &f.readError,
			&f.counts.scanned, &f.counts.imported, &f.counts.failed, &f.counts.importedBytes); err != nil {
			return nil, fmt.Errorf("read job files: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// fileDone records that file f of job is finished, with its final counts.
func (c *controlDB) fileDone(ctx context.Context, job string, f jobFile) error {
	_, err := c.db.ExecContext(ctx, `UPDATE job_files SET done = 1, read_error = ?, scanned = ?, imported = ?, failed = ?, imported_bytes = ?
		WHERE job = ? AND idx = ?`, f.readError, f.counts.scanned, f.counts.imported, f.counts.failed, f.counts.importedBytes, job, f.idx)
	if err != nil {
		return fmt.Errorf("save job file: %w", err)
	}
	return nil
}
