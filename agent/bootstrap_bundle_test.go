package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/servertest"
)

var bundleTD = spiffeid.RequireTrustDomainFromString("example.org")

// testCert returns a self-signed certificate, a CA or not, and its PEM.
func testCert(t testing.TB, name string, isCA bool) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// bundleDoc is a SPIFFE bundle document with roots and JWT keys.
func bundleDoc(t testing.TB, td spiffeid.TrustDomain, roots []*x509.Certificate, jwtKeys int) []byte {
	t.Helper()
	b := spiffebundle.New(td)
	for _, r := range roots {
		b.AddX509Authority(r)
	}
	for i := range jwtKeys {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddJWTAuthority(fmt.Sprintf("k%d", i), &key.PublicKey); err != nil {
			t.Fatal(err)
		}
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestCheckTrustBundleURL(t *testing.T) {
	tests := []struct {
		url, wantErr string
	}{
		{"https://signet.example.org:8443/bundle?x=1", ""},
		{"HTTPS://signet.example.org", ""},
		{"http://127.0.0.1:8080/bundle.pem", ""},
		{"http://127.8.9.10/bundle.pem", ""},
		{"http://[::1]:8080/", ""},
		{"http://LocalHost:8080/", ""},
		{"http://signet.example.org/bundle.pem", "plain http is allowed only to a loopback host"},
		{"http://10.0.0.1/bundle.pem", "plain http is allowed only to a loopback host"},
		{"http://127.0.0.1.example.org/", "plain http is allowed only to a loopback host"},
		{"ftp://signet.example.org/bundle.pem", "want an https URL"},
		{"file:///etc/signet/bundle.pem", "want https://host"},
		{"signet.example.org/bundle.pem", "want https://host"},
		{"https://", "want https://host"},
		{"https://:8443/", "want https://host"},
		{"https://user@signet.example.org/", "user info in the URL is not allowed"},
		{"https://user:secret@signet.example.org/", "user info in the URL is not allowed"},
		{"https://signet.example.org/%zz", "invalid URL escape"},
	}
	for _, tt := range tests {
		_, err := checkTrustBundleURL(tt.url)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.url, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: err = %v, want one containing %q", tt.url, err, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", tt.url, err)
		}
	}
}

