package store

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFederationRelationships(t *testing.T) {
	spiffe := FederationRelationship{TrustDomain: "b.org", BundleEndpointURL: "https://b.org:8443", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://b.org/signet/server"}
	web := FederationRelationship{TrustDomain: "a.org", BundleEndpointURL: "https://a.org/bundle", Profile: "https_web", Owner: "k8s/prod"}
	errNo := errors.New("refused by check")
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		if _, err := s.GetFederationRelationship(ctx, "b.org"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get unknown: %v, want ErrNotFound", err)
		}

		// A new one: the check sees none; the revision moves.
		rev := revision(t, s)
		var seen *FederationRelationship
		changed, err := s.PutFederationRelationship(ctx, spiffe, func(cur *FederationRelationship) error { seen = cur; return nil })
		if err != nil || !changed || seen != nil {
			t.Fatalf("create: changed %v, err %v, check saw %+v", changed, err, seen)
		}
		got, err := s.GetFederationRelationship(ctx, "b.org")
		if err != nil {
			t.Fatal(err)
		}
		if got.Revision != rev+1 || revision(t, s) != rev+1 || got.CreatedAt.IsZero() || time.Since(got.CreatedAt) > time.Minute {
			t.Fatalf("created %+v at store revision %d (was %d)", got, revision(t, s), rev)
		}
		created := got

		// The same again: nothing written.
		if changed, err := s.PutFederationRelationship(ctx, spiffe, nil); err != nil || changed {
			t.Fatalf("same again: changed %v, err %v", changed, err)
		}
		if revision(t, s) != rev+1 {
			t.Fatal("an unchanged put bumped the revision")
		}

		// A refused check writes nothing and returns its error.
		moved := spiffe
		moved.BundleEndpointURL = "https://b.org:9443"
		if _, err := s.PutFederationRelationship(ctx, moved, func(cur *FederationRelationship) error {
			seen = cur
			return errNo
		}); !errors.Is(err, errNo) {
			t.Fatalf("refused put: %v", err)
		}
		if seen == nil || !reflect.DeepEqual(*seen, created) {
			t.Fatalf("check saw %+v, want %+v", seen, created)
		}
		if got, _ := s.GetFederationRelationship(ctx, "b.org"); !reflect.DeepEqual(got, created) {
			t.Fatalf("after a refused put: %+v", got)
		}

		// An update keeps CreatedAt and takes a new revision.
		if changed, err := s.PutFederationRelationship(ctx, moved, nil); err != nil || !changed {
			t.Fatalf("update: changed %v, err %v", changed, err)
		}
		got, _ = s.GetFederationRelationship(ctx, "b.org")
		if got.BundleEndpointURL != moved.BundleEndpointURL || !got.CreatedAt.Equal(created.CreatedAt) || got.Revision != revision(t, s) || got.Revision <= created.Revision {
			t.Fatalf("updated %+v (created %+v)", got, created)
		}

		if _, err := s.PutFederationRelationship(ctx, web, nil); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListFederationRelationships(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].TrustDomain != "a.org" || list[1].TrustDomain != "b.org" || list[0].Owner != "k8s/prod" {
			t.Fatalf("list: %+v", list)
		}

		// Delete: refused by the check, then done, then not found.
		if err := s.DeleteFederationRelationship(ctx, "a.org", func(cur FederationRelationship) error {
			if cur.Owner != "k8s/prod" {
				t.Errorf("delete check saw %+v", cur)
			}
			return errNo
		}); !errors.Is(err, errNo) {
			t.Fatalf("refused delete: %v", err)
		}
		rev = revision(t, s)
		if err := s.DeleteFederationRelationship(ctx, "a.org", nil); err != nil {
			t.Fatal(err)
		}
		if revision(t, s) != rev+1 {
			t.Fatal("delete did not bump the revision")
		}
		if err := s.DeleteFederationRelationship(ctx, "a.org", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete again: %v, want ErrNotFound", err)
		}
		if list, _ := s.ListFederationRelationships(ctx); len(list) != 1 {
			t.Fatalf("after delete: %+v", list)
		}
	})
}

func TestFederationRelationshipIncomplete(t *testing.T) {
	ok := FederationRelationship{TrustDomain: "b.org", BundleEndpointURL: "https://b.org", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://b.org/s"}
	tests := []struct {
		name string
		edit func(*FederationRelationship)
	}{
		{"no trust domain", func(r *FederationRelationship) { r.TrustDomain = "" }},
		{"no URL", func(r *FederationRelationship) { r.BundleEndpointURL = "" }},
		{"unknown profile", func(r *FederationRelationship) { r.Profile = "http" }},
		{"https_spiffe without endpoint ID", func(r *FederationRelationship) { r.EndpointSPIFFEID = "" }},
		{"https_web with endpoint ID", func(r *FederationRelationship) { r.Profile = "https_web" }},
	}
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		for _, tt := range tests {
			r := ok
			tt.edit(&r)
			if _, err := s.PutFederationRelationship(ctx, r, nil); err == nil {
				t.Errorf("%s: stored", tt.name)
			}
		}
		if list, _ := s.ListFederationRelationships(ctx); len(list) != 0 {
			t.Fatalf("stored: %+v", list)
		}
	})
}

