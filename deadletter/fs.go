package deadletter

import (
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/fhirload/fhirload/internal/durable"
)

// fileSystem is the file layer the local backend writes segments through:
// the operating system, or in tests a layer that injects the faults a real
// disk produces (a write cut short by a full disk, an fsync that fails).
type fileSystem interface {
	// create creates a new file (it must not exist) with mode 0600, open
	// for reading and writing.
	create(path string) (segmentFile, error)
	// open opens an existing file for reading and writing.
	open(path string) (segmentFile, error)
	remove(path string) error
	// syncDir makes dir's entries (created and removed files) durable.
	syncDir(dir string) error
}

// segmentFile is an open segment; *os.File is one.
type segmentFile interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Fd() uintptr
	Name() string
	Close() error
}

// osFS is the operating system's file system.
type osFS struct{}

func (osFS) create(path string) (segmentFile, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
}

func (osFS) open(path string) (segmentFile, error) {
	return os.OpenFile(path, os.O_RDWR, 0)
}

func (osFS) remove(path string) error { return os.Remove(path) }

func (osFS) syncDir(dir string) error { return syncDir(dir) }

func syncDir(dir string) error {
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("dead-letter fsync directory: %w", err)
	}
	return nil
}
