package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
)

// backends are what the shared suite runs against: each gives a fresh,
// empty store's URL.
var backends = []struct {
	name   string
	newURL func(t testing.TB) string
}{
	{"sqlite", func(t testing.TB) string { return "sqlite://" + filepath.Join(t.TempDir(), "signet.db") }},
	{"postgres", pgtest.NewDatabase},
}

// forEachBackend runs test against every backend, with a fresh store URL.
func forEachBackend(t *testing.T, test func(t *testing.T, url string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b.newURL(t)) })
	}
}

func openStore(t testing.TB, url string) Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, url, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEntryCallerChosenID(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		e := workload(t, "/w", "unix:uid:1")
		e.ID = "k8s.0123abcd"
		created, err := s.CreateEntry(ctx, e)
		if err != nil {
			t.Fatalf("CreateEntry: %v", err)
		}
		if created.ID != e.ID {
			t.Fatalf("created ID %q, want the caller's %q", created.ID, e.ID)
		}
		if got, err := s.GetEntry(ctx, e.ID); err != nil || got.SPIFFEID != e.SPIFFEID {
			t.Fatalf("GetEntry(%q) = %+v, %v", e.ID, got, err)
		}
		// The same ID for a different identity is refused and stores nothing.
		other := workload(t, "/other", "unix:uid:2")
		other.ID = e.ID
		if _, err := s.CreateEntries(ctx, []registry.Entry{workload(t, "/fresh", "unix:uid:3"), other}); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("CreateEntries with a taken ID: %v, want ErrAlreadyExists", err)
		}
		if all, _ := s.ListEntries(ctx); len(all) != 1 {
			t.Fatalf("refused create stored something: %d entries", len(all))
		}
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const td = "example.org"

func id(t testing.TB, path string) spiffeid.ID {
	t.Helper()
	return spiffeid.RequireFromString("spiffe://" + td + path)
}

func sels(t testing.TB, ss ...string) []selector.Selector {
	t.Helper()
	out := make([]selector.Selector, len(ss))
	for i, s := range ss {
		sel, err := selector.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = sel
	}
	return out
}

func workload(t testing.TB, path string, ss ...string) registry.Entry {
	return registry.Entry{SPIFFEID: id(t, path), ParentID: id(t, "/agent/a"), Selectors: sels(t, ss...)}
}

func revision(t *testing.T, s Store) int64 {
	t.Helper()
	rev, err := s.Revision(context.Background())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

// An entry deleted and created again under the same ID (the Kubernetes
// controller's IDs are deterministic) never takes a revision that ID had:
// agents' Sync streams compare IDs and revisions to decide what to push.
func TestEntryRecreatedNeverRepeatsRevision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		e := workload(t, "/w", "unix:uid:1")
		e.ID = "k8s.c.0123456789abcdef"
		seen := map[int64]bool{}
		for round := range 3 {
			created, err := s.CreateEntry(ctx, e)
			if err != nil {
				t.Fatalf("round %d: CreateEntry: %v", round, err)
			}
			revs := []int64{created.Revision}
			// Updates interleaved with other entries' writes.
			cur := created
			for i := range 2 {
				if _, err := s.CreateEntry(ctx, workload(t, fmt.Sprintf("/other-%d-%d", round, i), "unix:uid:2")); err != nil {
					t.Fatal(err)
				}
				cur.DNSNames = []string{fmt.Sprintf("r%d-%d.example", round, i)}
				if cur, err = s.UpdateEntry(ctx, cur); err != nil {
					t.Fatalf("round %d: UpdateEntry: %v", round, err)
				}
				revs = append(revs, cur.Revision)
			}
			for _, r := range revs {
				if seen[r] {
					t.Fatalf("round %d: revision %d of %s repeats one an earlier incarnation had (%v)", round, r, e.ID, revs)
				}
				seen[r] = true
			}
			if err := s.DeleteEntry(ctx, e.ID); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestEntryCRUD(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		in := registry.Entry{
			SPIFFEID:      id(t, "/db"),
			ParentID:      id(t, "/agent/a"),
			Selectors:     sels(t, "unix:uid:70", "k8s:pod-label:app:db", "unix:path:/usr/bin/postgres"),
			X509TTL:       2 * time.Hour,
			JWTTTL:        10 * time.Minute,
			DNSNames:      []string{"db.internal", "b.example", "db.internal"},
			Hint:          "primary",
			FederatesWith: []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("z.org"), spiffeid.RequireTrustDomainFromString("a.org")},
			Admin:         true,
			Downstream:    true,
			ExpiresAt:     time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600)),
		}
		inSels := append([]selector.Selector(nil), in.Selectors...)
		before := time.Now()
		created, err := s.CreateEntry(ctx, in)
		if err != nil {
			t.Fatalf("CreateEntry: %v", err)
		}
		if !reflect.DeepEqual(in.Selectors, inSels) {
			t.Errorf("CreateEntry modified the caller's selectors: %v", in.Selectors)
		}
		if created.ID == "" || created.Revision != revision(t, s) || created.CreatedAt.Before(before.Add(-time.Second)) {
			t.Fatalf("created entry: ID %q revision %d created %v; want an ID, the store revision of the create (%d), created now", created.ID, created.Revision, created.CreatedAt, revision(t, s))
		}
		if !created.ExpiresAt.Equal(in.ExpiresAt) {
			t.Errorf("ExpiresAt %v, want %v", created.ExpiresAt, in.ExpiresAt)
		}
		want := in
		want.Normalize()
		if !reflect.DeepEqual(created.Selectors, want.Selectors) || !reflect.DeepEqual(created.DNSNames, []string{"b.example", "db.internal"}) ||
			!reflect.DeepEqual(created.FederatesWith, want.FederatesWith) {
			t.Errorf("created lists not normalized: %+v", created)
		}

		got, err := s.GetEntry(ctx, created.ID)
		if err != nil {
			t.Fatalf("GetEntry: %v", err)
		}
		if !reflect.DeepEqual(got, created) || !got.Downstream || !got.Admin {
			t.Fatalf("GetEntry =\n%+v\nwant\n%+v", got, created)
		}

		other, err := s.CreateEntry(ctx, registry.Entry{SPIFFEID: id(t, "/alias"), Node: true, Selectors: sels(t, "k8s:node-name:n1")})
		if err != nil {
			t.Fatalf("CreateEntry node alias: %v", err)
		}
		if created.ID == other.ID {
			t.Fatal("two entries got the same ID")
		}
		list, err := s.ListEntries(ctx)
		if err != nil {
			t.Fatalf("ListEntries: %v", err)
		}
		if len(list) != 2 || !reflect.DeepEqual(list[0], other) || !reflect.DeepEqual(list[1], created) {
			t.Fatalf("ListEntries = %+v, want [alias, db]", list)
		}
		if !list[0].ParentID.IsZero() || !list[0].Node {
			t.Errorf("node alias round trip: %+v", list[0])
		}

		upd := got
		upd.Selectors = sels(t, "unix:uid:71")
		upd.DNSNames = nil
		upd.FederatesWith = nil
		upd.Admin = false
		upd.Downstream = false
		upd.ExpiresAt = time.Time{}
		upd.CreatedAt = time.Time{} // not the caller's to change
		upd.Revision = 99           // nor this
		updated, err := s.UpdateEntry(ctx, upd)
		if err != nil {
			t.Fatalf("UpdateEntry: %v", err)
		}
		if updated.Revision != created.Revision+1 || !updated.CreatedAt.Equal(created.CreatedAt) {
			t.Fatalf("updated revision %d created %v; want %d and %v", updated.Revision, updated.CreatedAt, created.Revision+1, created.CreatedAt)
		}
		got, err = s.GetEntry(ctx, created.ID)
		if err != nil {
			t.Fatalf("GetEntry after update: %v", err)
		}
		if !reflect.DeepEqual(got, updated) || got.DNSNames != nil || got.Admin || got.Downstream || !got.ExpiresAt.IsZero() {
			t.Fatalf("GetEntry after update =\n%+v\nwant\n%+v", got, updated)
		}
		if again, err := s.UpdateEntry(ctx, got); err != nil || again.Revision != created.Revision+2 {
			t.Fatalf("second UpdateEntry: revision %d, %v; want 3", again.Revision, err)
		}
		// Set again, alone: the flag is written, not only cleared.
		if _, err := s.ModifyEntry(ctx, created.ID, func(e registry.Entry) (registry.Entry, error) { e.Downstream = true; return e, nil }); err != nil {
			t.Fatalf("ModifyEntry setting downstream: %v", err)
		}
		if got, err = s.GetEntry(ctx, created.ID); err != nil || !got.Downstream || got.Admin {
			t.Fatalf("GetEntry after setting downstream = %+v, %v; want downstream, not admin", got, err)
		}

		if err := s.DeleteEntry(ctx, created.ID); err != nil {
			t.Fatalf("DeleteEntry: %v", err)
		}
		if _, err := s.GetEntry(ctx, created.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetEntry after delete: %v, want ErrNotFound", err)
		}
		list, _ = s.ListEntries(ctx)
		if len(list) != 1 || list[0].ID != other.ID {
			t.Fatalf("ListEntries after delete = %+v", list)
		}
	})
}

func TestEntryNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		missing := "00000000-0000-4000-8000-000000000000"
		for name, op := range map[string]func() error{
			"get": func() error { _, err := s.GetEntry(ctx, missing); return err },
			"update": func() error {
				e := workload(t, "/w", "unix:uid:1")
				e.ID = missing
				_, err := s.UpdateEntry(ctx, e)
				return err
			},
			"delete": func() error { return s.DeleteEntry(ctx, missing) },
		} {
			if err := op(); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s unknown entry: %v, want ErrNotFound", name, err)
			}
		}
		if list, err := s.ListEntries(ctx); err != nil || len(list) != 0 {
			t.Errorf("ListEntries of empty store = %v, %v", list, err)
		}
		if rev := revision(t, s); rev != 0 {
			t.Errorf("failed writes bumped the revision to %d", rev)
		}
	})
}

func TestEntryDuplicates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		base := workload(t, "/w", "unix:uid:1", "unix:gid:2")
		if _, err := s.CreateEntry(ctx, base); err != nil {
			t.Fatalf("CreateEntry: %v", err)
		}
		nodeAlias := registry.Entry{SPIFFEID: id(t, "/alias"), Node: true, Selectors: sels(t, "k8s:node-name:n1")}
		if _, err := s.CreateEntry(ctx, nodeAlias); err != nil {
			t.Fatalf("CreateEntry alias: %v", err)
		}
		tests := []struct {
			name string
			e    registry.Entry
			dup  bool
		}{
			{"same", base, true},
			{"selectors reordered and repeated", workload(t, "/w", "unix:gid:2", "unix:uid:1", "unix:gid:2"), true},
			{"other fields differ", func() registry.Entry { e := base; e.Hint = "x"; e.X509TTL = time.Hour; return e }(), true},
			{"same alias", nodeAlias, true},
			{"selector subset", workload(t, "/w", "unix:uid:1"), false},
			{"other spiffe id", workload(t, "/w2", "unix:uid:1", "unix:gid:2"), false},
			{"other parent", func() registry.Entry { e := base; e.ParentID = id(t, "/agent/b"); return e }(), false},
			{"alias with other selectors", registry.Entry{SPIFFEID: id(t, "/alias"), Node: true, Selectors: sels(t, "k8s:node-name:n2")}, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before, _ := s.ListEntries(ctx)
				_, err := s.CreateEntry(ctx, tt.e)
				after, _ := s.ListEntries(ctx)
				if tt.dup {
					if !errors.Is(err, ErrAlreadyExists) {
						t.Fatalf("CreateEntry: %v, want ErrAlreadyExists", err)
					}
					if len(after) != len(before) {
						t.Fatalf("refused create stored something: %d entries, was %d", len(after), len(before))
					}
				} else if err != nil {
					t.Fatalf("CreateEntry: %v", err)
				}
			})
		}

		// Updating an entry into another's identity is refused and changes nothing.
		e, err := s.CreateEntry(ctx, workload(t, "/w3", "unix:uid:3"))
		if err != nil {
			t.Fatalf("CreateEntry: %v", err)
		}
		clash := e
		clash.SPIFFEID, clash.Selectors = base.SPIFFEID, base.Selectors
		if _, err := s.UpdateEntry(ctx, clash); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("UpdateEntry into a duplicate: %v, want ErrAlreadyExists", err)
		}
		if got, _ := s.GetEntry(ctx, e.ID); !reflect.DeepEqual(got, e) {
			t.Fatalf("refused update changed the entry: %+v", got)
		}
	})
}

func TestConcurrentWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		const writers, each = 8, 15
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					_, err := s.CreateEntry(ctx, workload(t, fmt.Sprintf("/w%d/%d", w, i), "unix:uid:1"))
					errs <- err
					// Readers run alongside writers.
					if _, err := s.ListEntries(ctx); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent write: %v", err)
			}
		}
		list, err := s.ListEntries(ctx)
		if err != nil || len(list) != writers*each {
			t.Fatalf("ListEntries: %d entries, %v; want %d", len(list), err, writers*each)
		}
		if rev := revision(t, s); rev != writers*each {
			t.Fatalf("revision %d, want %d", rev, writers*each)
		}
	})
}

