package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestMatching(t *testing.T) {
	ca := newTestCA(t, td)
	fedCA := newTestCA(t, fedTD)
	otherTD := spiffeid.RequireTrustDomainFromString("nobundle.test")

	web := entry(t, "e-web", "/web", t0.Add(2*time.Second), "unix:uid:1000")
	webOld := entry(t, "e-web-old", "/web-old", t0, "unix:uid:1000", "unix:gid:1000")
	webTie := entry(t, "e-aaa", "/web-tie", t0.Add(2*time.Second), "unix:uid:1000")
	root := entry(t, "e-root", "/root", t0, "unix:uid:0")
	hinted1 := entry(t, "e-h1", "/h1", t0.Add(5*time.Second), "unix:user:svc")
	hinted1.Hint = "internal"
	hinted2 := entry(t, "e-h2", "/h2", t0.Add(6*time.Second), "unix:user:svc")
	hinted2.Hint = "internal"
	hinted3 := entry(t, "e-h3", "/h3", t0.Add(7*time.Second), "unix:user:svc")
	hinted3.Hint = "external"
	fed := entry(t, "e-fed", "/fed", t0, "unix:path:/bin/fed")
	fed.FederatesWith = []spiffeid.TrustDomain{fedTD, otherTD}
	unsigned := entry(t, "e-unsigned", "/unsigned", t0, "unix:user:nosvid")
	admin := entry(t, "e-admin", "/admin", t0.Add(time.Second), "unix:user:ops")
	admin.Admin = true
	ops := entry(t, "e-ops", "/ops", t0, "unix:user:ops")

	all := []Entry{web, webOld, webTie, root, hinted1, hinted2, hinted3, fed, unsigned, admin, ops}
	c, _ := newTestCache(t, "")
	c.SetBundles(ca.bundle(), []*spiffebundle.Bundle{fedCA.bundle()})
	c.SetEntries(all)
	svids := map[string]*x509svid.SVID{}
	for _, e := range all {
		if e.ID != unsigned.ID {
			svids[e.ID] = ca.svid(t, e.SPIFFEID.Path(), t0.Add(-time.Minute), time.Hour)
		}
	}
	c.PutSVIDs(svids)

	tests := []struct {
		name      string
		workload  []string
		want      []string
		wantFeds  []string
		wantNoIDs bool
		// identities are what Identities names: every live match, signed
		// or not, hints not deduplicated.
		identities []string
		wantAdmin  []bool
	}{
		{name: "subset matches, oldest first, ties by entry ID",
			workload:   []string{"unix:uid:1000", "unix:gid:1000", "unix:user:web"},
			want:       []string{"/web-old#", "/web-tie#", "/web#"},
			identities: []string{"/web-old", "/web-tie", "/web"}},
		{name: "entry needing more selectors than the workload has does not match",
			workload:   []string{"unix:uid:1000"},
			want:       []string{"/web-tie#", "/web#"},
			identities: []string{"/web-tie", "/web"}},
		{name: "no selectors in common",
			workload: []string{"unix:uid:4242"}, wantNoIDs: true},
		{name: "hints unique, first wins",
			workload:   []string{"unix:user:svc"},
			want:       []string{"/h1#internal", "/h3#external"},
			identities: []string{"/h1", "/h2", "/h3"}},
		{name: "federated bundles of matched entries, only known ones",
			workload: []string{"unix:path:/bin/fed"},
			want:     []string{"/fed#"}, wantFeds: []string{fedTD.Name()},
			identities: []string{"/fed"}},
		{name: "entry without SVID yet is not served",
			workload: []string{"unix:user:nosvid"}, wantNoIDs: true,
			identities: []string{"/unsigned"}},
		{name: "admin entries are marked",
			workload:   []string{"unix:user:ops"},
			want:       []string{"/ops#", "/admin#"},
			identities: []string{"/ops", "/admin"},
			wantAdmin:  []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sub := c.Subscribe(sels(t, tc.workload...))
			defer sub.Close()
			st := next(t, sub)
			if tc.wantNoIDs {
				if len(st.SVIDs) != 0 {
					t.Fatalf("SVIDs = %v, want none", ids(st))
				}
			} else if got := ids(st); !slices.Equal(got, tc.want) {
				t.Fatalf("SVIDs = %v, want %v", got, tc.want)
			}
			var got []string
			for _, id := range c.Identities(sels(t, tc.workload...)) {
				got = append(got, id.Path())
			}
			if !slices.Equal(got, tc.identities) {
				t.Fatalf("Identities = %v, want %v", got, tc.identities)
			}
			wantAdmin := tc.wantAdmin
			if wantAdmin == nil {
				wantAdmin = make([]bool, len(st.SVIDs))
			}
			if !slices.Equal(st.Admin, wantAdmin) {
				t.Fatalf("Admin = %v, want %v", st.Admin, wantAdmin)
			}
			var feds []string
			for _, b := range st.FederatedBundles {
				feds = append(feds, b.TrustDomain().Name())
			}
			if !slices.Equal(feds, tc.wantFeds) {
				t.Fatalf("federated bundles = %v, want %v", feds, tc.wantFeds)
			}
			if st.Bundle == nil || st.Bundle.TrustDomain() != td || len(st.Bundle.X509Authorities()) != 1 {
				t.Fatalf("own bundle missing or wrong: %+v", st.Bundle)
			}
			if want := 1 + len(tc.wantFeds); len(st.JWTBundles) != want {
				t.Fatalf("JWT bundles = %d, want %d", len(st.JWTBundles), want)
			}
		})
	}
}

