package server_test

import (
	"testing"

	"github.com/signetid/signet/internal/pgtest"
)

// TestMain runs a throwaway PostgreSQL cluster for the multi-server tests.
func TestMain(m *testing.M) { pgtest.Main(m) }
