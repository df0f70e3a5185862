package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/server/ca"
)

// signDownstream has m sign a downstream CA for a new P-256 key.
func signDownstream(t *testing.T, m *ca.Manager, ttl time.Duration) ([]*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := p256(t)
	chain, err := m.SignDownstreamCA(context.Background(), makeCSR(t, key), ttl)
	if err != nil {
		t.Fatalf("SignDownstreamCA: %v", err)
	}
	return chain, key
}

// downstreamLeaf is what a downstream server signs with its CA: an
// X509-SVID for path, followed by the downstream CA's chain.
func downstreamLeaf(t *testing.T, chain []*x509.Certificate, key crypto.Signer, path string) []*x509.Certificate {
	t.Helper()
	ds := chain[0]
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    ds.NotBefore,
		NotAfter:     ds.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{spiffeid.RequireFromPath(td, path).URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ds, &p256(t).PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return append([]*x509.Certificate{leaf}, chain...)
}

// The downstream CA is a CA of the trust domain for the CSR's key, whatever
// else the CSR asks for, and what the downstream signs with it verifies
// against this server's bundle.
func TestSignDownstreamCA(t *testing.T) {
	m := newManager(t, ca.Config{})
	chain, key := signDownstream(t, m, 0)
	if len(chain) != 1 {
		t.Fatalf("chain of %d certificates under a self-signed CA, want the new CA alone (the root travels in the bundle)", len(chain))
	}
	c := chain[0]
	if !c.BasicConstraintsValid || !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a CA: basic constraints %v, IsCA %v, key usage %v", c.BasicConstraintsValid, c.IsCA, c.KeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != td.IDString() {
		t.Errorf("URI SANs %v, want exactly %s (the CSR asked for spiffe://evil.example/admin)", c.URIs, td.IDString())
	}
	if len(c.DNSNames) != 0 || c.Subject.CommonName == "requested-cn" {
		t.Errorf("the CSR's names leaked into the CA: DNS %v, subject %s", c.DNSNames, c.Subject)
	}
	if !key.PublicKey.Equal(c.PublicKey) {
		t.Error("the CA is not for the CSR's key")
	}
	roots := x509.NewCertPool()
	for _, der := range x509Roots(m) {
		r, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots.AddCert(r)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the downstream CA does not chain to the trust domain's root: %v", err)
	}

	leaf := downstreamLeaf(t, chain, key, "/east/web")
	id, _, err := x509svid.Verify(leaf, bundleOf(t, m))
	if err != nil {
		t.Fatalf("go-spiffe does not verify an SVID the downstream signed: %v", err)
	}
	if id != spiffeid.RequireFromPath(td, "/east/web") {
		t.Errorf("verified ID %s", id)
	}
	verifyTLS(t, leaf, certsOf(t, x509Roots(m))...)

	// Each call signs a new certificate.
	again, _ := signDownstream(t, m, 0)
	if again[0].SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two downstream CAs share a serial number")
	}
}

func certsOf(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// The lifetime: the CA's own TTL when none is asked for, what is asked for
// otherwise, and never past the active CA.
func TestSignDownstreamCATTL(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	dir := t.TempDir()
	// The active CA lives 12h; the server restarts with the 6h default, so
	// "the CA TTL" and "the active CA's end" differ.
	newManager(t, ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL, CATTL: 12 * time.Hour})
	m := newManager(t, ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL})
	active, _ := statusOf(t, m, ca.KindX509, m.ActiveCAID())
	activeEnd := active.ExpiresAt
	if want := t0.Add(12 * time.Hour); !activeEnd.Equal(want) {
		t.Fatalf("test setup: active CA ends %v, want %v", activeEnd, want)
	}
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Time
	}{
		{"zero: the CA TTL", 0, t0.Add(6 * svidTTL)},
		{"asked for", 90 * time.Minute, t0.Add(90 * time.Minute)},
		{"beyond the active CA: capped", 100 * time.Hour, activeEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, _ := signDownstream(t, m, tc.ttl)
			if !chain[0].NotAfter.Equal(tc.want) {
				t.Errorf("NotAfter %v, want %v", chain[0].NotAfter, tc.want)
			}
			if want := t0.Add(-time.Minute); !chain[0].NotBefore.Equal(want) {
				t.Errorf("NotBefore %v, want %v (backdated a minute)", chain[0].NotBefore, want)
			}
		})
	}

	// An active CA past its end (no rotation ran) signs nothing.
	clk.Set(activeEnd.Add(time.Second))
	if _, err := m.SignDownstreamCA(context.Background(), makeCSR(t, p256(t)), 0); err == nil || errors.Is(err, ca.ErrInvalidRequest) {
		t.Errorf("signed under an expired CA, or blamed the request: %v", err)
	}
}

