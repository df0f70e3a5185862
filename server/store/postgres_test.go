package store

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/signetid/signet/internal/pgtest"
)

// Several servers share one PostgreSQL database: each test opens two stores
// on it, as two servers would.

func TestPostgresChangesAcrossStores(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := testCtx(t)
	a, b := openStore(t, url), openStore(t, url)
	chB := b.Changes(ctx)
	start := time.Now()
	e, err := a.CreateEntry(ctx, workload(t, "/w", "unix:uid:1"))
	if err != nil {
		t.Fatal(err)
	}
	waitSignal(t, chB, "write on A, seen on B")
	t.Logf("change on A signalled on B after %v", time.Since(start))
	got, err := b.GetEntry(ctx, e.ID)
	if err != nil {
		t.Fatalf("B reads A's entry: %v", err)
	}
	if got.ID != e.ID {
		t.Fatalf("B read %+v", got)
	}
}

func TestPostgresJoinTokenAcrossStores(t *testing.T) {
	url := pgtest.NewDatabase(t)
	consumeRace(t, []Store{openStore(t, url), openStore(t, url)}, 20)
}

func TestPostgresConcurrentOpen(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := testCtx(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	stores := make([]Store, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(ctx, url, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var rows, versions int
	if err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT version) FROM schema_version`).Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != versions || rows == 0 {
		t.Fatalf("schema_version has %d rows for %d versions: a migration ran twice", rows, versions)
	}
}

// TestPostgresListenerReconnects kills the LISTEN connection of B; B must
// reconnect, tell its subscribers it may have missed changes, and hear the
// next change made on A.
func TestPostgresListenerReconnects(t *testing.T) {
	url := pgtest.NewDatabase(t)
	ctx := testCtx(t)
	a, b := openStore(t, url), openStore(t, url)
	ch := b.Changes(ctx)

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+changesChannel+`'`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != 2 {
		t.Fatalf("terminated %d listener connections, want 2 (A's and B's)", killed)
	}
	waitSignal(t, ch, "B's listener reconnected")
	if _, err := a.CreateEntry(ctx, workload(t, "/w", "unix:uid:1")); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch, "write on A after B reconnected")
}

func TestPostgresOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := pgtest.Start(t)
	_, err := Open(ctx, c.URL("no_such_db"), nil)
	if err == nil {
		t.Fatal("Open of a missing database succeeded")
	}
	_, err = Open(ctx, "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2", nil)
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error repeats the password: %v", err)
	}
}
