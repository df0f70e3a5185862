package adminapi

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var fedTD = spiffeid.RequireTrustDomainFromString("other.org")

func testBundle(t testing.TB) (*spiffebundle.Bundle, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other.org root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	b := spiffebundle.New(fedTD)
	b.AddX509Authority(root)
	if err := b.AddJWTAuthority("kid1", &key.PublicKey); err != nil {
		t.Fatal(err)
	}
	return b, root
}

func TestParseBundleFile(t *testing.T) {
	b, root := testBundle(t)
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pemRoot := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})

	got, err := ParseBundleFile(fedTD, bytes.NewReader(doc), "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	if got.TrustDomain != "other.org" || len(got.X509Authorities) != 1 || !bytes.Equal(got.X509Authorities[0], root.Raw) ||
		len(got.JwtAuthorities) != 1 || got.JwtAuthorities[0].KeyId != "kid1" {
		t.Fatalf("spiffe: %v", got)
	}
	// What the admin API makes of it again is the same bundle.
	back, err := BundleFromProto(got)
	if err != nil || !back.X509Bundle().Equal(b.X509Bundle()) || !back.JWTBundle().Equal(b.JWTBundle()) {
		t.Fatalf("round trip: %v", err)
	}
	got, err = ParseBundleFile(fedTD, bytes.NewReader(pemRoot), "pem")
	if err != nil || len(got.X509Authorities) != 1 || len(got.JwtAuthorities) != 0 {
		t.Fatalf("pem: %v, %v", got, err)
	}

	bad := []struct{ name, in, format, want string }{
		{"empty PEM", "", "pem", "holds no X.509 root"},
		{"PEM without certificates", "hello\n", "pem", "no PEM blocks found"},
		{"broken PEM certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "pem", "parse PEM bundle"},
		{"document for pem", string(doc), "pem", "no PEM blocks found"},
		{"PEM for spiffe", string(pemRoot), "spiffe", "parse SPIFFE bundle document"},
		{"no keys", `{"spiffe_sequence": 1}`, "spiffe", "no authorities found"},
		{"empty keys", `{"keys": []}`, "spiffe", "holds no X.509 root or JWT key"},
		{"jwt key without kid", `{"keys": [{"use": "jwt-svid", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}`, "spiffe", "parse SPIFFE bundle document"},
		{"unknown format", string(doc), "der", `want spiffe or pem`},
		{"too large", strings.Repeat(" ", maxBundleFile+1), "spiffe", "larger than"},
	}
	for _, tt := range bad {
		if _, err := ParseBundleFile(fedTD, strings.NewReader(tt.in), tt.format); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}

func FuzzParseBundleFile(f *testing.F) {
	b, root := testBundle(f)
	doc, err := b.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc, true)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), false)
	f.Add([]byte(`{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["AA=="]}]}`), true)
	f.Fuzz(func(t *testing.T, data []byte, spiffe bool) {
		format := "pem"
		if spiffe {
			format = "spiffe"
		}
		got, err := ParseBundleFile(fedTD, bytes.NewReader(data), format)
		if err != nil {
			return
		}
		// Whatever is accepted, the admin API accepts too.
		if len(got.X509Authorities)+len(got.JwtAuthorities) == 0 {
			t.Fatal("accepted a bundle with no authority")
		}
		if _, err := BundleFromProto(got); err != nil {
			t.Fatalf("accepted a bundle the admin API refuses: %v", err)
		}
	})
}