// Under an upstream-signed CA, the downstream's chain carries this
// server's CA and the upstream's intermediates, up to the root.
func TestSignDownstreamCAUpstreamChain(t *testing.T) {
	root := issue(t, nil, caOf("Example Root"))
	corp := issue(t, root, caOf("Example Issuing CA"))
	m := newManager(t, ca.Config{Upstream: diskUpstream(t, corp, nil, root)})
	active := signSVID(t, m)[1] // this server's CA, as its SVIDs carry it
	chain, key := signDownstream(t, m, 0)
	if len(chain) != 3 || !bytes.Equal(chain[1].Raw, active.Raw) || !bytes.Equal(chain[2].Raw, corp.cert.Raw) {
		t.Fatalf("chain of %d certificates, want the new CA, this server's CA, the upstream CA", len(chain))
	}
	if !bytes.Equal(chain[0].RawIssuer, active.RawSubject) || chain[0].NotAfter.After(active.NotAfter) {
		t.Error("the new CA is not issued by the active CA, or outlives it")
	}
	leaf := downstreamLeaf(t, chain, key, "/east/db")
	if _, _, err := x509svid.Verify(leaf, bundleOf(t, m)); err != nil {
		t.Fatalf("go-spiffe does not verify a downstream SVID against the upstream root: %v", err)
	}
	verifyTLS(t, leaf, root.cert)
}

// A bad request is the caller's fault (ErrInvalidRequest: InvalidArgument
// on the wire), and signs nothing.
func TestSignDownstreamCARefuses(t *testing.T) {
	m := newManager(t, ca.Config{})
	good := makeCSR(t, p256(t))
	badSig := slices.Clone(good)
	badSig[len(badSig)-5] ^= 0xff // inside the signature BIT STRING
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		csr  []byte
		ttl  time.Duration
	}{
		{"garbage", []byte("not a CSR"), 0},
		{"empty", nil, 0},
		{"bad signature", badSig, 0},
		{"RSA-1024", makeCSR(t, rsa1024), 0},
		{"P-224", makeCSR(t, p224), 0},
		{"negative TTL", good, -time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := m.SignDownstreamCA(context.Background(), tc.csr, tc.ttl)
			if !errors.Is(err, ca.ErrInvalidRequest) || chain != nil {
				t.Fatalf("SignDownstreamCA = %d certificates, %v; want an error wrapping ErrInvalidRequest", len(chain), err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.SignDownstreamCA(ctx, good, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// Once a CA is prepared (and has settled for 30 s), downstream CAs are
// signed by it: signed by the active one, they would end with it, late in
// its life within the hour.
func TestSignDownstreamCAByPreparedCA(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL})
	active := m.ActiveCAID()
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	next := preparedID(t, m)
	issuerOf := func() string {
		chain, _ := signDownstream(t, m, 0)
		for _, a := range m.Authorities() {
			if a.Kind == ca.KindX509 && chain[0].CheckSignatureFrom(mustParse(t, a.Data)) == nil {
				return a.KeyID
			}
		}
		t.Fatal("the downstream CA verifies under no published root")
		return ""
	}
	for _, tc := range []struct {
		at   time.Duration
		want string
	}{
		{prepare, active},
		{prepare + 29*time.Second, active},
		{prepare + 30*time.Second, next},
		{activate - time.Minute, next},
	} {
		clk.Set(t0.Add(tc.at))
		if got := issuerOf(); got != tc.want {
			t.Errorf("at +%v the downstream CA is signed by %s, want %s (active %s, prepared %s)", tc.at, got, tc.want, active, next)
		}
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
