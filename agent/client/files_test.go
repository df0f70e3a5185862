package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func testSVID(t *testing.T) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://example.org/agent/n1")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

// The chain and key travel in one file, so one rename replaces both and a
// crash can never leave a key beside a certificate it does not match.
func TestSVIDFileHoldsChainAndKey(t *testing.T) {
	s := store{dir: t.TempDir()}
	want := testSVID(t)
	if err := s.saveSVID(want); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != SVIDFile {
		t.Fatalf("data dir holds %v, want only %s", entries, SVIDFile)
	}
	got, err := s.loadSVID()
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(want.Certificates[0]) || !want.PrivateKey.(*ecdsa.PrivateKey).Equal(got.PrivateKey) {
		t.Fatal("loaded SVID differs from the saved one")
	}
}

// An agent upgraded from the two-file layout keeps its identity, and the
// next save leaves one file.
func TestLegacyKeyFileIsReadThenRemoved(t *testing.T) {
	s := store{dir: t.TempDir()}
	old := testSVID(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(old.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(SVIDFile), encodeCerts(old.Certificates), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.path(legacyKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.loadSVID()
	if err != nil || got.ID != old.ID {
		t.Fatalf("load legacy layout: %v, %v", got, err)
	}
	if err := s.saveSVID(testSVID(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.dir, legacyKeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("legacy key file still there after a save: %v", err)
	}
	if _, err := s.loadSVID(); err != nil {
		t.Fatal(err)
	}
}

func TestSVIDFileWithoutKeyIsAnError(t *testing.T) {
	s := store{dir: t.TempDir()}
	if err := os.WriteFile(s.path(SVIDFile), encodeCerts(testSVID(t).Certificates), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.loadSVID(); err == nil {
		t.Fatal("loadSVID accepted a chain without a key")
	}
}
