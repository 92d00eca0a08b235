package deadletter

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// mountTmpfs mounts a tmpfs of the given size (e.g. "2m") on a fresh folder
// and unmounts it at the end of the test. The tests run as root (here and on
// CI); without root this fails rather than skips: a full disk is the defect
// this proves fixed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %s tmpfs (needs root): %v: %s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestFullDiskListsExactlyWhatWasStored is defect 2 of issue 14 on a real
// full file system: 16 writers put 3,000 entries (about 1.5 KB each, 1 to 3
// per Put) into a store on a 2 MiB tmpfs that also holds a 256 KiB file.
// Every Put that fails says ENOSPC; a new store lists exactly the entries of
// the Puts that returned nil — none lost, none extra, no torn entry — and no
// segment is empty or torn. Once the file is deleted, the same store and a
// new one (another process) write again and list exactly.
func TestFullDiskListsExactlyWhatWasStored(t *testing.T) {
	const total, writers = 3000, 16
	ctx := context.Background()
	mnt := mountTmpfs(t, "2m")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 256<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(mnt, "dl")
	core, logs := observer.New(zap.WarnLevel)
	s := open(t, dir, Options{Logger: zap.New(core)})

	var (
		next     atomic.Int64
		mu       sync.Mutex
		stored   []int64
		failures int
		wg       sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for {
				n := int64(1 + w%3)
				from := next.Add(n) - n + 1
				if from > total {
					return
				}
				batch := make([]Entry, 0, n)
				for l := from; l < from+n && l <= total; l++ {
					e := entry("invalid", "file:///in/big.ndjson", l, "r", t0)
					e.Line = benchLine
					batch = append(batch, e)
				}
				err := s.Put(ctx, batch...)
				mu.Lock()
				if err == nil {
					for _, e := range batch {
						stored = append(stored, e.Source.Line)
					}
				} else {
					failures++
					if !errors.Is(err, syscall.ENOSPC) {
						t.Errorf("Put: %v, want ENOSPC", err)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(stored)
	if failures == 0 || len(stored) == 0 {
		t.Fatalf("%d entries stored, %d Puts failed: the disk did not fill", len(stored), failures)
	}
	t.Logf("%d of %d entries stored, %d Puts refused", len(stored), total, failures)

	logs.TakeAll()
	if got := listedLines(t, open(t, dir, Options{Logger: zap.New(core)})); !slices.Equal(got, stored) {
		t.Fatalf("a new store lists %d entries, the Puts stored %d", len(got), len(stored))
	}
	if logs.Len() != 0 {
		t.Errorf("warnings while listing: %v", logs.All())
	}
	assertSegmentsClean(t, dir)
	if n := len(segmentFiles(t, dir)); n != 1 {
		t.Errorf("%d segments, want 1 (one writer, and failed writes leave none)", n)
	}

	// Space comes back: the same store writes again, and so does another.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	more := batchOf(total+1, 3)
	if err := s.Put(ctx, more...); err != nil {
		t.Fatalf("Put after space was freed: %v", err)
	}
	if err := open(t, dir, Options{}).Put(ctx, batchOf(total+4, 1)...); err != nil {
		t.Fatalf("Put by a new store: %v", err)
	}
	stored = append(stored, lineRange(total+1, total+4)...)
	if got := listedLines(t, open(t, dir, Options{})); !slices.Equal(got, stored) {
		t.Fatalf("after space was freed: %d entries listed, want %d", len(got), len(stored))
	}
	assertSegmentsClean(t, dir)
}
