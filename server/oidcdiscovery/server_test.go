package oidcdiscovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/oidcdiscovery/oidctest"
	"github.com/signetid/signet/server/store"
)

// serve runs a Server until the test ends and checks that it stops cleanly.
func serve(t *testing.T, cfg Config, src *bundleSource, log *logtest.Buffer) *Server {
	t.Helper()
	s, err := NewServer(Options{Config: cfg, Bundle: src.bundle, Logger: log.Logger()})
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return within 5s of its context ending")
		}
	})
	return s
}

func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// presented is the certificate the server presents now, to a client that
// trusts roots.
func presented(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

func TestServeHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := oidctest.WriteCert(t, certFile, keyFile, "127.0.0.1")
	src := newBundleSource(t)
	kid, _ := src.newKey(t, store.JWTAuthority)
	var log logtest.Buffer
	s := serve(t, Config{Listen: "127.0.0.1:0", Issuer: "https://oidc.example.org", CertFile: certFile, KeyFile: keyFile}, src, &log)
	log.WaitFor(t, "address="+s.Addr(), 5*time.Second)
	// The certificate names 127.0.0.1, not oidc.example.org: said at start.
	if n := strings.Count(log.String(), "does not name the issuer's host"); n != 1 {
		t.Errorf("%d warnings about the certificate's host, want 1:\n%s", n, log.String())
	}

	roots := x509.NewCertPool()
	roots.AddCert(first)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	if code, body := get(t, client, "https://"+s.Addr()+"/keys"); code != 200 || !strings.Contains(body, kid) {
		t.Fatalf("GET /keys over HTTPS: %d %s", code, body)
	}
	if _, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded; want TLS 1.2 at least")
	}
	if code, body := get(t, http.DefaultClient, "http://"+s.Addr()+"/keys"); code != http.StatusBadRequest {
		t.Errorf("plain HTTP on the HTTPS listener: %d %s, want Go's 400", code, body)
	}

	// A renewed certificate is served at the next handshake.
	second := oidctest.WriteCert(t, certFile, keyFile, "127.0.0.1")
	roots.AddCert(second)
	if got := presented(t, s.Addr(), roots); !got.Equal(second) {
		t.Fatalf("presented serial %s after the renewal, want the new %s", got.SerialNumber, second.SerialNumber)
	}
	// A broken renewal keeps the last good certificate, and says so once.
	if err := os.WriteFile(certFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got := presented(t, s.Addr(), roots); !got.Equal(second) {
			t.Fatalf("presented serial %s with unreadable files, want the previous %s", got.SerialNumber, second.SerialNumber)
		}
	}
	if n := strings.Count(log.String(), "serving the previous certificate"); n != 1 {
		t.Errorf("%d warnings about the unreadable certificate, want 1:\n%s", n, log.String())
	}
}

func TestServePlainHTTP(t *testing.T) {
	src := newBundleSource(t)
	kid, _ := src.newKey(t, store.JWTAuthority)
	var log logtest.Buffer
	s := serve(t, Config{Listen: "127.0.0.1:0", Issuer: "https://oidc.example.org/t"}, src, &log)
	if code, body := get(t, http.DefaultClient, "http://"+s.Addr()+"/t/keys"); code != 200 || !strings.Contains(body, kid) {
		t.Fatalf("GET /t/keys over HTTP: %d %s", code, body)
	}
	code, body := get(t, http.DefaultClient, "http://"+s.Addr()+"/t/.well-known/openid-configuration")
	if code != 200 || !strings.Contains(body, `"jwks_uri":"https://oidc.example.org/t/keys"`) {
		t.Fatalf("GET the discovery document over HTTP: %d %s", code, body)
	}
	if !strings.Contains(log.String(), "https=false") {
		t.Errorf("the start log does not say the listener is plain HTTP: %s", log.String())
	}
}

func TestNewServerRefuses(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	oidctest.WriteCert(t, certFile, keyFile, "127.0.0.1")
	otherKey := filepath.Join(dir, "other.key")
	oidctest.WriteCert(t, filepath.Join(dir, "other.crt"), otherKey, "127.0.0.1")
	src := newBundleSource(t)
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"missing certificate", Config{Listen: "127.0.0.1:0", Issuer: "https://o.example.org", CertFile: filepath.Join(dir, "none.crt"), KeyFile: keyFile}, "none.crt"},
		{"key of another certificate", Config{Listen: "127.0.0.1:0", Issuer: "https://o.example.org", CertFile: certFile, KeyFile: otherKey}, "does not match"},
		{"bad address", Config{Listen: "127.0.0.1:http-alt-x", Issuer: "https://o.example.org"}, "oidc_discovery listener"},
		{"bad issuer", Config{Listen: "127.0.0.1:0", Issuer: "https://o.example.org/"}, "trailing /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewServer(Options{Config: tt.cfg, Bundle: src.bundle})
			if err == nil {
				s.Close()
				t.Fatalf("NewServer accepted %+v", tt.cfg)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// A certificate for the issuer's host, in date: no warning.
func TestServeHTTPSCertificateForIssuer(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	oidctest.WriteCert(t, certFile, keyFile, "oidc.example.org")
	var log logtest.Buffer
	s := serve(t, Config{Listen: "127.0.0.1:0", Issuer: "https://oidc.example.org/tenant", CertFile: certFile, KeyFile: keyFile}, newBundleSource(t), &log)
	log.WaitFor(t, "address="+s.Addr(), 5*time.Second)
	if strings.Contains(log.String(), "level=WARN") {
		t.Errorf("warnings for a certificate that names the issuer's host:\n%s", log.String())
	}
}
