package ca_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestSignX509SVID(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	clk := newFakeClock(now)
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: time.Hour})
	root := roots(t, m)[0]
	bundle := bundleOf(t, m)
	id := spiffeid.RequireFromPath(td, "/ns/payments/sa/checkout")

	ecP384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)

	tests := []struct {
		name         string
		key          crypto.Signer
		ttl          time.Duration
		dns          []string
		wantNotAfter time.Time
	}{
		{"P-256, default TTL", p256(t), 0, nil, now.Add(time.Hour)},
		{"P-384, explicit TTL", ecP384, 10 * time.Minute, nil, now.Add(10 * time.Minute)},
		{"RSA-2048 with DNS names", rsa2048, 0, []string{"web.example.org", "*.web.example.org"}, now.Add(time.Hour)},
		{"Ed25519", ed, 0, nil, now.Add(time.Hour)},
		{"TTL beyond the CA is clipped", p256(t), 100 * time.Hour, nil, root.NotAfter},
	}
	var serials []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := m.SignX509SVID(context.Background(), makeCSR(t, tt.key), id, tt.ttl, tt.dns)
			if err != nil {
				t.Fatalf("SignX509SVID: %v", err)
			}
			if len(certs) != 1 {
				t.Fatalf("chain has %d certificates, want the leaf only", len(certs))
			}
			leaf := certs[0]

			// go-spiffe accepts it as an X509-SVID with its key...
			keyDER, err := x509.MarshalPKCS8PrivateKey(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			svid, err := x509svid.ParseRaw(leaf.Raw, keyDER)
			if err != nil {
				t.Fatalf("x509svid.ParseRaw: %v", err)
			}
			if svid.ID != id {
				t.Errorf("SVID ID = %s, want %s", svid.ID, id)
			}
			// ...and verifies it against the published bundle.
			gotID, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now))
			if err != nil {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			if gotID != id {
				t.Errorf("verified ID = %s, want %s", gotID, id)
			}

			wantCN := ""
			if len(tt.dns) > 0 {
				wantCN = tt.dns[0]
			}
			checks := []struct {
				name string
				ok   bool
			}{
				{"exactly one URI SAN, the ID (CSR's ignored)", len(leaf.URIs) == 1 && leaf.URIs[0].String() == id.String()},
				{"DNS SANs from the entry only", slices.Equal(leaf.DNSNames, tt.dns)},
				{"CN is the first DNS name", leaf.Subject.CommonName == wantCN},
				{"basic constraints present, not a CA", leaf.BasicConstraintsValid && !leaf.IsCA},
				{"key usage digitalSignature only", leaf.KeyUsage == x509.KeyUsageDigitalSignature},
				{"key usage critical", extCritical(leaf, "2.5.29.15")},
				{"EKU serverAuth+clientAuth", slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})},
				{"NotBefore backdated 10s", leaf.NotBefore.Equal(now.Add(-10 * time.Second))},
				{"NotAfter", leaf.NotAfter.Equal(tt.wantNotAfter)},
				{"NotAfter within the CA's", !leaf.NotAfter.After(root.NotAfter)},
				{"random serial", leaf.SerialNumber.BitLen() > 120},
				{"AuthorityKeyId is the root's", string(leaf.AuthorityKeyId) == string(root.SubjectKeyId) && len(root.SubjectKeyId) > 0},
				{"SubjectKeyId set", len(leaf.SubjectKeyId) == 20},
				{"signed by the root", leaf.CheckSignatureFrom(root) == nil},
				{"public key is the CSR's", publicKeyEqual(leaf.PublicKey, tt.key.Public())},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("%s: failed", c.name)
				}
			}
			serials = append(serials, leaf.SerialNumber.String())
		})
	}
	slices.Sort(serials)
	if len(slices.Compact(serials)) != len(tests) {
		t.Error("serial numbers repeat")
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func TestSignX509SVIDRefuses(t *testing.T) {
	m := newManager(t, ca.Config{})
	id := spiffeid.RequireFromPath(td, "/w")
	good := makeCSR(t, p256(t))

	badSig := slices.Clone(good)
	badSig[len(badSig)-5] ^= 0xff // inside the signature BIT STRING

	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)

	tests := []struct {
		name    string
		csr     []byte
		id      spiffeid.ID
		ttl     time.Duration
		dns     []string
		wantErr string
	}{
		{"garbage", []byte("not a CSR"), id, 0, nil, "parse CSR"},
		{"empty", nil, id, 0, nil, "CSR is empty"},
		{"bad signature", badSig, id, 0, nil, "CSR signature"},
		{"RSA-1024", makeCSR(t, rsa1024), id, 0, nil, "too small"},
		{"P-224", makeCSR(t, p224), id, 0, nil, "unsupported ECDSA curve"},
		{"foreign trust domain", good, spiffeid.RequireFromString("spiffe://other.org/w"), 0, nil, "not in trust domain"},
		{"bare trust domain", good, spiffeid.RequireFromString("spiffe://example.org"), 0, nil, "bare trust domain"},
		{"negative TTL", good, id, -time.Second, nil, "negative TTL"},
		{"bad DNS name", good, id, 0, []string{"a b"}, "invalid DNS name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := m.SignX509SVID(context.Background(), tt.csr, tt.id, tt.ttl, tt.dns)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v (certs %d), want one containing %q", err, len(certs), tt.wantErr)
			}
		})
	}
}

