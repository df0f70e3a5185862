// Package servertest runs a real Signet server in-process, for the tests of
// its clients (the agent): SQLite in a temporary directory, the agent API on
// 127.0.0.1:0, stopped when the test ends.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server"
)

// Server is a running server.
type Server struct {
	*server.Server
	Config server.Config
	stop   func()
}

// Start runs a server of trust domain td (SVIDs and agent SVIDs of 1h, JWTs
// of 5m); mutate, if not nil, adjusts the configuration first.
func Start(t testing.TB, td spiffeid.TrustDomain, mutate func(*server.Config)) *Server {
	t.Helper()
	cfg := Config(t, td, mutate)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &Server{Server: s, Config: cfg, stop: stop}
}

// Config is the configuration Start runs with: a fresh data dir, SQLite,
// loopback; mutate, if not nil, adjusts it.
func Config(t testing.TB, td spiffeid.TrustDomain, mutate func(*server.Config)) server.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{
		TrustDomain: td, DataDir: dir, Listen: "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"),
		Datastore:   "sqlite://" + filepath.Join(dir, "signet.db"),
		SVIDTTL:     time.Hour, JWTTTL: 5 * time.Minute, AgentTTL: time.Hour,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// Stop stops the server now; later calls (and the cleanup) do nothing.
func (s *Server) Stop() { s.stop() }
