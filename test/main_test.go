package test

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the signet binary the run built: each is tens of MB, and
// a developer's runs would otherwise fill /tmp.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
