package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// fakeClock is a settable clock shared by a test and its Managers.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newManager(t testing.TB, cfg ca.Config) *ca.Manager {
	t.Helper()
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = td
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	m, err := ca.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ca.New: %v", err)
	}
	return m
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// makeCSR returns a CSR signed by key that asks for names the CA must ignore.
func makeCSR(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	evil, _ := url.Parse("spiffe://evil.example/admin")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "requested-cn"},
		URIs:     []*url.URL{evil},
		DNSNames: []string{"evil.example"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func bundleOf(t testing.TB, m *ca.Manager) *spiffebundle.Bundle {
	t.Helper()
	b, err := ca.NewBundle(td, m.Authorities(), 1, 0)
	if err != nil {
		t.Fatalf("NewBundle: %v", err)
	}
	return b
}

// keyIDs lists the published key IDs of one kind.
func keyIDs(m *ca.Manager, kind ca.AuthorityKind) []string {
	var out []string
	for _, a := range m.Authorities() {
		if a.Kind == kind {
			out = append(out, a.KeyID)
		}
	}
	return out
}

// rootSKIDs maps the SubjectKeyId of each published root to its key ID.
func rootSKIDs(t testing.TB, m *ca.Manager) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range m.Authorities() {
		if a.Kind != ca.KindX509 {
			continue
		}
		c, err := x509.ParseCertificate(a.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[string(c.SubjectKeyId)] = a.KeyID
	}
	return out
}

// signerKeyID returns the key ID of the root that signs new SVIDs now.
func signerKeyID(t testing.TB, m *ca.Manager) string {
	t.Helper()
	id := spiffeid.RequireFromPath(td, "/w")
	certs, err := m.SignX509SVID(context.Background(), makeCSR(t, p256(t)), id, 0, nil)
	if err != nil {
		t.Fatalf("SignX509SVID: %v", err)
	}
	kid, ok := rootSKIDs(t, m)[string(certs[0].AuthorityKeyId)]
	if !ok {
		t.Fatalf("SVID signed by a root that is not published")
	}
	return kid
}

// jwtKID returns the kid a freshly minted JWT-SVID carries.
func jwtKID(t testing.TB, m *ca.Manager) string {
	t.Helper()
	tok, _, err := m.MintJWTSVID(context.Background(), spiffeid.RequireFromPath(td, "/w"), []string{"a"}, 0)
	if err != nil {
		t.Fatalf("MintJWTSVID: %v", err)
	}
	return jwtHeader(t, tok)["kid"].(string)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
