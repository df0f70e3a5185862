package cache

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/internal/selector"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	fedTD = spiffeid.RequireTrustDomainFromString("partner.test")
	t0    = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

// testCA is a throwaway root that signs real X509-SVIDs.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	mu   sync.Mutex
	n    int64
}

func newTestCA(tb testing.TB, trustDomain spiffeid.TrustDomain) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA " + trustDomain.Name()},
		NotBefore:             t0.Add(-24 * time.Hour),
		NotAfter:              t0.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{trustDomain.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: trustDomain, cert: cert, key: key, n: 1}
}

func (ca *testCA) bundle() *spiffebundle.Bundle {
	b := spiffebundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
	_ = b.AddJWTAuthority("kid-"+ca.td.Name(), ca.key.Public())
	return b
}

// svid signs an SVID for path valid from notBefore for ttl.
func (ca *testCA) svid(tb testing.TB, path string, notBefore time.Time, ttl time.Duration) *x509svid.SVID {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	id := spiffeid.RequireFromPath(ca.td, path)
	ca.mu.Lock()
	ca.n++
	serial := big.NewInt(ca.n)
	ca.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(ttl),
		URIs:         []*url.URL{id.URL()},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func sels(tb testing.TB, in ...string) []selector.Selector {
	tb.Helper()
	out := make([]selector.Selector, 0, len(in))
	for _, s := range in {
		sel, err := selector.Parse(s)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, sel)
	}
	return out
}

func entry(tb testing.TB, id, path string, created time.Time, selectors ...string) Entry {
	return Entry{ID: id, SPIFFEID: spiffeid.RequireFromPath(td, path), Selectors: sels(tb, selectors...), CreatedAt: created}
}

// newTestCache returns a cache on a fake clock at t0.
func newTestCache(tb testing.TB, dir string) (*Cache, *fakeClock) {
	tb.Helper()
	clk := &fakeClock{t: t0}
	c, err := New(Options{TrustDomain: td, Dir: dir, Now: clk.Now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c, clk
}

// next returns the state waiting on sub, failing if none is.
func next(tb testing.TB, sub Subscription) *WorkloadState {
	tb.Helper()
	select {
	case st, ok := <-sub.Updates():
		if !ok {
			tb.Fatal("subscription closed")
		}
		return st
	default:
		tb.Fatal("no state was published")
		return nil
	}
}

// none asserts no state is waiting on sub. Publishing is synchronous with
// the change, so an empty channel right after a change is conclusive.
func noUpdate(tb testing.TB, sub Subscription) {
	tb.Helper()
	select {
	case st := <-sub.Updates():
		tb.Fatalf("unexpected state published: %d SVIDs", len(st.SVIDs))
	default:
	}
}

func ids(st *WorkloadState) []string {
	var out []string
	for _, s := range st.SVIDs {
		out = append(out, s.ID.Path()+"#"+s.Hint)
	}
	return out
}
