package certfile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pair returns a self-signed certificate with serial n and its key, as PEM.
func pair(t *testing.T, n int64) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// replace swaps path's content by rename, as a Secret update or certbot does.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func serial(t *testing.T, r *Reloader) int64 {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.Int64()
}

func TestReloader(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := pair(t, 1)
	c2, k2 := pair(t, 2)
	c3, k3 := pair(t, 3)

	// A bad pair fails the start, naming what it is.
	replace(t, cf, c1)
	replace(t, kf, k2)
	if _, err := New(cf, kf, "test certificate", nil); err == nil || !strings.Contains(err.Error(), "test certificate") {
		t.Fatalf("mismatched pair at start: %v", err)
	}
	if _, err := New(filepath.Join(dir, "missing"), kf, "test certificate", nil); err == nil {
		t.Fatal("missing file at start accepted")
	}

	replace(t, kf, k1)
	var log bytes.Buffer
	r, err := New(cf, kf, "test certificate", slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if s := serial(t, r); s != 1 {
		t.Fatalf("serial %d, want 1", s)
	}

	// A renewal is served at the next handshake.
	replace(t, cf, c2)
	replace(t, kf, k2)
	if s := serial(t, r); s != 2 {
		t.Fatalf("after renewal: serial %d, want 2", s)
	}

	// Half-written renewal (new cert, old key): the previous certificate
	// stays, with one warning however many handshakes see it.
	replace(t, cf, c3)
	for range 3 {
		if s := serial(t, r); s != 2 {
			t.Fatalf("with a mismatched pair: serial %d, want the previous 2", s)
		}
	}
	if n := strings.Count(log.String(), "serving the previous certificate"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, log.String())
	}
	// The key arrives: the new pair is served.
	replace(t, kf, k3)
	if s := serial(t, r); s != 3 {
		t.Fatalf("after the key arrived: serial %d, want 3", s)
	}
	// A deleted file keeps the last certificate too.
	if err := os.Remove(cf); err != nil {
		t.Fatal(err)
	}
	if s := serial(t, r); s != 3 {
		t.Fatalf("with the certificate file gone: serial %d, want 3", s)
	}
	if _, err := r.load(); err == nil {
		t.Error("load reports no error with the certificate file gone")
	}
}

// A Reloader works as a real TLS server's certificate source.
func TestReloaderServesTLS(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := pair(t, 7)
	replace(t, cf, c1)
	replace(t, kf, k1)
	r, err := New(cf, kf, "test certificate", nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(c1)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if s := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 7 {
		t.Errorf("served serial %d, want 7", s)
	}
}
