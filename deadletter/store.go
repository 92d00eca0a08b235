package deadletter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
)

// ErrNotFound is returned (wrapped) by Get when no live entry has the ID.
var ErrNotFound = errors.New("dead-letter entry not found")

// ErrLocked is returned (wrapped) by Lock when another holder has the lease.
var ErrLocked = errors.New("dead-letter lease held by another process")

// SSE modes accepted in Options.SSE.
const (
	SSES3  = "AES256"
	SSEKMS = "aws:kms"
)

// Options configures Open.
type Options struct {
	// S3 is the client used for s3:// URLs; required for them.
	S3 *s3.Client
	// SSE is the server-side encryption of S3 objects: "AES256" (the
	// default) or "aws:kms".
	SSE string
	// KMSKeyID is the KMS key for SSE "aws:kms"; empty means the bucket's
	// default AWS managed key.
	KMSKeyID string
	// Logger receives warnings (torn segment lines, lost leases). Nil means
	// no logging.
	Logger *zap.Logger
}

// Filter selects entries in List. Zero fields match everything; set fields
// must all match.
type Filter struct {
	// Reason matches Entry.Reason exactly.
	Reason Reason
	// Source matches Source.URI: a path.Match glob, tried against the whole
	// URI and against its last path element (so "*.ndjson.gz" matches
	// "s3://b/x/y.ndjson.gz"); without glob characters it is a substring.
	Source string
	// RunID matches Entry.RunID exactly.
	RunID string
	// Since keeps entries whose LastFailed is not before it.
	Since time.Time
	// IDs keeps only the listed entry IDs.
	IDs []string
}

// Store is a dead-letter store. Its methods are safe for concurrent use.
//
// The store is an append-only log of segments: entry records (the DESIGN.md
// entry format, one JSON object per line), retire records
// ({"op":"retire","id":…}) and replacement records (an entry with
// "op":"replace"). Nothing is rewritten in place; readers fold all segments.
// Every Store writes its own segments, so several processes may write to one
// location at once.
//
// Every write (Put, Retire, Replace) is durable or nothing: on a nil return
// its records are stored for good; on an error none of them is visible to
// List or Get afterwards, in this process or any later one. Concurrent writes
// are committed together (one write and one fsync, or one PutObject, for all
// the callers waiting at that moment), so many writers are as cheap as few.
type Store interface {
	// Put durably stores entries, filling ID (sortable by time, unique)
	// and, when zero, FirstFailed (now) and LastFailed (FirstFailed) — in
	// the caller's slice when called as Put(ctx, entries...). On a nil
	// return every entry is durable: locally written and fsynced, with its
	// segment's directory entry durable; on S3 its PutObject succeeded with
	// server-side encryption. On an error none of them is visible to List
	// or Get, now or after a restart, and none should be counted as stored.
	// ctx is checked before the write starts; a write that has started is
	// finished (or rolled back) whatever ctx does, so that its outcome is
	// known.
	Put(ctx context.Context, entries ...Entry) error
	// List returns the live entries matching f, oldest first. Records a
	// crash or a full disk left half-written at the end of a segment are
	// skipped with a warning naming the segment and byte offset.
	List(ctx context.Context, f Filter) ([]Entry, error)
	// Get returns one live entry by ID; the error wraps ErrNotFound when
	// there is none.
	Get(ctx context.Context, id string) (Entry, error)
	// Retire removes entries from the live set for good (replayed, or
	// purged). Durable or nothing, like Put.
	Retire(ctx context.Context, ids ...string) error
	// Replace durably records a new version of existing entries (a replay
	// that failed again); durable or nothing, like Put. The version with
	// the most Attempts, then the latest LastFailed, then the one written
	// last is the live one; a retired entry stays retired.
	Replace(ctx context.Context, entries ...Entry) error
	// Lock takes the exclusive lease name (e.g. "replay"), or returns a
	// *LockedError (matching ErrLocked) while someone else holds it. A
	// lease whose holder died may be taken over: locally at once (the kernel
	// drops the holder's flock), on S3 at once when the holder was a process
	// of this machine that is gone, else once it has not been renewed for
	// ttl. unlock releases the lease; it reports an error if the lease was
	// lost.
	Lock(ctx context.Context, name string, ttl time.Duration) (unlock func() error, err error)
	// Close waits for writes in progress and releases the store; later
	// writes fail.
	Close() error
}

