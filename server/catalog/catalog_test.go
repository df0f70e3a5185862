package catalog

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func openStore(t *testing.T, path string) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func entry(path string) registry.Entry {
	return registry.Entry{
		SPIFFEID:  spiffeid.RequireFromPath(td, path),
		ParentID:  spiffeid.RequireFromPath(td, "/agent/a"),
		Selectors: []selector.Selector{{Type: "unix", Value: "uid:1"}},
	}
}

func ids(ix *registry.Index, agent spiffeid.ID) map[string]bool {
	out := map[string]bool{}
	for _, e := range ix.Authorized(agent, nil, timeNow()) {
		out[e.SPIFFEID.Path()] = true
	}
	return out
}

func TestEntriesWrittenPatchesOrReloads(t *testing.T) {
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "s.db")
	st := openStore(t, dbPath)
	c, err := New(ctx, st, td, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	agent := spiffeid.RequireFromPath(td, "/agent/a")

	// Our own write: patched in memory, visible at once, waiters woken.
	_, changed := c.Current()
	var rev int64
	wctx := store.WithCommitRevision(ctx, &rev)
	a, err := st.CreateEntry(wctx, entry("/a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EntriesWritten(ctx, rev, []registry.Entry{a}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("EntriesWritten did not wake waiters")
	}
	snap, _ := c.Current()
	if got := ids(snap.Entries, agent); !got["/a"] || len(got) != 1 {
		t.Fatalf("after create: %v", got)
	}

	// Another writer (a second store on the same file, as another server
	// would) commits in between: the patch must not hide its entry.
	other := openStore(t, dbPath)
	if _, err := other.CreateEntry(ctx, entry("/from-other")); err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateEntry(wctx, entry("/b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EntriesWritten(ctx, rev, []registry.Entry{b}, nil); err != nil {
		t.Fatal(err)
	}
	snap, _ = c.Current()
	if got := ids(snap.Entries, agent); !got["/a"] || !got["/b"] || !got["/from-other"] {
		t.Fatalf("after interleaved write: %v, want /a, /b and /from-other", got)
	}

	// Delete and update patch too.
	if err := st.DeleteEntry(wctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.EntriesWritten(ctx, rev, nil, []string{a.ID}); err != nil {
		t.Fatal(err)
	}
	b.Hint = "h"
	b, err = st.UpdateEntry(wctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EntriesWritten(ctx, rev, []registry.Entry{b}, nil); err != nil {
		t.Fatal(err)
	}
	snap, _ = c.Current()
	got := ids(snap.Entries, agent)
	if got["/a"] || !got["/b"] || snap.Entries.Len() != 2 {
		t.Fatalf("after delete+update: %v (len %d)", got, snap.Entries.Len())
	}
	if e, _ := snap.Entries.Get(b.ID); e.Hint != "h" {
		t.Fatalf("update not applied: %+v", e)
	}
	// The patched snapshot equals what a full reload reads.
	storeRev, _ := st.Revision(ctx)
	if snap.Revision != storeRev {
		t.Fatalf("snapshot revision %d, store %d", snap.Revision, storeRev)
	}
}

func timeNow() time.Time { return time.Now() }

// Run reloads on the commit signal, so the admin handler's EntriesWritten
// often finds its write already in the snapshot. If another write (here an
// eviction) committed since, the store is one past the snapshot, as if the
// admin's write were the missing one: patching would label a snapshot that
// lacks the eviction as current, and no later Refresh would load it.
func TestEntriesWrittenAfterReloadKeepsOtherWrites(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	c, err := New(ctx, st, td, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	agentID := "spiffe://example.org/agent/a"
	for _, tt := range []struct {
		name  string
		write func(ctx context.Context) ([]registry.Entry, []string)
	}{
		{"create", func(ctx context.Context) ([]registry.Entry, []string) {
			w, err := st.CreateEntry(ctx, entry("/w"))
			if err != nil {
				t.Fatal(err)
			}
			return []registry.Entry{w}, nil
		}},
		{"create, then deleted by another admin", func(ctx context.Context) ([]registry.Entry, []string) {
			w, err := st.CreateEntry(ctx, entry("/w2"))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.DeleteEntry(context.Background(), w.ID); err != nil {
				t.Fatal(err)
			}
			return []registry.Entry{w}, nil
		}},
		{"delete", func(ctx context.Context) ([]registry.Entry, []string) {
			w, err := st.CreateEntry(ctx, entry("/gone"))
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			if err := st.DeleteEntry(ctx, w.ID); err != nil {
				t.Fatal(err)
			}
			return nil, []string{w.ID}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := st.UpsertNode(ctx, store.Node{SPIFFEID: agentID, AttestationType: "join_token",
				Selectors: []selector.Selector{{Type: "join_token", Value: "x"}}, SerialNumber: "1", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			var rev int64
			upserted, deleted := tt.write(store.WithCommitRevision(ctx, &rev)) // the admin's write commits...
			if err := c.Refresh(ctx); err != nil {                             // ...Run reloads on its signal...
				t.Fatal(err)
			}
			if err := st.DeleteNode(ctx, agentID); err != nil { // ...an eviction commits...
				t.Fatal(err)
			}
			if err := c.EntriesWritten(ctx, rev, upserted, deleted); err != nil { // ...the handler publishes
				t.Fatal(err)
			}
			if err := c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			snap, _ := c.Current()
			if _, ok := snap.Nodes[agentID]; ok {
				t.Fatal("the snapshot still holds the evicted agent")
			}
			if all, err := st.ListEntries(ctx); err != nil || len(all) != snap.Entries.Len() {
				t.Fatalf("the snapshot holds %d entries, the store %d (%v)", snap.Entries.Len(), len(all), err)
			}
			if rev, _ := st.Revision(ctx); snap.Revision != rev {
				t.Fatalf("snapshot revision %d, store %d", snap.Revision, rev)
			}
		})
	}
}

// waitFor waits until the catalog's snapshot satisfies ok.
func waitFor(t *testing.T, c *Catalog, within time.Duration, what string, ok func(*Snapshot) bool) {
	t.Helper()
	deadline := time.After(within)
	for {
		snap, changed := c.Current()
		if ok(snap) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: not in the catalog within %s (snapshot at revision %d)", what, within, snap.Revision)
		}
	}
}

// A write whose change signal never reaches this server (here: made
// through another handle on the same SQLite file, as another process
// would; with PostgreSQL, a LISTEN connection that died silently) still
// reaches the catalog within the poll interval.
func TestRunNoticesUnsignalledWrites(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbPath := filepath.Join(t.TempDir(), "s.db")
	st, other := openStore(t, dbPath), openStore(t, dbPath)
	c, err := NewWithOptions(ctx, st, td, slog.New(slog.DiscardHandler), Options{PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	agent := spiffeid.RequireFromPath(td, "/agent/a")
	// A signalled write: once it is in, Run is subscribed and has done
	// its start-up check, so only polling can find the next one.
	if _, err := st.CreateEntry(ctx, entry("/signalled")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 5*time.Second, "the signalled write", func(s *Snapshot) bool { return ids(s.Entries, agent)["/signalled"] })
	if _, err := other.CreateEntry(ctx, entry("/unsignalled")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 5*time.Second, "the unsignalled write", func(s *Snapshot) bool { return ids(s.Entries, agent)["/unsignalled"] })
}
