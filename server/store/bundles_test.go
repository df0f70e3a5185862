package store

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/registry"
)

func TestSetBundleReplaces(t *testing.T) {
	const fed = "other.org"
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	auth := func(kind AuthorityKind, keyID string, data ...byte) Authority {
		return Authority{TrustDomain: fed, Kind: kind, KeyID: keyID, Data: data, ExpiresAt: exp}
	}
	r1, r2, j1 := auth(X509Authority, "r1", 1), auth(X509Authority, "r2", 2), auth(JWTAuthority, "j1", 3)
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		// The own trust domain's authorities must not be touched by
		// another trust domain's replacement.
		own := Authority{TrustDomain: td, Kind: X509Authority, KeyID: "own", Data: []byte{9}, ExpiresAt: exp}
		if err := s.PutAuthorities(ctx, []Authority{own}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name        string
			set         []Authority
			wantChanged bool
			want        []Authority // sorted by kind, then key ID
			wantSeq     int64
		}{
			{"first", []Authority{r1, j1}, true, []Authority{j1, r1}, 1},
			{"same set, other order", []Authority{j1, r1}, false, []Authority{j1, r1}, 1},
			{"root added", []Authority{r1, r2, j1}, true, []Authority{j1, r1, r2}, 2},
			{"roots the foreign side dropped disappear", []Authority{r2}, true, []Authority{r2}, 3},
			{"new data under a kept key", []Authority{auth(X509Authority, "r2", 7)}, true, []Authority{auth(X509Authority, "r2", 7)}, 4},
			{"new expiry", []Authority{{TrustDomain: fed, Kind: X509Authority, KeyID: "r2", Data: []byte{7}, ExpiresAt: exp.Add(time.Hour)}}, true,
				[]Authority{{TrustDomain: fed, Kind: X509Authority, KeyID: "r2", Data: []byte{7}, ExpiresAt: exp.Add(time.Hour)}}, 5},
		}
		for _, st := range steps {
			rev := revision(t, s)
			changed, err := s.SetBundle(ctx, fed, st.set)
			if err != nil {
				t.Fatalf("%s: SetBundle: %v", st.name, err)
			}
			got, seq, err := s.ListAuthorities(ctx, fed)
			if err != nil {
				t.Fatal(err)
			}
			if changed != st.wantChanged || seq != st.wantSeq || !reflect.DeepEqual(got, st.want) {
				t.Fatalf("%s: changed %v, %+v seq %d; want changed %v, %+v seq %d", st.name, changed, got, seq, st.wantChanged, st.want, st.wantSeq)
			}
			if bumped := revision(t, s) != rev; bumped != st.wantChanged {
				t.Fatalf("%s: revision bumped = %v, want %v", st.name, bumped, st.wantChanged)
			}
		}
		if got, seq, _ := s.ListAuthorities(ctx, td); len(got) != 1 || got[0].KeyID != "own" || seq != 1 {
			t.Fatalf("own trust domain after replacing %s: %+v seq %d", fed, got, seq)
		}
		if tds, err := s.ListBundleTrustDomains(ctx); err != nil || !reflect.DeepEqual(tds, []string{td, fed}) {
			t.Fatalf("ListBundleTrustDomains = %v, %v", tds, err)
		}

		// Refused: nothing is written.
		for name, set := range map[string][]Authority{
			"empty":              nil,
			"other trust domain": {own},
			"duplicate key":      {r1, auth(X509Authority, "r1", 5)},
			"no data":            {auth(X509Authority, "r9")},
		} {
			if _, err := s.SetBundle(ctx, fed, set); err == nil {
				t.Errorf("SetBundle %s: no error", name)
			}
		}
		if _, seq, _ := s.ListAuthorities(ctx, fed); seq != 5 {
			t.Fatalf("a refused SetBundle changed the sequence to %d", seq)
		}

		// Delete keeps the sequence going up, so a later set continues it.
		if _, err := s.DeleteBundle(ctx, fed, BundleRestrict); err != nil {
			t.Fatalf("DeleteBundle: %v", err)
		}
		if got, seq, _ := s.ListAuthorities(ctx, fed); len(got) != 0 || seq != 6 {
			t.Fatalf("after delete: %+v seq %d, want none, seq 6", got, seq)
		}
		if _, err := s.DeleteBundle(ctx, fed, BundleRestrict); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteBundle = %v, want ErrNotFound", err)
		}
		if tds, _ := s.ListBundleTrustDomains(ctx); !reflect.DeepEqual(tds, []string{td}) {
			t.Fatalf("ListBundleTrustDomains after delete = %v", tds)
		}
		if _, err := s.SetBundle(ctx, fed, []Authority{r1}); err != nil {
			t.Fatal(err)
		}
		if _, seq, _ := s.ListAuthorities(ctx, fed); seq != 7 {
			t.Fatalf("set after delete: seq %d, want 7", seq)
		}
	})
}