func TestParseTrustBundle(t *testing.T) {
	ca, caPEM := testCert(t, "root", true)
	ca2, ca2PEM := testCert(t, "root 2", true)
	_, leafPEM := testCert(t, "leaf", false)
	other := spiffeid.RequireTrustDomainFromString("other.org")
	tests := []struct {
		name    string
		format  string
		data    []byte
		want    []*x509.Certificate
		wantErr string
	}{
		{"pem", "pem", caPEM, []*x509.Certificate{ca}, ""},
		{"pem, two roots and other blocks", "pem", append(append([]byte("# comment\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), caPEM...), ca2PEM...), []*x509.Certificate{ca, ca2}, ""},
		{"pem, a leaf beside a root", "pem", append(append([]byte{}, leafPEM...), caPEM...), nil, ""},
		{"pem, leaf only", "pem", leafPEM, nil, "none of its 1 certificates is a CA certificate"},
		{"pem, empty", "pem", nil, nil, "no PEM CERTIFICATE block found"},
		{"pem, an HTML page", "pem", []byte("<html>Sign in to the Wi-Fi</html>"), nil, "no PEM CERTIFICATE block found"},
		{"pem, bad certificate", "pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), nil, "parse certificate"},
		{"pem, given a SPIFFE document", "pem", bundleDoc(t, bundleTD, []*x509.Certificate{ca}, 1), nil, "no PEM CERTIFICATE block found"},
		{"spiffe", "spiffe", bundleDoc(t, bundleTD, []*x509.Certificate{ca, ca2}, 1), []*x509.Certificate{ca, ca2}, ""},
		// The document names no trust domain: nothing to refuse here.
		{"spiffe, another trust domain's document", "spiffe", bundleDoc(t, other, []*x509.Certificate{ca}, 0), []*x509.Certificate{ca}, ""},
		{"spiffe, JWT keys only", "spiffe", bundleDoc(t, bundleTD, nil, 2), nil, "holds no X.509 authority (only 2 JWT keys)"},
		{"spiffe, given PEM", "spiffe", caPEM, nil, "unable to parse JWKS"},
		{"spiffe, empty key set", "spiffe", []byte(`{"keys": []}`), nil, "holds no X.509 authority (only 0 JWT keys)"},
		{"spiffe, no key set", "spiffe", []byte(`{}`), nil, "no authorities found"},
		{"unknown format", "der", ca.Raw, nil, `unknown trust bundle format "der"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTrustBundle(tt.data, tt.format, bundleTD)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && !sameCerts(got, tt.want) {
				t.Fatalf("got %d roots %v, want %v", len(got), fingerprints(got), fingerprints(tt.want))
			}
		})
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func FuzzParseTrustBundle(f *testing.F) {
	ca, caPEM := testCert(f, "root", true)
	f.Add(caPEM, true)
	f.Add(bundleDoc(f, bundleTD, []*x509.Certificate{ca}, 1), false)
	f.Add([]byte(`{"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["AAAA"]}]}`), false)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, isPEM bool) {
		format := TrustBundleFormatSPIFFE
		if isPEM {
			format = TrustBundleFormatPEM
		}
		roots, err := parseTrustBundle(data, format, bundleTD)
		if err == nil && len(roots) == 0 {
			t.Fatal("no roots and no error")
		}
	})
}

// tlsBundleServer is a real HTTPS server (httptest) serving h, with conf if
// not nil; roots trust its certificate.
func tlsBundleServer(t *testing.T, h http.Handler, conf *tls.Config) (srv *httptest.Server, roots *x509.CertPool) {
	t.Helper()
	srv = httptest.NewUnstartedServer(h)
	srv.TLS = conf
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots = x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return srv, roots
}

// fetchOnce downloads url once, as format, trusting roots (nil: the system's).
func fetchOnce(t *testing.T, url, format string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	t.Helper()
	d, err := newBundleDownload(url, format, bundleTD, roots)
	if err != nil {
		t.Fatal(err)
	}
	return d.fetch(context.Background())
}

func TestBundleDownloadFetch(t *testing.T) {
	ca, caPEM := testCert(t, "root", true)
	_, leafPEM := testCert(t, "leaf", false)
	doc := bundleDoc(t, bundleTD, []*x509.Certificate{ca}, 1)
	mux := http.NewServeMux()
	serve := func(path string, body []byte) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) { w.Write(body) })
	}
	serve("/bundle.pem", caPEM)
	serve("/bundle.json", doc)
	serve("/leaf.pem", leafPEM)
	serve("/jwt-only.json", bundleDoc(t, bundleTD, nil, 1))
	serve("/huge.pem", append(caPEM, make([]byte, maxTrustBundleSize)...))
	serve("/just-fits.pem", append(caPEM, make([]byte, maxTrustBundleSize-len(caPEM))...))
	mux.Handle("GET /moved", http.RedirectHandler("/bundle.pem", http.StatusFound))
	mux.Handle("GET /to-http", http.RedirectHandler("http://bundle.example.org/bundle.pem", http.StatusFound))
	srv, roots := tlsBundleServer(t, mux, nil)

	tests := []struct {
		path, format string
		want         []*x509.Certificate
		wantErr      string
	}{
		{"/bundle.pem", "pem", []*x509.Certificate{ca}, ""},
		{"/bundle.json", "spiffe", []*x509.Certificate{ca}, ""},
		{"/moved", "pem", []*x509.Certificate{ca}, ""},
		{"/just-fits.pem", "pem", []*x509.Certificate{ca}, ""},
		{"/nothing-here", "pem", nil, "GET " + srv.URL + "/nothing-here: status 404 Not Found"},
		{"/bundle.json", "pem", nil, "trust bundle from " + srv.URL + "/bundle.json (format pem): no PEM CERTIFICATE block found"},
		{"/bundle.pem", "spiffe", nil, "trust bundle from " + srv.URL + "/bundle.pem (format spiffe): spiffebundle: unable to parse JWKS"},
		{"/leaf.pem", "pem", nil, "(format pem): none of its 1 certificates is a CA certificate"},
		{"/jwt-only.json", "spiffe", nil, "(format spiffe): the SPIFFE bundle document holds no X.509 authority"},
		{"/huge.pem", "pem", nil, fmt.Sprintf("GET %s/huge.pem: the body is larger than %d bytes", srv.URL, maxTrustBundleSize)},
		{"/to-http", "pem", nil, `redirected to "http://bundle.example.org/bundle.pem": plain http is allowed only to a loopback host`},
	}
	for _, tt := range tests {
		t.Run(tt.format+tt.path, func(t *testing.T) {
			got, err := fetchOnce(t, srv.URL+tt.path, tt.format, roots)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameCerts(got, tt.want) {
				t.Fatalf("got roots %v, want %v", fingerprints(got), fingerprints(tt.want))
			}
		})
	}

	// Without injected roots the download is verified against the
	// system's, which do not hold httptest's certificate.
	if _, err := fetchOnce(t, srv.URL+"/bundle.pem", "pem", nil); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("fetch with the system's roots: err = %v, want an unknown authority", err)
	}
}

// Plain http reaches a loopback host, and no other.
func TestBundleDownloadPlainHTTP(t *testing.T) {
	_, caPEM := testCert(t, "root", true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(caPEM) }))
	t.Cleanup(srv.Close)
	if roots, err := fetchOnce(t, srv.URL+"/bundle.pem", "pem", nil); err != nil || len(roots) != 1 {
		t.Fatalf("fetch over http from %s: %d roots, %v", srv.URL, len(roots), err)
	}
	if _, err := newBundleDownload("http://bundle.example.org/bundle.pem", "pem", bundleTD, nil); err == nil || !strings.Contains(err.Error(), "only to a loopback host") {
		t.Fatalf("http to a remote host: err = %v", err)
	}
}

