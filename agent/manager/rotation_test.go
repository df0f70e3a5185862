package manager

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/client"
)

var (
	td = spiffeid.RequireTrustDomainFromString("example.org")
	t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signet CA"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) svid(t *testing.T, path string, serial int64, ttl time.Duration, dns ...string) *x509svid.SVID {
	return ca.svidFrom(t, ca.cert, path, serial, ttl, dns...)
}

// svidWithoutAKI signs an SVID that carries no authority key ID, as a CA
// without a subject key ID issues them.
func (ca *testCA) svidWithoutAKI(t *testing.T, path string, serial int64, ttl time.Duration) *x509svid.SVID {
	parent := *ca.cert
	parent.SubjectKeyId = nil
	svid := ca.svidFrom(t, &parent, path, serial, ttl)
	if len(svid.Certificates[0].AuthorityKeyId) > 0 {
		t.Fatal("test setup: the SVID has an authority key ID")
	}
	return svid
}

func (ca *testCA) svidFrom(t *testing.T, parent *x509.Certificate, path string, serial int64, ttl time.Duration, dns ...string) *x509svid.SVID {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := spiffeid.RequireFromPath(td, path)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), NotBefore: t0, NotAfter: t0.Add(ttl),
		URIs: []*url.URL{id.URL()}, DNSNames: dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func TestRotateAtIsBetweenHalfAndSixTenths(t *testing.T) {
	ca := newCA(t)
	for serial := int64(2); serial < 200; serial++ {
		leaf := ca.svid(t, "/w", serial, time.Hour).Certificates[0]
		at := RotateAt(leaf)
		if at.Before(t0.Add(30*time.Minute)) || !at.Before(t0.Add(36*time.Minute)) {
			t.Fatalf("serial %d rotates at +%s, want in [30m, 36m)", serial, at.Sub(t0))
		}
		if !RotateAt(leaf).Equal(at) {
			t.Fatal("rotation time is not stable for the same certificate")
		}
	}
}

func TestDue(t *testing.T) {
	ca := newCA(t)
	otherCA := newCA(t)
	e := cache.Entry{ID: "e", SPIFFEID: spiffeid.RequireFromPath(td, "/w"), DNSNames: []string{"b.example", "a.example"}}
	good := ca.svid(t, "/w", 7, time.Hour, "a.example", "b.example")
	rot := RotateAt(good.Certificates[0])
	trusted := issuersOf(spiffebundle.FromX509Authorities(td, []*x509.Certificate{ca.cert}))
	rotated := issuersOf(spiffebundle.FromX509Authorities(td, []*x509.Certificate{otherCA.cert}))
	// During a forced rotation the bundle holds the tainted root and its
	// replacement, which has the same subject and another key.
	both := issuersOf(spiffebundle.FromX509Authorities(td, []*x509.Certificate{ca.cert, otherCA.cert}))
	if !bytes.Equal(ca.cert.RawSubject, otherCA.cert.RawSubject) {
		t.Fatal("test setup: the replacement root must share the tainted root's subject")
	}
	taintCA := client.Taint{X509Authorities: []*x509.Certificate{ca.cert}}
	taintOther := client.Taint{X509Authorities: []*x509.Certificate{otherCA.cert}}
	noAKI := ca.svidWithoutAKI(t, "/w", 10, time.Hour)
	e2 := e
	e2.DNSNames = nil // for noAKI

	tests := []struct {
		name    string
		entry   *cache.Entry
		svid    *x509svid.SVID
		trusted *trustedIssuers
		taint   client.Taint
		now     time.Time
		want    reason
	}{
		{"no SVID yet", &e, nil, trusted, client.Taint{}, t0, reasonNew},
		{"fresh SVID", &e, good, trusted, client.Taint{}, t0.Add(time.Minute), none},
		{"just before rotation time", &e, good, trusted, client.Taint{}, rot.Add(-time.Second), none},
		{"at rotation time", &e, good, trusted, client.Taint{}, rot, reasonRotate},
		{"expired", &e, good, trusted, client.Taint{}, t0.Add(time.Hour), reasonExpired},
		{"entry SPIFFE ID changed", &e, ca.svid(t, "/old", 8, time.Hour, "a.example", "b.example"), trusted, client.Taint{}, t0, reasonID},
		{"entry DNS names changed", &e, ca.svid(t, "/w", 9, time.Hour, "a.example"), trusted, client.Taint{}, t0, reasonDNS},
		{"signing CA left the bundle", &e, good, rotated, client.Taint{}, t0, reasonIssuer},
		{"bundle not known yet: keep", &e, good, nil, client.Taint{}, t0, none},
		{"issuing root tainted (key ID match)", &e, good, both, taintCA, t0.Add(time.Minute), reasonTainted},
		{"replacement root with the same subject tainted", &e, good, both, taintOther, t0.Add(time.Minute), none},
		{"no authority key ID, signed by the tainted root", &e2, noAKI, both, taintCA, t0.Add(time.Minute), reasonTainted},
		{"no authority key ID, replacement root tainted", &e2, noAKI, both, taintOther, t0.Add(time.Minute), none},
		{"tainted and expired: expired", &e, good, both, taintCA, t0.Add(time.Hour), reasonExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := due(tc.entry, tc.svid, tc.trusted, tc.taint, tc.now); got != tc.want {
				t.Fatalf("due = %q, want %q", got, tc.want)
			}
		})
	}
}

// An entry whose x509_ttl is shortened gets a new SVID at once, rather than
// serving the longer-lived one until its rotation; a lengthened TTL waits.
func TestDueOnShortenedTTL(t *testing.T) {
	ca := newCA(t)
	trusted := issuersOf(spiffebundle.FromX509Authorities(td, []*x509.Certificate{ca.cert}))
	svid := ca.svid(t, "/w", 7, time.Hour)
	for _, tc := range []struct {
		ttl  time.Duration
		want reason
	}{
		{0, none},                     // the server's default: unknown here
		{time.Hour, none},             // what it was signed with
		{10 * time.Minute, reasonTTL}, // shortened
		{2 * time.Hour, none},         // lengthened: at the next rotation
	} {
		e := cache.Entry{ID: "e", SPIFFEID: spiffeid.RequireFromPath(td, "/w"), X509TTL: tc.ttl}
		if got := due(&e, svid, trusted, client.Taint{}, t0.Add(time.Minute)); got != tc.want {
			t.Errorf("x509_ttl %v: due = %q, want %q", tc.ttl, got, tc.want)
		}
	}
}
