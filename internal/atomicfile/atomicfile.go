// Package atomicfile writes a file whole or not at all: through a
// temporary file in the same directory, synced and renamed over the
// target, so a reader never sees half of it and a crash leaves the old
// content. It imports only the standard library.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode mode (set explicitly, so the umask
// does not change it). On error path is unchanged and the temporary file is
// removed. Errors are *os.PathError or *os.LinkError, which name the file.
func Write(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// CreateTemp made it 0600: nobody else can open it before Chmod.
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