// TLS below 1.2 is refused.
func TestBundleDownloadRefusesOldTLS(t *testing.T) {
	_, caPEM := testCert(t, "root", true)
	srv, roots := tlsBundleServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(caPEM) }),
		&tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if _, err := fetchOnce(t, srv.URL, "pem", roots); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("fetch from a TLS 1.1 server: err = %v, want a protocol version error", err)
	}
}

// A failed download is retried, each failure logged once with the URL;
// the success logs the roots' fingerprints, never their contents.
func TestBundleDownloadRetries(t *testing.T) {
	ca, caPEM := testCert(t, "root", true)
	var calls atomic.Int32
	srv, roots := tlsBundleServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) <= 2 {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		w.Write(caPEM)
	}), nil)
	d, err := newBundleDownload(srv.URL+"/b.pem", "pem", bundleTD, roots)
	if err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	got, err := d.retry(context.Background(), logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	if !sameCerts(got, []*x509.Certificate{ca}) {
		t.Fatalf("got roots %v", fingerprints(got))
	}
	out := logs.String()
	if n := strings.Count(out, `msg="trust bundle download failed; retrying" url=`+srv.URL+"/b.pem"); n != 2 || !strings.Contains(out, "status 503 Service Unavailable") {
		t.Fatalf("%d failure lines naming the URL and status, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "roots=1 sha256="+fingerprints(got)[0]) {
		t.Fatalf("no success line with the fingerprint:\n%s", out)
	}
	body := strings.Join(strings.Split(string(caPEM), "\n")[1:3], "")
	if strings.Contains(out, body) || strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("the log holds the bundle's contents:\n%s", out)
	}

	// A download that never succeeds ends with ctx.
	calls.Store(-1 << 30)
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	if _, err := d.retry(ctx, logs.Logger()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("retry until ctx ends: err = %v", err)
	}
}

