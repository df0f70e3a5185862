package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/signetid/signet/internal/pgtest"
)

// listAll is ListAuthorities failing the test on error.
func listAll(t *testing.T, s Store, trustDomain string) ([]Authority, int64) {
	t.Helper()
	auths, seq, err := s.ListAuthorities(context.Background(), trustDomain)
	if err != nil {
		t.Fatalf("ListAuthorities(%s): %v", trustDomain, err)
	}
	return auths, seq
}

// The taint mark only goes from false to true, like expiry only grows: a
// server that has not heard of the taint yet republishes its authority
// untainted, and must neither clear the mark nor bump the sequence.
func TestPutAuthoritiesTaint(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	x1 := Authority{TrustDomain: td, Kind: X509Authority, KeyID: "x1", Data: []byte{1}, ExpiresAt: exp}
	j1 := Authority{TrustDomain: td, Kind: JWTAuthority, KeyID: "j1", Data: []byte{2}, ExpiresAt: exp}
	tainted := func(a Authority) Authority { a.Tainted = true; return a }
	later := func(a Authority) Authority { a.ExpiresAt = a.ExpiresAt.Add(time.Hour); return a }
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		if err := s.PutAuthorities(ctx, []Authority{x1, j1}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name    string
			put     []Authority
			want    []Authority // sorted by kind, then key ID
			wantSeq int64
		}{
			{"taint", []Authority{tainted(x1)}, []Authority{j1, tainted(x1)}, 2},
			{"republished untainted keeps the taint", []Authority{x1, j1}, []Authority{j1, tainted(x1)}, 2},
			{"tainted again", []Authority{tainted(x1)}, []Authority{j1, tainted(x1)}, 2},
			{"later expiry, untainted, keeps the taint", []Authority{later(x1)}, []Authority{j1, later(tainted(x1))}, 3},
			{"new authority put tainted", []Authority{tainted(j1), {TrustDomain: td, Kind: JWTAuthority, KeyID: "j2", Data: []byte{3}, ExpiresAt: exp}},
				[]Authority{tainted(j1), {TrustDomain: td, Kind: JWTAuthority, KeyID: "j2", Data: []byte{3}, ExpiresAt: exp}, later(tainted(x1))}, 4},
		}
		for _, st := range steps {
			rev := revision(t, s)
			_, seqBefore := listAll(t, s, td)
			if err := s.PutAuthorities(ctx, st.put); err != nil {
				t.Fatalf("%s: PutAuthorities: %v", st.name, err)
			}
			got, seq := listAll(t, s, td)
			if seq != st.wantSeq || !reflect.DeepEqual(got, st.want) {
				t.Fatalf("%s: ListAuthorities = %+v seq %d, want %+v seq %d", st.name, got, seq, st.want, st.wantSeq)
			}
			if bumped, want := revision(t, s) != rev, seq != seqBefore; bumped != want {
				t.Fatalf("%s: revision bumped = %v, sequence bumped = %v", st.name, bumped, want)
			}
		}
	})
}

