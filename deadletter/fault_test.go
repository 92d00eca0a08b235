package deadletter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// faultFS is the operating system's file system with the faults of a failing
// disk injected on demand. The files are real: a write cut short leaves its
// first bytes in the file, exactly as a full disk does, and a failed fsync
// leaves the written bytes in the page cache.
type faultFS struct {
	osFS
	mu sync.Mutex
	// space is how many bytes segment files may still grow by (-1:
	// unlimited). A write past it writes what fits, then fails with ENOSPC;
	// a truncate gives the space back.
	space int64
	// The next n calls of each kind fail with EIO (create: EACCES), having
	// done nothing.
	failCreate, failSync, failTruncate, failDirSync, failRemove int

	// syncs counts the segment fsyncs that succeeded.
	syncs int
	// beforeSync is called before every segment fsync (outside mu).
	beforeSync func()
}

func newFaultFS() *faultFS { return &faultFS{space: -1} }

// heal ends every fault.
func (f *faultFS) heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.space, f.failCreate, f.failSync, f.failTruncate, f.failDirSync, f.failRemove = -1, 0, 0, 0, 0, 0
}

// take reports whether the next call of a kind fails, counting it down.
func (f *faultFS) take(n *int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if *n > 0 {
		*n--
		return true
	}
	return false
}

func (f *faultFS) create(p string) (segmentFile, error) {
	if f.take(&f.failCreate) {
		return nil, &fs.PathError{Op: "open", Path: p, Err: syscall.EACCES}
	}
	sf, err := f.osFS.create(p)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: sf.(*os.File), fs: f}, nil
}

func (f *faultFS) open(p string) (segmentFile, error) {
	sf, err := f.osFS.open(p)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: sf.(*os.File), fs: f}, nil
}

func (f *faultFS) remove(p string) error {
	if f.take(&f.failRemove) {
		return &fs.PathError{Op: "remove", Path: p, Err: syscall.EIO}
	}
	return f.osFS.remove(p)
}

func (f *faultFS) syncDir(dir string) error {
	if f.take(&f.failDirSync) {
		return fmt.Errorf("dead-letter fsync directory: %w", syscall.EIO)
	}
	return f.osFS.syncDir(dir)
}

type faultFile struct {
	*os.File
	fs *faultFS
}

func (ff *faultFile) WriteAt(b []byte, off int64) (int, error) {
	fi, err := ff.File.Stat()
	if err != nil {
		return 0, err
	}
	f := ff.fs
	f.mu.Lock()
	allowed := len(b)
	var fault error
	if grow := off + int64(len(b)) - fi.Size(); f.space >= 0 && grow > f.space {
		allowed = int(max(0, fi.Size()+f.space-off))
		fault = &fs.PathError{Op: "write", Path: ff.Name(), Err: syscall.ENOSPC}
	}
	if grow := off + int64(allowed) - fi.Size(); f.space >= 0 && grow > 0 {
		f.space -= grow
	}
	f.mu.Unlock()
	n, err := ff.File.WriteAt(b[:allowed], off)
	if err != nil {
		return n, err
	}
	return n, fault
}

func (ff *faultFile) Sync() error {
	if ff.fs.beforeSync != nil {
		ff.fs.beforeSync()
	}
	if ff.fs.take(&ff.fs.failSync) {
		return &fs.PathError{Op: "sync", Path: ff.Name(), Err: syscall.EIO}
	}
	if err := ff.File.Sync(); err != nil {
		return err
	}
	ff.fs.mu.Lock()
	ff.fs.syncs++
	ff.fs.mu.Unlock()
	return nil
}

func (ff *faultFile) Truncate(size int64) error {
	if ff.fs.take(&ff.fs.failTruncate) {
		return &fs.PathError{Op: "truncate", Path: ff.Name(), Err: syscall.EIO}
	}
	fi, err := ff.File.Stat()
	if err != nil {
		return err
	}
	if err := ff.File.Truncate(size); err != nil {
		return err
	}
	ff.fs.mu.Lock()
	if ff.fs.space >= 0 && fi.Size() > size {
		ff.fs.space += fi.Size() - size
	}
	ff.fs.mu.Unlock()
	return nil
}