// LockedError is Lock's error while another holder has the lease. It
// matches ErrLocked. The holder fields are what the holder recorded; zero
// when unknown (a lease written by an older release, or read while it was
// being written).
type LockedError struct {
	Name string // the lease name, e.g. "replay"
	PID  int
	Host string
	// Since is when the holder took the lease.
	Since time.Time
	// Expires is when an S3 lease runs out unless renewed (zero locally:
	// an flock lasts as long as its holder).
	Expires time.Time
}

func (e *LockedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dead-letter lock %s", e.Name)
	if e.PID > 0 {
		fmt.Fprintf(&b, " (held by pid %d on %s", e.PID, e.Host)
		if !e.Since.IsZero() {
			fmt.Fprintf(&b, " since %s", e.Since.UTC().Format(time.RFC3339))
		}
		if !e.Expires.IsZero() {
			fmt.Fprintf(&b, " until %s", e.Expires.UTC().Format(time.RFC3339))
		}
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(ErrLocked.Error())
	return b.String()
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Unwrap() error { return ErrLocked }

// Open opens the store at url: "file://DIR" or a plain directory path
// (created 0700, files 0600), or "s3://bucket/prefix" (objects written with
// server-side encryption). Open writes nothing: a local store's first write
// repairs the segments that dead writers left with a torn end (see
// localBackend.repair).
func Open(ctx context.Context, url string, opts Options) (Store, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	var (
		b   backend
		err error
	)
	switch {
	case strings.HasPrefix(url, "s3://"):
		b, err = openS3(ctx, strings.TrimPrefix(url, "s3://"), opts)
	case strings.Contains(url, "://") && !strings.HasPrefix(url, "file://"):
		return nil, fmt.Errorf("dead-letter url %q: unsupported scheme (want file:// or s3://)", url)
	default:
		b, err = openLocal(strings.TrimPrefix(url, "file://"), osFS{}, log)
	}
	if err != nil {
		return nil, err
	}
	return newStore(b, log), nil
}

func newStore(b backend, log *zap.Logger) *store {
	s := &store{b: b, log: log, now: time.Now}
	s.c.write = b.commit
	return s
}

// backend is where segments live.
type backend interface {
	// commit durably appends the records of every batch of group to this
	// writer's segments, all of them or none: on an error none of them may
	// be visible to segments/read, now or after a restart.
	commit(group []*batch) error
	// segments returns the names of all segments, in fold order.
	segments(ctx context.Context) ([]string, error)
	// read calls fn for each named segment, in the given order.
	read(ctx context.Context, names []string, fn func(segment) error) error
	lock(ctx context.Context, name string, ttl time.Duration, now func() time.Time, log *zap.Logger) (lease, error)
	close() error
}

// segment is one segment being read.
type segment struct {
	name string
	r    io.Reader
	// live reports whether the segment's writer still holds it: then an
	// unfinished end is a write in progress, not a torn one. Nil: never.
	live func() bool
}

// lease is a held lock.
type lease interface {
	release() error
	// abandon drops the lease the way a crashed holder does (tests).
	abandon()
}

type store struct {
	b   backend
	log *zap.Logger
	now func() time.Time
	c   committer

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

// record is one line of a segment: an entry, or an operation on one.
type record struct {
	Op string `json:"op,omitempty"`
	Entry
}

type retireRecord struct {
	Op string    `json:"op"`
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

const (
	opReplace = "replace"
	opRetire  = "retire"
)

var errClosed = errors.New("dead-letter store is closed")

func (s *store) Put(ctx context.Context, entries ...Entry) error {
	return s.add(ctx, "", entries)
}

func (s *store) Replace(ctx context.Context, entries ...Entry) error {
	for _, e := range entries {
		if e.ID == "" {
			return errors.New("dead-letter replace: entry without id")
		}
	}
	return s.add(ctx, opReplace, entries)
}

func (s *store) add(ctx context.Context, op string, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	now := s.now().UTC()
	var buf bytes.Buffer
	enc := newEncoder(&buf)
	for i := range entries {
		e := &entries[i]
		if e.ID == "" {
			id, err := newID(now)
			if err != nil {
				return err
			}
			e.ID = id
		}
		if e.FirstFailed.IsZero() {
			e.FirstFailed = now
		}
		if e.LastFailed.IsZero() {
			e.LastFailed = e.FirstFailed
		}
		r := record{Op: op, Entry: *e}
		if len(r.OperationOutcome) > 0 && !json.Valid(r.OperationOutcome) {
			// Keep a non-JSON error body (a proxy's HTML page) rather than
			// fail the dead-letter write and with it the source's ack.
			q, _ := json.Marshal(string(r.OperationOutcome))
			r.OperationOutcome = q
		}
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("dead-letter encode entry %s: %w", e.ID, err)
		}
	}
	return s.commit(ctx, buf.Bytes(), len(entries))
}

func (s *store) Retire(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	now := s.now().UTC()
	var buf bytes.Buffer
	enc := newEncoder(&buf)
	for _, id := range ids {
		if id == "" {
			return errors.New("dead-letter retire: empty id")
		}
		if err := enc.Encode(retireRecord{Op: opRetire, ID: id, At: now}); err != nil {
			return fmt.Errorf("dead-letter encode retire: %w", err)
		}
	}
	return s.commit(ctx, buf.Bytes(), len(ids))
}

// commit hands n encoded records to the group committer and waits for their
// outcome. Once handed over, the write is not abandoned when ctx ends: the
// caller must learn whether the records are stored.
func (s *store) commit(ctx context.Context, data []byte, n int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	s.inflight.Add(1)
	s.mu.Unlock()
	defer s.inflight.Done()
	return s.c.commit(&batch{data: data, records: n})
}

func (s *store) List(ctx context.Context, f Filter) ([]Entry, error) {
	if f.Source != "" {
		if _, err := path.Match(f.Source, ""); err != nil {
			return nil, fmt.Errorf("dead-letter source filter %q: %w", f.Source, err)
		}
	}
	live, err := s.fold(ctx, f.IDs)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(live))
	for _, v := range live {
		if f.match(v) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.FirstFailed.Compare(b.FirstFailed); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func (s *store) Get(ctx context.Context, id string) (Entry, error) {
	es, err := s.List(ctx, Filter{IDs: []string{id}})
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, fmt.Errorf("dead-letter entry %s: %w", id, ErrNotFound)
	}
	return es[0], nil
}

func (s *store) Lock(ctx context.Context, name string, ttl time.Duration) (func() error, error) {
	l, err := s.lock(ctx, name, ttl)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	var rerr error
	return func() error {
		once.Do(func() { rerr = l.release() })
		return rerr
	}, nil
}

func (s *store) lock(ctx context.Context, name string, ttl time.Duration) (lease, error) {
	if !validLockName(name) {
		return nil, fmt.Errorf("dead-letter lock name %q: want letters, digits, '.', '_' or '-'", name)
	}
	if ttl <= 0 {
		ttl = defaultLeaseTTL
	}
	return s.b.lock(ctx, name, ttl, s.now, s.log)
}

// defaultLeaseTTL applies when Lock is given no ttl.
const defaultLeaseTTL = 2 * time.Minute

func validLockName(name string) bool {
	if name == "" || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}

func (s *store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait()
	return s.b.close()
}

// supersedes reports whether entry record b, read after a, is the newer
// version of the same entry. Attempts come first because replays increment
// them and clocks of different machines may disagree.
func supersedes(b, a Entry) bool {
	if b.Attempts != a.Attempts {
		return b.Attempts > a.Attempts
	}
	if c := b.LastFailed.Compare(a.LastFailed); c != 0 {
		return c > 0
	}
	return true
}

// fold reads every segment and returns the live entries by ID, restricted to
// ids when it is not empty.
func (s *store) fold(ctx context.Context, ids []string) (map[string]Entry, error) {
	names, err := s.b.segments(ctx)
	if err != nil {
		return nil, err
	}
	var want map[string]bool
	if len(ids) > 0 {
		want = make(map[string]bool, len(ids))
		for _, id := range ids {
			want[id] = true
		}
	}
	// For Get, lines that cannot be about the entry are not decoded.
	var needle []byte
	if len(ids) == 1 {
		needle = []byte(ids[0])
	}
	live := map[string]Entry{}
	retired := map[string]bool{}
	// newest[source line] is the newest entry id ever written for that line:
	// a rerun after a crash dead-letters the same line again, and only the
	// newest entry stands for it (retiring it retires the line).
	newest := map[string]string{}
	apply := func(rec record) {
		if want != nil && !want[rec.ID] {
			return
		}
		switch {
		case rec.Op == opRetire:
			retired[rec.ID] = true
			delete(live, rec.ID)
		case retired[rec.ID]:
		default:
			if k := lineKey(rec.Entry); k != "" && rec.ID > newest[k] {
				newest[k] = rec.ID
			}
			if old, ok := live[rec.ID]; !ok || supersedes(rec.Entry, old) {
				live[rec.ID] = rec.Entry
			}
		}
	}
	err = s.b.read(ctx, names, func(seg segment) error {
		return scanSegment(seg, needle, s.log, apply)
	})
	if err != nil {
		return nil, err
	}
	if want == nil {
		for id, e := range live {
			if k := lineKey(e); k != "" && newest[k] != id {
				delete(live, id)
			}
		}
	}
	return live, nil
}

// lineKey identifies the source line an entry stands for ("" when it stands
// for no single line: a missing object, a queue message).
func lineKey(e Entry) string {
	if e.Source.Line <= 0 || e.Source.URI == "" || e.Stage == "receive" {
		return ""
	}
	return fmt.Sprintf("%s\x00%s\x00%d", e.Source.URI, e.Source.ETag, e.Source.Line)
}

func (f Filter) match(e Entry) bool {
	if f.Reason != "" && e.Reason != f.Reason {
		return false
	}
	if f.RunID != "" && e.RunID != f.RunID {
		return false
	}
	if !f.Since.IsZero() && e.LastFailed.Before(f.Since) {
		return false
	}
	if f.Source != "" && !matchSource(f.Source, e.Source.URI) {
		return false
	}
	return true
}

func matchSource(pattern, uri string) bool {
	if !strings.ContainsAny(pattern, `*?[\`) {
		return strings.Contains(uri, pattern)
	}
	if ok, _ := path.Match(pattern, uri); ok {
		return true
	}
	ok, _ := path.Match(pattern, path.Base(uri))
	return ok
}

func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// newID returns a unique ID that sorts by creation time:
// 20060102T150405.000000000Z-<8 random hex>.
func newID(now time.Time) (string, error) {
	r, err := randHex(4)
	if err != nil {
		return "", err
	}
	return now.UTC().Format("20060102T150405.000000000Z") + "-" + r, nil
}

// segmentName returns a fresh segment name that sorts by creation time.
func segmentName(now time.Time, pid int) (string, error) {
	r, err := randHex(4)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s-%d-%s.ndjson", now.UTC().Format("20060102T150405.000000000Z"), pid, r), nil
}

func randHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("dead-letter random id: %w", err)
	}
	return hex.EncodeToString(b), nil
}
