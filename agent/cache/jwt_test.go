package cache

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
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

// keyServer mints real JWT-SVIDs (ES256, with kid) with whichever key is
// active, as the server's JWT authority does across a forced rotation.
type keyServer struct {
	clk   *fakeClock
	mu    sync.Mutex
	kid   string
	keys  map[string]*ecdsa.PrivateKey
	mints int
}

func (s *keyServer) activate(kid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kid = kid
}

func (s *keyServer) mint(_ context.Context, entryID string, aud []string) (*jwtsvid.SVID, error) {
	s.mu.Lock()
	kid := s.kid
	s.mints++
	s.mu.Unlock()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.keys[kid], KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return nil, err
	}
	now := s.clk.Now()
	token, err := jwt.Signed(signer).Claims(jwt.Claims{
		Subject:  spiffeid.RequireFromPath(td, "/"+entryID).String(),
		Audience: aud,
		Expiry:   jwt.NewNumericDate(now.Add(5 * time.Minute)),
		IssuedAt: jwt.NewNumericDate(now),
	}).Serialize()
	if err != nil {
		return nil, err
	}
	return jwtsvid.ParseInsecure(token, aud)
}

// fetchToken fetches the one JWT-SVID of the workload with uid and returns
// its token.
func fetchToken(t *testing.T, c *Cache, uid string) string {
	t.Helper()
	got, err := c.FetchJWTSVIDs(context.Background(), sels(t, "unix:uid:"+uid), spiffeid.ID{}, []string{"aud"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d JWT-SVIDs, want 1", len(got))
	}
	return got[0].Marshal()
}

func TestJWTSVIDsOfTaintedKeyAreNotServed(t *testing.T) {
	// go-spiffe checks a token's expiry against the real clock.
	clk := &fakeClock{t: time.Now()}
	srv := &keyServer{clk: clk, kid: "old", keys: map[string]*ecdsa.PrivateKey{}}
	for _, kid := range []string{"old", "new"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		srv.keys[kid] = key
	}
	c, err := New(Options{TrustDomain: td, Now: clk.Now, MintJWT: srv.mint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetEntries([]Entry{entry(t, "a", "/a", t0, "unix:uid:1"), entry(t, "b", "/b", t0, "unix:uid:2"), entry(t, "c", "/c", t0, "unix:uid:3")})

	oldToken := fetchToken(t, c, "1") // signed with "old"
	srv.activate("new")
	newToken := fetchToken(t, c, "2") // signed with "new"
	if fetchToken(t, c, "1") != oldToken || srv.mints != 2 {
		t.Fatalf("before the taint: %d mints, want 2 (the old key's token cached)", srv.mints)
	}

	c.SetTaintedJWTKeys([]string{"old"})
	if fetchToken(t, c, "1") == oldToken {
		t.Fatal("the token signed with the tainted key was served again")
	}
	if srv.mints != 3 {
		t.Fatalf("%d mints after the taint, want 3 (one for the tainted token)", srv.mints)
	}
	if fetchToken(t, c, "2") != newToken || fetchToken(t, c, "1") == oldToken || srv.mints != 3 {
		t.Fatalf("%d mints, want 3: tokens of the untainted key stay cached", srv.mints)
	}

	// A server still signing with the tainted key: served, never cached.
	srv.activate("old")
	fetchToken(t, c, "3")
	fetchToken(t, c, "3")
	if srv.mints != 5 {
		t.Fatalf("%d mints, want 5: a token of a tainted key was cached", srv.mints)
	}
}
