package nested

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nested/types"
	"github.com/signetid/signet/server/store"
)

// newCA is a real CA of td: its root is a bundle's X.509 authority, and a
// certificate it signs for a workload is one that is not a CA.
func newCA(t testing.TB, dir string) *ca.Manager {
	t.Helper()
	m, err := ca.New(context.Background(), ca.Config{TrustDomain: td, DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func rootOf(t testing.TB, m *ca.Manager) []byte {
	t.Helper()
	for _, a := range m.Authorities() {
		if a.Kind == ca.KindX509 {
			return a.Data
		}
	}
	t.Fatal("the CA publishes no root")
	return nil
}

// sampleBundle is a catalog bundle of two roots, one tainted, and three
// JWT keys: with an expiry, without one, and tainted.
func sampleBundle(t testing.TB, dir1, dir2 string) catalog.Bundle {
	t.Helper()
	exp := time.Unix(1_900_000_000, 0)
	return catalog.Bundle{TrustDomain: td.Name(), Sequence: 7, Authorities: []store.Authority{
		{TrustDomain: td.Name(), Kind: store.X509Authority, KeyID: "r1", Data: rootOf(t, newCA(t, dir1)), Tainted: true},
		{TrustDomain: td.Name(), Kind: store.X509Authority, KeyID: "r2", Data: rootOf(t, newCA(t, dir2))},
		{TrustDomain: td.Name(), Kind: store.JWTAuthority, KeyID: "k1", Data: pkix(t, &newKey(t, elliptic.P256()).PublicKey), ExpiresAt: exp},
		{TrustDomain: td.Name(), Kind: store.JWTAuthority, KeyID: "k2", Data: pkix(t, &newKey(t, elliptic.P384()).PublicKey)},
		{TrustDomain: td.Name(), Kind: store.JWTAuthority, KeyID: "k3", Data: pkix(t, &newKey(t, elliptic.P256()).PublicKey), ExpiresAt: exp, Tainted: true},
	}}
}

// What the upstream sends the downstream reads back, over the wire.
func TestBundleRoundTrip(t *testing.T) {
	in := sampleBundle(t, t.TempDir(), t.TempDir())
	p := BundleToProto(in, 90*time.Second)
	if p.TrustDomain != td.Name() || p.RefreshHint != 90 || p.SequenceNumber != 7 {
		t.Errorf("trust domain %q, refresh hint %d, sequence %d; want %s, 90, 7", p.TrustDomain, p.RefreshHint, p.SequenceNumber, td.Name())
	}
	wire, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back types.Bundle
	if err := proto.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	out, err := bundleFromProto(td, &back)
	if err != nil {
		t.Fatalf("bundleFromProto: %v", err)
	}
	if len(out.X509) != 2 || len(out.JWT) != 3 {
		t.Fatalf("%d roots and %d JWT keys, want 2 and 3", len(out.X509), len(out.JWT))
	}
	for i, r := range out.X509 {
		a := in.Authorities[i]
		if !slices.Equal(r.Cert.Raw, a.Data) || r.Tainted != a.Tainted {
			t.Errorf("root %d: tainted %v, same DER %v; want tainted %v", i, r.Tainted, slices.Equal(r.Cert.Raw, a.Data), a.Tainted)
		}
	}
	for i, k := range out.JWT {
		a := in.Authorities[2+i]
		want := ca.Authority{Kind: ca.KindJWT, KeyID: a.KeyID, Data: a.Data, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted}
		if !sameAuthority(k, want) || k.ExpiresAt.IsZero() != a.ExpiresAt.IsZero() {
			t.Errorf("JWT key %d = %+v, want %+v", i, k, want)
		}
	}

	// A store's bundle never has a negative sequence; if it did, it is not
	// sent as a huge unsigned one.
	in.Sequence = -1
	if got := BundleToProto(in, 0); got.SequenceNumber != 0 || got.RefreshHint != 0 {
		t.Errorf("sequence %d, refresh hint %d; want 0, 0", got.SequenceNumber, got.RefreshHint)
	}
	// An upstream that leaves the trust domain out is taken at its word.
	back.TrustDomain = ""
	if _, err := bundleFromProto(td, &back); err != nil {
		t.Errorf("a bundle without a trust domain: %v", err)
	}
}

func TestBundleFromProtoRefuses(t *testing.T) {
	m := newCA(t, t.TempDir())
	root := rootOf(t, m)
	svid, err := m.SignServerSVID(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0].Raw
	key := pkix(t, &newKey(t, elliptic.P256()).PublicKey)
	roots := func(ders ...[]byte) []*types.X509Certificate {
		var out []*types.X509Certificate
		for _, d := range ders {
			out = append(out, &types.X509Certificate{Asn1: d})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		b    *types.Bundle
		want string
	}{
		{"nil", nil, "no X.509 authorities"},
		{"another trust domain", &types.Bundle{TrustDomain: "other.org", X509Authorities: roots(root)}, `for trust domain "other.org", not "example.org"`},
		{"no roots", &types.Bundle{TrustDomain: td.Name(), JwtAuthorities: []*types.JWTKey{{KeyId: "k", PublicKey: key}}}, "no X.509 authorities"},
		{"a root that is not a CA", &types.Bundle{X509Authorities: roots(root, leaf)}, "X.509 authority 1 (O=Signet) is not a CA"},
		{"a root that is garbage", &types.Bundle{X509Authorities: roots([]byte("not a certificate"))}, "X.509 authority 0:"},
		{"an empty root", &types.Bundle{X509Authorities: roots(nil)}, "X.509 authority 0:"},
		{"a JWT key without kid", &types.Bundle{X509Authorities: roots(root), JwtAuthorities: []*types.JWTKey{{PublicKey: key}}}, "has no key_id"},
		{"a JWT key that is garbage", &types.Bundle{X509Authorities: roots(root), JwtAuthorities: []*types.JWTKey{{KeyId: "k9", PublicKey: []byte("junk")}}}, `JWT authority "k9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bundleFromProto(td, tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("bundleFromProto = %+v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}

// Whatever bytes arrive as a bundle, bundleFromProto does not panic, and
// what it accepts has at least one root, every root a CA, every JWT key a
// kid and a public key.
func FuzzBundleFromProto(f *testing.F) {
	valid := BundleToProto(sampleBundle(f, f.TempDir(), f.TempDir()), time.Minute)
	for _, b := range []*types.Bundle{
		valid,
		{TrustDomain: "other.org", X509Authorities: valid.X509Authorities},
		{TrustDomain: td.Name(), JwtAuthorities: valid.JwtAuthorities},
		{X509Authorities: []*types.X509Certificate{{Asn1: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}}},
		{X509Authorities: valid.X509Authorities, JwtAuthorities: []*types.JWTKey{{KeyId: "k", PublicKey: []byte{0x30, 0x00}}}},
	} {
		data, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte("\x12\x00\x12\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b types.Bundle
		if proto.Unmarshal(data, &b) != nil {
			return
		}
		got, err := bundleFromProto(td, &b)
		if err != nil {
			return
		}
		if len(got.X509) == 0 {
			t.Fatal("accepted a bundle without roots")
		}
		for i, r := range got.X509 {
			if r.Cert == nil || !r.Cert.IsCA {
				t.Fatalf("accepted root %d that is not a CA", i)
			}
		}
		for _, k := range got.JWT {
			if k.KeyID == "" || k.Kind != ca.KindJWT {
				t.Fatalf("accepted JWT key %+v", k)
			}
			if _, err := x509.ParsePKIXPublicKey(k.Data); err != nil {
				t.Fatalf("accepted JWT key %s with an unparsable public key: %v", k.KeyID, err)
			}
		}
	})
}

// An upstream bundle past the bound is refused whole, not truncated.
func TestBundleFromProtoBound(t *testing.T) {
	root := rootOf(t, newCA(t, t.TempDir()))
	b := &types.Bundle{TrustDomain: td.Name(), X509Authorities: []*types.X509Certificate{{Asn1: root}}}
	for range maxBundleAuthorities {
		b.JwtAuthorities = append(b.JwtAuthorities, &types.JWTKey{KeyId: "k", PublicKey: []byte{1}})
	}
	if _, err := bundleFromProto(td, b); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a bundle of %d authorities: %v", maxBundleAuthorities+1, err)
	}
}