// TestRunDownloadsTrustBundle: an agent given only a trust_bundle_url (a
// real server's roots served over HTTPS) waits for the download on its
// first start, serving nothing yet and saying so on /ready, then attests
// with a join token and serves an SVID to go-spiffe. Restarted while the
// URL is down, it goes on with the server bundle it persisted.
func TestRunDownloadsTrustBundle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := servertest.Start(t, bundleTD, nil)
	const agentID = "spiffe://example.org/agent/url-bootstrapped"
	tok, err := s.Admin().CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	entry := &api.Entry{SpiffeId: "spiffe://example.org/workload", ParentId: agentID,
		Selectors: []*api.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}}}
	if _, err := s.Admin().CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry}); err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	srv, roots := tlsBundleServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Write(s.BundlePEM())
	}), nil)
	dir := t.TempDir()
	cfg := Config{ServerAddress: s.Addr(), TrustDomain: bundleTD.Name(), DataDir: filepath.Join(dir, "data"),
		JoinToken: tok.Token, TrustBundleURL: srv.URL + "/bundle.pem", SocketPath: filepath.Join(dir, "agent.sock"),
		trustBundleURLRoots: roots}

	a := runAgent(t, cfg)
	a.logs.WaitFor(t, `msg="trust bundle download failed; retrying" component=bootstrap url=`+cfg.TrustBundleURL, 30*time.Second)
	resp, err := http.Get(a.health + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "not downloaded yet from " + cfg.TrustBundleURL; resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), want) {
		t.Fatalf("/ready = %d %q, want 503 with %q", resp.StatusCode, body, want)
	}
	down.Store(false)
	a.waitReady(t)
	svid, err := spiffewl.FetchX509SVID(ctx, spiffewl.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID.String() != entry.SpiffeId {
		t.Fatalf("SVID %s, want %s", svid.ID, entry.SpiffeId)
	}
	a.logs.WaitFor(t, `msg="trust bundle downloaded" component=bootstrap url=`+cfg.TrustBundleURL+" format=pem roots=1", time.Second)

	a.stop(t)
	down.Store(true)
	cfg.JoinToken = ""
	b := runAgent(t, cfg)
	b.logs.WaitFor(t, `msg="trust bundle download failed; going on with the server bundle persisted at the last run" component=bootstrap url=`+cfg.TrustBundleURL, 30*time.Second)
	b.waitReady(t)
	svid, err = spiffewl.FetchX509SVID(ctx, spiffewl.WithAddr("unix://"+cfg.SocketPath))
	if err != nil || svid.ID.String() != entry.SpiffeId {
		t.Fatalf("SVID after a restart while the URL is down: %v, %v", svid, err)
	}
}

// testAgent is Run in a goroutine, logging to logs.
type testAgent struct {
	logs   logtest.Buffer
	ready  chan ReadyInfo
	done   chan error
	health string
	cancel context.CancelFunc
}

func runAgent(t *testing.T, cfg Config) *testAgent {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &testAgent{ready: make(chan ReadyInfo, 1), done: make(chan error, 1), health: "http://" + hl.Addr().String()}
	cfg.HealthListener = hl
	cfg.OnReady = func(info ReadyInfo) { a.ready <- info }
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- Run(ctx, cfg, a.logs.Logger()) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *testAgent) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-a.ready:
	case err := <-a.done:
		t.Fatalf("agent exited before ready: %v\n%s", err, a.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent not ready within 60s:\n%s", a.logs.String())
	}
}

// stop stops the agent; later calls do nothing.
func (a *testAgent) stop(t *testing.T) {
	a.cancel()
	if err, ok := <-a.done; ok {
		close(a.done)
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}
