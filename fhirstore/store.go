package fhirstore

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // the pure-Go SQLite driver, registered as "sqlite"
)

// schema is the store's layout. resources holds the current version of every
// resource (deleted ones as tombstones), history the versions before it, and
// idx the search-index rows of current, live versions. idx is keyed for
// search only: k is typeParams.key(type, parameter, sub-key), a small
// integer, so keys stay short and compare fast; a and b have no type
// affinity, so "00123" stays text and is not the number 123.
// resources.keys lists every index row of the current version (see
// encodeRows), of every search parameter; idx holds those of the keys that
// are active (see activeKeys): a key becomes active when a search first
// needs it, and its rows are then copied from resources.keys. An update
// deletes exactly the active rows of the version it replaces, or nothing
// when they are unchanged; a search sorts and includes by keys; so idx
// needs no second index by rid. keys comes before body so that reading it
// does not read the body's overflow pages. method is how a version was
// written (methodPOST…; 0 for versions written before schema version 3).
// meta holds the fingerprint of the search catalog the keys were computed
// with, and the active keys. schemaVersion is kept in PRAGMA user_version.
const schema = `
CREATE TABLE IF NOT EXISTS resources (
	rid     INTEGER PRIMARY KEY,
	type    TEXT NOT NULL,
	id      TEXT NOT NULL,
	version INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	deleted INTEGER NOT NULL DEFAULT 0,
	method  INTEGER NOT NULL DEFAULT 0,
	keys    BLOB,
	body    BLOB,
	UNIQUE (type, id)
);
CREATE TABLE IF NOT EXISTS history (
	rid     INTEGER NOT NULL,
	version INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	deleted INTEGER NOT NULL,
	body    BLOB,
	method  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (rid, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idx (
	k   INTEGER NOT NULL,
	a,
	b,
	rid INTEGER NOT NULL,
	PRIMARY KEY (k, a, b, rid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
`

// schemaVersion is the layout of schema. Version 1 (the first release) keyed
// idx by (type, param) strings and had no resources.keys; version 2 indexed
// a fixed list of Patient and Observation parameters by integer keys and
// had no method columns and no meta. Opening an older folder migrates it
// and rebuilds the index from the stored resources; so does opening a
// folder whose index was built from another search catalog (a registry
// with other SearchParameters, or another extractor version).
const schemaVersion = 3

// Methods of resources.method and history.method.
const (
	methodUnknown = iota
	methodPOST
	methodPUT
	methodPATCH
	methodDELETE
)

// store is the SQLite database: one writer connection, serialised by wmu, and
// a pool of read-only connections that WAL lets run beside it.
type store struct {
	path string
	w    *sql.DB
	r    *sql.DB
	// ck is the checkpointer's connection; ckStop stops it, ckDone tells
	// it stopped.
	ck             *sql.DB
	ckStop, ckDone chan struct{}
	// wmu is held by the caller of write that runs a group of queued
	// writes (the leader); qmu guards queue.
	wmu   sync.Mutex
	qmu   sync.Mutex
	queue []*writeReq

	cfg storeConfig
	// active are the index keys whose rows idx holds. It is replaced (never
	// changed in place) under wmu, when keys are activated.
	active atomic.Pointer[activeKeys]
	// activations, activatedRows and activationTime count what activate did
	// (the time in nanoseconds), for logs and benchmarks.
	activations, activatedRows, activationTime atomic.Int64

	lookup, archive, update, insertNew, drop, unindex, dupCheck *sql.Stmt
	// multi[n] inserts n index rows at once, for n in multiSizes.
	multi map[int]*sql.Stmt
}

const dbFile = "fhirstore.db"

// readerMmapBytes is how much of the database file each read connection
// maps. Mapped pages are the kernel's page cache, shared by every
// connection, not a copy per connection.
const readerMmapBytes = 1 << 30

// storeConfig is what a store takes from the server's Options.
type storeConfig struct {
	// unique are the types whose identifiers must be unique (422).
	unique map[string]bool
	// cacheKiB is the SQLite page cache of each connection.
	cacheKiB int64
}

// createPrivate creates the database file at path (if it is not there) with
// mode 0600, and restricts an existing one to 0600: created by us, it is
// private from its first byte, and SQLite gives its -wal and -shm files the
// same mode.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_ = f.Close()
	return os.Chmod(path, 0o600)
}

