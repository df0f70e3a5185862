package delegatedidentity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/delegatedidentity/types"
	"github.com/signetid/signet/internal/selector"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("example.org")
	otherTD = spiffeid.RequireTrustDomainFromString("partner.test")
)

func TestAuthorize(t *testing.T) {
	delegate := spiffeid.RequireFromString("spiffe://example.org/cilium")
	other := spiffeid.RequireFromString("spiffe://example.org/web")
	for _, tc := range []struct {
		name       string
		identities []spiffeid.ID
		delegates  []spiffeid.ID
		want       spiffeid.ID
		wantErr    error
	}{
		{"no identity", nil, []spiffeid.ID{delegate}, spiffeid.ID{}, errNoIdentity},
		{"an identity, not a delegate", []spiffeid.ID{other}, []spiffeid.ID{delegate}, spiffeid.ID{}, errNotDelegate},
		{"no delegates configured", []spiffeid.ID{delegate}, nil, spiffeid.ID{}, errNotDelegate},
		{"the default identity is the delegate", []spiffeid.ID{delegate, other}, []spiffeid.ID{delegate}, delegate, nil},
		{"any identity may be the delegate", []spiffeid.ID{other, delegate}, []spiffeid.ID{delegate}, delegate, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := authorize(tc.identities, tc.delegates)
			if !errors.Is(err, tc.wantErr) || got != tc.want {
				t.Fatalf("authorize = %v, %v; want %v, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestSelectorsFromProto(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []*types.Selector
		want    []string
		wantErr string
	}{
		{name: "sorted, duplicates dropped", in: []*types.Selector{{Type: "unix", Value: "uid:1000"}, {Type: "k8s", Value: "ns:web"}, {Type: "unix", Value: "uid:1000"}},
			want: []string{"k8s:ns:web", "unix:uid:1000"}},
		{name: "value with colons", in: []*types.Selector{{Type: "k8s", Value: "pod-label:app:web"}}, want: []string{"k8s:pod-label:app:web"}},
		{name: "empty type", in: []*types.Selector{{Value: "uid:1"}}, wantErr: "type is empty"},
		{name: "empty value", in: []*types.Selector{{Type: "unix"}}, wantErr: "value is empty"},
		{name: "type holding a colon", in: []*types.Selector{{Type: "unix:uid", Value: "1"}}, wantErr: "must be lower-case letters"},
		{name: "unknown type", in: []*types.Selector{{Type: "dockr", Value: "label:a"}}, wantErr: `unknown type "dockr"`},
		{name: "unknown key", in: []*types.Selector{{Type: "unix", Value: "usr:root"}}, wantErr: `unknown unix key "usr"`},
		{name: "nil selector", in: []*types.Selector{{Type: "unix", Value: "uid:0"}, nil}, wantErr: "selector 1 is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := selectorsFromProto(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(selector.Strings(got), tc.want) {
				t.Fatalf("selectorsFromProto = %v, %v; want %v", selector.Strings(got), err, tc.want)
			}
		})
	}
}

// testCA signs real certificates for the response tests.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, trustDomain spiffeid.TrustDomain) *testCA {
	t.Helper()
	ca := &testCA{td: trustDomain, key: newKey(t)}
	ca.cert = ca.sign(t, &x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{trustDomain.ID().URL()}}, ca.key.Public())
	return ca
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func (ca *testCA) sign(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour).Truncate(time.Second)
	parent := tmpl
	if ca.cert != nil {
		parent = ca.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func (ca *testCA) svid(t *testing.T, path, hint string) *x509svid.SVID {
	t.Helper()
	id := spiffeid.RequireFromPath(ca.td, path)
	key := newKey(t)
	cert := ca.sign(t, &x509.Certificate{URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}, key.Public())
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert, ca.cert}, PrivateKey: key, Hint: hint}
}

func (ca *testCA) bundle() *spiffebundle.Bundle {
	b := spiffebundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
	_ = b.AddJWTAuthority("kid-"+ca.td.Name(), ca.key.Public())
	return b
}

