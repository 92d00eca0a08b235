package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultSuffixes returns the file name endings taken from folders and S3
// prefixes when no others are configured: NDJSON, and JSON documents (Bundle
// files), plain or gzip.
func DefaultSuffixes() []string {
	return []string{".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".json", ".json.gz"}
}

// LocalOptions configure Local.
type LocalOptions struct {
	// Suffixes are the file name endings taken when walking a folder
	// (case-insensitive); empty means DefaultSuffixes(). Files named
	// explicitly (or matched by a glob) are taken whatever their name.
	Suffixes []string
}

// Local resolves local paths, folders and globs into Objects. Folders are
// walked recursively for files with the configured suffixes; a glob's matches
// are treated like paths given one by one. A missing path, or a glob matching
// nothing, is an error naming it. Objects are sorted by URI and each file
// appears once.
func Local(patterns []string, opts LocalOptions) ([]Object, error) {
	suffixes := opts.Suffixes
	if len(suffixes) == 0 {
		suffixes = DefaultSuffixes()
	}
	seen := map[string]bool{}
	var objs []Object
	add := func(path string, info fs.FileInfo) error {
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("source %s: %w", path, err)
		}
		if seen[abs] {
			return nil
		}
		seen[abs] = true
		objs = append(objs, localObject(abs, info))
		return nil
	}
	for _, pattern := range patterns {
		paths := []string{pattern}
		if hasGlobMeta(pattern) {
			m, err := filepath.Glob(pattern)
			if err != nil {
				return nil, fmt.Errorf("source %s: %w", pattern, err)
			}
			if len(m) == 0 {
				return nil, fmt.Errorf("source %s: no file matches", pattern)
			}
			paths = m
		}
		for _, p := range paths {
			info, err := os.Stat(p)
			if err != nil {
				return nil, fmt.Errorf("source %s: %w", p, err)
			}
			if !info.IsDir() {
				if err := add(p, info); err != nil {
					return nil, err
				}
				continue
			}
			err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() || !hasSuffix(d.Name(), suffixes) {
					return nil
				}
				info, err := os.Stat(path) // follows symlinks, unlike d.Info
				if err != nil {
					return err
				}
				if !info.Mode().IsRegular() {
					return nil
				}
				return add(path, info)
			})
			if err != nil {
				return nil, fmt.Errorf("source %s: %w", p, err)
			}
		}
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].URI < objs[j].URI })
	return objs, nil
}

// LocalObject returns the Object of one local file, as Local would.
func LocalObject(path string) (Object, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Object{}, err
	}
	info, err := os.Stat(abs)
	if err != nil {
		return Object{}, fmt.Errorf("source %s: %w", path, err)
	}
	return localObject(abs, info), nil
}

func localObject(abs string, info fs.FileInfo) Object {
	return Object{
		URI:  "file://" + filepath.ToSlash(abs),
		ETag: fmt.Sprintf("%d-%d", info.Size(), info.ModTime().UnixNano()),
		Size: info.Size(),
		Open: func(context.Context) (io.ReadCloser, error) {
			f, err := os.Open(abs)
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("open %s: %w: %w", abs, ErrMissingObject, err)
			}
			if err != nil {
				return nil, fmt.Errorf("%w: open %s: %w", ErrUnreadable, abs, err)
			}
			return f, nil
		},
	}
}

func hasGlobMeta(p string) bool { return strings.ContainsAny(p, `*?[`) }

func hasSuffix(name string, suffixes []string) bool {
	lower := strings.ToLower(name)
	for _, s := range suffixes {
		if strings.HasSuffix(lower, strings.ToLower(s)) {
			return true
		}
	}
	return false
}
