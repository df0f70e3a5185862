package main

import (
	"bytes"
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/servertest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// signet runs the CLI in-process, as main would, and returns its standard
// output and error.
func signet(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// setConnections lets clients into a PostgreSQL database, or throws them
// out and keeps them out: a store the server cannot reach.
func setConnections(t *testing.T, dbURL string, allow bool) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgtest.Start(t).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS "+map[bool]string{true: "true", false: "false"}[allow]); err != nil {
		t.Fatal(err)
	}
	if !allow {
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServerHealthcheck runs `signet server healthcheck` against a real
// server on PostgreSQL: healthy, then not ready while its store is out of
// reach (but live), healthy again, then gone.
func TestServerHealthcheck(t *testing.T) {
	db := pgtest.NewDatabase(t)
	s := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), func(c *server.Config) { c.Datastore = db })
	check := func(extra ...string) (string, error) {
		return signet(t, append([]string{"server", "healthcheck", "--admin-socket", s.Config.AdminSocket}, extra...)...)
	}
	if out, err := check("--verbose"); err != nil || out != "Checking server health on "+s.Config.AdminSocket+"\nServer is healthy.\n" {
		t.Fatalf("healthy server: %v %q", err, out)
	}
	if out, err := check(); err != nil || out != "" {
		t.Fatalf("healthy server, quiet: %v %q", err, out)
	}

	setConnections(t, db, false)
	out, err := check()
	if err == nil || !strings.HasPrefix(err.Error(), "server is not ready (NOT_SERVING): datastore unreachable: ") ||
		strings.Contains(err.Error(), "\n") || exitCode(err) == 0 || out != "" {
		t.Fatalf("store out of reach: %v (exit %d) %q, want one line, non-zero", err, exitCode(err), out)
	}
	if out, err := check("--shallow", "--verbose"); err != nil || !strings.HasSuffix(out, "Server is live.\n") {
		t.Fatalf("shallow check with the store out of reach: %v %q", err, out)
	}
	setConnections(t, db, true)
	// Each connection the pool held before fails one ping, then goes.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := check()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store back: %v", err)
		}
	}

	s.Stop()
	if _, err := check("--shallow"); err == nil || !strings.Contains(err.Error(), "does not exist") || exitCode(err) == 0 {
		t.Fatalf("stopped server: %v", err)
	}
}