// An X509-SVID response holds every SVID but an admin entry's, each with its
// chain, key, split SPIFFE ID, expiry and hint, and the federated trust
// domains (never the own one).
func TestX509SVIDsResponse(t *testing.T) {
	ca, fed := newTestCA(t, td), newTestCA(t, otherTD)
	web, admin, internal := ca.svid(t, "/web", ""), ca.svid(t, "/admin", ""), ca.svid(t, "/web-internal", "internal")
	preEncoded, err := x509.MarshalPKCS8PrivateKey(web.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	st := &cache.WorkloadState{
		SVIDs:            []*x509svid.SVID{web, admin, internal},
		KeysDER:          [][]byte{preEncoded, nil, nil}, // nil: encoded on the spot
		Admin:            []bool{false, true, false},
		Bundle:           x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert}),
		FederatedBundles: []*x509bundle.Bundle{fed.bundle().X509Bundle(), ca.bundle().X509Bundle()},
	}
	resp, err := x509SVIDsResponse(st)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := resp.FederatesWith, []string{"spiffe://partner.test"}; !slices.Equal(got, want) {
		t.Fatalf("federates_with = %v, want %v", got, want)
	}
	want := []*x509svid.SVID{web, internal}
	if len(resp.X509Svids) != len(want) {
		t.Fatalf("%d SVIDs, want %d (the admin entry's withheld)", len(resp.X509Svids), len(want))
	}
	for i, got := range resp.X509Svids {
		w := want[i]
		if got.X509Svid.Id.TrustDomain != "example.org" || got.X509Svid.Id.Path != w.ID.Path() || got.X509Svid.Hint != w.Hint ||
			got.X509Svid.ExpiresAt != w.Certificates[0].NotAfter.Unix() {
			t.Errorf("SVID %d = %v, want %s hint %q expiring %s", i, got.X509Svid, w.ID, w.Hint, w.Certificates[0].NotAfter)
		}
		if len(got.X509Svid.CertChain) != 2 || !bytes.Equal(got.X509Svid.CertChain[0], w.Certificates[0].Raw) || !bytes.Equal(got.X509Svid.CertChain[1], ca.cert.Raw) {
			t.Errorf("SVID %d chain is not the leaf then the intermediate", i)
		}
		key, err := x509.ParsePKCS8PrivateKey(got.X509SvidKey)
		if err != nil || !w.PrivateKey.Public().(*ecdsa.PublicKey).Equal(key.(crypto.Signer).Public()) {
			t.Errorf("SVID %d key is not its PKCS#8 private key: %v", i, err)
		}
	}

	// No identity: an empty response, which a delegate waits on.
	empty, err := x509SVIDsResponse(&cache.WorkloadState{Bundle: st.Bundle})
	if err != nil || len(empty.X509Svids) != 0 || len(empty.FederatesWith) != 0 {
		t.Fatalf("no identity: %v, %v; want an empty response", empty, err)
	}
}

// Bundle responses hold every bundle under its trust domain ID: the roots
// as concatenated DER, the JWT keys as a JWKS go-spiffe parses.
func TestBundleResponses(t *testing.T) {
	ca, fed := newTestCA(t, td), newTestCA(t, otherTD)
	bundles := []*spiffebundle.Bundle{ca.bundle(), fed.bundle()}
	x := x509BundlesResponse(bundles)
	j, err := jwtBundlesResponse(bundles)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.CaCertificates) != 2 || len(j.Bundles) != 2 {
		t.Fatalf("X.509 bundles %d, JWT bundles %d; want 2 each", len(x.CaCertificates), len(j.Bundles))
	}
	for _, c := range []*testCA{ca, fed} {
		certs, err := x509.ParseCertificates(x.CaCertificates[c.td.IDString()])
		if err != nil || len(certs) != 1 || !certs[0].Equal(c.cert) {
			t.Errorf("X.509 bundle of %s: %v (%d certificates)", c.td, err, len(certs))
		}
		jb, err := jwtbundle.Parse(c.td, j.Bundles[c.td.IDString()])
		if err != nil || !jb.HasJWTAuthority("kid-"+c.td.Name()) {
			t.Errorf("JWT bundle of %s: %v", c.td, err)
		}
	}
}

func TestJWTSVIDsResponse(t *testing.T) {
	key := newKey(t)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	iat, exp := time.Now().Truncate(time.Second), time.Now().Add(5*time.Minute).Truncate(time.Second)
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: "spiffe://example.org/web", Audience: jwt.Audience{"db"},
		IssuedAt: jwt.NewNumericDate(iat), Expiry: jwt.NewNumericDate(exp)}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseInsecure(tok, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	svid.Hint = "internal"
	resp := jwtSVIDsResponse([]*jwtsvid.SVID{svid})
	if len(resp.Svids) != 1 {
		t.Fatalf("%d JWT-SVIDs, want 1", len(resp.Svids))
	}
	got := resp.Svids[0]
	if got.Token != tok || got.Id.TrustDomain != "example.org" || got.Id.Path != "/web" || got.Hint != "internal" ||
		got.IssuedAt != iat.Unix() || got.ExpiresAt != exp.Unix() {
		t.Fatalf("JWT-SVID = %v, want the token, spiffe://example.org/web, hint internal, iat %d, exp %d", got, iat.Unix(), exp.Unix())
	}
}

// The admin socket's directory is created 0700 (only the agent's user
// passes), the socket is 0770 as SPIRE's admin socket is.
func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "admin")
	sock := filepath.Join(dir, "admin.sock")
	lis, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	for path, want := range map[string]fs.FileMode{dir: fs.ModeDir | 0o700, sock: fs.ModeSocket | 0o770} {
		if fi, err := os.Lstat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, want)
		}
	}
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "in use by another server") {
		t.Fatalf("Listen on a socket in use: %v", err)
	}

	// An existing directory others may write to could get a socket of
	// theirs in the admin socket's place: refused, and nothing listens.
	loose := filepath.Join(t.TempDir(), "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o777); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(filepath.Join(loose, "admin.sock")); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Listen in a 0777 directory: %v, want a refusal", err)
	}
	if _, err := os.Lstat(filepath.Join(loose, "admin.sock")); !os.IsNotExist(err) {
		t.Errorf("a refused Listen left its socket behind: %v", err)
	}
	// 0755, as SPIRE makes it: accepted.
	if err := os.Chmod(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(filepath.Join(loose, "admin.sock"))
	if err != nil {
		t.Fatalf("Listen in a 0755 directory: %v", err)
	}
	l.Close()
}