func openStore(ctx context.Context, dir string, cfg storeConfig) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, dbFile)
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("database file: %w", err)
	}
	if cfg.cacheKiB <= 0 {
		cfg.cacheKiB = DefaultCacheBytes >> 10
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
		"&_pragma=foreign_keys(OFF)&_pragma=cache_size(-" + strconv.FormatInt(cfg.cacheKiB, 10) + ")" +
		"&_pragma=temp_store(MEMORY)&_pragma=journal_size_limit(67108864)"
	// The writer does not checkpoint (wal_autocheckpoint 0): the
	// checkpointer does, on a connection of its own, beside the writes.
	w, err := sql.Open("sqlite", dsn+"&_pragma=wal_autocheckpoint(0)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	st := &store{path: path, w: w, multi: map[int]*sql.Stmt{}, cfg: cfg}
	if err := migrate(ctx, w); err != nil {
		_ = w.Close()
		return nil, err
	}
	act, err := loadActive(ctx, w)
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	st.active.Store(&act)
	if _, err := w.ExecContext(ctx, chunkSchema); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("create schema: %w", err)
	}
	// Readers map the file (mmap_size): a search that reads the rows of
	// a thousand matches then takes them from memory instead of a read(2)
	// per page the connection's cache lacks.
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)&_pragma=mmap_size("+strconv.FormatInt(readerMmapBytes, 10)+")")
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	st.r = r
	ck, err := sql.Open("sqlite", dsn)
	if err != nil {
		_ = st.close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	ck.SetMaxOpenConns(1)
	st.ck, st.ckStop, st.ckDone = ck, make(chan struct{}), make(chan struct{})
	go st.checkpointer()
	for _, s := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&st.lookup, `SELECT rid, version, deleted, keys FROM resources WHERE type = ? AND id = ?`},
		{&st.archive, `INSERT OR REPLACE INTO history (rid, version, updated, deleted, body, method) SELECT rid, version, updated, deleted, body, method FROM resources WHERE rid = ?`},
		{&st.update, `UPDATE resources SET version = ?, updated = ?, deleted = ?, body = ?, keys = ?, method = ? WHERE rid = ?`},
		{&st.insertNew, `INSERT INTO resources (type, id, version, updated, deleted, body, keys, method) VALUES (?, ?, 1, ?, 0, ?, ?, ?) ON CONFLICT (type, id) DO NOTHING`},
		{&st.drop, `DELETE FROM resources WHERE rid = ?`},
		{&st.unindex, `DELETE FROM idx WHERE k = ? AND a = ? AND b = ? AND rid = ?`},
		{&st.dupCheck, `SELECT rid FROM idx WHERE k = ? AND a = ? AND b = ? AND rid <> ? LIMIT 1`},
	} {
		if *s.dst, err = w.PrepareContext(ctx, s.q); err != nil {
			_ = st.close()
			return nil, fmt.Errorf("prepare statement: %w", err)
		}
	}
	for _, n := range multiSizes() {
		if st.multi[n], err = w.PrepareContext(ctx, multiInsert(n)); err != nil {
			_ = st.close()
			return nil, fmt.Errorf("prepare statement: %w", err)
		}
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			_ = os.Chmod(path+suffix, 0o600)
		}
	}
	// The duplicate-identifier rule reads the identifier rows of its types.
	var unique []int64
	for typ := range cfg.unique {
		if k := searchCatalog().types[typ].ident; k >= 0 {
			unique = append(unique, k)
		}
	}
	if err := st.activate(ctx, unique); err != nil {
		_ = st.close()
		return nil, err
	}
	return st, nil
}

