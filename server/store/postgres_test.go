package store

import (
	"context"
	"net"
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
		WHERE datname = current_database() AND application_name = $1`, listenerAppName).Scan(&killed); err != nil {
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

// silentProxy forwards TCP connections to target until silence(): from
// then on the connections opened so far stay open but carry nothing, like a
// path that died without a reset (a failed-over primary behind a proxy, a
// NAT or load balancer that dropped the session). Later connections are
// forwarded normally.
type silentProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	mute  []chan struct{} // closed to silence one connection
	conns []net.Conn
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mute := make(chan struct{})
			p.mu.Lock()
			p.mute = append(p.mute, mute)
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go pipeUnlessMuted(u, c, mute)
			go pipeUnlessMuted(c, u, mute)
		}
	}()
	return p
}

// pipeUnlessMuted copies src to dst, dropping what it reads once mute is
// closed.
func pipeUnlessMuted(dst, src net.Conn, mute <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-mute:
			continue
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *silentProxy) silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.mute {
		close(m)
	}
	p.mute = nil
}

// A's path to the database dies silently: its LISTEN connection stays open
// but hears nothing. A must notice (the listener pings when it has heard
// nothing for a while), reconnect, signal, and hear later writes again.
func TestPostgresListenerReplacesSilentConnection(t *testing.T) {
	url := pgtest.NewDatabase(t)
	_, rest, _ := strings.Cut(url, "@")
	hostPort, _, _ := strings.Cut(rest, "/")
	p := newSilentProxy(t, hostPort)
	ctx := testCtx(t)
	a := openStore(t, strings.Replace(url, hostPort, p.ln.Addr().String(), 1))
	b := openStore(t, url)
	ch := a.Changes(ctx)
	if _, err := b.CreateEntry(ctx, workload(t, "/before", "unix:uid:1")); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch, "B's write, heard by A over the proxy")

	p.silence()
	if _, err := b.CreateEntry(ctx, workload(t, "/during", "unix:uid:1")); err != nil {
		t.Fatal(err)
	}
	// The listener is quiet for listenIdle, then its ping goes unanswered
	// for listenPingTimeout; it reconnects and signals.
	bound := listenIdle + listenPingTimeout + 5*time.Second
	select {
	case <-ch:
	case <-time.After(bound):
		t.Fatalf("A had no change signal %s after B's write on a silently dead listener connection", bound)
	}
	if _, err := b.CreateEntry(ctx, workload(t, "/after", "unix:uid:1")); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch, "B's write after A's listener reconnected")
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
