package store

import (
	"testing"

	"github.com/signetid/signet/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