func TestSignServerSVID(t *testing.T) {
	m := newManager(t, ca.Config{})
	svid, err := m.SignServerSVID(context.Background(), []string{"signet.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if want := spiffeid.RequireFromString("spiffe://example.org/signet/server"); svid.ID != want || m.ServerID() != want {
		t.Errorf("server ID = %s / %s, want %s", svid.ID, m.ServerID(), want)
	}
	id, _, err := x509svid.Verify(svid.Certificates, bundleOf(t, m))
	if err != nil || id != svid.ID {
		t.Fatalf("Verify = %s, %v", id, err)
	}
	if !publicKeyEqual(svid.Certificates[0].PublicKey, svid.PrivateKey.Public()) {
		t.Error("server SVID key does not match its certificate")
	}
	if !slices.Equal(svid.Certificates[0].DNSNames, []string{"signet.example.org"}) {
		t.Errorf("DNS names = %q", svid.Certificates[0].DNSNames)
	}
}

func TestSignX509SVIDEncodingEdges(t *testing.T) {
	longPath := "/" + strings.Repeat("a", 1990)
	manyDNS := make([]string, 30)
	for i := range manyDNS {
		manyDNS[i] = strings.Repeat("d", 40) + ".example.org"
	}
	tests := []struct {
		name string
		now  time.Time
		path string
		dns  []string
	}{
		{"2048-byte-ish ID (long DER lengths)", time.Now(), longPath, nil},
		{"many DNS names", time.Now(), "/w", manyDNS},
		{"NotAfter past 2049 (GeneralizedTime)", time.Date(2049, 12, 31, 23, 30, 0, 0, time.UTC), "/w", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now.Truncate(time.Second)
			m := newManager(t, ca.Config{Clock: newFakeClock(now).Now})
			id := spiffeid.RequireFromPath(td, tt.path)
			certs, err := m.SignX509SVID(context.Background(), makeCSR(t, p256(t)), id, 0, tt.dns)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := x509svid.Verify(certs, bundleOf(t, m), x509svid.WithTime(now))
			if err != nil || got != id {
				t.Fatalf("Verify = %v, %v", got, err)
			}
			leaf := certs[0]
			if !leaf.NotAfter.Equal(now.Add(ca.DefaultSVIDTTL)) || !leaf.NotBefore.Equal(now.Add(-10*time.Second)) {
				t.Errorf("validity %v - %v", leaf.NotBefore, leaf.NotAfter)
			}
			if !slices.Equal(leaf.DNSNames, tt.dns) {
				t.Errorf("DNS names = %d, want %d", len(leaf.DNSNames), len(tt.dns))
			}
		})
	}
}

func TestSignX509SVIDDER(t *testing.T) {
	m := newManager(t, ca.Config{})
	id := spiffeid.RequireFromPath(td, "/w")
	signed, err := m.SignX509SVIDDER(context.Background(), makeCSR(t, p256(t)), id, 0, []string{"w.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	got, chains, err := x509svid.ParseAndVerify(signed.Chain, bundleOf(t, m))
	if err != nil || got != id {
		t.Fatalf("ParseAndVerify = %s, %v", got, err)
	}
	if leaf := chains[0][0]; !leaf.NotAfter.Equal(signed.NotAfter) {
		t.Errorf("NotAfter = %v, the certificate says %v", signed.NotAfter, leaf.NotAfter)
	}
	if _, err := m.SignX509SVIDDER(context.Background(), []byte("junk"), id, 0, nil); !errors.Is(err, ca.ErrInvalidRequest) {
		t.Errorf("garbage CSR: err = %v, want ErrInvalidRequest", err)
	}
}

func TestShortTTLBackdateKeepsHalfLifeAhead(t *testing.T) {
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := newFakeClock(base)
	m := newManager(t, ca.Config{SVIDTTL: 10 * time.Second, Clock: clk.Now})
	id := spiffeid.RequireFromPath(td, "/short")
	// Certificates carry whole seconds: sign at whole and fractional times.
	for _, frac := range []time.Duration{0, 50 * time.Millisecond, 500 * time.Millisecond, 950 * time.Millisecond} {
		now := base.Add(frac)
		clk.Set(now)
		for _, ttl := range []time.Duration{time.Second, 2 * time.Second, 10 * time.Second, time.Minute, time.Hour} {
			certs, err := m.SignX509SVID(context.Background(), makeCSR(t, p256(t)), id, ttl, nil)
			if err != nil {
				t.Fatal(err)
			}
			leaf := certs[0]
			// Backdated by a tenth of the TTL (at most 10 s) in whole
			// seconds, plus the fraction of the current second.
			back := now.Sub(leaf.NotBefore)
			want := min(10*time.Second, ttl/10).Truncate(time.Second) + frac
			if back != want {
				t.Errorf("at %s, ttl %s: backdated %s, want %s", now, ttl, back, want)
			}
			// (Longer TTLs meet the CA's own NotAfter, 6 x 10 s here.)
			if life := leaf.NotAfter.Sub(now); ttl <= 10*time.Second && life < ttl {
				t.Errorf("at %s, ttl %s: valid for %s after signing, want at least the TTL", now, ttl, life)
			}
			// Agents rotate at half of the validity: that must lie in the
			// future, or they would sign again at once, forever.
			half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
			if !half.After(now) {
				t.Errorf("at %s, ttl %s: half-life %s is not after the signing time", now, ttl, half)
			}
		}
	}
}