func TestDeleteAuthorities(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	auth := func(trustDomain string, kind AuthorityKind, keyID string) Authority {
		return Authority{TrustDomain: trustDomain, Kind: kind, KeyID: keyID, Data: []byte(keyID), ExpiresAt: exp}
	}
	x1, x2, x3 := auth(td, X509Authority, "k1"), auth(td, X509Authority, "k2"), auth(td, X509Authority, "k3")
	j1 := auth(td, JWTAuthority, "k1") // same key ID, other kind
	o1 := auth("other.org", X509Authority, "k1")
	x3Tainted := x3
	x3Tainted.Tainted = true
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		if err := s.PutAuthorities(ctx, []Authority{x1, x2, x3, j1, o1}); err != nil {
			t.Fatal(err)
		}
		if err := s.PutAuthorities(ctx, []Authority{x3Tainted}); err != nil { // revoked after tainting, as the CA does
			t.Fatal(err)
		}
		steps := []struct {
			name        string
			kind        AuthorityKind
			keyIDs      []string
			wantDeleted int
			want        []Authority
			wantSeq     int64
		}{
			{"named x509 IDs, one unknown", X509Authority, []string{"k1", "k2", "unknown"}, 2, []Authority{j1, x3Tainted}, 3},
			{"again: idempotent", X509Authority, []string{"k1", "k2", "unknown"}, 0, []Authority{j1, x3Tainted}, 3},
			{"none", JWTAuthority, nil, 0, []Authority{j1, x3Tainted}, 3},
			{"the tainted one, named twice", X509Authority, []string{"k3", "k3"}, 1, []Authority{j1}, 4},
			{"jwt", JWTAuthority, []string{"k1"}, 1, nil, 5},
		}
		for _, st := range steps {
			rev := revision(t, s)
			n, err := s.DeleteAuthorities(ctx, td, st.kind, st.keyIDs)
			if err != nil {
				t.Fatalf("%s: DeleteAuthorities: %v", st.name, err)
			}
			got, seq := listAll(t, s, td)
			if n != st.wantDeleted || seq != st.wantSeq || !reflect.DeepEqual(got, st.want) {
				t.Fatalf("%s: deleted %d, left %+v seq %d; want %d, %+v seq %d", st.name, n, got, seq, st.wantDeleted, st.want, st.wantSeq)
			}
			if bumped := revision(t, s) != rev; bumped != (st.wantDeleted > 0) {
				t.Fatalf("%s: revision bumped = %v after deleting %d", st.name, bumped, n)
			}
		}
		if got, seq := listAll(t, s, "other.org"); !reflect.DeepEqual(got, []Authority{o1}) || seq != 1 {
			t.Fatalf("other.org after deleting %s's k1: %+v seq %d", td, got, seq)
		}

		if err := s.PutAuthorities(ctx, []Authority{x1}); err != nil {
			t.Fatal(err)
		}
		rev := revision(t, s)
		for _, bad := range []struct {
			trustDomain string
			kind        AuthorityKind
		}{{"", X509Authority}, {td, ""}, {td, "rsa"}} {
			n, err := s.DeleteAuthorities(ctx, bad.trustDomain, bad.kind, []string{"k1"})
			if err == nil || !strings.Contains(err.Error(), "x509 or jwt") {
				t.Errorf("DeleteAuthorities(%q, %q) = %d, %v; want a refusal naming what is required", bad.trustDomain, bad.kind, n, err)
			}
		}
		if got, _ := listAll(t, s, td); !reflect.DeepEqual(got, []Authority{x1}) || revision(t, s) != rev {
			t.Fatalf("refused deletes changed something: %+v", got)
		}
	})
}

// Federated bundles carry no taint: SetBundle refuses a tainted authority
// and rewrites, as a change, one a PutAuthorities tainted.
func TestSetBundleTaint(t *testing.T) {
	const fed = "other.org"
	r1 := Authority{TrustDomain: fed, Kind: X509Authority, KeyID: "r1", Data: []byte{1}, ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		if _, err := s.SetBundle(ctx, fed, []Authority{r1}); err != nil {
			t.Fatal(err)
		}
		tainted := r1
		tainted.Tainted = true
		if _, err := s.SetBundle(ctx, fed, []Authority{tainted}); err == nil || !strings.Contains(err.Error(), "tainted") {
			t.Fatalf("SetBundle of a tainted authority: %v, want a refusal", err)
		}
		if got, seq := listAll(t, s, fed); !reflect.DeepEqual(got, []Authority{r1}) || seq != 1 {
			t.Fatalf("after the refused SetBundle: %+v seq %d", got, seq)
		}
		if err := s.PutAuthorities(ctx, []Authority{tainted}); err != nil {
			t.Fatal(err)
		}
		changed, err := s.SetBundle(ctx, fed, []Authority{r1})
		if err != nil || !changed {
			t.Fatalf("SetBundle over the tainted row = %v, %v; want changed", changed, err)
		}
		if got, seq := listAll(t, s, fed); !reflect.DeepEqual(got, []Authority{r1}) || seq != 3 {
			t.Fatalf("after SetBundle: %+v seq %d, want r1 untainted, seq 3", got, seq)
		}
		if changed, err := s.SetBundle(ctx, fed, []Authority{r1}); err != nil || changed {
			t.Fatalf("SetBundle of the same set = %v, %v; want unchanged", changed, err)
		}
	})
}