func TestSubscriberGetsEveryChange(t *testing.T) {
	ca := newTestCA(t, td)
	c, _ := newTestCache(t, "")
	a := entry(t, "a", "/a", t0, "unix:uid:1000")
	other := entry(t, "o", "/other", t0, "unix:uid:2000")
	c.SetBundles(ca.bundle(), nil)
	c.SetEntries([]Entry{a, other})

	sub := c.Subscribe(sels(t, "unix:uid:1000", "unix:gid:1000"))
	defer sub.Close()
	if st := next(t, sub); len(st.SVIDs) != 0 {
		t.Fatalf("initial state has %v, want no SVIDs", ids(st))
	}

	steps := []struct {
		name   string
		change func()
		want   []string // nil: no update expected
	}{
		{"SVID signed for matching entry", func() {
			c.PutSVIDs(map[string]*x509svid.SVID{"a": ca.svid(t, "/a", t0, time.Hour)})
		}, []string{"/a#"}},
		{"unrelated entry signed: no update", func() {
			c.PutSVIDs(map[string]*x509svid.SVID{"o": ca.svid(t, "/other", t0, time.Hour)})
		}, nil},
		{"rotation of matching SVID", func() {
			c.PutSVIDs(map[string]*x509svid.SVID{"a": ca.svid(t, "/a", t0.Add(time.Minute), time.Hour)})
		}, []string{"/a#"}},
		{"new matching entry (no SVID yet) is pushed", func() {
			b := entry(t, "b", "/b", t0.Add(time.Second), "unix:gid:1000")
			c.SetEntries([]Entry{a, other, b})
		}, []string{"/a#"}},
		{"its SVID arrives", func() {
			c.PutSVIDs(map[string]*x509svid.SVID{"b": ca.svid(t, "/b", t0, time.Hour)})
		}, []string{"/a#", "/b#"}},
		{"hint changes", func() {
			a2 := a
			a2.Hint = "primary"
			a2.Revision = 2
			b := entry(t, "b", "/b", t0.Add(time.Second), "unix:gid:1000")
			c.SetEntries([]Entry{a2, other, b})
		}, []string{"/a#primary", "/b#"}},
		{"bundle change reaches everyone", func() {
			c.SetBundles(newTestCA(t, td).bundle(), nil)
		}, []string{"/a#primary", "/b#"}},
		{"same bundle again: no update", func() {
			b := c.Bundle()
			c.SetBundles(b, nil)
		}, nil},
		{"matching entry removed", func() {
			b := entry(t, "b", "/b", t0.Add(time.Second), "unix:gid:1000")
			c.SetEntries([]Entry{other, b})
		}, []string{"/b#"}},
	}
	for _, s := range steps {
		s.change()
		if s.want == nil {
			noUpdate(t, sub)
			continue
		}
		st := next(t, sub)
		if got := ids(st); !slices.Equal(got, s.want) {
			t.Fatalf("%s: SVIDs = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestSlowReaderEndsOnNewestState(t *testing.T) {
	ca := newTestCA(t, td)
	c, _ := newTestCache(t, "")
	c.SetBundles(ca.bundle(), nil)
	sub := c.Subscribe(sels(t, "unix:uid:1000"))
	var entries []Entry
	for i := range 5 {
		e := entry(t, fmt.Sprintf("e%d", i), fmt.Sprintf("/w%d", i), t0.Add(time.Duration(i)*time.Second), "unix:uid:1000")
		entries = append(entries, e)
		c.SetEntries(entries)
		c.PutSVIDs(map[string]*x509svid.SVID{e.ID: ca.svid(t, e.SPIFFEID.Path(), t0, time.Hour)})
	}
	st := next(t, sub)
	if want := []string{"/w0#", "/w1#", "/w2#", "/w3#", "/w4#"}; !slices.Equal(ids(st), want) {
		t.Fatalf("slow reader got %v, want newest %v", ids(st), want)
	}
	noUpdate(t, sub)
	sub.Close()
	if _, ok := <-sub.Updates(); ok {
		t.Fatal("Updates not closed after Close")
	}
	sub.Close() // idempotent
}

func TestExpiredSVIDsStopBeingServed(t *testing.T) {
	ca := newTestCA(t, td)
	c, clk := newTestCache(t, "")
	c.SetBundles(ca.bundle(), nil)
	c.SetEntries([]Entry{
		entry(t, "short", "/short", t0, "unix:uid:1"),
		entry(t, "long", "/long", t0.Add(time.Second), "unix:uid:1"),
	})
	c.PutSVIDs(map[string]*x509svid.SVID{
		"short": ca.svid(t, "/short", t0, time.Minute),
		"long":  ca.svid(t, "/long", t0, time.Hour),
	})
	sub := c.Subscribe(sels(t, "unix:uid:1"))
	defer sub.Close()
	if got := ids(next(t, sub)); len(got) != 2 {
		t.Fatalf("before expiry: %v", got)
	}
	svidExpiry := func(id string) time.Time {
		for _, e := range c.Entries() {
			if e.Entry.ID == id {
				return e.SVID.Certificates[0].NotAfter
			}
		}
		t.Fatalf("no SVID for %s", id)
		return time.Time{}
	}
	short, long := svidExpiry("short"), svidExpiry("long")
	if st := c.Stats(); st.SVIDs != 2 || !st.EarliestExpiry.Equal(short) {
		t.Fatalf("stats = %+v, want 2 SVIDs, the earliest expiring at %s", st, short)
	}
	clk.Add(2 * time.Minute)
	c.DropExpired()
	if got, want := ids(next(t, sub)), []string{"/long#"}; !slices.Equal(got, want) {
		t.Fatalf("after expiry: %v, want %v", got, want)
	}
	if st := c.Stats(); st.SVIDs != 1 || st.Entries != 2 || !st.EarliestExpiry.Equal(long) {
		t.Fatalf("stats = %+v, want 1 SVID for 2 entries, expiring at %s", st, long)
	}
}

// An entry's expires_at ends it at the agent too, for when the server (which
// would push the removal) is unreachable; it survives a restart.
func TestExpiredEntriesStopBeingServed(t *testing.T) {
	ca := newTestCA(t, td)
	dir := filepath.Join(t.TempDir(), "agent")
	c, clk := newTestCache(t, dir)
	ending := entry(t, "ending", "/ending", t0, "unix:uid:1")
	ending.ExpiresAt = t0.Add(time.Minute)
	c.SetBundles(ca.bundle(), nil)
	c.SetEntries([]Entry{ending, entry(t, "stays", "/stays", t0.Add(time.Second), "unix:uid:1")})
	c.PutSVIDs(map[string]*x509svid.SVID{
		"ending": ca.svid(t, "/ending", t0, time.Hour),
		"stays":  ca.svid(t, "/stays", t0, time.Hour),
	})
	sub := c.Subscribe(sels(t, "unix:uid:1"))
	defer sub.Close()
	if got := ids(next(t, sub)); len(got) != 2 {
		t.Fatalf("before the entry expires: %v", got)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Minute)
	c.DropExpired()
	if got, want := ids(next(t, sub)), []string{"/stays#"}; !slices.Equal(got, want) {
		t.Fatalf("after the entry expired: %v, want %v", got, want)
	}
	if _, err := c.FetchJWTSVIDs(t.Context(), sels(t, "unix:uid:1"), spiffeid.RequireFromPath(td, "/ending"), []string{"db"}); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("JWT-SVID for an expired entry: %v, want ErrNoIdentity", err)
	}

	// Restarted from disk (written before expiry), the entry is still over.
	restarted, err := New(Options{TrustDomain: td, Dir: dir, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()
	sub2 := restarted.Subscribe(sels(t, "unix:uid:1"))
	defer sub2.Close()
	if got, want := ids(next(t, sub2)), []string{"/stays#"}; !slices.Equal(got, want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
}

func TestPersistenceRoundTrip(t *testing.T) {
	ca := newTestCA(t, td)
	fedCA := newTestCA(t, fedTD)
	dir := filepath.Join(t.TempDir(), "agent")
	clk := &fakeClock{t: t0}
	c, err := New(Options{TrustDomain: td, Dir: dir, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	keep := entry(t, "keep", "/keep", t0, "unix:uid:7")
	keep.Hint = "h"
	keep.FederatesWith = []spiffeid.TrustDomain{fedTD}
	keep.DNSNames = []string{"keep.example.org"}
	expiring := entry(t, "expiring", "/expiring", t0.Add(time.Second), "unix:uid:7")
	c.SetBundles(ca.bundle(), []*spiffebundle.Bundle{fedCA.bundle()})
	c.SetEntries([]Entry{keep, expiring})
	keepSVID := ca.svid(t, "/keep", t0, time.Hour)
	c.PutSVIDs(map[string]*x509svid.SVID{"keep": keepSVID, "expiring": ca.svid(t, "/expiring", t0, time.Minute)})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Fatalf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}

	tests := []struct {
		name  string
		after time.Duration
		want  []string
	}{
		{"restart while both valid", 30 * time.Second, []string{"/keep#h", "/expiring#"}},
		{"restart after one expired", 5 * time.Minute, []string{"/keep#h"}},
		{"restart after all expired", 2 * time.Hour, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk2 := &fakeClock{t: t0.Add(tc.after)}
			// A copy of the directory, so each case starts from the same file.
			d2 := t.TempDir()
			data, err := os.ReadFile(filepath.Join(dir, FileName))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d2, FileName), data, 0o600); err != nil {
				t.Fatal(err)
			}
			c2, err := New(Options{TrustDomain: td, Dir: d2, Now: clk2.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			sub := c2.Subscribe(sels(t, "unix:uid:7"))
			defer sub.Close()
			st := next(t, sub)
			if got := ids(st); !slices.Equal(got, tc.want) {
				t.Fatalf("served %v, want %v", got, tc.want)
			}
			if len(tc.want) > 0 {
				got := st.SVIDs[0]
				if !got.Certificates[0].Equal(keepSVID.Certificates[0]) {
					t.Fatal("restored certificate differs")
				}
				if !publicKeyEqual(got.PrivateKey.Public(), keepSVID.PrivateKey.Public()) {
					t.Fatal("restored key differs")
				}
				if len(st.FederatedBundles) != 1 || st.FederatedBundles[0].TrustDomain() != fedTD {
					t.Fatalf("federated bundle not restored: %v", st.FederatedBundles)
				}
			}
			if !c2.Bundle().Equal(ca.bundle()) {
				t.Fatal("bundle not restored")
			}
			es := c2.Entries()
			if len(es) != 2 || !slices.Equal(es[0].Entry.DNSNames, keep.DNSNames) {
				t.Fatalf("entries not restored: %+v", es)
			}
		})
	}
}

func TestPersistedCacheOfOtherTrustDomainIgnored(t *testing.T) {
	dir := t.TempDir()
	c, _ := newTestCache(t, dir)
	c.SetEntries([]Entry{entry(t, "a", "/a", t0, "unix:uid:1")})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c2, err := New(Options{TrustDomain: fedTD, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if n := len(c2.Entries()); n != 0 {
		t.Fatalf("loaded %d entries of another trust domain", n)
	}
}

func TestFetchJWTSVIDs(t *testing.T) {
	ca := newTestCA(t, td)
	clk := &fakeClock{t: t0}
	var mints atomic.Int32
	mint := func(_ context.Context, entryID string, aud []string) (*jwtsvid.SVID, error) {
		mints.Add(1)
		id := spiffeid.RequireFromPath(td, "/"+entryID)
		return &jwtsvid.SVID{ID: id, Audience: aud, Expiry: clk.Now().Add(5 * time.Minute)}, nil
	}
	c, err := New(Options{TrustDomain: td, Now: clk.Now, MintJWT: mint})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetBundles(ca.bundle(), nil)
	a := entry(t, "a", "/a", t0, "unix:uid:1")
	a.Hint = "first"
	b := entry(t, "b", "/b", t0.Add(time.Second), "unix:uid:1")
	c.SetEntries([]Entry{a, b})
	w := sels(t, "unix:uid:1", "unix:gid:1")
	ctx := context.Background()

	got, err := c.FetchJWTSVIDs(ctx, w, spiffeid.ID{}, []string{"x", "y"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID.Path() != "/a" || got[0].Hint != "first" || got[1].ID.Path() != "/b" {
		t.Fatalf("got %+v, want /a (hint first) then /b", got)
	}
	steps := []struct {
		name      string
		advance   time.Duration
		id        string
		aud       []string
		wantMints int32
		wantErr   error
	}{
		{"cached: same audiences in another order", 0, "", []string{"y", "x"}, 2, nil},
		{"one ID only, still cached", time.Minute, "/b", []string{"x", "y"}, 2, nil},
		{"new audience mints", 0, "/a", []string{"z"}, 3, nil},
		{"past half lifetime mints again", 2 * time.Minute, "/b", []string{"x", "y"}, 4, nil},
		{"unknown ID", 0, "/nope", []string{"x"}, 4, ErrNoIdentity},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		var id spiffeid.ID
		if s.id != "" {
			id = spiffeid.RequireFromPath(td, s.id)
		}
		got, err := c.FetchJWTSVIDs(ctx, w, id, s.aud)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		if err == nil && !id.IsZero() && (len(got) != 1 || got[0].ID != id) {
			t.Fatalf("%s: got %+v", s.name, got)
		}
		if err == nil && id.IsZero() && len(got) != 2 {
			t.Fatalf("%s: got %+v", s.name, got)
		}
		if n := mints.Load(); n != s.wantMints {
			t.Fatalf("%s: %d mints, want %d", s.name, n, s.wantMints)
		}
	}
	if _, err := c.FetchJWTSVIDs(ctx, sels(t, "unix:uid:99"), spiffeid.ID{}, []string{"x"}); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("no match: err = %v, want ErrNoIdentity", err)
	}
	if set := c.JWTBundles(sels(t, "unix:uid:99")); !set.Has(td) {
		t.Fatal("JWTBundles lacks the own trust domain")
	}
}

// Bundles is every bundle the agent holds, whoever federates with it: the
// own first, then the federated ones by name, as SetBundles last set them.
func TestBundles(t *testing.T) {
	c, _ := newTestCache(t, "")
	if got := c.Bundles(); len(got) != 0 {
		t.Fatalf("Bundles before the first sync = %d, want none", len(got))
	}
	own := newTestCA(t, td).bundle()
	zeta := newTestCA(t, spiffeid.RequireTrustDomainFromString("zeta.test")).bundle()
	alpha := newTestCA(t, spiffeid.RequireTrustDomainFromString("alpha.test")).bundle()
	names := func() []string {
		var out []string
		for _, b := range c.Bundles() {
			out = append(out, b.TrustDomain().Name())
		}
		return out
	}
	c.SetBundles(own, []*spiffebundle.Bundle{zeta, alpha})
	if got, want := names(), []string{"example.org", "alpha.test", "zeta.test"}; !slices.Equal(got, want) {
		t.Fatalf("Bundles = %v, want %v", got, want)
	}
	c.SetBundles(own, []*spiffebundle.Bundle{zeta})
	if got, want := names(), []string{"example.org", "zeta.test"}; !slices.Equal(got, want) {
		t.Fatalf("Bundles after alpha.test went = %v, want %v", got, want)
	}
}
