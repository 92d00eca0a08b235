package deadletter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Local layout: DIR/segments/<time>-<pid>-<rand>.ndjson (one per writer,
// rotated past maxSegmentBytes) and DIR/locks/<name>.lock.
const (
	segmentsDir     = "segments"
	locksDir        = "locks"
	maxSegmentBytes = 64 << 20
	dirMode         = 0o700
	fileMode        = 0o600
)

type localBackend struct {
	dir string
	fs  fileSystem
	log *zap.Logger

	// Touched only by the committer's leader (one at a time) and by close
	// (after the last commit).
	seg      *openSegment // this writer's current segment; nil until a write needs one
	repaired bool         // repair ran (at the first commit)
}

// openSegment is the segment this writer appends to. The writer holds an
// exclusive flock on it for as long as it has it open, so that another
// writer's repair never touches a segment that is being written.
type openSegment struct {
	f    segmentFile
	path string
	name string
	size int64 // bytes committed: the segment ends with a commit line here
}

func openLocal(dir string, fsys fileSystem, log *zap.Logger) (*localBackend, error) {
	if dir == "" {
		return nil, errors.New("dead-letter: empty directory")
	}
	for _, d := range []string{dir, filepath.Join(dir, segmentsDir), filepath.Join(dir, locksDir)} {
		if err := mkdirPrivate(d); err != nil {
			return nil, err
		}
	}
	return &localBackend{dir: dir, fs: fsys, log: log}, nil
}

// mkdirPrivate creates d (and missing parents) with mode 0700; an existing
// directory keeps its mode.
func mkdirPrivate(d string) error {
	if _, err := os.Stat(d); err == nil {
		return nil
	}
	if err := os.MkdirAll(d, dirMode); err != nil {
		return fmt.Errorf("dead-letter create directory %s: %w", d, err)
	}
	// MkdirAll honours the umask; make sure nothing more open than 0700.
	if err := os.Chmod(d, dirMode); err != nil {
		return fmt.Errorf("dead-letter chmod %s: %w", d, err)
	}
	// The new directory's entry must survive a crash like the segments in it.
	return syncDir(filepath.Dir(d))
}

func (b *localBackend) segDir() string { return filepath.Join(b.dir, segmentsDir) }

// commit appends the group to this writer's segment as one write: the
// records, then the commit line that makes them count. It is durable on a nil
// return (fsynced; for a new segment, its directory entry too). On an error
// the write is cut back (truncate and fsync) so that the segment ends at its
// last commit line again; a new segment that holds nothing committed is
// removed. Should even the cut fail, the records still lack their commit
// line, so readers skip them, and the segment is closed: nothing is ever
// appended after an unfinished group.
func (b *localBackend) commit(group []*batch) error {
	if !b.repaired {
		b.repaired = true
		b.repair()
	}
	if b.seg != nil && b.seg.size >= maxSegmentBytes {
		b.closeSegment()
	}
	if b.seg == nil {
		if err := b.newSegment(); err != nil {
			return err
		}
	}
	seg := b.seg
	start := seg.size
	size, n := len(segmentHeader)+40, 0
	for _, x := range group {
		size += len(x.data)
	}
	buf := make([]byte, 0, size)
	if start == 0 {
		buf = append(buf, segmentHeader...)
	}
	for _, x := range group {
		buf = append(buf, x.data...)
		n += x.records
	}
	buf = append(buf, commitLine(n)...)
	end := start + int64(len(buf))
	if _, err := seg.f.WriteAt(buf, start); err != nil {
		return b.failed(fmt.Errorf("dead-letter write segment %s: %w", seg.name, err), start, end, false)
	}
	if err := seg.f.Sync(); err != nil {
		return b.failed(fmt.Errorf("dead-letter fsync segment %s: %w", seg.name, err), start, end, true)
	}
	if start == 0 {
		// The first commit of a segment is durable only with its name.
		if err := b.fs.syncDir(b.segDir()); err != nil {
			return b.failed(err, start, end, true)
		}
	}
	seg.size = end
	return nil
}

// failed rolls a failed commit back and returns its error, with the reason
// why its records may be listed all the same should even that fail.
func (b *localBackend) failed(err error, start, end int64, written bool) error {
	if uerr := b.rollback(start, end, written); uerr != nil {
		return errors.Join(err, uerr)
	}
	return err
}

// rollback undoes a failed commit that wrote bytes start..end of the current
// segment (all of them, commit line included, when written), so that its
// records are not visible. It returns an error only when they may be.
//
// A segment the commit created goes: no empty (or header-only) segment is
// left behind. Otherwise the write is cut back (truncate and fsync). After a
// failed fsync the segment is not written again (the kernel may have dropped
// its cached pages): the next write starts a new one. After a write cut short
// (a full disk) the same segment goes on, so a store that keeps failing does
// not leave a segment per attempt. When even the cut fails, the segment is
// closed (nothing is appended after an unfinished group; the next writer's
// repair cuts it) and a commit line that made it into the file is undone by
// overwriting its newline: a commit line without one commits nothing.
func (b *localBackend) rollback(start, end int64, written bool) error {
	seg := b.seg
	var undo error
	if start == 0 {
		b.seg = nil
		if written {
			undo = uncommit(seg, end)
		}
		err := b.fs.remove(seg.path)
		if err == nil {
			err = b.fs.syncDir(b.segDir())
		}
		seg.f.Close()
		if err == nil {
			return nil
		}
		b.log.Warn("dead-letter: could not remove a segment whose first write failed; readers skip its "+
			"uncommitted records and the next writer removes it", zap.String("segment", seg.name), zap.Error(err))
		return undo
	}
	err := seg.f.Truncate(start)
	if err == nil {
		err = seg.f.Sync()
	}
	if err == nil {
		if written {
			b.closeSegment()
		}
		return nil
	}
	b.log.Error("dead-letter: could not cut a failed write back; readers skip its uncommitted records, "+
		"the segment is closed and the next writer repairs it",
		zap.String("segment", seg.name), zap.Int64("offset", start), zap.Error(err))
	if written {
		undo = uncommit(seg, end)
	}
	b.closeSegment()
	return undo
}

// uncommit overwrites the newline that ends the commit line ending at end.
func uncommit(seg *openSegment, end int64) error {
	if _, err := seg.f.WriteAt([]byte{' '}, end-1); err != nil {
		return fmt.Errorf("dead-letter: the failed write to segment %s could not be undone, its entries may be listed: %w",
			seg.name, err)
	}
	_ = seg.f.Sync()
	return nil
}

// newSegment creates this writer's next segment and locks it.
func (b *localBackend) newSegment() error {
	for range 3 {
		name, err := segmentName(time.Now(), os.Getpid())
		if err != nil {
			return err
		}
		p := filepath.Join(b.segDir(), name)
		f, err := b.fs.create(p)
		if err != nil {
			return fmt.Errorf("dead-letter create segment: %w", err)
		}
		if err := flock(f, syscall.LOCK_EX); err != nil {
			f.Close()
			_ = b.fs.remove(p)
			return fmt.Errorf("dead-letter lock segment %s: %w", name, err)
		}
		// Another writer's repair may have removed the new, empty file
		// before it was locked: then write to another one.
		fi, ferr := f.Stat()
		pi, perr := os.Stat(p)
		if ferr == nil && perr == nil && os.SameFile(fi, pi) {
			b.seg = &openSegment{f: f, path: p, name: name}
			return nil
		}
		f.Close()
	}
	return errors.New("dead-letter create segment: removed three times by other writers")
}

// closeSegment closes the current segment (everything in it is committed or
// cut back) and releases its flock.
func (b *localBackend) closeSegment() {
	if b.seg != nil {
		b.seg.f.Close()
		b.seg = nil
	}
}

// repair runs once per store, at its first write: every format-2 segment
// that no live writer holds (its writer crashed, or it was left by a failed
// write) and that does not end with a commit line is truncated just past its
// last commit line; one without any committed record, and an empty one, is
// removed. Segments being written are locked by their writers and skipped.
// Format-1 segments are never modified: writers of the previous release do
// not lock them. Repair is best effort: what it cannot fix, readers skip.
func (b *localBackend) repair() {
	names, err := b.segments(context.Background())
	if err != nil {
		b.log.Warn("dead-letter: repair: cannot list segments", zap.Error(err))
		return
	}
	removed := false
	for _, name := range names {
		r, err := b.repairSegment(name)
		if err != nil {
			b.log.Warn("dead-letter: repair of a segment failed; readers skip its unfinished end",
				zap.String("segment", name), zap.Error(err))
		}
		removed = removed || r
	}
	if removed {
		if err := b.fs.syncDir(b.segDir()); err != nil {
			b.log.Warn("dead-letter: repair", zap.Error(err))
		}
	}
}

// repairSegment repairs one segment if no writer holds it, and reports
// whether it removed it.
func (b *localBackend) repairSegment(name string) (removed bool, err error) {
	p := filepath.Join(b.segDir(), name)
	f, err := b.fs.open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return false, nil // its writer is alive
		}
		return false, err
	}
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	size := fi.Size()
	if size == 0 {
		b.log.Info("dead-letter: removing an empty segment", zap.String("segment", name))
		return true, b.fs.remove(p)
	}
	head := make([]byte, len(segmentHeader))
	if _, err := f.ReadAt(head, 0); err != nil || string(head) != segmentHeader {
		return false, nil // format 1, or too short to be format 2: left as it is
	}
	if endsCommitted(f, size) {
		return false, nil
	}
	end, _, err := committedEnd(io.NewSectionReader(f, 0, size))
	if err != nil {
		return false, err
	}
	if end == 0 {
		b.log.Warn("dead-letter: repair: removing a segment without a committed record",
			zap.String("segment", name), zap.Int64("bytes", size))
		return true, b.fs.remove(p)
	}
	b.log.Warn("dead-letter: repair: cutting the torn end off a segment", zap.String("segment", name),
		zap.Int64("offset", end), zap.Int64("bytes", size-end))
	if err := f.Truncate(end); err != nil {
		return false, err
	}
	return false, f.Sync()
}