// A database at schema 4 holding authorities is upgraded with them kept,
// untainted, and their sequence; the new column then works.
func TestUpgradeFromSchema4KeepsAuthorities(t *testing.T) {
	type rawDB struct {
		url  string
		exec func(ctx context.Context, stmt string, args ...any) error
	}
	for _, b := range []struct {
		name  string
		bytes string
		open  func(t *testing.T) rawDB
	}{
		{"sqlite", "BLOB", func(t *testing.T) rawDB {
			path := filepath.Join(t.TempDir(), "v4.db")
			db, err := sql.Open("sqlite", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return rawDB{"sqlite://" + path, func(ctx context.Context, stmt string, args ...any) error {
				_, err := db.ExecContext(ctx, stmt, args...)
				return err
			}}
		}},
		{"postgres", "BYTEA", func(t *testing.T) rawDB {
			url := pgtest.NewDatabase(t)
			conn, err := pgx.Connect(testCtx(t), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close(context.Background()) })
			return rawDB{url, func(ctx context.Context, stmt string, args ...any) error {
				_, err := conn.Exec(ctx, stmt, args...)
				return err
			}}
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			ctx, raw := testCtx(t), b.open(t)
			ms, err := loadMigrations()
			if err != nil {
				t.Fatal(err)
			}
			if err := raw.exec(ctx, `CREATE TABLE schema_version (version BIGINT NOT NULL)`); err != nil {
				t.Fatal(err)
			}
			for _, m := range ms[:4] {
				if err := raw.exec(ctx, strings.ReplaceAll(m.sql, "{{bytes}}", b.bytes)); err != nil {
					t.Fatalf("build a schema-4 database: %s: %v", m.name, err)
				}
				if err := raw.exec(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, m.version); err != nil {
					t.Fatal(err)
				}
			}
			exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			old := Authority{TrustDomain: td, Kind: X509Authority, KeyID: "r1", Data: []byte{0x30, 1}, ExpiresAt: exp}
			if err := raw.exec(ctx, `INSERT INTO authorities (trust_domain, kind, key_id, data, expires_at) VALUES ($1, $2, $3, $4, $5)`,
				old.TrustDomain, string(old.Kind), old.KeyID, old.Data, toNanos(old.ExpiresAt)); err != nil {
				t.Fatal(err)
			}
			if err := raw.exec(ctx, `INSERT INTO bundles (trust_domain, sequence) VALUES ($1, 7)`, td); err != nil {
				t.Fatal(err)
			}

			s := openStore(t, raw.url)
			if got, seq := listAll(t, s, td); !reflect.DeepEqual(got, []Authority{old}) || seq != 7 {
				t.Fatalf("after the upgrade: %+v seq %d; want %+v untainted, seq 7", got, seq, old)
			}
			old.Tainted = true
			if err := s.PutAuthorities(ctx, []Authority{old}); err != nil {
				t.Fatalf("taint after the upgrade: %v", err)
			}
			if got, seq := listAll(t, s, td); !reflect.DeepEqual(got, []Authority{old}) || seq != 8 {
				t.Fatalf("tainted after the upgrade: %+v seq %d", got, seq)
			}
		})
	}
}

// AddAuthority stores a key ID once: a second key under it is not stored,
// and the first is returned; neither the sequence nor the revision moves.
func TestAddAuthority(t *testing.T) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	k1 := Authority{TrustDomain: td, Kind: JWTAuthority, KeyID: "east-1", Data: []byte{1}, ExpiresAt: exp}
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		stored, added, err := s.AddAuthority(ctx, k1)
		if err != nil || !added || !reflect.DeepEqual(stored, k1) {
			t.Fatalf("first add: %+v %v %v", stored, added, err)
		}
		_, seq := listAll(t, s, td)
		rev := revision(t, s)
		k2 := k1
		k2.Data, k2.ExpiresAt = []byte{2}, exp.Add(time.Hour)
		stored, added, err = s.AddAuthority(ctx, k2)
		if err != nil || added || !reflect.DeepEqual(stored, k1) {
			t.Fatalf("another key under the ID: %+v %v %v; want the first returned, not added", stored, added, err)
		}
		got, seq2 := listAll(t, s, td)
		if len(got) != 1 || !reflect.DeepEqual(got[0], k1) || seq2 != seq || revision(t, s) != rev {
			t.Fatalf("after the refused add: %+v seq %d->%d", got, seq, seq2)
		}
		if _, _, err := s.AddAuthority(ctx, Authority{TrustDomain: td, Kind: JWTAuthority, Data: []byte{1}}); err == nil {
			t.Error("an authority without a key ID was added")
		}
	})
}