func TestDeleteBundleModes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		const fed = "part_ner.org"
		root := Authority{TrustDomain: fed, Kind: X509Authority, KeyID: "r1", Data: []byte{1}, ExpiresAt: time.Now().Add(time.Hour)}
		federating := func(path string, tds ...string) registry.Entry {
			e := workload(t, path, "unix:uid:1")
			for _, td := range tds {
				e.FederatesWith = append(e.FederatesWith, spiffeid.RequireTrustDomainFromString(td))
			}
			created, err := s.CreateEntry(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			return created
		}
		both := federating("/both", fed, "other.org")
		only := federating("/only", fed)
		// A name LIKE would match ('_' is its wildcard) but the list does not.
		near := federating("/near", "partxner.org", "part-ner.org")
		if _, err := s.SetBundle(ctx, fed, []Authority{root}); err != nil {
			t.Fatal(err)
		}
		entries := func() map[string]registry.Entry {
			all, err := s.ListEntries(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]registry.Entry{}
			for _, e := range all {
				m[e.ID] = e
			}
			return m
		}

		// Restrict refuses while entries federate, and changes nothing.
		rev := revision(t, s)
		if _, err := s.DeleteBundle(ctx, fed, BundleRestrict); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "2 entries") {
			t.Fatalf("restricted delete = %v, want ErrInUse naming 2 entries", err)
		}
		if auths, _, _ := s.ListAuthorities(ctx, fed); len(auths) != 1 || revision(t, s) != rev {
			t.Fatal("a refused delete changed the store")
		}

		// Dissociate drops the trust domain from those entries only.
		n, err := s.DeleteBundle(ctx, fed, BundleDissociate)
		if err != nil || n != 2 {
			t.Fatalf("dissociating delete = %d, %v; want 2 entries", n, err)
		}
		got := entries()
		if fw := got[both.ID].FederatesWith; len(fw) != 1 || fw[0].Name() != "other.org" || got[both.ID].Revision != both.Revision+1 {
			t.Fatalf("entry federating with two: %+v", got[both.ID])
		}
		if len(got[only.ID].FederatesWith) != 0 || len(got[only.ID].Selectors) != 1 {
			t.Fatalf("entry federating with the deleted one only: %+v", got[only.ID])
		}
		if !reflect.DeepEqual(got[near.ID], near) {
			t.Fatalf("an entry not federating with %s changed: %+v", fed, got[near.ID])
		}
		if auths, _, _ := s.ListAuthorities(ctx, fed); len(auths) != 0 {
			t.Fatal("dissociating delete kept the bundle")
		}

		// Delete removes the entries that federate.
		again := federating("/again", fed)
		if _, err := s.SetBundle(ctx, fed, []Authority{root}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.DeleteBundle(ctx, fed, BundleDeleteEntries); err != nil || n != 1 {
			t.Fatalf("deleting delete = %d, %v; want 1 entry", n, err)
		}
		got = entries()
		if _, ok := got[again.ID]; ok || len(got) != 3 {
			t.Fatalf("after deleting delete: %d entries, federating one present %v", len(got), ok)
		}
	})
}