// A bundle a stored relationship fetches is not deleted: the check is in
// the delete's transaction, so a relationship stored just before wins.
func TestDeleteBundleFetched(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		if _, err := s.SetBundle(ctx, "b.org", []Authority{{TrustDomain: "b.org", Kind: X509Authority, KeyID: "r", Data: []byte{1}, ExpiresAt: exp}}); err != nil {
			t.Fatal(err)
		}
		rel := FederationRelationship{TrustDomain: "b.org", BundleEndpointURL: "https://b.org", Profile: "https_web"}
		if _, err := s.PutFederationRelationship(ctx, rel, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteBundle(ctx, "b.org", BundleDeleteEntries); !errors.Is(err, ErrFetched) {
			t.Fatalf("delete of a fetched bundle: %v, want ErrFetched", err)
		}
		if auths, _, _ := s.ListAuthorities(ctx, "b.org"); len(auths) != 1 {
			t.Fatalf("the fetched bundle was deleted: %+v", auths)
		}
		if err := s.DeleteFederationRelationship(ctx, "b.org", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DeleteBundle(ctx, "b.org", BundleRestrict); err != nil {
			t.Fatalf("delete once the relationship is gone: %v", err)
		}
	})
}

// refuseAuthorityWrites makes the database itself fail every later insert
// into authorities, as a full disk or a lost connection would fail it
// half-way through a transaction.
func refuseAuthorityWrites(t *testing.T, s Store) {
	t.Helper()
	st := s.(*sqlStore)
	ddl := []string{`CREATE TRIGGER refuse_authorities BEFORE INSERT ON authorities
		BEGIN SELECT RAISE(ABORT, 'authority write refused by the test'); END`}
	if _, pg := st.db.(*pgDB); pg {
		ddl = []string{`CREATE FUNCTION refuse_authorities() RETURNS trigger LANGUAGE plpgsql AS
			'BEGIN RAISE EXCEPTION ''authority write refused by the test''; END'`,
			`CREATE TRIGGER refuse_authorities BEFORE INSERT ON authorities FOR EACH ROW EXECUTE FUNCTION refuse_authorities()`}
	}
	err := st.write(testCtx(t), func(tx *tx) error {
		for _, q := range ddl {
			if _, err := tx.exec(testCtx(t), q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("install the trigger: %v", err)
	}
}

// storeState is everything PutFederationRelationship may change.
func storeState(t *testing.T, s Store, trustDomain string) string {
	t.Helper()
	ctx := testCtx(t)
	rels, err := s.ListFederationRelationships(ctx)
	if err != nil {
		t.Fatal(err)
	}
	auths, seq, err := s.ListAuthorities(ctx, trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("revision %d\nrelationships %+v\nbundle of %s, sequence %d: %+v", revision(t, s), rels, trustDomain, seq, auths)
}

// PutFederationRelationship writes a relationship and its bundle in one
// transaction: both or neither, with one revision bump; a bootstrap bundle
// never replaces a held one, WithBundle does.
func TestPutFederationRelationshipWithBundle(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	bundle := func(keyID string) []Authority {
		return []Authority{{TrustDomain: "b.org", Kind: X509Authority, KeyID: keyID, Data: []byte(keyID), ExpiresAt: exp}}
	}
	rel := FederationRelationship{TrustDomain: "b.org", BundleEndpointURL: "https://b.org:8443", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://b.org/signet/server"}
	moved := rel
	moved.BundleEndpointURL = "https://b.org:9443"
	errNo := errors.New("refused by check")
	refuse := func(*FederationRelationship) error { return errNo }

	// Writes that fail leave the store as it was.
	failures := []struct {
		name  string
		setup func(t *testing.T, s Store) // before the failing write
		r     FederationRelationship
		check func(*FederationRelationship) error
		opt   RelationshipOption
		want  string
	}{
		{"bundle of another trust domain", nil, rel, nil,
			WithBootstrapBundle([]Authority{{TrustDomain: "c.org", Kind: X509Authority, KeyID: "c", Data: []byte{1}}}), "belongs to c.org"},
		{"authority without data", nil, rel, nil,
			WithBundle([]Authority{{TrustDomain: "b.org", Kind: X509Authority, KeyID: "k"}}), "has no data"},
		{"check refuses", nil, rel, refuse, WithBundle(bundle("boot")), errNo.Error()},
		{"bundle write fails in the database", refuseAuthorityWrites, rel, nil, WithBootstrapBundle(bundle("boot")), "authority write refused by the test"},
		{"bundle write fails under an update", func(t *testing.T, s Store) {
			if _, err := s.PutFederationRelationship(testCtx(t), rel, nil); err != nil {
				t.Fatal(err)
			}
			refuseAuthorityWrites(t, s)
		}, moved, nil, WithBundle(bundle("boot")), "authority write refused by the test"},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, url string) {
				ctx, s := testCtx(t), openStore(t, url)
				if tt.setup != nil {
					tt.setup(t, s)
				}
				before := storeState(t, s, "b.org")
				changed, err := s.PutFederationRelationship(ctx, tt.r, tt.check, tt.opt)
				if err == nil || changed || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("put: changed %v, err %v; want an error containing %q", changed, err, tt.want)
				}
				if after := storeState(t, s, "b.org"); after != before {
					t.Fatalf("the failed put changed the store:\nbefore %s\nafter  %s", before, after)
				}
			})
		})
	}

	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		// Created with its bootstrap bundle: one revision for both.
		rev := revision(t, s)
		if changed, err := s.PutFederationRelationship(ctx, rel, nil, WithBootstrapBundle(bundle("boot"))); err != nil || !changed {
			t.Fatalf("create with a bundle: changed %v, err %v", changed, err)
		}
		got, err := s.GetFederationRelationship(ctx, "b.org")
		if err != nil {
			t.Fatal(err)
		}
		auths, seq, err := s.ListAuthorities(ctx, "b.org")
		if err != nil {
			t.Fatal(err)
		}
		if revision(t, s) != rev+1 || got.Revision != rev+1 || seq != 1 || !reflect.DeepEqual(auths, bundle("boot")) {
			t.Fatalf("store revision %d (was %d), relationship revision %d, bundle sequence %d: %+v", revision(t, s), rev, got.Revision, seq, auths)
		}

		// The same again: nothing written.
		if changed, err := s.PutFederationRelationship(ctx, rel, nil, WithBootstrapBundle(bundle("boot"))); err != nil || changed || revision(t, s) != rev+1 {
			t.Fatalf("same again: changed %v, err %v, revision %d", changed, err, revision(t, s))
		}

		// A bundle fetched since is not replaced by a bootstrap bundle; the
		// relationship is still updated.
		if _, err := s.SetBundle(ctx, "b.org", bundle("fetched")); err != nil {
			t.Fatal(err)
		}
		rev = revision(t, s)
		if changed, err := s.PutFederationRelationship(ctx, moved, nil, WithBootstrapBundle(bundle("boot2"))); err != nil || !changed {
			t.Fatalf("update with a bootstrap bundle: changed %v, err %v", changed, err)
		}
		auths, _, _ = s.ListAuthorities(ctx, "b.org")
		got, _ = s.GetFederationRelationship(ctx, "b.org")
		if !reflect.DeepEqual(auths, bundle("fetched")) || got.BundleEndpointURL != moved.BundleEndpointURL || revision(t, s) != rev+1 {
			t.Fatalf("after an update with a bootstrap bundle over a held one: %+v, bundle %+v, revision %d (was %d)", got, auths, revision(t, s), rev)
		}
		// The relationship unchanged, the held bundle kept: nothing written.
		if changed, err := s.PutFederationRelationship(ctx, moved, nil, WithBootstrapBundle(bundle("boot2"))); err != nil || changed || revision(t, s) != rev+1 {
			t.Fatalf("bootstrap bundle over a held one again: changed %v, err %v", changed, err)
		}

		// WithBundle replaces the held bundle, also when the relationship
		// is unchanged: one revision, the relationship's stays.
		rev = revision(t, s)
		if changed, err := s.PutFederationRelationship(ctx, moved, nil, WithBundle(bundle("operator's"))); err != nil || !changed {
			t.Fatalf("replace the bundle: changed %v, err %v", changed, err)
		}
		auths, _, _ = s.ListAuthorities(ctx, "b.org")
		if after, _ := s.GetFederationRelationship(ctx, "b.org"); !reflect.DeepEqual(after, got) || !reflect.DeepEqual(auths, bundle("operator's")) || revision(t, s) != rev+1 {
			t.Fatalf("after replacing the bundle: %+v (was %+v), bundle %+v, revision %d (was %d)", after, got, auths, revision(t, s), rev)
		}
	})
}
