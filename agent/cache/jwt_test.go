package cache

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

// jwtServer mints JWT-SVIDs as a server would: with the entry's SPIFFE ID
// as the server holds it at minting time.
type jwtServer struct {
	clk   *fakeClock
	mu    sync.Mutex
	ids   map[string]spiffeid.ID
	mints int
	// hold, when set, is called inside mint after the ID is read (to change
	// the entry while a mint is in flight).
	hold func()
}

func (s *jwtServer) set(entryID string, id spiffeid.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[entryID] = id
}

func (s *jwtServer) mint(_ context.Context, entryID string, aud []string) (*jwtsvid.SVID, error) {
	s.mu.Lock()
	id := s.ids[entryID]
	s.mints++
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		hold()
	}
	return &jwtsvid.SVID{ID: id, Audience: aud, Expiry: s.clk.Now().Add(5 * time.Minute)}, nil
}

// fetchSub fetches the one JWT-SVID of uid 1 and returns its subject.
func fetchSub(t *testing.T, c *Cache) spiffeid.ID {
	t.Helper()
	got, err := c.FetchJWTSVIDs(context.Background(), sels(t, "unix:uid:1"), spiffeid.ID{}, []string{"aud"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d JWT-SVIDs, want 1", len(got))
	}
	return got[0].ID
}

// jwtCacheWithEntry is a cache holding entry "a" (/old, unix:uid:1), whose
// JWT-SVIDs srv mints.
func jwtCacheWithEntry(t *testing.T) (*Cache, *jwtServer, Entry) {
	t.Helper()
	clk := &fakeClock{t: t0}
	srv := &jwtServer{clk: clk, ids: map[string]spiffeid.ID{}}
	c, err := New(Options{TrustDomain: td, Now: clk.Now, MintJWT: srv.mint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a := entry(t, "a", "/old", t0, "unix:uid:1")
	srv.set("a", a.SPIFFEID)
	c.SetEntries([]Entry{a})
	return c, srv, a
}

func TestJWTSVIDsOfChangedEntryAreNotServed(t *testing.T) {
	c, srv, a := jwtCacheWithEntry(t)
	if got := fetchSub(t, c); got != a.SPIFFEID {
		t.Fatalf("first fetch: sub %s, want %s", got, a.SPIFFEID)
	}
	fetchSub(t, c)
	if srv.mints != 1 {
		t.Fatalf("%d mints for an unchanged entry, want 1 (cached)", srv.mints)
	}

	// The entry's SPIFFE ID changes: the old token must not be served.
	a.SPIFFEID = spiffeid.RequireFromPath(td, "/new")
	srv.set("a", a.SPIFFEID)
	c.SetEntries([]Entry{a})
	if got := fetchSub(t, c); got != a.SPIFFEID {
		t.Fatalf("after the SPIFFE ID changed: sub %s, want %s", got, a.SPIFFEID)
	}
	if srv.mints != 2 {
		t.Fatalf("%d mints after the SPIFFE ID changed, want 2", srv.mints)
	}

	// Any other change (here the JWT TTL) also mints afresh.
	a.JWTTTL = time.Minute
	c.SetEntries([]Entry{a})
	fetchSub(t, c)
	if srv.mints != 3 {
		t.Fatalf("%d mints after the JWT TTL changed, want 3", srv.mints)
	}

	// Removed, then back: no token of its earlier life is served.
	c.SetEntries(nil)
	c.SetEntries([]Entry{a})
	fetchSub(t, c)
	if srv.mints != 4 {
		t.Fatalf("%d mints after the entry was removed and re-added, want 4", srv.mints)
	}
}

func TestJWTSVIDMintedDuringEntryChangeIsNotCached(t *testing.T) {
	c, srv, a := jwtCacheWithEntry(t)

	// The server minted with the old ID; the entry changes before the
	// token reaches the cache.
	changed := a
	changed.SPIFFEID = spiffeid.RequireFromPath(td, "/new")
	srv.hold = func() {
		srv.hold = nil
		srv.set("a", changed.SPIFFEID)
		c.SetEntries([]Entry{changed})
	}
	if got := fetchSub(t, c); got != a.SPIFFEID {
		t.Fatalf("in-flight fetch: sub %s, want the old %s", got, a.SPIFFEID)
	}
	if got := fetchSub(t, c); got != changed.SPIFFEID {
		t.Fatalf("next fetch: sub %s, want %s (the in-flight token was cached)", got, changed.SPIFFEID)
	}
}