// migrate brings the database at w to schemaVersion and its index to the
// current search catalog: it creates a new database, migrates an older
// layout, and rebuilds the search index when the layout or the catalog it
// was built with changed.
func migrate(ctx context.Context, w *sql.DB) error {
	var v int
	if err := w.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("the data folder was written by a newer fhirload (schema version %d; this one reads %d)", v, schemaVersion)
	}
	fp := searchCatalog().fingerprint
	if v == schemaVersion {
		var have string
		err := w.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'catalog'`).Scan(&have)
		if err == nil && have == fp {
			return nil
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read schema: %w", err)
		}
	}
	tx, err := w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var tables int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'resources'`).Scan(&tables); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	rebuild := tables > 0
	if tables > 0 && v < schemaVersion {
		var v1 int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('idx') WHERE name = 'param'`).Scan(&v1); err != nil {
			return fmt.Errorf("migrate schema: %w", err)
		}
		// resources gets its columns in the new order: a copy.
		steps := `DROP TABLE IF EXISTS idx; ALTER TABLE history ADD COLUMN method INTEGER NOT NULL DEFAULT 0;
			ALTER TABLE resources RENAME TO resources_old;`
		if _, err := tx.ExecContext(ctx, steps); err != nil {
			return fmt.Errorf("migrate schema: %w", err)
		}
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO resources (rid, type, id, version, updated, deleted, body)
			SELECT rid, type, id, version, updated, deleted, body FROM resources_old; DROP TABLE resources_old`); err != nil {
			return fmt.Errorf("migrate schema: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if rebuild {
		// The keys change with the catalog: what was active is active
		// again where the new catalog has it.
		act, err := loadActive(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM idx`); err != nil {
			return fmt.Errorf("rebuild search index: %w", err)
		}
		if err := reindex(ctx, tx, act); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta (key, value) VALUES ('catalog', ?)`, fp); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate schema: %w", err)
	}
	return nil
}

// reindexPage is how many resources reindex reads at a time.
var reindexPage = 1000

// reindex computes resources.keys of the live resources, a page of rows at
// a time, and fills idx with their active rows. A resource that the current
// rules refuse keeps no index rows: it stays readable, and searchable by
// _id only.
func reindex(ctx context.Context, tx *sql.Tx, act activeKeys) error {
	setKeys, err := tx.PrepareContext(ctx, `UPDATE resources SET keys = ? WHERE rid = ?`)
	if err != nil {
		return fmt.Errorf("rebuild search index: %w", err)
	}
	defer setKeys.Close()
	ins := &rowInserter{ctx: ctx, tx: tx, stmts: map[int]*sql.Stmt{}}
	defer ins.close()
	type item struct {
		rid  int64
		body []byte
	}
	for after := int64(0); ; {
		page, err := func() ([]item, error) {
			rows, err := tx.QueryContext(ctx, `SELECT rid, body FROM resources WHERE deleted = 0 AND rid > ? ORDER BY rid LIMIT ?`, after, reindexPage)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			var page []item
			for rows.Next() {
				var it item
				if err := rows.Scan(&it.rid, &it.body); err != nil {
					return nil, err
				}
				page = append(page, it)
			}
			return page, rows.Err()
		}()
		if err != nil {
			return fmt.Errorf("rebuild search index: %w", err)
		}
		if len(page) == 0 {
			return nil
		}
		var pend []pendRow
		for _, it := range page {
			after = it.rid
			var keys []byte
			if p, e := parseResource(it.body, false); e == nil {
				keys = p.keys
				for _, r := range p.rows {
					if act[r.k] {
						a, b := r.values()
						pend = append(pend, pendRow{k: r.k, a: a, b: b, rid: it.rid})
					}
				}
			}
			if _, err := setKeys.ExecContext(ctx, keys, it.rid); err != nil {
				return fmt.Errorf("rebuild search index: %w", err)
			}
		}
		slices.SortFunc(pend, comparePend)
		if err := ins.insert(pend); err != nil {
			return fmt.Errorf("rebuild search index: %w", err)
		}
	}
}

// rowInserter inserts index rows with multi-row statements prepared on a
// transaction.
type rowInserter struct {
	ctx   context.Context
	tx    *sql.Tx
	stmts map[int]*sql.Stmt
}

func (ri *rowInserter) insert(rows []pendRow) error {
	return insertMulti(rows, func(n int, args []any) error {
		stmt := ri.stmts[n]
		if stmt == nil {
			var err error
			if stmt, err = ri.tx.PrepareContext(ri.ctx, multiInsert(n)); err != nil {
				return err
			}
			ri.stmts[n] = stmt
		}
		_, err := stmt.ExecContext(ri.ctx, args...)
		return err
	})
}

func (ri *rowInserter) close() {
	for _, s := range ri.stmts {
		_ = s.Close()
	}
}

// multiInsert is the statement inserting n index rows.
func multiInsert(n int) string {
	return "INSERT OR IGNORE INTO idx (k, a, b, rid) VALUES " + strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", n), ",")
}

