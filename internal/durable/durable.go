// Package durable writes small files so that a crash leaves either the old
// content or the new one, never a torn file, and the new one survives a
// power loss once the call returns.
package durable

import (
	"os"
	"path/filepath"
)

// WriteFile replaces the file at path with data: a temporary file in the
// same folder (mode 0600), fsynced, renamed over path, and the folder
// fsynced so that the rename is durable too. On error the temporary file
// is removed and path is unchanged.
func WriteFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a folder: what makes a create, rename or remove in it
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