// openFaulty opens a local store in dir that writes through fsys.
func openFaulty(t *testing.T, dir string, fsys fileSystem, log *zap.Logger) *store {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	b, err := openLocal(dir, fsys, log)
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(b, log)
	t.Cleanup(func() { s.Close() })
	return s
}

// batchOf returns n entries for lines from, from+1, … of one source.
func batchOf(from, n int) []Entry {
	es := make([]Entry, n)
	for i := range es {
		es[i] = entry("invalid", "file:///in/a.ndjson", int64(from+i), "r", t0)
	}
	return es
}

// listedLines returns the source lines of the live entries, sorted.
func listedLines(t *testing.T, s Store) []int64 {
	t.Helper()
	es, err := s.List(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var lines []int64
	for _, e := range es {
		lines = append(lines, e.Source.Line)
	}
	slices.Sort(lines)
	return lines
}

// segmentFiles returns the segment files of a local store with their sizes.
func segmentFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, segmentsDir))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[de.Name()] = fi.Size()
	}
	return out
}

// assertSegmentsClean fails unless every segment file of dir is a format-2
// segment ending with a complete commit line (nothing empty, nothing torn).
func assertSegmentsClean(t *testing.T, dir string) {
	t.Helper()
	for name, size := range segmentFiles(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, segmentsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if size == 0 || !strings.HasPrefix(string(b), segmentHeader) || !endsCommitted(strings.NewReader(string(b)), size) {
			t.Errorf("segment %s (%d bytes) is empty, not format 2 or has a torn end: …%q", name, size, b[max(0, len(b)-80):])
		}
	}
}

func lineRange(from, to int) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, int64(i))
	}
	return out
}

// TestFailedWritesAreNotStored: for every way a local write can fail, the
// failing Put returns the error and none of its entries is listed — by the
// same store, by a new one, and after the next writer's repair; no empty
// segment is left; the same store writes normally once the fault is gone,
// and a new store (another process) does too and repairs what the failure
// left. Each Put holds 3 entries.
func TestFailedWritesAreNotStored(t *testing.T) {
	tests := []struct {
		name   string
		before int // Puts that succeed before the fault
		fault  func(f *faultFS)
		want   syscall.Errno
		// segments right after the failed Put, and after the next (good)
		// Put of the same store.
		segsFailed, segsAfter int
	}{
		{"disk full at the first write", 0, func(f *faultFS) { f.space = 100 }, syscall.ENOSPC, 0, 1},
		{"disk full mid-segment", 1, func(f *faultFS) { f.space = 500 }, syscall.ENOSPC, 1, 1},
		{"disk full mid-segment, and the cut fails", 1, func(f *faultFS) { f.space, f.failTruncate = 500, 1 }, syscall.ENOSPC, 1, 2},
		{"disk full at the first write, and the segment cannot be removed", 0, func(f *faultFS) { f.space, f.failRemove = 100, 1 }, syscall.ENOSPC, 1, 2},
		{"fsync fails at the first write", 0, func(f *faultFS) { f.failSync = 1 }, syscall.EIO, 0, 1},
		{"fsync fails mid-segment", 1, func(f *faultFS) { f.failSync = 1 }, syscall.EIO, 1, 2},
		{"fsync fails, and the cut fails", 1, func(f *faultFS) { f.failSync, f.failTruncate = 1, 1 }, syscall.EIO, 1, 2},
		{"fsync fails at the first write, and the segment cannot be removed", 0, func(f *faultFS) { f.failSync, f.failRemove = 1, 1 }, syscall.EIO, 1, 2},
		{"directory fsync fails for a new segment", 0, func(f *faultFS) { f.failDirSync = 1 }, syscall.EIO, 0, 1},
		{"the segment cannot be created", 0, func(f *faultFS) { f.failCreate = 1 }, syscall.EACCES, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			core, logs := observer.New(zap.WarnLevel)
			ffs := newFaultFS()
			s := openFaulty(t, dir, ffs, zap.New(core))
			var stored []int64
			for i := range tc.before {
				if err := s.Put(ctx, batchOf(1+3*i, 3)...); err != nil {
					t.Fatal(err)
				}
				stored = append(stored, lineRange(1+3*i, 3+3*i)...)
			}
			tc.fault(ffs)
			err := s.Put(ctx, batchOf(100, 3)...)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Put = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), "may be listed") {
				t.Fatalf("the failed write was not undone: %v", err)
			}
			if got := listedLines(t, s); !slices.Equal(got, stored) {
				t.Fatalf("listed after the failure: %v, want %v", got, stored)
			}
			if got := listedLines(t, open(t, dir, Options{})); !slices.Equal(got, stored) {
				t.Fatalf("listed by another store: %v, want %v", got, stored)
			}
			segs := segmentFiles(t, dir)
			if len(segs) != tc.segsFailed {
				t.Errorf("%d segments after the failure, want %d: %v", len(segs), tc.segsFailed, segs)
			}
			for name, size := range segs {
				if size == 0 {
					t.Errorf("empty segment %s left behind", name)
				}
			}

			// The fault is gone: the same store writes normally.
			ffs.heal()
			if err := s.Put(ctx, batchOf(200, 3)...); err != nil {
				t.Fatalf("Put after the fault: %v", err)
			}
			stored = append(stored, lineRange(200, 202)...)
			if got := listedLines(t, s); !slices.Equal(got, stored) {
				t.Fatalf("listed after recovery: %v, want %v", got, stored)
			}
			if n := len(segmentFiles(t, dir)); n != tc.segsAfter {
				t.Errorf("%d segments after the next write, want %d", n, tc.segsAfter)
			}

			// Another process writes too, and its first write repairs
			// what the failure left.
			other := open(t, dir, Options{Logger: zap.New(core)})
			if err := other.Put(ctx, batchOf(300, 1)...); err != nil {
				t.Fatal(err)
			}
			stored = append(stored, 300)
			assertSegmentsClean(t, dir)
			logs.TakeAll()
			if got := listedLines(t, open(t, dir, Options{Logger: zap.New(core)})); !slices.Equal(got, stored) {
				t.Fatalf("listed after repair: %v, want %v", got, stored)
			}
			if n := logs.FilterMessageSnippet("torn").Len(); n != 0 {
				t.Errorf("%d torn-end warnings after the repair", n)
			}
		})
	}
}

