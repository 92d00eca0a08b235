package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/fhirload/fhirload/internal/testutil"
)

// backend is one store location under test; every Open of it sees the same
// data, like several processes sharing a folder or a prefix.
type backendCase struct {
	name string
	// setup returns a fresh, empty location.
	setup func(t *testing.T) (url string, opts Options)
	// staleNeedsTTL: a dead holder's lease is only taken over after ttl
	// (S3); locally the kernel releases it at once.
	staleNeedsTTL bool
}

func backends() []backendCase {
	return []backendCase{
		{name: "local", setup: func(t *testing.T) (string, Options) {
			return "file://" + filepath.Join(t.TempDir(), "dl"), Options{}
		}},
		{name: "s3", staleNeedsTTL: true, setup: func(t *testing.T) (string, Options) {
			c := testutil.S3(testutil.Moto(t))
			return "s3://" + testutil.Bucket(t, c) + "/night/deadletter", Options{S3: c}
		}},
	}
}

func open(t *testing.T, url string, opts Options) *store {
	t.Helper()
	s, err := Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { s.Close() })
	return s.(*store)
}

var t0 = time.Date(2025, 3, 1, 2, 0, 0, 0, time.UTC)

func entry(reason Reason, uri string, line int64, run string, at time.Time) Entry {
	l, b64 := MakeLine(fmt.Appendf(nil, `{"resourceType":"Patient","id":"p%d"}`, line))
	return Entry{RunID: run, Reason: reason, Stage: "load", Message: "rejected by target",
		Source: Source{URI: uri, Line: line, Offset: line * 100}, Line: l, LineBase64: b64,
		ResourceType: "Patient", ResourceID: fmt.Sprint("p", line), HTTPStatus: 400,
		OperationOutcome: json.RawMessage(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`),
		Attempts:         1, FirstFailed: at, LastFailed: at,
		Transform: TransformInfo{Format: "fhir", Profile: "seed", Mapping: "m", MappingHash: "h1"}}
}

func ids(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestPutListFilter(t *testing.T) {
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			w := open(t, url, opts)
			in := []Entry{
				entry("invalid", "file:///data/Patient.ndjson", 3, "run1", t0),
				entry("retries-exhausted", "s3://b/in/2025/Observation.ndjson.gz", 10, "run1", t0.Add(time.Hour)),
				entry("invalid", "s3://b/in/2025/Observation.ndjson.gz", 11, "run2", t0.Add(2*time.Hour)),
				entry("parse", "/data/flat/people.csv", 7, "run2", t0.Add(3*time.Hour)),
			}
			in[3].FirstFailed, in[3].LastFailed = time.Time{}, time.Time{} // filled by Put
			if err := w.Put(ctx, in...); err != nil {
				t.Fatal(err)
			}
			r := open(t, url, opts) // another process
			all, err := r.List(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 4 {
				t.Fatalf("List: %d entries, want 4", len(all))
			}
			if !slices.Equal(ids(in), ids(all)) || !in[3].FirstFailed.Equal(all[3].FirstFailed) {
				t.Errorf("Put filled %v in the caller's slice, stored %v", ids(in), ids(all))
			}
			for i, e := range all[:3] {
				want := in[i]
				want.ID = e.ID
				if e.ID == "" || !e.FirstFailed.Equal(want.FirstFailed) || e.Reason != want.Reason ||
					e.Source != want.Source || string(e.Bytes()) != string(want.Bytes()) ||
					e.Transform != want.Transform || string(e.OperationOutcome) != string(want.OperationOutcome) {
					t.Errorf("entry %d = %+v, want %+v", i, e, want)
				}
			}
			if all[3].FirstFailed.IsZero() || !all[3].LastFailed.Equal(all[3].FirstFailed) {
				t.Errorf("Put did not fill times: %v %v", all[3].FirstFailed, all[3].LastFailed)
			}
			if len(slices.Compact(slices.Sorted(slices.Values(ids(all))))) != 4 {
				t.Errorf("ids not unique: %v", ids(all))
			}
			id := func(i int) string { return all[i].ID }
			tests := []struct {
				name string
				f    Filter
				want []string
			}{
				{"reason", Filter{Reason: "invalid"}, []string{id(0), id(2)}},
				{"source substring", Filter{Source: "Observation"}, []string{id(1), id(2)}},
				{"source glob whole uri", Filter{Source: "s3://b/in/*/*.gz"}, []string{id(1), id(2)}},
				{"source glob base name", Filter{Source: "*.csv"}, []string{id(3)}},
				{"source glob no match", Filter{Source: "*.json"}, nil},
				{"run", Filter{RunID: "run2"}, []string{id(2), id(3)}},
				{"since", Filter{Since: t0.Add(90 * time.Minute)}, []string{id(2), id(3)}},
				{"ids", Filter{IDs: []string{id(3), id(0), "nope"}}, []string{id(0), id(3)}},
				{"combined", Filter{Reason: "invalid", RunID: "run1"}, []string{id(0)}},
			}
			for _, tc := range tests {
				got, err := r.List(ctx, tc.f)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if !slices.Equal(ids(got), tc.want) {
					t.Errorf("%s: got %v, want %v", tc.name, ids(got), tc.want)
				}
			}
			if _, err := r.List(ctx, Filter{Source: "[bad"}); err == nil {
				t.Error("bad glob accepted")
			}
		})
	}
}

func TestGetRetireReplace(t *testing.T) {
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			pipe := open(t, url, opts)
			if err := pipe.Put(ctx, entry("retries-exhausted", "a.ndjson", 1, "r", t0),
				entry("invalid", "a.ndjson", 2, "r", t0.Add(time.Second)),
				entry("invalid", "a.ndjson", 3, "r", t0.Add(2*time.Second))); err != nil {
				t.Fatal(err)
			}
			replay := open(t, url, opts)
			all, err := replay.List(ctx, Filter{})
			if err != nil || len(all) != 3 {
				t.Fatalf("List = %d, %v", len(all), err)
			}
			got, err := replay.Get(ctx, all[1].ID)
			if err != nil || got.Source.Line != 2 {
				t.Fatalf("Get = %+v, %v", got, err)
			}
			if _, err := replay.Get(ctx, "20250101T000000.000000000Z-00000000"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get unknown: %v, want ErrNotFound", err)
			}

			// Entry 0 loads on replay; entry 1 fails again with a new reason.
			if err := replay.Retire(ctx, all[0].ID); err != nil {
				t.Fatal(err)
			}
			again := all[1]
			again.Reason, again.HTTPStatus, again.Attempts = "rejected", 422, again.Attempts+1
			again.LastFailed = t0.Add(time.Hour)
			if err := replay.Replace(ctx, again); err != nil {
				t.Fatal(err)
			}
			// A stale copy of the old version written later (a duplicate
			// write after a failed flush) must not win.
			if err := pipe.Replace(ctx, all[1]); err != nil {
				t.Fatal(err)
			}
			// Retire is idempotent.
			if err := pipe.Retire(ctx, all[0].ID); err != nil {
				t.Fatal(err)
			}
			// Replacing a retired entry, in a segment that folds after the
			// retirement, does not bring it back.
			if err := open(t, url, opts).Replace(ctx, all[0]); err != nil {
				t.Fatal(err)
			}

			check := open(t, url, opts)
			live, err := check.List(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(live), []string{all[1].ID, all[2].ID}) {
				t.Fatalf("live = %v", ids(live))
			}
			if l := live[0]; l.Reason != "rejected" || l.Attempts != 2 || l.HTTPStatus != 422 || !l.LastFailed.Equal(t0.Add(time.Hour)) || !l.FirstFailed.Equal(all[1].FirstFailed) {
				t.Errorf("replaced = %+v", l)
			}
			if _, err := check.Get(ctx, all[0].ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get retired: %v, want ErrNotFound", err)
			}
			if rs, _ := check.List(ctx, Filter{Reason: "invalid"}); !slices.Equal(ids(rs), []string{all[2].ID}) {
				t.Errorf("reason filter after replace = %v", ids(rs))
			}
			if err := check.Replace(ctx, Entry{Reason: "x"}); err == nil {
				t.Error("Replace without id accepted")
			}
		})
	}
}

func TestCloseEndsWrites(t *testing.T) {
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			s, err := Open(ctx, url, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Put(ctx, entry("invalid", "x", 1, "r", t0)); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Put(ctx, entry("invalid", "x", 2, "r", t0)); err == nil {
				t.Error("Put after Close accepted")
			}
			got, err := open(t, url, opts).List(ctx, Filter{})
			if err != nil || len(got) != 1 {
				t.Fatalf("after Close: %d entries, %v", len(got), err)
			}
		})
	}
}

// TestPutCanceledStoresNothing: a Put whose context has ended fails and
// stores nothing.
func TestPutCanceledStoresNothing(t *testing.T) {
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			url, opts := bc.setup(t)
			s := open(t, url, opts)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := s.Put(ctx, entry("invalid", "x", 1, "r", t0)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Put = %v, want context.Canceled", err)
			}
			if got, err := open(t, url, opts).List(context.Background(), Filter{}); err != nil || len(got) != 0 {
				t.Fatalf("listed %d entries (%v), want none", len(got), err)
			}
		})
	}
}

func TestConcurrentPuts(t *testing.T) {
	const writers, perWriter = 8, 40
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			stores := []*store{open(t, url, opts), open(t, url, opts)} // two processes
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				s := stores[w%2]
				wg.Go(func() {
					for i := range perWriter {
						e := entry("invalid", fmt.Sprintf("w%d.ndjson", w), int64(i+1), "r", time.Time{})
						if err := s.Put(ctx, e); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got, err := open(t, url, opts).List(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != writers*perWriter {
				t.Fatalf("%d entries, want %d", len(got), writers*perWriter)
			}
			seen := map[string]bool{}
			for _, e := range got {
				k := fmt.Sprintf("%s:%d", e.Source.URI, e.Source.Line)
				if seen[k] || seen[e.ID] {
					t.Fatalf("duplicate %s / %s", k, e.ID)
				}
				seen[k], seen[e.ID] = true, true
			}
		})
	}
}

func TestLock(t *testing.T) {
	const ttl = time.Minute
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			a, b := open(t, url, opts), open(t, url, opts)

			unlock, err := a.Lock(ctx, "replay", ttl)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Lock(ctx, "replay", ttl); !errors.Is(err, ErrLocked) {
				t.Fatalf("second Lock: %v, want ErrLocked", err)
			}
			if _, err := a.Lock(ctx, "replay", ttl); !errors.Is(err, ErrLocked) {
				t.Fatalf("second Lock by the same store: %v, want ErrLocked", err)
			}
			other, err := b.Lock(ctx, "purge", ttl)
			if err != nil {
				t.Fatalf("a different lock name: %v", err)
			}
			if err := other(); err != nil {
				t.Fatal(err)
			}
			if err := unlock(); err != nil {
				t.Fatal(err)
			}
			unlockB, err := b.Lock(ctx, "replay", ttl)
			if err != nil {
				t.Fatalf("Lock after unlock: %v", err)
			}
			if err := unlockB(); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Lock(ctx, "../x", ttl); err == nil || errors.Is(err, ErrLocked) {
				t.Errorf("bad lock name: %v", err)
			}

			// A holder that dies leaves its lease behind.
			dead, err := a.lock(ctx, "replay", ttl)
			if err != nil {
				t.Fatal(err)
			}
			dead.abandon()
			_, err = b.Lock(ctx, "replay", ttl)
			if bc.staleNeedsTTL != errors.Is(err, ErrLocked) {
				t.Fatalf("Lock right after the holder died: %v (stale needs ttl: %v)", err, bc.staleNeedsTTL)
			}
			if err == nil {
				return // local: the kernel released the dead holder's lock
			}
			later := open(t, url, opts)
			later.now = func() time.Time { return time.Now().Add(ttl + time.Second) }
			unlockL, err := later.Lock(ctx, "replay", ttl)
			if err != nil {
				t.Fatalf("takeover of a stale lease: %v", err)
			}
			if _, err := b.Lock(ctx, "replay", ttl); !errors.Is(err, ErrLocked) {
				t.Fatalf("Lock after takeover: %v, want ErrLocked", err)
			}
			if err := unlockL(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestS3LeaseLost: a holder whose lease expired and was taken over learns
// it at unlock and does not delete the new holder's lease.
func TestS3LeaseLost(t *testing.T) {
	ctx := context.Background()
	url, opts := backends()[1].setup(t)
	slow := open(t, url, opts)
	slow.now = func() time.Time { return time.Now().Add(-time.Hour) } // its leases are already expired
	unlockSlow, err := slow.Lock(ctx, "replay", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	unlockNew, err := open(t, url, opts).Lock(ctx, "replay", time.Minute)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if err := unlockSlow(); err == nil {
		t.Fatal("unlock of a lost lease reported no error")
	}
	if _, err := open(t, url, opts).Lock(ctx, "replay", time.Minute); !errors.Is(err, ErrLocked) {
		t.Fatalf("the new holder's lease was removed: %v", err)
	}
	if err := unlockNew(); err != nil {
		t.Fatal(err)
	}
}

// TestS3LeaseRenewed: a live holder keeps renewing, so its lease never
// looks stale to others even after several ttl periods.
func TestS3LeaseRenewed(t *testing.T) {
	ctx := context.Background()
	url, opts := backends()[1].setup(t)
	h := open(t, url, opts)
	const ttl = 300 * time.Millisecond
	unlock, err := h.Lock(ctx, "replay", ttl)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	b := open(t, url, opts).b.(*s3Backend)
	key := b.prefix + "locks/replay.json"
	first, _, err := b.readLease(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	// Wait (bounded) until the lease has been renewed at least once.
	for range 100 {
		cur, _, err := b.readLease(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Expires.After(first.Expires) {
			if cur.Owner != first.Owner {
				t.Fatalf("owner changed: %s → %s", first.Owner, cur.Owner)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("lease never renewed")
}

func TestLocalFileModes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state", "dl") // parents created too
	s := open(t, dir, Options{})                     // a plain path works too
	if err := s.Put(ctx, entry("invalid", "x", 1, "r", t0)); err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(ctx, "replay", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	files := 0
	err = filepath.WalkDir(filepath.Dir(dir), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if d.IsDir() {
			want = 0o700 | os.ModeDir
		} else {
			files++
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 2 {
		t.Errorf("%d files, want a segment and a lock file", files)
	}
}

func TestLineRoundTrip(t *testing.T) {
	lines := map[string][]byte{
		"latin1":  []byte("{\"name\":\"Jos\xe9\"}"),
		"nul":     []byte("{\"a\":1}\x00\xff"),
		"utf8":    []byte(`{"name":"José <b>&amp;</b> \u2028 😀","n":1.50}`),
		"escapes": []byte(`{"s":"a\"b\\c\n"}`),
	}
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			s := open(t, url, opts)
			for name, b := range lines {
				e := entry("parse", name, 1, "r", t0)
				e.Line, e.LineBase64 = MakeLine(b)
				if (e.LineBase64 != "") == (name == "utf8" || name == "escapes") {
					t.Errorf("%s: MakeLine base64=%q", name, e.LineBase64)
				}
				if err := s.Put(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
			got, err := open(t, url, opts).List(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(lines) {
				t.Fatalf("%d entries", len(got))
			}
			for _, e := range got {
				if want := lines[e.Source.URI]; string(e.Bytes()) != string(want) {
					t.Errorf("%s: got %q, want %q", e.Source.URI, e.Bytes(), want)
				}
			}
		})
	}
}

func TestS3ServerSideEncryption(t *testing.T) {
	tests := []struct {
		name, sse, key string
		want           types.ServerSideEncryption
	}{
		{"default", "", "", types.ServerSideEncryptionAes256},
		{"kms", SSEKMS, "arn:aws:kms:us-east-1:123456789012:key/test-key", types.ServerSideEncryptionAwsKms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := testutil.S3(testutil.Moto(t))
			bucket := testutil.Bucket(t, c)
			s := open(t, "s3://"+bucket+"/dl/", Options{S3: c, SSE: tc.sse, KMSKeyID: tc.key})
			if err := s.Put(ctx, entry("invalid", "x", 1, "r", t0)); err != nil {
				t.Fatal(err)
			}
			unlock, err := s.Lock(ctx, "replay", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			if err := s.Retire(ctx, "some-id"); err != nil {
				t.Fatal(err)
			}
			out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Contents) != 3 {
				t.Fatalf("%d objects, want 2 segments and a lease", len(out.Contents))
			}
			for _, o := range out.Contents {
				if !strings.HasPrefix(aws.ToString(o.Key), "dl/") {
					t.Errorf("key %s outside the prefix", aws.ToString(o.Key))
				}
				h, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: o.Key})
				if err != nil {
					t.Fatal(err)
				}
				if h.ServerSideEncryption != tc.want {
					t.Errorf("%s: SSE %q, want %q", aws.ToString(o.Key), h.ServerSideEncryption, tc.want)
				}
				if tc.key != "" && aws.ToString(h.SSEKMSKeyId) != tc.key {
					t.Errorf("%s: KMS key %q, want %q", aws.ToString(o.Key), aws.ToString(h.SSEKMSKeyId), tc.key)
				}
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	c := testutil.S3("http://127.0.0.1:1")
	tests := []struct {
		name string
		url  string
		opts Options
	}{
		{"s3 without client", "s3://b/p", Options{}},
		{"s3 without bucket", "s3:///p", Options{S3: c}},
		{"bad sse", "s3://b/p", Options{S3: c, SSE: "rot13"}},
		{"kms key without kms", "s3://b/p", Options{S3: c, KMSKeyID: "k"}},
		{"unknown scheme", "gs://b/p", Options{}},
		{"empty path", "file://", Options{}},
	}
	for _, tc := range tests {
		if s, err := Open(ctx, tc.url, tc.opts); err == nil {
			s.Close()
			t.Errorf("%s: Open(%q) succeeded", tc.name, tc.url)
		}
	}
}

func TestInvalidOperationOutcomeKept(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir, Options{})
	e := entry("rejected", "x", 1, "r", t0)
	e.OperationOutcome = json.RawMessage("<html>502 Bad Gateway</html>")
	if err := s.Put(ctx, e); err != nil {
		t.Fatal(err)
	}
	got, err := s.List(ctx, Filter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("List = %d, %v", len(got), err)
	}
	var body string
	if err := json.Unmarshal(got[0].OperationOutcome, &body); err != nil || body != "<html>502 Bad Gateway</html>" {
		t.Errorf("outcome = %s (%v)", got[0].OperationOutcome, err)
	}
}

// TestLockRace: of several replays starting at once, exactly one gets the
// lease.
func TestLockRace(t *testing.T) {
	const racers = 6
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			stores := make([]*store, racers)
			for i := range stores {
				stores[i] = open(t, url, opts)
			}
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				won     []func() error
				otherEr []error
			)
			start := make(chan struct{})
			for _, s := range stores {
				wg.Go(func() {
					<-start
					unlock, err := s.Lock(ctx, "replay", time.Minute)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						won = append(won, unlock)
					case !errors.Is(err, ErrLocked):
						otherEr = append(otherEr, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if len(otherEr) > 0 || len(won) != 1 {
				t.Fatalf("%d winners, errors %v", len(won), otherEr)
			}
			if err := won[0](); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A rerun after a crash dead-letters the same source line again: only the
// newest entry stands for the line, and retiring it retires the line.
func TestSameSourceLineOnlyNewestStands(t *testing.T) {
	for _, bc := range backends() {
		t.Run(bc.name, func(t *testing.T) {
			ctx := context.Background()
			url, opts := bc.setup(t)
			s := open(t, url, opts)
			first := entry("invalid", "file:///in/a.ndjson", 5, "run1", t0)
			other := entry("invalid", "file:///in/a.ndjson", 6, "run1", t0)
			if err := s.Put(ctx, first, other); err != nil {
				t.Fatal(err)
			}
			again := entry("invalid", "file:///in/a.ndjson", 5, "run2", t0.Add(time.Hour))
			changed := entry("invalid", "file:///in/a.ndjson", 5, "run2", t0.Add(time.Hour))
			changed.Source.ETag = "new-version"
			if err := s.Put(ctx, again, changed); err != nil {
				t.Fatal(err)
			}
			got, err := open(t, url, opts).List(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			runs := map[string]int{}
			for _, e := range got {
				runs[fmt.Sprintf("%d/%s/%s", e.Source.Line, e.Source.ETag, e.RunID)]++
			}
			want := map[string]int{"5//run2": 1, "6//run1": 1, "5/new-version/run2": 1}
			if fmt.Sprint(runs) != fmt.Sprint(want) {
				t.Fatalf("live entries %v, want %v", runs, want)
			}
			var newest string
			for _, e := range got {
				if e.Source.Line == 5 && e.Source.ETag == "" {
					newest = e.ID
				}
			}
			if err := s.Retire(ctx, newest); err != nil {
				t.Fatal(err)
			}
			got, err = open(t, url, opts).List(ctx, Filter{})
			if err != nil || len(got) != 2 {
				t.Fatalf("after retiring the newest: %d entries (%v), want 2", len(got), err)
			}
		})
	}
}

// TestS3LeaseOfDeadProcess: a lease left by a process of this machine (same
// host, boot and PID namespace) that no longer exists is taken over at once,
// as the local backend's flock is; a lease of another boot, or of a live
// process, still waits for its expiry.
func TestS3LeaseOfDeadProcess(t *testing.T) {
	if bootID() == "" || pidNamespace() == "" {
		t.Fatal("this test needs /proc (Linux): boot id or PID namespace unknown")
	}
	ctx := context.Background()
	url, opts := backends()[1].setup(t)
	st := open(t, url, opts)
	b := st.b.(*s3Backend)
	key := b.prefix + "locks/replay.json"
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	plant := func(lb leaseBody) {
		t.Helper()
		lb.Owner, lb.Host, lb.Expires = "someone", host, time.Now().Add(time.Hour)
		data, _ := json.Marshal(lb)
		if _, err := b.put(ctx, key, data, func(*s3.PutObjectInput) {}); err != nil {
			t.Fatal(err)
		}
	}
	plant(leaseBody{PID: gone.Process.Pid, Boot: "another-boot", PIDNS: pidNamespace()})
	if _, err := st.Lock(ctx, "replay", time.Minute); !errors.Is(err, ErrLocked) {
		t.Fatalf("lease of another boot: %v, want ErrLocked", err)
	}
	plant(leaseBody{PID: os.Getppid(), Boot: bootID(), PIDNS: pidNamespace()})
	if _, err := st.Lock(ctx, "replay", time.Minute); !errors.Is(err, ErrLocked) {
		t.Fatalf("lease of a live process: %v, want ErrLocked", err)
	}
	plant(leaseBody{PID: gone.Process.Pid, Boot: bootID(), PIDNS: pidNamespace()})
	unlock, err := st.Lock(ctx, "replay", time.Minute)
	if err != nil {
		t.Fatalf("lease of a process that is gone: %v, want it taken over", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}