// checkpointInterval is how often the checkpointer copies the committed
// WAL frames into the database file.
const checkpointInterval = 500 * time.Millisecond

// checkpointer runs PASSIVE checkpoints every checkpointInterval until
// close: they copy committed frames from the WAL into the database file
// without waiting for readers or the writer, so that commits (a group of
// REST writes, an import chunk) never pay for one. The writer starts the
// WAL over once a checkpoint has copied all of it, and SQLite truncates it
// to journal_size_limit then.
func (st *store) checkpointer() {
	defer close(st.ckDone)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-st.ckStop:
			return
		case <-t.C:
		}
		var busy, log, done int
		_ = st.ck.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &log, &done)
	}
}

func (st *store) close() error {
	var errs []error
	if st.ck != nil {
		close(st.ckStop)
		<-st.ckDone
		errs = append(errs, st.ck.Close())
		st.ck = nil
	}
	if st.w != nil {
		// Let SQLite refresh its planner statistics for the next start.
		_, _ = st.w.Exec(`PRAGMA optimize`)
		errs = append(errs, st.w.Close())
	}
	if st.r != nil {
		errs = append(errs, st.r.Close())
	}
	return errors.Join(errs...)
}

// wtx is one write request's view of a write transaction (a group, see
// write).
type wtx struct {
	ctx context.Context
	tx  *sql.Tx
	st  *store
	g   *groupState

	// pend are the index rows this request added, not yet in idx, and
	// pendIdent their identifiers (for the duplicate check). When the
	// request succeeds they join the group's; the group inserts them all,
	// in key order, after the last request's savepoint is released: index
	// inserts inside savepoints cost a copy of every page they touch into
	// the savepoint's journal, which made them several times dearer.
	pend      []pendRow
	pendIdent map[identKey]int64
	// restore are the group's pending rows this request took out of the
	// group's list (flushed into idx, or unindexed) and restoreIdent its
	// identifiers: a request that fails gives them back, since rolling it
	// back to its savepoint undoes what it did with them.
	restore      []pendRow
	restoreIdent map[identKey]int64

	lookup, archive, update, insertNew, drop, unindexStmt, dupCheck *sql.Stmt
}

// groupState is what the requests of one group commit share: the index
// rows and identifiers of the requests done so far, not yet in idx.
type groupState struct {
	pend  []pendRow
	ident map[identKey]int64
}

// maxGroup is the most write requests committed together in one SQLite
// transaction (see write).
const maxGroup = 32

// writeReq is one call of write waiting for, or done by, a group commit.
// fn, ctx are set by the caller; err and done by the leader, under wmu.
type writeReq struct {
	ctx  context.Context
	fn   func(t *wtx) error
	err  error
	done bool
}