// TestGroupCommitSharesFsyncs: writers that arrive while a commit is in
// progress are committed together, with one fsync; and when that fsync fails,
// every one of them gets the error and none of their entries is stored.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			const waiting = 15
			ctx := context.Background()
			dir := t.TempDir()
			ffs := newFaultFS()
			release := make(chan struct{})
			var once sync.Once
			ffs.beforeSync = func() { once.Do(func() { <-release }) } // the first fsync waits
			s := openFaulty(t, dir, ffs, nil)

			errs := make([]error, waiting+1)
			var wg sync.WaitGroup
			wg.Go(func() { errs[0] = s.Put(ctx, batchOf(1, 1)...) })
			// Wait (bounded) until the first commit is in progress.
			waitUntil(t, func() bool {
				s.c.mu.Lock()
				defer s.c.mu.Unlock()
				return s.c.busy
			})
			for i := 1; i <= waiting; i++ {
				wg.Go(func() { errs[i] = s.Put(ctx, batchOf(1+i*10, 2)...) })
			}
			waitUntil(t, func() bool {
				s.c.mu.Lock()
				defer s.c.mu.Unlock()
				return len(s.c.queue) == waiting
			})
			if fail {
				ffs.mu.Lock()
				ffs.failSync = 1000 // every fsync from now on
				ffs.mu.Unlock()
			}
			close(release)
			wg.Wait()

			var want []int64
			for i, err := range errs {
				if fail != (err != nil) {
					t.Errorf("writer %d: %v", i, err)
				}
				if err == nil && i > 0 {
					want = append(want, int64(1+i*10), int64(2+i*10))
				} else if err == nil {
					want = append(want, 1)
				}
			}
			slices.Sort(want)
			if got := listedLines(t, open(t, dir, Options{})); !slices.Equal(got, want) {
				t.Fatalf("listed %v, want %v", got, want)
			}
			if !fail && ffs.syncs != 2 {
				t.Errorf("%d fsyncs for 16 writers, want 2 (the first, then the %d waiting ones together)", ffs.syncs, waiting)
			}
		})
	}
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("condition not reached in 10 s")
}
