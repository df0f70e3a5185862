// Package atomicfile replaces files atomically with exactly the mode asked:
// a reader sees the old file or the new one, whole, and a crash leaves the
// old one. renameio.WriteFile alone keeps an existing file's mode, so a key
// file once made world-readable would stay so.
package atomicfile

import (
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// Write replaces path with data, mode perm (umask ignored). The temporary
// file is made beside it, mode perm from the start, so the rename stays on
// one filesystem and the data is never readable more widely.
func Write(path string, data []byte, perm os.FileMode) error {
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithStaticPermissions(perm))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.CloseAtomicallyReplace()
}
