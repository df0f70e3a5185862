package store

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPruneEntries: entries whose expiry passed go, in one write that
// bumps the revision (agents' streams drop them); entries without an
// expiry, or expiring later, stay; nothing to prune writes nothing.
func TestPruneEntries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		now := time.Now()
		for _, e := range []struct {
			path string
			exp  time.Time
		}{{"/never", time.Time{}}, {"/past", now.Add(-time.Hour)}, {"/just-past", now.Add(-time.Second)}, {"/future", now.Add(time.Hour)}} {
			w := workload(t, e.path, "unix:uid:1")
			w.ID, w.ExpiresAt = e.path[1:], e.exp
			if _, err := s.CreateEntry(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
		rev := revision(t, s)
		got, err := s.PruneEntries(ctx, now)
		slices.Sort(got)
		if err != nil || !slices.Equal(got, []string{"just-past", "past"}) {
			t.Fatalf("PruneEntries = %v, %v; want just-past and past", got, err)
		}
		if r := revision(t, s); r <= rev {
			t.Errorf("pruning did not bump the revision (%d -> %d)", rev, r)
		}
		left, _ := s.ListEntries(ctx)
		var ids []string
		for _, e := range left {
			ids = append(ids, e.ID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"future", "never"}) {
			t.Fatalf("left %v, want future and never", ids)
		}
		rev = revision(t, s)
		if got, err := s.PruneEntries(ctx, now); err != nil || len(got) != 0 {
			t.Fatalf("second PruneEntries = %v, %v; want nothing", got, err)
		}
		if r := revision(t, s); r != rev {
			t.Errorf("pruning nothing bumped the revision (%d -> %d)", rev, r)
		}
	})
}

// TestDeleteExpiredNode: only a node whose SVID expired before the time,
// and that is not banned, is removed; a node that renewed meanwhile stays.
func TestDeleteExpiredNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		now := time.Now()
		for _, n := range []Node{
			{SPIFFEID: "spiffe://example.org/agent/old", AttestationType: "x509pop", SerialNumber: "01", ExpiresAt: now.Add(-48 * time.Hour)},
			{SPIFFEID: "spiffe://example.org/agent/banned", AttestationType: "x509pop", SerialNumber: "02", ExpiresAt: now.Add(-48 * time.Hour)},
			{SPIFFEID: "spiffe://example.org/agent/fresh", AttestationType: "x509pop", SerialNumber: "03", ExpiresAt: now.Add(time.Hour)},
		} {
			if err := s.UpsertNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.BanNode(ctx, "spiffe://example.org/agent/banned"); err != nil {
			t.Fatal(err)
		}
		cutoff := now.Add(-24 * time.Hour)
		for id, want := range map[string]bool{"old": true, "banned": false, "fresh": false, "unknown": false} {
			rev := revision(t, s)
			got, err := s.DeleteExpiredNode(ctx, "spiffe://example.org/agent/"+id, cutoff)
			if err != nil || got != want {
				t.Errorf("DeleteExpiredNode(%s) = %v, %v; want %v", id, got, err, want)
			}
			if r := revision(t, s); (r > rev) != want {
				t.Errorf("DeleteExpiredNode(%s): revision %d -> %d", id, rev, r)
			}
		}
		nodes, _ := s.ListNodes(ctx)
		if len(nodes) != 2 {
			t.Fatalf("left %+v, want banned and fresh", nodes)
		}
	})
}

// TestDeleteEntriesAllOrNothing: a batch delete with an unknown ID deletes
// nothing and names it; a good one deletes all in one revision.
func TestDeleteEntriesAllOrNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		for _, id := range []string{"a", "b"} {
			w := workload(t, "/"+id, "unix:uid:1")
			w.ID = id
			if _, err := s.CreateEntry(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.DeleteEntries(ctx, []string{"a", "nosuch"}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nosuch") {
			t.Fatalf("DeleteEntries with an unknown ID: %v", err)
		}
		if es, _ := s.ListEntries(ctx); len(es) != 2 {
			t.Fatalf("a failed batch deleted entries: %d left", len(es))
		}
		rev := revision(t, s)
		if err := s.DeleteEntries(ctx, []string{"a", "b"}); err != nil {
			t.Fatal(err)
		}
		if r := revision(t, s); r != rev+1 {
			t.Errorf("revision %d -> %d, want one bump", rev, r)
		}
		if es, _ := s.ListEntries(ctx); len(es) != 0 {
			t.Fatalf("%d entries left", len(es))
		}
	})
}