func TestJoinTokens(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		tok := JoinToken{Hash: "h1", ID: "t1", SPIFFEID: "spiffe://example.org/agent/custom", ExpiresAt: now.Add(10 * time.Minute), CreatedAt: now}
		if err := s.CreateJoinToken(ctx, tok); err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
		for _, dup := range []JoinToken{tok, {Hash: "h1", ID: "other", ExpiresAt: tok.ExpiresAt}, {Hash: "other", ID: "t1", ExpiresAt: tok.ExpiresAt}} {
			if err := s.CreateJoinToken(ctx, dup); !errors.Is(err, ErrAlreadyExists) {
				t.Errorf("CreateJoinToken(%s/%s) again: %v, want ErrAlreadyExists", dup.Hash, dup.ID, err)
			}
		}
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h0", ID: "t0"}); err == nil {
			t.Error("CreateJoinToken without expiry succeeded")
		}
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h2", ID: "t2", ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h3", ID: "t3", ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}

		got, err := s.GetJoinToken(ctx, "h1", now)
		if err != nil {
			t.Fatalf("GetJoinToken: %v", err)
		}
		if got.ID != tok.ID || got.SPIFFEID != tok.SPIFFEID || !got.ExpiresAt.Equal(tok.ExpiresAt) || !got.CreatedAt.Equal(tok.CreatedAt) || got.Hash != "h1" {
			t.Fatalf("GetJoinToken = %+v, want %+v", got, tok)
		}
		// At its expiry instant a token is expired.
		if _, err := s.GetJoinToken(ctx, "h2", now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
			t.Fatalf("GetJoinToken expired: %v, want ErrExpired", err)
		}

		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h4", ID: "t4", ExpiresAt: now.Add(time.Second)}); err != nil {
			t.Fatalf("CreateJoinToken: %v", err)
		}
		if err := s.PruneJoinTokens(ctx, now.Add(time.Minute)); err != nil {
			t.Fatalf("PruneJoinTokens: %v", err)
		}
		if _, err := s.GetJoinToken(ctx, "h4", now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("pruned token: %v, want ErrNotFound", err)
		}
		if _, err := s.GetJoinToken(ctx, "h3", now); err != nil {
			t.Fatalf("unexpired token after prune: %v", err)
		}
		if rev := revision(t, s); rev != 0 {
			t.Errorf("join tokens bumped the revision to %d; it covers entries, nodes and authorities", rev)
		}
	})
}

// consumeRace has n goroutines, spread over stores, spend one token with
// their node's record and checks exactly one wins.
func consumeRace(t *testing.T, stores []Store, n int) {
	ctx := testCtx(t)
	now := time.Now()
	const hash = "race"
	if err := stores[0].CreateJoinToken(ctx, JoinToken{Hash: hash, ID: hash, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatalf("CreateJoinToken: %v", err)
	}
	oneWins(t, n, ErrNotFound, "concurrent spenders got the token", func(i int) error {
		node := Node{SPIFFEID: fmt.Sprintf("spiffe://example.org/agent/join_token/%d", i), AttestationType: "join_token"}
		return stores[i%len(stores)].UpsertNodeSpendingToken(ctx, node, hash, fmt.Sprintf("key%d", i), now)
	})
}

// oneWins starts n calls of try at once and fails t unless exactly one
// succeeds and every other fails with loserErr.
func oneWins(t *testing.T, n int, loserErr error, what string, try func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			results <- try(i)
		})
	}
	close(start)
	wg.Wait()
	close(results)
	wins := 0
	for err := range results {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, loserErr):
			t.Errorf("%s: %v, want nil or %v", what, err, loserErr)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d %s, want exactly 1", wins, n, what)
	}
}

// A token read for an attestation is spent only with the node's record:
// whatever refuses that write leaves the token usable.
func TestUpsertNodeSpendingToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		now := time.Now().Truncate(time.Second)
		tok := JoinToken{Hash: "h1", ID: "t1", SPIFFEID: "spiffe://example.org/agent/x", ExpiresAt: now.Add(time.Hour), CreatedAt: now}
		if err := s.CreateJoinToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h2", ID: "t2", ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		// Reading spends nothing.
		for range 2 {
			got, err := s.GetJoinToken(ctx, "h1", now)
			if err != nil || got.Hash != tok.Hash || got.ID != tok.ID || got.SPIFFEID != tok.SPIFFEID || !got.ExpiresAt.Equal(tok.ExpiresAt) || !got.CreatedAt.Equal(tok.CreatedAt) {
				t.Fatalf("GetJoinToken = %+v, %v; want %+v", got, err, tok)
			}
		}
		if _, err := s.GetJoinToken(ctx, "nope", now); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetJoinToken unknown: %v, want ErrNotFound", err)
		}
		if _, err := s.GetJoinToken(ctx, "h2", now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
			t.Fatalf("GetJoinToken at expiry: %v, want ErrExpired", err)
		}

		banned := Node{SPIFFEID: "spiffe://example.org/agent/banned", AttestationType: "join_token", SerialNumber: "1", ExpiresAt: now.Add(time.Hour)}
		if err := s.UpsertNode(ctx, banned); err != nil {
			t.Fatal(err)
		}
		if err := s.BanNode(ctx, banned.SPIFFEID); err != nil {
			t.Fatal(err)
		}
		node := Node{SPIFFEID: tok.SPIFFEID, AttestationType: "join_token", Selectors: sels(t, "join_token:t1"), SerialNumber: "0a", ExpiresAt: now.Add(time.Hour), AttestedAt: now}
		for _, tc := range []struct {
			name string
			node Node
			hash string
			now  time.Time
			want error
		}{
			{"unknown token", node, "nope", now, ErrNotFound},
			{"expired token", node, "h2", now.Add(time.Minute), ErrExpired},
			{"banned node", banned, "h1", now, ErrBanned},
		} {
			if err := s.UpsertNodeSpendingToken(ctx, tc.node, tc.hash, "k1", tc.now); !errors.Is(err, tc.want) {
				t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
			}
			if _, err := s.GetNode(ctx, node.SPIFFEID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("%s: the node was written anyway (%v)", tc.name, err)
			}
			if got, err := s.GetJoinToken(ctx, "h1", now); err != nil || got.SpentKey != "" {
				t.Fatalf("%s: token h1 no longer usable: %+v, %v", tc.name, got, err)
			}
		}

		if err := s.UpsertNodeSpendingToken(ctx, node, "h1", "", now); err == nil {
			t.Fatal("spent without naming the key")
		}
		rev := revision(t, s)
		if err := s.UpsertNodeSpendingToken(ctx, node, "h1", "k1", now); err != nil {
			t.Fatalf("UpsertNodeSpendingToken: %v", err)
		}
		if got, err := s.GetNode(ctx, node.SPIFFEID); err != nil || got.SerialNumber != "0a" {
			t.Fatalf("GetNode = %+v, %v", got, err)
		}
		if revision(t, s) <= rev {
			t.Error("recording the node did not bump the revision")
		}
		// Spent: still readable, with the key it was spent for, until it
		// expires (the attested agent's retry), but never spent again.
		if got, err := s.GetJoinToken(ctx, "h1", now); err != nil || got.SpentKey != "k1" {
			t.Fatalf("token after it attested: %+v, %v; want it spent by k1", got, err)
		}
		if _, err := s.GetJoinToken(ctx, "h1", tok.ExpiresAt); !errors.Is(err, ErrExpired) {
			t.Fatalf("spent token at expiry: %v, want ErrExpired", err)
		}
		node.SerialNumber = "0b"
		for _, key := range []string{"k1", "k2"} {
			if err := s.UpsertNodeSpendingToken(ctx, node, "h1", key, now); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second use with key %s: %v, want ErrNotFound", key, err)
			}
		}
		if got, _ := s.GetJoinToken(ctx, "h1", now); got.SpentKey != "k1" {
			t.Fatalf("second use changed the spending key to %q", got.SpentKey)
		}
		if got, _ := s.GetNode(ctx, node.SPIFFEID); got.SerialNumber != "0a" {
			t.Fatalf("second use rewrote the node: serial %s", got.SerialNumber)
		}
	})
}

func TestBanNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		n := Node{SPIFFEID: "spiffe://example.org/agent/k8s_psat/c/n1", AttestationType: "k8s_psat", Selectors: sels(t, "k8s_psat:cluster:c"),
			SerialNumber: "0b", PrevSerialNumber: "0a", ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second), AttestedAt: time.Now().Truncate(time.Second),
			AgentKeyHash: "k2", PrevAgentKeyHash: "k1"}
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode: %v", err)
		}
		if got, err := s.GetNode(ctx, n.SPIFFEID); err != nil || got.AgentKeyHash != "k2" || got.PrevAgentKeyHash != "k1" {
			t.Fatalf("stored node = %+v, %v; want agent keys k2, previous k1", got, err)
		}
		if err := s.BanNode(ctx, "spiffe://example.org/agent/k8s_psat/c/unknown"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("BanNode unknown: %v, want ErrNotFound", err)
		}
		rev := revision(t, s)
		if err := s.BanNode(ctx, n.SPIFFEID); err != nil {
			t.Fatalf("BanNode: %v", err)
		}
		if r := revision(t, s); r <= rev {
			t.Errorf("ban did not bump the revision (%d -> %d): agents' streams would not notice", rev, r)
		}
		got, err := s.GetNode(ctx, n.SPIFFEID)
		if err != nil || !got.Banned || got.SerialNumber != "" || got.PrevSerialNumber != "" || got.AgentKeyHash != "" || got.PrevAgentKeyHash != "" {
			t.Fatalf("banned node = %+v, %v; want Banned with no serials or agent keys", got, err)
		}
		if all, _ := s.ListNodes(ctx); len(all) != 1 || !all[0].Banned {
			t.Fatalf("ListNodes = %+v, want the banned node, marked", all)
		}
		// Neither serial renews, and attesting again cannot overwrite it.
		for _, serial := range []string{"0a", "0b", ""} {
			if err := s.RenewNode(ctx, n.SPIFFEID, NodeRenewal{PresentedSerial: serial, Serial: "0c", ExpiresAt: n.ExpiresAt}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("RenewNode(%q) of a banned node: %v, want ErrNotFound", serial, err)
			}
		}
		if err := s.UpsertNode(ctx, n); !errors.Is(err, ErrBanned) {
			t.Fatalf("UpsertNode over a banned node: %v, want ErrBanned", err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); !got.Banned {
			t.Fatal("refused upsert lifted the ban")
		}
		// Deleting (evicting) lifts the ban.
		if err := s.DeleteNode(ctx, n.SPIFFEID); err != nil {
			t.Fatalf("DeleteNode: %v", err)
		}
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode after the ban was lifted: %v", err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.Banned || got.SerialNumber != "0b" {
			t.Fatalf("node after re-attestation = %+v", got)
		}
	})
}

// A node is never replaced by one of another attestation type, in either
// write (plain, or spending a join token, which then stays unspent) and on
// either store: one attestor's evidence cannot take over an agent ID
// another's proved. Evicting it frees the ID.
func TestUpsertNodeKeepsAttestationType(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		now := time.Now().Truncate(time.Second)
		held := Node{SPIFFEID: "spiffe://example.org/agent/k8s_psat/prod/uid-1", AttestationType: "k8s_psat", Selectors: sels(t, "k8s_psat:cluster:prod"),
			SerialNumber: "0a", ExpiresAt: now.Add(time.Hour), AttestedAt: now, CanReattest: true}
		if err := s.UpsertNode(ctx, held); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h1", ID: "t1", SPIFFEID: held.SPIFFEID, ExpiresAt: now.Add(time.Hour), CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		rev := revision(t, s)
		writes := []struct {
			name  string
			n     Node
			write func(Node) error
		}{
			{"x509pop upsert", Node{AttestationType: "x509pop", CanReattest: true}, func(n Node) error { return s.UpsertNode(ctx, n) }},
			{"join token spent", Node{AttestationType: "join_token"}, func(n Node) error { return s.UpsertNodeSpendingToken(ctx, n, "h1", "k1", now) }},
		}
		for _, w := range writes {
			n := w.n
			n.SPIFFEID, n.SerialNumber, n.ExpiresAt, n.AttestedAt = held.SPIFFEID, "0b", now.Add(2*time.Hour), now
			err := w.write(n)
			var typeErr *AttestationTypeError
			if !errors.As(err, &typeErr) || typeErr.Held != "k8s_psat" || typeErr.Wanted != n.AttestationType || !strings.Contains(err.Error(), "held by a k8s_psat agent") {
				t.Fatalf("%s over a k8s_psat node: %v, want an AttestationTypeError naming k8s_psat", w.name, err)
			}
		}
		if got, err := s.GetNode(ctx, held.SPIFFEID); err != nil || got.AttestationType != "k8s_psat" || got.SerialNumber != "0a" {
			t.Fatalf("node after refused takeovers: %+v, %v; want it unchanged", got, err)
		}
		if r := revision(t, s); r != rev {
			t.Errorf("refused takeovers bumped the revision %d -> %d", rev, r)
		}
		if tok, err := s.GetJoinToken(ctx, "h1", now); err != nil || tok.SpentKey != "" {
			t.Fatalf("join token after a refused takeover: %+v, %v; want it unspent", tok, err)
		}
		// Evicted, the ID is free; the same token attests.
		if err := s.DeleteNode(ctx, held.SPIFFEID); err != nil {
			t.Fatal(err)
		}
		n := Node{SPIFFEID: held.SPIFFEID, AttestationType: "join_token", SerialNumber: "0c", ExpiresAt: now.Add(time.Hour), AttestedAt: now}
		if err := s.UpsertNodeSpendingToken(ctx, n, "h1", "k1", now); err != nil {
			t.Fatalf("join token after the eviction: %v", err)
		}
	})
}

func TestJoinTokenSingleUseConcurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		consumeRace(t, []Store{openStore(t, url)}, 20)
	})
}

func TestNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		n := Node{
			SPIFFEID:        "spiffe://example.org/agent/join_token/t1",
			AttestationType: "join_token",
			Selectors:       sels(t, "k8s:node-name:n1", "k8s:ns:kube-system"),
			SerialNumber:    "0a",
			ExpiresAt:       time.Date(2030, 1, 1, 0, 0, 0, 5, time.UTC),
			AttestedAt:      time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC),
			CanReattest:     true,
			SVIDIssuer:      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
		}
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode: %v", err)
		}
		got, err := s.GetNode(ctx, n.SPIFFEID)
		if err != nil {
			t.Fatalf("GetNode: %v", err)
		}
		want := n
		want.Selectors = selector.Sort(append([]selector.Selector(nil), n.Selectors...))
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("GetNode =\n%+v\nwant\n%+v", got, want)
		}
		rev := revision(t, s)
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode unchanged: %v", err)
		}
		if r := revision(t, s); r != rev {
			t.Errorf("upserting an unchanged node bumped the revision %d -> %d", rev, r)
		}

		// Whether the node re-attests to renew is part of the node: a
		// re-attestation that changes only that is written.
		n.CanReattest = false
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode can_reattest: %v", err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.CanReattest {
			t.Fatal("GetNode after clearing CanReattest still has it set")
		}
		if r := revision(t, s); r != rev+1 {
			t.Errorf("revision %d after a can_reattest change, want %d", r, rev+1)
		}
		rev++

		n.PrevSerialNumber, n.SerialNumber = "0a", "0b"
		n.Selectors = sels(t, "k8s:node-name:n1")
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode replace: %v", err)
		}
		if r := revision(t, s); r != rev+1 {
			t.Errorf("revision %d after a node change, want %d", r, rev+1)
		}
		got, _ = s.GetNode(ctx, n.SPIFFEID)
		if got.SerialNumber != "0b" || got.PrevSerialNumber != "0a" || !reflect.DeepEqual(got.Selectors, n.Selectors) {
			t.Fatalf("GetNode after replace = %+v", got)
		}

		n2 := Node{SPIFFEID: "spiffe://example.org/agent/join_token/t0", AttestationType: "join_token"}
		if err := s.UpsertNode(ctx, n2); err != nil {
			t.Fatalf("UpsertNode: %v", err)
		}
		list, err := s.ListNodes(ctx)
		if err != nil || len(list) != 2 || list[0].SPIFFEID != n2.SPIFFEID || !reflect.DeepEqual(list[1], got) || list[0].Selectors != nil {
			t.Fatalf("ListNodes = %+v, %v", list, err)
		}

		if err := s.DeleteNode(ctx, n.SPIFFEID); err != nil {
			t.Fatalf("DeleteNode: %v", err)
		}
		if _, err := s.GetNode(ctx, n.SPIFFEID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetNode after delete: %v, want ErrNotFound", err)
		}
		if err := s.DeleteNode(ctx, n.SPIFFEID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("DeleteNode again: %v, want ErrNotFound", err)
		}
		// Re-attesting after eviction starts afresh.
		if err := s.UpsertNode(ctx, n); err != nil {
			t.Fatalf("UpsertNode after delete: %v", err)
		}
		if got, err := s.GetNode(ctx, n.SPIFFEID); err != nil || !reflect.DeepEqual(got.Selectors, n.Selectors) {
			t.Fatalf("GetNode after re-attest = %+v, %v", got, err)
		}
	})
}

// undo lists, for each migration that later tests roll back, the statements
// that take the schema back to before it.
var undo = map[int][]string{
	9: {`ALTER TABLE nodes DROP COLUMN prev_agent_key_hash`, `ALTER TABLE nodes DROP COLUMN agent_key_hash`},
	8: {`ALTER TABLE entries DROP COLUMN downstream`},
	7: {`ALTER TABLE nodes DROP COLUMN svid_issuer`},
	6: {`ALTER TABLE nodes DROP COLUMN can_reattest`},
}

// rollBack takes s's schema back to version to, as a signet of that version
// left it: an older store to upgrade.
func rollBack(ctx context.Context, t *testing.T, s Store, to int) {
	t.Helper()
	ms, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	err = s.(*sqlStore).write(ctx, func(w *tx) error {
		for v := len(ms); v > to; v-- {
			stmts, ok := undo[v]
			if !ok {
				return fmt.Errorf("no undo for migration %d: add it to undo", v)
			}
			for _, q := range stmts {
				if _, err := w.exec(ctx, q); err != nil {
					return fmt.Errorf("undo migration %d: %s: %w", v, q, err)
				}
			}
		}
		_, err := w.exec(ctx, `DELETE FROM schema_version WHERE version > $1`, to)
		return err
	})
	if err != nil {
		t.Fatalf("roll back to schema %d: %v", to, err)
	}
}

// A store written before entries had downstream: on upgrade, its entries
// keep every field and are not downstream; the flag then sets and clears.
func TestUpgradeAddsEntryDownstream(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		old := workload(t, "/db", "unix:uid:70", "unix:gid:70")
		old.Admin, old.Hint, old.DNSNames = true, "primary", []string{"db.internal"}
		created, err := s.CreateEntry(ctx, old)
		if err != nil {
			t.Fatal(err)
		}
		rollBack(ctx, t, s, 7)
		if _, err := s.GetEntry(ctx, created.ID); err == nil {
			t.Fatal("GetEntry on the schema-7 store read a downstream column: the roll-back did nothing")
		}

		upgraded := openStore(t, url)
		got, err := upgraded.GetEntry(ctx, created.ID)
		if err != nil || !reflect.DeepEqual(got, created) || got.Downstream {
			t.Fatalf("entry after the upgrade =\n%+v, %v\nwant\n%+v, not downstream", got, err, created)
		}
		for _, want := range []bool{true, false} {
			got, err := upgraded.ModifyEntry(ctx, created.ID, func(e registry.Entry) (registry.Entry, error) { e.Downstream = want; return e, nil })
			if err != nil {
				t.Fatalf("set downstream %v after the upgrade: %v", want, err)
			}
			if again, err := upgraded.GetEntry(ctx, created.ID); err != nil || again.Downstream != want || !reflect.DeepEqual(again, got) {
				t.Fatalf("after setting downstream %v: %+v, %v", want, again, err)
			}
		}
	})
}