// endsCommitted reports whether the segment of the given size ends with a
// complete commit line (the usual case: only the last bytes are read).
func endsCommitted(f io.ReaderAt, size int64) bool {
	n := min(size, 64)
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, size-n); err != nil {
		return false
	}
	if len(tail) == 0 || tail[len(tail)-1] != '\n' {
		return false
	}
	i := bytes.LastIndexByte(tail[:len(tail)-1], '\n')
	if i < 0 {
		return false
	}
	_, ok := isCommit(tail[i+1:])
	return ok
}

// flock calls flock(2), again when interrupted by a signal.
func flock(f interface{ Fd() uintptr }, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

func (b *localBackend) segments(ctx context.Context) ([]string, error) {
	des, err := os.ReadDir(b.segDir())
	if err != nil {
		return nil, fmt.Errorf("dead-letter list segments: %w", err)
	}
	var names []string
	for _, de := range des {
		if de.Type().IsRegular() && strings.HasSuffix(de.Name(), ".ndjson") {
			names = append(names, de.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

func (b *localBackend) read(ctx context.Context, names []string, fn func(segment) error) error {
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := os.Open(filepath.Join(b.segDir(), name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("dead-letter open segment: %w", err)
		}
		live := func() bool {
			// A writer holds its segment with an exclusive flock.
			err := flock(f, syscall.LOCK_SH|syscall.LOCK_NB)
			if err == nil {
				_ = flock(f, syscall.LOCK_UN)
			}
			return errors.Is(err, syscall.EWOULDBLOCK)
		}
		err = fn(segment{name: name, r: f, live: live})
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *localBackend) close() error {
	if b.seg == nil {
		return nil
	}
	// Everything in the segment is committed (fsynced) already.
	err := b.seg.f.Close()
	b.seg = nil
	if err != nil {
		return fmt.Errorf("dead-letter close segment: %w", err)
	}
	return nil
}

// lock takes an flock on DIR/locks/NAME.lock. The kernel releases it when
// the holder exits or dies, so a crashed holder never blocks the next one
// and ttl is not needed locally.
func (b *localBackend) lock(ctx context.Context, name string, ttl time.Duration, now func() time.Time, _ *zap.Logger) (lease, error) {
	p := filepath.Join(b.dir, locksDir, name+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("dead-letter open lock %s: %w", name, err)
	}
	if err := flock(f, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, lockedBy(name, f)
		}
		return nil, fmt.Errorf("dead-letter lock %s: %w", name, err)
	}
	// For an operator looking at the file: who holds it since when.
	host, _ := os.Hostname()
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "{\"pid\":%d,\"host\":%q,\"acquired\":%q}\n", os.Getpid(), host, now().UTC().Format(time.RFC3339Nano))
	}
	return &localLease{f: f}, nil
}

// lockedBy returns the LockedError of the lease whose lock file f is,
// with what the holder wrote into it.
func lockedBy(name string, f io.Reader) *LockedError {
	var holder struct {
		PID      int       `json:"pid"`
		Host     string    `json:"host"`
		Acquired time.Time `json:"acquired"`
	}
	if b, err := io.ReadAll(io.LimitReader(f, 4096)); err == nil {
		_ = json.Unmarshal(b, &holder) // written while we read: unknown
	}
	return &LockedError{Name: name, PID: holder.PID, Host: holder.Host, Since: holder.Acquired}
}

type localLease struct {
	f *os.File
}

func (l *localLease) release() error {
	err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dead-letter unlock: %w", err)
	}
	return nil
}

// abandon closes the file without unlocking, as the kernel does for a
// process that dies.
func (l *localLease) abandon() { l.f.Close() }
