package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

var fedTD = spiffeid.RequireTrustDomainFromString("b.org")

// testRoot is a self-signed CA certificate naming trust domain td in its
// URI SAN, as Signet's and SPIRE's roots do.
func testRoot(t *testing.T, td string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "root of " + td},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func bundleDoc(t *testing.T, hint time.Duration, roots ...*x509.Certificate) []byte {
	t.Helper()
	b := spiffebundle.New(fedTD)
	for _, r := range roots {
		b.AddX509Authority(r)
	}
	if hint > 0 {
		b.SetRefreshHint(hint)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// docServer is an https_web bundle endpoint serving whatever document the
// test sets, and the refresher that fetches from it into a real store.
type docServer struct {
	mu  sync.Mutex
	doc []byte
	// serve, when set, answers instead of doc.
	serve http.HandlerFunc
}

func (d *docServer) set(doc []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.doc = doc
}

func (d *docServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.serve != nil {
		d.serve(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(d.doc)
}

func newDocRefresher(t *testing.T) (*docServer, *refresher, store.Store) {
	t.Helper()
	ds := &docServer{}
	srv := httptest.NewTLSServer(ds)
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "s.db"), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat, err := catalog.New(context.Background(), st, own, logger)
	if err != nil {
		t.Fatal(err)
	}
	r := &refresher{
		rel:   Relationship{TrustDomain: fedTD, URL: srv.URL + "/bundle", Profile: ProfileWeb, CAFile: caFile},
		store: st, catalog: cat, logger: logger, minRefresh: time.Minute, maxRefresh: 10 * time.Minute,
	}
	return ds, r, st
}

func TestRefreshReplacesAndBoundsTheHint(t *testing.T) {
	ds, r, st := newDocRefresher(t)
	ctx := context.Background()
	r1, r2 := testRoot(t, "b.org"), testRoot(t, "b.org")
	steps := []struct {
		name      string
		doc       []byte
		wantNext  time.Duration
		wantRoots []*x509.Certificate
		wantSeq   int64
	}{
		{"no hint: the default", bundleDoc(t, 0, r1, r2), DefaultRefreshHint, []*x509.Certificate{r1, r2}, 1},
		{"hint below the minimum", bundleDoc(t, time.Second, r1, r2), time.Minute, []*x509.Certificate{r1, r2}, 1},
		{"hint above the maximum; a root dropped", bundleDoc(t, 2*time.Hour, r2), 10 * time.Minute, []*x509.Certificate{r2}, 2},
		{"hint within bounds", bundleDoc(t, 3*time.Minute, r2), 3 * time.Minute, []*x509.Certificate{r2}, 2},
	}
	for _, s := range steps {
		ds.set(s.doc)
		next, err := r.refresh(ctx)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		auths, seq, err := st.ListAuthorities(ctx, fedTD.Name())
		if err != nil {
			t.Fatal(err)
		}
		if next != s.wantNext || seq != s.wantSeq || len(auths) != len(s.wantRoots) {
			t.Fatalf("%s: next %s, %d authorities, seq %d; want %s, %d, %d", s.name, next, len(auths), seq, s.wantNext, len(s.wantRoots), s.wantSeq)
		}
		for _, want := range s.wantRoots {
			found := false
			for _, a := range auths {
				found = found || string(a.Data) == string(want.Raw)
			}
			if !found {
				t.Fatalf("%s: root %s not stored", s.name, want.Subject)
			}
		}
	}
}

func TestRefreshRefusesAndKeepsTheBundle(t *testing.T) {
	ds, r, st := newDocRefresher(t)
	ctx := context.Background()
	good := testRoot(t, "b.org")
	ds.set(bundleDoc(t, 0, good))
	if _, err := r.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name, doc, wantErr string
	}{
		{"empty", `{"keys": []}`, "no X.509 or JWT authorities"},
		{"only unknown keys", `{"keys": [{"use": "x", "kty": "oct", "k": "AA"}]}`, "no X.509 or JWT authorities"},
		{"another trust domain's root", string(bundleDoc(t, 0, testRoot(t, "c.org"))), "names trust domain c.org"},
		{"not JSON", `<html>502 Bad Gateway</html>`, "unable to parse JWKS"},
		{"no keys member", `{}`, "no authorities found"},
	}
	for _, tt := range refused {
		ds.set([]byte(tt.doc))
		if _, err := r.refresh(ctx); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: refresh = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
		auths, seq, err := st.ListAuthorities(ctx, fedTD.Name())
		if err != nil || len(auths) != 1 || string(auths[0].Data) != string(good.Raw) || seq != 1 {
			t.Fatalf("%s: the held bundle changed: %d authorities, seq %d, %v", tt.name, len(auths), seq, err)
		}
	}

	// https_web without ca_file trusts the system's roots only: the test
	// server's certificate is refused.
	r.rel.CAFile = ""
	ds.set(bundleDoc(t, 0, testRoot(t, "b.org")))
	if _, err := r.refresh(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("refresh with system roots = %v, want a certificate error", err)
	}
}

// A peer (or whatever answers for it) cannot send us to plain http, where
// nothing is authenticated, make us parse an error page, or make us read
// without end.
func TestRefreshRefusesRedirectsStatusesAndHugeBodies(t *testing.T) {
	ds, r, st := newDocRefresher(t)
	ctx := context.Background()
	good := testRoot(t, "b.org")
	ds.set(bundleDoc(t, 0, good))
	if _, err := r.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	evil := bundleDoc(t, 0, testRoot(t, "b.org"))
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(evil) }))
	defer plain.Close()
	for _, tt := range []struct {
		name    string
		serve   http.HandlerFunc
		wantErr string
	}{
		{"redirect to plain http", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, plain.URL+"/bundle", http.StatusFound)
		}, "redirects are not followed"},
		{"an error status with a bundle-shaped body", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write(evil)
		}, "503"},
		{"a body without end", func(w http.ResponseWriter, _ *http.Request) {
			chunk := []byte(strings.Repeat(" ", 64<<10))
			for i := 0; i < 1<<12; i++ { // 256 MiB if nobody stops reading
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}, "larger than"},
	} {
		ds.mu.Lock()
		ds.serve = tt.serve
		ds.mu.Unlock()
		if _, err := r.refresh(ctx); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: refresh = %v, want an error containing %q", tt.name, err, tt.wantErr)
		}
		auths, _, err := st.ListAuthorities(ctx, fedTD.Name())
		if err != nil || len(auths) != 1 || string(auths[0].Data) != string(good.Raw) {
			t.Fatalf("%s: the held bundle changed", tt.name)
		}
	}
}

func TestAuthoritiesRefusesAnEmptyBundle(t *testing.T) {
	if _, err := Authorities(spiffebundle.New(fedTD)); err == nil {
		t.Fatal("an empty bundle was accepted")
	}
}