// A store written before can_reattest existed: on upgrade, its x509pop and
// k8s_psat agents are marked reattestable (they could always attest again,
// and would otherwise renew in place, their evidence never checked again);
// join-token agents are not.
func TestUpgradeMarksReattestableNodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		// Back to the schema before migration 6, with one agent of each kind.
		rollBack(ctx, t, s, 5)
		err := s.(*sqlStore).write(ctx, func(t *tx) error {
			for _, q := range []string{
				`INSERT INTO nodes (spiffe_id, attestation_type, serial_number, prev_serial_number, expires_at, attested_at) VALUES
				 ('spiffe://example.org/agent/x509pop/f1', 'x509pop', '0a', '', 0, 0),
				 ('spiffe://example.org/agent/k8s_psat/c/n1', 'k8s_psat', '0b', '', 0, 0),
				 ('spiffe://example.org/agent/join_token/t1', 'join_token', '0c', '', 0, 0)`,
			} {
				if _, err := t.exec(ctx, q); err != nil {
					return fmt.Errorf("%s: %w", q, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("build a schema-5 store: %v", err)
		}
		upgraded := openStore(t, url)
		nodes, err := upgraded.ListNodes(ctx)
		if err != nil || len(nodes) != 3 {
			t.Fatalf("ListNodes after the upgrade = %+v, %v", nodes, err)
		}
		for _, n := range nodes {
			if want := n.AttestationType != "join_token"; n.CanReattest != want {
				t.Errorf("%s (%s) after the upgrade: CanReattest %v, want %v", n.SPIFFEID, n.AttestationType, n.CanReattest, want)
			}
			if n.SVIDIssuer != "" {
				t.Errorf("%s after the upgrade: SVIDIssuer %q, want unknown (empty)", n.SPIFFEID, n.SVIDIssuer)
			}
		}
	})
}

func TestAuthorities(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		list := func(trustDomain string) ([]Authority, int64) {
			t.Helper()
			auths, seq, err := s.ListAuthorities(ctx, trustDomain)
			if err != nil {
				t.Fatalf("ListAuthorities: %v", err)
			}
			return auths, seq
		}
		if auths, seq := list(td); len(auths) != 0 || seq != 0 {
			t.Fatalf("empty store: %v, sequence %d", auths, seq)
		}
		x1 := Authority{TrustDomain: td, Kind: X509Authority, KeyID: "x1", Data: []byte{0x30, 1, 0, 2}, ExpiresAt: exp}
		j1 := Authority{TrustDomain: td, Kind: JWTAuthority, KeyID: "j1", Data: []byte{0x30, 3}, ExpiresAt: exp}
		other := Authority{TrustDomain: "other.org", Kind: X509Authority, KeyID: "o1", Data: []byte{9}, ExpiresAt: exp}

		steps := []struct {
			name    string
			put     []Authority
			wantSeq int64
			want    []Authority
		}{
			{"first", []Authority{x1, j1}, 1, []Authority{j1, x1}},
			{"unchanged", []Authority{j1, x1}, 1, []Authority{j1, x1}},
			{"other trust domain", []Authority{other}, 1, []Authority{j1, x1}},
			{"new data", []Authority{{TrustDomain: td, Kind: X509Authority, KeyID: "x1", Data: []byte{7}, ExpiresAt: exp}}, 2,
				[]Authority{j1, {TrustDomain: td, Kind: X509Authority, KeyID: "x1", Data: []byte{7}, ExpiresAt: exp}}},
			{"new expiry", []Authority{{TrustDomain: td, Kind: JWTAuthority, KeyID: "j1", Data: j1.Data, ExpiresAt: exp.Add(time.Hour)}}, 3,
				[]Authority{{TrustDomain: td, Kind: JWTAuthority, KeyID: "j1", Data: j1.Data, ExpiresAt: exp.Add(time.Hour)},
					{TrustDomain: td, Kind: X509Authority, KeyID: "x1", Data: []byte{7}, ExpiresAt: exp}}},
			// Another server under the same root, whose CA expires first.
			{"earlier expiry kept later", []Authority{{TrustDomain: td, Kind: JWTAuthority, KeyID: "j1", Data: j1.Data, ExpiresAt: exp}}, 3,
				[]Authority{{TrustDomain: td, Kind: JWTAuthority, KeyID: "j1", Data: j1.Data, ExpiresAt: exp.Add(time.Hour)},
					{TrustDomain: td, Kind: X509Authority, KeyID: "x1", Data: []byte{7}, ExpiresAt: exp}}},
		}
		for _, st := range steps {
			if err := s.PutAuthorities(ctx, st.put); err != nil {
				t.Fatalf("%s: PutAuthorities: %v", st.name, err)
			}
			auths, seq := list(td)
			if seq != st.wantSeq || !reflect.DeepEqual(auths, st.want) {
				t.Fatalf("%s: ListAuthorities = %+v seq %d, want %+v seq %d", st.name, auths, seq, st.want, st.wantSeq)
			}
		}
		if auths, seq := list("other.org"); len(auths) != 1 || seq != 1 || !reflect.DeepEqual(auths[0], other) {
			t.Fatalf("other.org: %+v seq %d", auths, seq)
		}
		if err := s.PutAuthorities(ctx, []Authority{{TrustDomain: td, Kind: "rsa", KeyID: "k", Data: []byte{1}}}); err == nil {
			t.Fatal("PutAuthorities with an unknown kind succeeded")
		}

		rev := revision(t, s)
		if err := s.PruneAuthorities(ctx, td, exp); err != nil { // x1 expires at exp: still valid
			t.Fatalf("PruneAuthorities: %v", err)
		}
		if auths, seq := list(td); len(auths) != 2 || seq != 3 || revision(t, s) != rev {
			t.Fatalf("pruning nothing changed something: %+v seq %d", auths, seq)
		}
		if err := s.PruneAuthorities(ctx, td, exp.Add(time.Minute)); err != nil {
			t.Fatalf("PruneAuthorities: %v", err)
		}
		auths, seq := list(td)
		if len(auths) != 1 || auths[0].KeyID != "j1" || seq != 4 {
			t.Fatalf("after prune: %+v seq %d, want j1 only, seq 4", auths, seq)
		}
		if revision(t, s) != rev+1 {
			t.Fatalf("prune did not bump the revision")
		}
		if auths, _ := list("other.org"); len(auths) != 1 {
			t.Fatalf("pruning %s pruned other.org", td)
		}
	})
}

func TestRevision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		var e registry.Entry
		steps := []struct {
			name   string
			op     func() error
			bumped bool
		}{
			{"create entry", func() (err error) { e, err = s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1")); return err }, true},
			{"read", func() error { _, err := s.ListEntries(ctx); return err }, false},
			{"duplicate", func() error {
				_, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1"))
				return nil_(err, ErrAlreadyExists)
			}, false},
			{"update entry", func() error { _, err := s.UpdateEntry(ctx, e); return err }, true},
			{"upsert node", func() error { return s.UpsertNode(ctx, Node{SPIFFEID: "spiffe://example.org/n"}) }, true},
			{"delete node", func() error { return s.DeleteNode(ctx, "spiffe://example.org/n") }, true},
			{"put authority", func() error {
				return s.PutAuthorities(ctx, []Authority{{TrustDomain: td, Kind: JWTAuthority, KeyID: "k", Data: []byte{1}}})
			}, true},
			{"delete entry", func() error { return s.DeleteEntry(ctx, e.ID) }, true},
			{"delete missing entry", func() error { return nil_(s.DeleteEntry(ctx, e.ID), ErrNotFound) }, false},
		}
		for _, st := range steps {
			before := revision(t, s)
			if err := st.op(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			after := revision(t, s)
			if st.bumped && after != before+1 {
				t.Errorf("%s: revision %d -> %d, want +1", st.name, before, after)
			}
			if !st.bumped && after != before {
				t.Errorf("%s: revision %d -> %d, want unchanged", st.name, before, after)
			}
		}
	})
}

// nil_ turns an expected error into nil.
func nil_(err, expected error) error {
	if errors.Is(err, expected) {
		return nil
	}
	if err == nil {
		return fmt.Errorf("succeeded, want %v", expected)
	}
	return err
}

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-ch:
		if !ok {
			t.Fatalf("%s: changes channel closed", what)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no change signal within 5s", what)
	}
}

