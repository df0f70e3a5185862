// Package x509poptest makes a real test PKI for x509pop tests: roots,
// intermediates and node certificates with real keys, and their PEM files.
package x509poptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority: a root, or an intermediate under one.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is the CA and the intermediates above it, up to (not
	// including) the root: what a node sends after its leaf.
	Chain []*x509.Certificate
}

// NewRoot makes a self-signed ECDSA P-256 root named cn.
func NewRoot(t testing.TB, cn string) *CA {
	t.Helper()
	key := ecKey(t)
	tmpl := caTemplate(cn)
	return &CA{Cert: create(t, tmpl, tmpl, key.Public(), key), Key: key}
}

// Intermediate makes a CA under ca.
func (ca *CA) Intermediate(t testing.TB, cn string) *CA {
	t.Helper()
	key := ecKey(t)
	cert := create(t, caTemplate(cn), ca.Cert, key.Public(), ca.Key)
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{cert}, ca.Chain...)}
}

// Leaf describes a node certificate; the zero value is a valid one for a
// P-256 key, valid for an hour, for client authentication.
type Leaf struct {
	CommonName  string
	Key         crypto.Signer      // nil: a new P-256 key
	NotBefore   time.Time          // zero: an hour ago
	NotAfter    time.Time          // zero: an hour from now
	ExtKeyUsage []x509.ExtKeyUsage // nil: clientAuth
	KeyUsage    x509.KeyUsage      // zero: digitalSignature
	URIs        []string
	Serial      int64 // zero: random
}

// Issue signs a node certificate as l describes; it returns the
// certificate and its key.
func (ca *CA) Issue(t testing.TB, l Leaf) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	if l.Key == nil {
		l.Key = ecKey(t)
	}
	now := time.Now()
	if l.NotBefore.IsZero() {
		l.NotBefore = now.Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = now.Add(time.Hour)
	}
	if l.ExtKeyUsage == nil {
		l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if l.KeyUsage == 0 {
		l.KeyUsage = x509.KeyUsageDigitalSignature
	}
	serial := big.NewInt(l.Serial)
	if l.Serial == 0 {
		serial = randSerial(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: l.CommonName},
		NotBefore: l.NotBefore, NotAfter: l.NotAfter,
		KeyUsage: l.KeyUsage, ExtKeyUsage: l.ExtKeyUsage,
	}
	for _, u := range l.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	return create(t, tmpl, ca.Cert, l.Key.Public(), ca.Key), l.Key
}

// WritePEM writes certs to path (0644).
func WritePEM(t testing.TB, path string, certs ...*x509.Certificate) {
	t.Helper()
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// WriteKey writes key to path as PKCS #8 PEM (0600).
func WriteKey(t testing.TB, path string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// NodeFiles issues a node certificate as l describes and writes it (with
// ca's chain) and its key under dir; it returns the certificate and the
// two paths.
func (ca *CA) NodeFiles(t testing.TB, dir string, l Leaf) (cert *x509.Certificate, certPath, keyPath string) {
	t.Helper()
	cert, key := ca.Issue(t, l)
	certPath, keyPath = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	WritePEM(t, certPath, append([]*x509.Certificate{cert}, ca.Chain...)...)
	WriteKey(t, keyPath, key)
	return cert, certPath, keyPath
}

func caTemplate(cn string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
}

func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func randSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}
