package workloadapi_test

import (
	"io/fs"
	"syscall"
	"testing"
)

// umask reads the process umask (by setting and restoring it).
func umask(t *testing.T) fs.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return fs.FileMode(m)
}