// write runs fn in a write transaction and commits it if fn returns nil.
//
// Concurrent calls are committed together (group commit): the caller that
// gets the writer lock runs every queued call, each inside its own SAVEPOINT,
// in one SQLite transaction, and commits once. A call whose fn fails is rolled
// back to its savepoint alone, so each call is still all-or-nothing and
// independent of the others; only a failed COMMIT fails them all. One commit
// per group instead of per request saves most of the per-transaction cost
// (WAL frames of pages several requests touch, page-cache bookkeeping).
// A call does not return before its writes are committed.
func (st *store) write(ctx context.Context, fn func(t *wtx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	req := &writeReq{ctx: ctx, fn: fn}
	st.qmu.Lock()
	st.queue = append(st.queue, req)
	st.qmu.Unlock()
	st.wmu.Lock()
	defer st.wmu.Unlock()
	for !req.done {
		st.qmu.Lock()
		n := min(len(st.queue), maxGroup)
		group := slices.Clone(st.queue[:n])
		st.queue = append(st.queue[:0], st.queue[n:]...)
		st.qmu.Unlock()
		st.runGroup(group)
	}
	return req.err
}

// runGroup runs the queued write calls of group in one transaction. It sets
// err and done on every one of them.
func (st *store) runGroup(group []*writeReq) {
	defer func() {
		for _, r := range group {
			r.done = true
		}
	}()
	fail := func(rs []*writeReq, err error) {
		for _, r := range rs {
			if r.err == nil {
				r.err = err
			}
		}
	}
	// The transaction outlives any one caller's context; each call's
	// statements run under its own context, without cancellation, so that
	// an interrupted statement cannot roll back the others' writes.
	bg := context.Background()
	tx, err := st.w.BeginTx(bg, nil)
	if err != nil {
		fail(group, fmt.Errorf("begin: %w", err))
		return
	}
	lookup, archive := tx.StmtContext(bg, st.lookup), tx.StmtContext(bg, st.archive)
	update, insertNew := tx.StmtContext(bg, st.update), tx.StmtContext(bg, st.insertNew)
	unindex, dupCheck := tx.StmtContext(bg, st.unindex), tx.StmtContext(bg, st.dupCheck)
	drop := tx.StmtContext(bg, st.drop)
	single := len(group) == 1
	ok := make([]*writeReq, 0, len(group))
	g := &groupState{ident: map[identKey]int64{}}
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			r.err = fmt.Errorf("begin: %w", err)
			continue
		}
		ctx := context.WithoutCancel(r.ctx)
		t := &wtx{ctx: ctx, tx: tx, st: st, g: g, lookup: lookup, archive: archive, update: update,
			insertNew: insertNew, drop: drop, unindexStmt: unindex, dupCheck: dupCheck, pendIdent: map[identKey]int64{}}
		if !single {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
				_ = tx.Rollback()
				fail(group, fmt.Errorf("savepoint: %w", err))
				return
			}
		}
		err, panicked := runWrite(r.fn, t)
		if panicked {
			// The transaction's state is unknown: give it up for everyone.
			_ = tx.Rollback()
			r.err = err
			fail(group, errors.New("write aborted: another write in the same transaction failed"))
			return
		}
		if err != nil {
			r.err = err
			if single {
				_ = tx.Rollback()
				return
			}
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO w; RELEASE w"); rerr != nil {
				_ = tx.Rollback()
				fail(group, fmt.Errorf("roll back to savepoint: %w", rerr))
				return
			}
			t.giveBack()
			continue
		}
		if !single {
			if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
				_ = tx.Rollback()
				fail(group, fmt.Errorf("release savepoint: %w", err))
				return
			}
		}
		t.handOver()
		ok = append(ok, r)
	}
	if len(ok) == 0 {
		_ = tx.Rollback()
		return
	}
	if err := insertRows(bg, tx, st, g.pend); err != nil {
		_ = tx.Rollback()
		fail(ok, err)
		return
	}
	if err := tx.Commit(); err != nil {
		fail(ok, fmt.Errorf("commit: %w", err))
	}
}

// handOver gives the rows of a successful request to its group.
func (t *wtx) handOver() {
	t.g.pend = append(t.g.pend, t.pend...)
	for k, v := range t.pendIdent {
		t.g.ident[k] = v
	}
	t.pend, t.restore = nil, nil
}

// giveBack returns to the group what a failed request took from it.
func (t *wtx) giveBack() {
	t.g.pend = append(t.g.pend, t.restore...)
	for k, v := range t.restoreIdent {
		t.g.ident[k] = v
	}
	t.pend, t.restore = nil, nil
}

// runWrite calls fn, turning a panic into an error.
func runWrite(fn func(t *wtx) error, t *wtx) (err error, panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			err, panicked = fmt.Errorf("panic in write: %v", p), true
		}
	}()
	return fn(t), false
}

type pendRow struct {
	k    int64
	a, b any
	rid  int64
}

type identKey struct{ typ, system, value string }

// multiSizes are the row counts of the multi-row index inserts, largest
// first; 1 must be last.
func multiSizes() []int { return []int{64, 16, 4, 1} }

