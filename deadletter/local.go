package deadletter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

	mu    sync.Mutex // guards the fields below
	f     *os.File   // this writer's current segment, nil until first write
	size  int64
	dirty bool // written but not yet fsynced
}

func openLocal(dir string) (*localBackend, error) {
	if dir == "" {
		return nil, errors.New("dead-letter: empty directory")
	}
	for _, d := range []string{dir, filepath.Join(dir, segmentsDir), filepath.Join(dir, locksDir)} {
		if err := mkdirPrivate(d); err != nil {
			return nil, err
		}
	}
	return &localBackend{dir: dir}, nil
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

func (b *localBackend) write(ctx context.Context, data []byte, durable bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(data) > 0 {
		if b.f == nil || b.size >= maxSegmentBytes {
			if err := b.rotate(); err != nil {
				return err
			}
		}
		n, err := b.f.Write(data)
		b.size += int64(n)
		b.dirty = true
		if err != nil {
			// A partial write leaves a torn line: never append after it.
			b.abandon()
			return fmt.Errorf("dead-letter write segment: %w", err)
		}
	}
	if durable && b.dirty {
		if err := b.f.Sync(); err != nil {
			// After a failed fsync the file's state is unknown; the caller
			// keeps its buffer and writes it again into a fresh segment.
			b.abandon()
			return fmt.Errorf("dead-letter fsync segment: %w", err)
		}
		b.dirty = false
	}
	return nil
}

// rotate closes the current segment (synced) and creates a new one, making
// its directory entry durable.
func (b *localBackend) rotate() error {
	if b.f != nil {
		if err := b.f.Sync(); err != nil {
			b.abandon()
			return fmt.Errorf("dead-letter fsync segment: %w", err)
		}
		if err := b.f.Close(); err != nil {
			b.f = nil
			return fmt.Errorf("dead-letter close segment: %w", err)
		}
		b.f = nil
	}
	name, err := segmentName(time.Now(), os.Getpid())
	if err != nil {
		return err
	}
	segs := filepath.Join(b.dir, segmentsDir)
	f, err := os.OpenFile(filepath.Join(segs, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, fileMode)
	if err != nil {
		return fmt.Errorf("dead-letter create segment: %w", err)
	}
	if err := syncDir(segs); err != nil {
		f.Close()
		return err
	}
	b.f, b.size, b.dirty = f, 0, false
	return nil
}

func (b *localBackend) abandon() {
	if b.f != nil {
		b.f.Close()
	}
	b.f, b.size, b.dirty = nil, 0, false
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("dead-letter open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("dead-letter fsync directory: %w", err)
	}
	return nil
}

func (b *localBackend) segments(ctx context.Context) ([]string, error) {
	des, err := os.ReadDir(filepath.Join(b.dir, segmentsDir))
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

func (b *localBackend) read(ctx context.Context, names []string, fn func(string, io.Reader) error) error {
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := os.Open(filepath.Join(b.dir, segmentsDir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("dead-letter open segment: %w", err)
		}
		err = fn(name, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *localBackend) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.f == nil {
		return nil
	}
	var err error
	if b.dirty {
		err = b.f.Sync()
	}
	err = errors.Join(err, b.f.Close())
	b.f = nil
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("dead-letter lock %s: %w", name, ErrLocked)
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