func TestChanges(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		subCtx, cancel := context.WithCancel(ctx)
		ch := s.Changes(subCtx)
		other := s.Changes(ctx)

		e, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1"))
		if err != nil {
			t.Fatal(err)
		}
		waitSignal(t, ch, "create entry")
		waitSignal(t, other, "create entry, second subscriber")

		// Many changes while nobody reads: signals coalesce, the writer never blocks.
		for i := range 5 {
			e.Hint = fmt.Sprint("h", i)
			if e, err = s.UpdateEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		waitSignal(t, ch, "updates")
		for _, op := range []func() error{
			func() error { return s.UpsertNode(ctx, Node{SPIFFEID: "spiffe://example.org/n"}) },
			func() error {
				return s.PutAuthorities(ctx, []Authority{{TrustDomain: td, Kind: JWTAuthority, KeyID: "k", Data: []byte{1}}})
			},
			func() error { return s.DeleteEntry(ctx, e.ID) },
		} {
			if err := op(); err != nil {
				t.Fatal(err)
			}
			waitSignal(t, ch, "write")
		}

		cancel()
		deadline := time.After(5 * time.Second)
		for closed := false; !closed; {
			select {
			case _, ok := <-ch:
				closed = !ok
			case <-deadline:
				t.Fatal("changes channel not closed after its context ended")
			}
		}
		s.Close()
		drain := time.After(5 * time.Second)
		for closed := false; !closed; {
			select {
			case _, ok := <-other:
				closed = !ok
			case <-drain:
				t.Fatal("changes channel not closed by Close")
			}
		}
		if _, ok := <-s.Changes(ctx); ok {
			t.Fatal("Changes after Close gave an open channel")
		}
	})
}

func TestChangesNotForTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		ch := s.Changes(ctx)
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h", ID: "t", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if err := s.PruneJoinTokens(ctx, time.Now().Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		// Unchanged upserts and refused writes are not changes either.
		if _, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1")); err != nil {
			t.Fatal(err)
		}
		waitSignal(t, ch, "create entry")
		if _, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1")); !errors.Is(err, ErrAlreadyExists) {
			t.Fatal(err)
		}
		select {
		case <-ch:
			t.Fatal("signal for a write that changed nothing")
		case <-time.After(300 * time.Millisecond):
		}
	})
}

func TestDurableAcrossReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx := testCtx(t)
		s, err := Open(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1", "unix:gid:1"))
		if err != nil {
			t.Fatal(err)
		}
		exp := time.Now().Add(time.Hour)
		if err := s.CreateJoinToken(ctx, JoinToken{Hash: "h", ID: "t", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		node := Node{SPIFFEID: "spiffe://example.org/n", Selectors: sels(t, "k8s:node-name:a")}
		if err := s.UpsertNode(ctx, node); err != nil {
			t.Fatal(err)
		}
		auth := Authority{TrustDomain: td, Kind: X509Authority, KeyID: "x", Data: []byte{1, 2, 3}, ExpiresAt: exp.UTC().Round(0)}
		if err := s.PutAuthorities(ctx, []Authority{auth}); err != nil {
			t.Fatal(err)
		}
		rev := revision(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}

		s = openStore(t, url) // migrations are not re-applied: data survives
		if got, err := s.GetEntry(ctx, e.ID); err != nil || !reflect.DeepEqual(got, e) {
			t.Fatalf("entry after reopen = %+v, %v; want %+v", got, err, e)
		}
		if got, err := s.GetNode(ctx, node.SPIFFEID); err != nil || !reflect.DeepEqual(got.Selectors, node.Selectors) {
			t.Fatalf("node after reopen = %+v, %v", got, err)
		}
		if auths, seq, err := s.ListAuthorities(ctx, td); err != nil || seq != 1 || len(auths) != 1 || !reflect.DeepEqual(auths[0], auth) {
			t.Fatalf("authorities after reopen = %+v seq %d, %v", auths, seq, err)
		}
		if r := revision(t, s); r != rev {
			t.Fatalf("revision after reopen %d, want %d", r, rev)
		}
		if _, err := s.GetJoinToken(ctx, "h", time.Now()); err != nil {
			t.Fatalf("token after reopen: %v", err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

func TestCreateEntriesAllOrNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		existing, err := s.CreateEntry(ctx, workload(t, "/a", "unix:uid:1"))
		if err != nil {
			t.Fatal(err)
		}
		rev := revision(t, s)
		batch := []registry.Entry{workload(t, "/b", "unix:uid:2"), workload(t, "/c", "unix:uid:3")}
		created, err := s.CreateEntries(ctx, batch)
		if err != nil {
			t.Fatalf("CreateEntries: %v", err)
		}
		if len(created) != 2 || created[0].ID == "" || created[0].ID == created[1].ID {
			t.Fatalf("created %+v", created)
		}
		got := revision(t, s)
		if got <= rev {
			t.Fatalf("revision %d after batch, was %d", got, rev)
		}
		if created[0].Revision != got || created[1].Revision != got {
			t.Fatalf("created revisions %d and %d, want the batch's store revision %d", created[0].Revision, created[1].Revision, got)
		}
		// A batch holding a duplicate of a stored entry stores nothing.
		_, err = s.CreateEntries(ctx, []registry.Entry{workload(t, "/d", "unix:uid:4"), {SPIFFEID: existing.SPIFFEID, ParentID: existing.ParentID, Selectors: existing.Selectors}})
		if !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("batch with a duplicate: %v, want ErrAlreadyExists", err)
		}
		all, err := s.ListEntries(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 3 {
			t.Fatalf("%d entries stored, want 3 (the failed batch must store nothing)", len(all))
		}
	})
}

func TestRenewNodeNeverResurrects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		id := "spiffe://example.org/agent/a"
		exp := time.Now().Add(time.Hour).Truncate(time.Second)
		if err := s.UpsertNode(ctx, Node{SPIFFEID: id, AttestationType: "join_token", SerialNumber: "s1", ExpiresAt: exp, AgentKeyHash: "k1"}); err != nil {
			t.Fatal(err)
		}
		if err := s.RenewNode(ctx, id, NodeRenewal{PresentedSerial: "s1", Serial: "s2", ExpiresAt: exp.Add(time.Hour), Issuer: "aa01", AgentKeyHash: "k2"}); err != nil {
			t.Fatalf("renew with the current serial: %v", err)
		}
		n, err := s.GetNode(ctx, id)
		if err != nil || n.SerialNumber != "s2" || n.PrevSerialNumber != "s1" || !n.ExpiresAt.Equal(exp.Add(time.Hour)) || n.SVIDIssuer != "aa01" ||
			n.AgentKeyHash != "k2" || n.PrevAgentKeyHash != "k1" {
			t.Fatalf("after renewal: %+v %v", n, err)
		}
		// The previous serial may still renew (the agent had not reconnected
		// yet, or never got the answer): it stays the previous SVID, with
		// its key.
		if err := s.RenewNode(ctx, id, NodeRenewal{PresentedSerial: "s1", Serial: "s3", ExpiresAt: exp, Issuer: "aa01", AgentKeyHash: "k3"}); err != nil {
			t.Fatalf("renew with the previous serial: %v", err)
		}
		if n, err := s.GetNode(ctx, id); err != nil || n.SerialNumber != "s3" || n.PrevSerialNumber != "s1" || n.AgentKeyHash != "k3" || n.PrevAgentKeyHash != "k1" {
			t.Fatalf("after renewal from the previous SVID: %+v %v; want s3/k3, previous s1/k1", n, err)
		}
		if err := s.RenewNode(ctx, id, NodeRenewal{PresentedSerial: "stale", Serial: "s4", ExpiresAt: exp, Issuer: "aa01"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("renew with an unknown serial: %v, want ErrNotFound", err)
		}
		if err := s.DeleteNode(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := s.RenewNode(ctx, id, NodeRenewal{PresentedSerial: "s3", Serial: "s5", ExpiresAt: exp, Issuer: "aa01"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("renew after eviction: %v, want ErrNotFound", err)
		}
		if _, err := s.GetNode(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the evicted node came back: %v", err)
		}
	})
}

// The previous serial is cleared only while the presented serial is still
// the current one, and only a change bumps the revision: a retirement
// racing a renewal or an eviction changes nothing.
func TestRetirePrevSerial(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		id := "spiffe://example.org/agent/a"
		exp := time.Now().Add(time.Hour).Truncate(time.Second)
		if err := s.UpsertNode(ctx, Node{SPIFFEID: id, AttestationType: "join_token", SerialNumber: "s1", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		if err := s.RenewNode(ctx, id, NodeRenewal{PresentedSerial: "s1", Serial: "s2", ExpiresAt: exp, AgentKeyHash: "k2"}); err != nil {
			t.Fatal(err)
		}
		rev := revision(t, s)
		for _, serial := range []string{"s1", "other"} {
			if changed, err := s.RetirePrevSerial(ctx, id, serial); err != nil || changed {
				t.Fatalf("retire with serial %s (not the current s2): changed %v, %v; want nothing", serial, changed, err)
			}
		}
		if n, _ := s.GetNode(ctx, id); n.PrevSerialNumber != "s1" || revision(t, s) != rev {
			t.Fatalf("node %+v at revision %d after retirements with other serials; want prev s1 kept at %d", n, revision(t, s), rev)
		}
		if changed, err := s.RetirePrevSerial(ctx, id, "s2"); err != nil || !changed {
			t.Fatalf("retire with the current serial: changed %v, %v", changed, err)
		}
		if n, _ := s.GetNode(ctx, id); n.SerialNumber != "s2" || n.PrevSerialNumber != "" || n.AgentKeyHash != "k2" || n.PrevAgentKeyHash != "" {
			t.Fatalf("node after retirement: %+v; want s2 with key k2, no previous serial or key", n)
		}
		if r := revision(t, s); r != rev+1 {
			t.Errorf("revision %d after the retirement, want %d (servers must reload to stop accepting s1)", r, rev+1)
		}
		// Nothing left to retire, then no node: no change.
		if changed, err := s.RetirePrevSerial(ctx, id, "s2"); err != nil || changed {
			t.Fatalf("second retirement: changed %v, %v; want nothing", changed, err)
		}
		if err := s.RenewNode(ctx, id, NodeRenewal{PresentedSerial: "s1", Serial: "s3", ExpiresAt: exp}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("renewal with the retired serial: %v, want ErrNotFound", err)
		}
		if err := s.DeleteNode(ctx, id); err != nil {
			t.Fatal(err)
		}
		if changed, err := s.RetirePrevSerial(ctx, id, "s2"); err != nil || changed {
			t.Fatalf("retirement after eviction: changed %v, %v", changed, err)
		}
		if _, err := s.GetNode(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a retirement brought an evicted node back: %v", err)
		}
		if _, err := s.RetirePrevSerial(ctx, id, ""); err == nil {
			t.Fatal("retirement with an empty serial accepted")
		}
	})
}

// ModifyEntry reads and writes in one transaction: two partial updates that
// overlap in time both keep their change. The first update's fn holds its
// transaction open for a while; the second must not read the entry (its fn
// must not run) until the first has committed.
func TestModifyEntryIsAtomic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		e, err := s.CreateEntry(ctx, workload(t, "/w", "unix:uid:1"))
		if err != nil {
			t.Fatal(err)
		}
		inFirst, secondRan := make(chan struct{}), make(chan struct{})
		var overlapped bool
		first := make(chan error, 1)
		go func() {
			_, err := s.ModifyEntry(ctx, e.ID, func(cur registry.Entry) (registry.Entry, error) {
				close(inFirst)
				select { // give a non-atomic implementation every chance to interleave
				case <-secondRan:
					overlapped = true
				case <-time.After(300 * time.Millisecond):
				}
				cur.Hint = "web"
				return cur, nil
			})
			first <- err
		}()
		<-inFirst
		got, err := s.ModifyEntry(ctx, e.ID, func(cur registry.Entry) (registry.Entry, error) {
			close(secondRan)
			cur.X509TTL = 5 * time.Minute
			return cur, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		if overlapped {
			t.Error("the second ModifyEntry read the entry while the first was still writing it")
		}
		if got.Hint != "web" || got.X509TTL != 5*time.Minute || got.Revision != 3 {
			t.Fatalf("after two partial updates: hint %q, x509 TTL %v, revision %d; want web, 5m0s, 3", got.Hint, got.X509TTL, got.Revision)
		}

		// fn's error is returned as is, and nothing is written.
		refuse := errors.New("refused by the caller")
		if _, err := s.ModifyEntry(ctx, e.ID, func(cur registry.Entry) (registry.Entry, error) {
			cur.Hint = "never"
			return cur, refuse
		}); err != refuse {
			t.Fatalf("ModifyEntry with a failing fn: %v, want the fn's error itself", err)
		}
		if after, _ := s.GetEntry(ctx, e.ID); after.Hint != "web" || after.Revision != 3 {
			t.Fatalf("a refused modification was written: %+v", after)
		}
		if _, err := s.ModifyEntry(ctx, "00000000-0000-4000-8000-000000000000", func(cur registry.Entry) (registry.Entry, error) {
			return cur, nil
		}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ModifyEntry of an unknown entry: %v, want ErrNotFound", err)
		}
	})
}

// A write tells the revision it committed, for callers that patch their own
// view of the store.
func TestWithCommitRevision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		for _, write := range []func(context.Context) error{
			func(ctx context.Context) error {
				_, err := s.CreateEntry(ctx, workload(t, "/a", "unix:uid:1"))
				return err
			},
			func(ctx context.Context) error {
				_, err := s.CreateEntry(ctx, workload(t, "/b", "unix:uid:1"))
				return err
			},
		} {
			var rev int64
			if err := write(WithCommitRevision(ctx, &rev)); err != nil {
				t.Fatal(err)
			}
			if now, err := s.Revision(ctx); err != nil || rev != now || rev == 0 {
				t.Fatalf("write reported revision %d; the store is at %d (%v)", rev, now, err)
			}
		}
	})
}