// insertMulti inserts rows in order, as few statements as the multi-row
// sizes allow: exec runs the insert of n rows with their arguments.
func insertMulti(rows []pendRow, exec func(n int, args []any) error) error {
	for len(rows) > 0 {
		n := 1
		for _, size := range multiSizes() {
			if len(rows) >= size {
				n = size
				break
			}
		}
		args := make([]any, 0, 4*n)
		for _, r := range rows[:n] {
			args = append(args, r.k, r.a, r.b, r.rid)
		}
		if err := exec(n, args); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// insertRows inserts index rows, in key order: consecutive inserts then
// land on the same B-tree pages.
func insertRows(ctx context.Context, tx *sql.Tx, st *store, rows []pendRow) error {
	slices.SortFunc(rows, comparePend)
	return insertMulti(rows, func(n int, args []any) error {
		if _, err := tx.StmtContext(ctx, st.multi[n]).ExecContext(ctx, args...); err != nil {
			return fmt.Errorf("index resources: %w", err)
		}
		return nil
	})
}

// flush inserts the pending index rows (the group's and this request's)
// into idx, for a read inside the transaction to see them.
func (t *wtx) flush() error {
	t.restore = append(t.restore, t.g.pend...)
	if t.restoreIdent == nil {
		t.restoreIdent = map[identKey]int64{}
	}
	for k, v := range t.g.ident {
		t.restoreIdent[k] = v
	}
	rows := append(t.g.pend, t.pend...)
	t.g.pend, t.pend = nil, nil
	clear(t.g.ident)
	clear(t.pendIdent)
	return insertRows(t.ctx, t.tx, t.st, rows)
}

// unindex removes the index rows of rid: those of its current version
// (keys, as encodeRows wrote them), which are in idx or still pending.
func (t *wtx) unindex(rid int64, keys []byte) error {
	pendingIn := func(list []pendRow) bool {
		return slices.ContainsFunc(list, func(r pendRow) bool { return r.rid == rid })
	}
	switch {
	case pendingIn(t.pend):
		t.pend = slices.DeleteFunc(t.pend, func(r pendRow) bool { return r.rid == rid })
	case pendingIn(t.g.pend):
		t.g.pend = slices.DeleteFunc(t.g.pend, func(r pendRow) bool {
			if r.rid == rid {
				t.restore = append(t.restore, r)
			}
			return r.rid == rid
		})
	default:
		act := *t.st.active.Load()
		for _, r := range decodeRows(keys) {
			if !act[r.k] {
				continue
			}
			if _, err := t.unindexStmt.ExecContext(t.ctx, r.k, r.a, r.b, rid); err != nil {
				return fmt.Errorf("unindex resource: %w", err)
			}
		}
	}
	for k, v := range t.pendIdent {
		if v == rid {
			delete(t.pendIdent, k)
		}
	}
	for k, v := range t.g.ident {
		if v == rid {
			if t.restoreIdent == nil {
				t.restoreIdent = map[identKey]int64{}
			}
			t.restoreIdent[k] = v
			delete(t.g.ident, k)
		}
	}
	return nil
}

// version is one stored version of a resource.
type version struct {
	rid     int64
	typ, id string
	version int64
	updated time.Time
	deleted bool
	body    []byte
}

func (v *version) etag() string { return `W/"` + strconv.FormatInt(v.version, 10) + `"` }

// lastUpdated formats t as FHIR instants in meta.lastUpdated are written.
func lastUpdated(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// current is the current version's key data (without the body).
type current struct {
	rid, ver       int64
	deleted, found bool
	keys           []byte // its index rows (encodeRows)
}

// current looks up the current version of typ/id.
func (t *wtx) current(typ, id string) (current, error) {
	var c current
	err := t.lookup.QueryRowContext(t.ctx, typ, id).Scan(&c.rid, &c.ver, &c.deleted, &c.keys)
	if errors.Is(err, sql.ErrNoRows) {
		return current{}, nil
	}
	if err != nil {
		return current{}, fmt.Errorf("look up resource: %w", err)
	}
	c.found = true
	return c, nil
}

// putOptions qualifies a put.
type putOptions struct {
	ifMatch  string // expected current version ("" = any)
	dupCheck bool   // refuse a create whose identifier another resource has
	// stamped is the body of version 1 with meta stamped for the put's
	// time, when the caller made it already (import chunks do, outside the
	// write lock).
	stamped []byte
	// method is how the version is written (methodPOST, …); 0 means PUT.
	method int
}

func (o putOptions) methodOr(def int) int {
	if o.method == 0 {
		return def
	}
	return o.method
}

// put writes p as the new current version of p.typ/id. It reports whether
// the write created the resource (no live version existed).
func (t *wtx) put(p *parsed, id string, opt putOptions, now time.Time, buf []byte) (*version, bool, error) {
	if opt.ifMatch == "" {
		// Most writes of a load create: try that first, which spares the
		// lookup (the insert's uniqueness check is the lookup).
		if v, err := t.create(p, id, opt, now, buf); v != nil || err != nil {
			return v, v != nil, err
		}
	}
	cur, err := t.current(p.typ, id)
	if err != nil {
		return nil, false, err
	}
	rid, ver, deleted := cur.rid, cur.ver, cur.deleted
	if opt.ifMatch != "" && (!cur.found || deleted || strconv.FormatInt(ver, 10) != opt.ifMatch) {
		return nil, false, errf(412, "conflict", "Version conflict: %s/%s is not at the version in If-Match.", p.typ, id)
	}
	if !cur.found {
		// Without If-Match, create inserted the resource unless a row (live
		// or deleted) was there, and this transaction is the only writer.
		return nil, false, fmt.Errorf("write resource: %s/%s neither inserted nor found", p.typ, id)
	}
	if deleted && opt.dupCheck { // re-created
		if err := t.duplicate(p, rid); err != nil {
			return nil, false, err
		}
	}
	v := &version{typ: p.typ, id: id, version: ver + 1, updated: now, rid: rid}
	v.body = stampResource(buf, p.body, p.ms, id, strconv.FormatInt(v.version, 10), lastUpdated(now))
	if _, err := t.archive.ExecContext(t.ctx, rid); err != nil {
		return nil, false, fmt.Errorf("archive version: %w", err)
	}
	if _, err := t.update.ExecContext(t.ctx, v.version, now.UnixMilli(), 0, v.body, p.keys, opt.methodOr(methodPUT), rid); err != nil {
		return nil, false, fmt.Errorf("update resource: %w", err)
	}
	if !deleted {
		if bytes.Equal(cur.keys, p.keys) {
			return v, false, nil // same index rows (a rerun of the same data): nothing to change
		}
		if err := t.unindex(rid, cur.keys); err != nil {
			return nil, false, err
		}
	}
	t.addRows(p, rid)
	return v, deleted, nil // a deleted resource written again is created anew
}

// create inserts p as version 1 of p.typ/id if no row (live or deleted) has
// that key yet; it returns nil, nil when one does.
func (t *wtx) create(p *parsed, id string, opt putOptions, now time.Time, buf []byte) (*version, error) {
	v := &version{typ: p.typ, id: id, version: 1, updated: now}
	v.body = opt.stamped
	if v.body == nil {
		v.body = stampResource(buf, p.body, p.ms, id, "1", lastUpdated(now))
	}
	res, err := t.insertNew.ExecContext(t.ctx, p.typ, id, now.UnixMilli(), v.body, p.keys, opt.methodOr(methodPUT))
	if err != nil {
		return nil, fmt.Errorf("insert resource: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return nil, err
	}
	if v.rid, err = res.LastInsertId(); err != nil {
		return nil, fmt.Errorf("insert resource: %w", err)
	}
	if opt.dupCheck {
		if err := t.duplicate(p, v.rid); err != nil {
			if _, derr := t.drop.ExecContext(t.ctx, v.rid); derr != nil {
				return nil, fmt.Errorf("undo insert: %w", derr)
			}
			return nil, err
		}
	}
	t.addRows(p, v.rid)
	return v, nil
}

// duplicate returns a 422 when p's type is one whose identifiers must be
// unique (storeConfig.unique) and another resource of the type than rid has
// one of p's identifiers (system and value), stored or pending.
func (t *wtx) duplicate(p *parsed, rid int64) error {
	if !t.st.cfg.unique[p.typ] {
		return nil
	}
	ik := searchCatalog().types[p.typ].ident
	for _, r := range p.rows {
		if r.k != ik || r.s2 == "" {
			continue
		}
		key := identKey{p.typ, r.s2, r.s1}
		if other, ok := t.pendIdent[key]; ok && other != rid {
			return errf(422, "duplicate", "Duplicate identifier: another %s already has an identifier with system %s and the same value.", p.typ, safeSystem(r.s2))
		}
		if other, ok := t.g.ident[key]; ok && other != rid {
			return errf(422, "duplicate", "Duplicate identifier: another %s already has an identifier with system %s and the same value.", p.typ, safeSystem(r.s2))
		}
		var other int64
		err := t.dupCheck.QueryRowContext(t.ctx, r.k, r.s1, r.s2, rid).Scan(&other)
		if err == nil {
			return errf(422, "duplicate", "Duplicate identifier: another %s already has an identifier with system %s and the same value.", p.typ, safeSystem(r.s2))
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check identifier: %w", err)
		}
	}
	return nil
}

// addRows queues the index rows of p for rid.
func (t *wtx) addRows(p *parsed, rid int64) {
	ik := searchCatalog().types[p.typ].ident
	act := *t.st.active.Load()
	for _, r := range p.rows {
		if !act[r.k] {
			continue
		}
		a, b := r.values()
		t.pend = append(t.pend, pendRow{k: r.k, a: a, b: b, rid: rid})
		if r.k == ik && r.s2 != "" {
			t.pendIdent[identKey{p.typ, r.s2, r.s1}] = rid
		}
	}
}

// comparePend orders index rows as the idx primary key does. Within a k,
// a and b are both strings, both dates (int64), or a float64 and a string.
func comparePend(x, y pendRow) int {
	if c := cmp.Compare(x.k, y.k); c != 0 {
		return c
	}
	if c := compareValue(x.a, y.a); c != 0 {
		return c
	}
	if c := compareValue(x.b, y.b); c != 0 {
		return c
	}
	return cmp.Compare(x.rid, y.rid)
}

func compareValue(x, y any) int {
	switch xv := x.(type) {
	case string:
		if yv, ok := y.(string); ok {
			return strings.Compare(xv, yv)
		}
	case int64:
		if yv, ok := y.(int64); ok {
			return cmp.Compare(xv, yv)
		}
	case float64:
		if yv, ok := y.(float64); ok {
			return cmp.Compare(xv, yv)
		}
	}
	return 0
}

// safeSystem returns an identifier system for error text: systems are
// namespace URIs, not PHI, but are cut short and checked to be URI-like.
func safeSystem(s string) string {
	if len(s) > 200 {
		return "(long system)"
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return "(system)"
		}
	}
	return s
}

// remove deletes typ/id. found is false when it never existed; a resource
// already deleted is left as it is. With ifMatch, the current version must
// be that one (412 otherwise).
func (t *wtx) remove(typ, id, ifMatch string, now time.Time) (v *version, found bool, err error) {
	cur, err := t.current(typ, id)
	if err != nil || !cur.found {
		return nil, false, err
	}
	rid, ver, deleted := cur.rid, cur.ver, cur.deleted
	if ifMatch != "" && (deleted || strconv.FormatInt(ver, 10) != ifMatch) {
		return nil, true, errf(412, "conflict", "Version conflict: %s/%s is not at the version in If-Match.", typ, id)
	}
	if deleted {
		return &version{rid: rid, typ: typ, id: id, version: ver, deleted: true}, true, nil
	}
	if _, err := t.archive.ExecContext(t.ctx, rid); err != nil {
		return nil, true, fmt.Errorf("archive version: %w", err)
	}
	if _, err := t.update.ExecContext(t.ctx, ver+1, now.UnixMilli(), 1, nil, nil, methodDELETE, rid); err != nil {
		return nil, true, fmt.Errorf("delete resource: %w", err)
	}
	if err := t.unindex(rid, cur.keys); err != nil {
		return nil, true, err
	}
	return &version{rid: rid, typ: typ, id: id, version: ver + 1, updated: now, deleted: true}, true, nil
}

// read returns the current version of typ/id, or nil.
func read(ctx context.Context, q querier, typ, id string) (*version, error) {
	v := &version{typ: typ, id: id}
	var ms int64
	err := q.QueryRowContext(ctx, `SELECT rid, version, updated, deleted, body FROM resources WHERE type = ? AND id = ?`, typ, id).
		Scan(&v.rid, &v.version, &ms, &v.deleted, &v.body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read resource: %w", err)
	}
	v.updated = time.UnixMilli(ms).UTC()
	return v, nil
}

// vread returns version ver of typ/id, or nil.
func vread(ctx context.Context, q querier, typ, id string, ver int64) (*version, error) {
	cur, err := read(ctx, q, typ, id)
	if err != nil || cur == nil || cur.version == ver {
		return cur, err
	}
	if ver > cur.version || ver < 1 {
		return nil, nil
	}
	v := &version{rid: cur.rid, typ: typ, id: id, version: ver}
	var ms int64
	err = q.QueryRowContext(ctx, `SELECT updated, deleted, body FROM history WHERE rid = ? AND version = ?`, cur.rid, ver).
		Scan(&ms, &v.deleted, &v.body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read version: %w", err)
	}
	v.updated = time.UnixMilli(ms).UTC()
	return v, nil
}
