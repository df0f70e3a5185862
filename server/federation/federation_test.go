package federation_test

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
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	spiffefed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/servertest"
	"github.com/signetid/signet/server/store"
)

var (
	tdA = spiffeid.RequireTrustDomainFromString("a.org")
	tdB = spiffeid.RequireTrustDomainFromString("b.org")
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// freeAddr is a loopback address nothing listens on: two servers that
// federate both ways must know each other's endpoint before either starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func serverID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromPath(td, "/signet/server")
}

// spiffeRel is an https_spiffe relationship with the Signet server of td.
func spiffeRel(td spiffeid.TrustDomain, addr string) federation.Relationship {
	return federation.Relationship{TrustDomain: td, URL: "https://" + addr, Profile: federation.ProfileSPIFFE, EndpointID: serverID(td)}
}

// startServer runs a real server of td whose bundle endpoint (https_spiffe,
// refresh hint 1s) listens on endpointAddr, fetching the relationships'
// bundles; refresh bounds are lowered so that tests follow the short hints.
func startServer(t *testing.T, td spiffeid.TrustDomain, svidTTL time.Duration, endpointAddr string, rels ...federation.Relationship) *servertest.Server {
	return servertest.Start(t, td, func(c *server.Config) {
		c.SVIDTTL, c.AgentTTL = svidTTL, svidTTL
		c.Federation = federation.Config{
			Endpoint:      &federation.EndpointConfig{Address: endpointAddr, RefreshHint: time.Second, Profile: federation.ProfileSPIFFE},
			Relationships: rels,
			MinRefresh:    100 * time.Millisecond,
		}
	})
}

// bootstrap gives to the X.509 roots of from, as an operator would with
// `bundle show --format pem` there and `bundle set --format pem` here. The
// JWT keys are left out on purpose: their arrival shows a real fetch.
func bootstrap(t *testing.T, to, from *servertest.Server) {
	t.Helper()
	ctx := context.Background()
	b, err := from.Admin().GetBundle(ctx, &api.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b.JwtAuthorities = nil
	if _, err := to.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: b}); err != nil {
		t.Fatalf("bootstrap %s: %v", b.TrustDomain, err)
	}
}

// held is s's stored bundle of td (nil if none).
func held(t *testing.T, s *servertest.Server, td spiffeid.TrustDomain) *api.Bundle {
	t.Helper()
	resp, err := s.Admin().ListFederatedBundles(context.Background(), &api.ListFederatedBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range resp.Bundles {
		if b.TrustDomain == td.Name() {
			return b
		}
	}
	return nil
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ownRoots(t *testing.T, s *servertest.Server) [][]byte {
	t.Helper()
	b, err := s.Admin().GetBundle(context.Background(), &api.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return b.X509Authorities
}

func sameSet(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y []byte) bool { return string(x) == string(y) }) {
			return false
		}
	}
	return true
}

func TestEndpointServesTheOwnBundle(t *testing.T) {
	b := startServer(t, tdB, time.Hour, "127.0.0.1:0")
	ctx := context.Background()
	want, err := b.Admin().GetBundle(ctx, &api.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := x509bundle.Parse(tdB, b.BundlePEM())
	if err != nil {
		t.Fatal(err)
	}
	got, err := spiffefed.FetchBundle(ctx, tdB, "https://"+b.FederationAddr(), spiffefed.WithSPIFFEAuth(roots, serverID(tdB)))
	if err != nil {
		t.Fatalf("FetchBundle: %v", err)
	}
	var gotRoots [][]byte
	for _, c := range got.X509Authorities() {
		gotRoots = append(gotRoots, c.Raw)
	}
	seq, _ := got.SequenceNumber()
	hint, _ := got.RefreshHint()
	if !sameSet(gotRoots, want.X509Authorities) || len(got.JWTAuthorities()) != len(want.JwtAuthorities) ||
		int64(seq) != want.Sequence || hint != time.Second {
		t.Fatalf("served %d roots, %d JWT keys, sequence %d, hint %s; want %d, %d, %d, 1s",
			len(gotRoots), len(got.JWTAuthorities()), seq, hint, len(want.X509Authorities), len(want.JwtAuthorities), want.Sequence)
	}
	for _, k := range want.JwtAuthorities {
		if _, ok := got.FindJWTAuthority(k.KeyId); !ok {
			t.Fatalf("JWT key %s not served", k.KeyId)
		}
	}
	// The endpoint presents spiffe://b.org/signet/server and nothing else.
	if _, err := spiffefed.FetchBundle(ctx, tdB, "https://"+b.FederationAddr(),
		spiffefed.WithSPIFFEAuth(roots, spiffeid.RequireFromPath(tdB, "/other"))); err == nil || !strings.Contains(err.Error(), "unexpected ID") {
		t.Fatalf("FetchBundle expecting another ID = %v, want an unexpected-ID error", err)
	}
}

// TestTwoServersFederate runs two servers federating both ways over
// https_spiffe, and an agent of A whose workload's entry federates with
// b.org: B's bundle reaches the workload, and so does B's CA rotation, on
// the open Workload API stream.
func TestTwoServersFederate(t *testing.T) {
	addrA, addrB := freeAddr(t), freeAddr(t)
	// B's CA lives 6 x 2s and rotates without end: each root is published
	// 6s before it is used, and dropped 12s after it was created.
	b := startServer(t, tdB, 2*time.Second, addrB, spiffeRel(tdA, addrA))
	a := startServer(t, tdA, time.Hour, addrA, spiffeRel(tdB, addrB))
	if held(t, a, tdB) != nil || held(t, b, tdA) != nil {
		t.Fatal("a bundle was held before the bootstrap")
	}
	bootstrap(t, a, b)
	bootstrap(t, b, a)
	// The refreshers then fetch the whole bundles, JWT keys included.
	waitFor(t, 30*time.Second, "A fetches B's bundle", func() bool {
		h := held(t, a, tdB)
		return h != nil && len(h.JwtAuthorities) > 0
	})
	waitFor(t, 30*time.Second, "B fetches A's bundle", func() bool {
		h := held(t, b, tdA)
		return h != nil && len(h.JwtAuthorities) > 0 && sameSet(h.X509Authorities, ownRoots(t, a))
	})

	// An agent of A and a workload whose entry federates with b.org.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const agentID = "spiffe://a.org/agent/node1"
	tok, err := a.Admin().CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Admin().CreateEntry(ctx, &api.CreateEntryRequest{Entry: &api.Entry{
		SpiffeId: "spiffe://a.org/web", ParentId: agentID, FederatesWith: []string{"b.org"},
		Selectors: []*api.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}},
	}}); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sgf") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "agent.sock")
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(actx, agent.Config{
			ServerAddress: a.Addr(), TrustDomain: tdA.Name(), DataDir: filepath.Join(dir, "data"),
			JoinToken: tok.Token, TrustBundlePEM: a.BundlePEM(), SocketPath: socket,
		}, discard())
	}()
	t.Cleanup(func() {
		stopAgent()
		if err := <-agentDone; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
	})

	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	updates := make(chan *workloadapi.X509Context, 64)
	go func() { _ = client.WatchX509Context(ctx, watcher(updates)) }()
	// roots is what the open stream last said of b.org.
	next := func(what string) [][]byte {
		t.Helper()
		select {
		case x := <-updates:
			fb, err := x.Bundles.GetX509BundleForTrustDomain(tdB)
			if err != nil {
				return nil
			}
			var out [][]byte
			for _, c := range fb.X509Authorities() {
				out = append(out, c.Raw)
			}
			return out
		case <-ctx.Done():
			t.Fatalf("%s: no update on the stream", what)
			return nil
		}
	}
	first := ownRoots(t, b)
	for got := next("B's bundle"); !sameSet(got, first); got = next("B's bundle") {
	}
	// B's CA rotates on: its next root reaches the same stream (no
	// reconnect, no polling at the workload), then the first root leaves it.
	isFirst := func(r []byte) bool {
		return slices.ContainsFunc(first, func(f []byte) bool { return string(f) == string(r) })
	}
	for got := next("B's next root"); !slices.ContainsFunc(got, func(r []byte) bool { return !isFirst(r) }); got = next("B's next root") {
	}
	for got := next("B's first root dropped"); slices.ContainsFunc(got, isFirst); got = next("B's first root dropped") {
	}
	waitFor(t, 30*time.Second, "A holds B's roots, and only those", func() bool {
		return sameSet(held(t, a, tdB).X509Authorities, ownRoots(t, b))
	})
}

type watcher chan *workloadapi.X509Context

func (w watcher) OnX509ContextUpdate(x *workloadapi.X509Context) { w <- x }
func (w watcher) OnX509ContextWatchError(error)                  {}

// logRecords is a slog handler that keeps what is logged, for tests that
// must know a refresh attempt finished.
type logRecords struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, b.String())
	return nil
}

func (l *logRecords) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(m, p)
		}
		if all {
			return true
		}
	}
	return false
}

// fetcher is the fetching side alone, for tests that watch one
// relationship: a real store, its catalog and the federation service.
type fetcher struct {
	store store.Store
	logs  *logRecords
	svc   *federation.Service
}

func startFetcher(t *testing.T, rels ...federation.Relationship) *fetcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "s.db"), discard())
	if err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(ctx, st, tdA, discard())
	if err != nil {
		t.Fatal(err)
	}
	f := &fetcher{store: st, logs: &logRecords{}}
	svc, err := federation.New(federation.Options{
		Config:      federation.Config{Relationships: rels, MinRefresh: 100 * time.Millisecond},
		TrustDomain: tdA, Store: st, Catalog: cat, Logger: slog.New(f.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	done := make(chan struct{})
	go func() { cat.Run(ctx); close(done) }()
	go func() { svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return f
}

// set stores roots as td's bundle, as `bundle set` would.
func (f *fetcher) set(t *testing.T, td spiffeid.TrustDomain, pemRoots []byte) {
	t.Helper()
	xb, err := x509bundle.Parse(td, pemRoots)
	if err != nil {
		t.Fatal(err)
	}
	b, err := adminapi.BundleFromProto(&api.Bundle{TrustDomain: td.Name(), X509Authorities: derOf(xb)})
	if err != nil {
		t.Fatal(err)
	}
	auths, err := federation.Authorities(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.SetBundle(context.Background(), td.Name(), auths); err != nil {
		t.Fatal(err)
	}
}

func (f *fetcher) kinds(t *testing.T, td spiffeid.TrustDomain) (x509s, jwts int) {
	t.Helper()
	auths, _, err := f.store.ListAuthorities(context.Background(), td.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range auths {
		if a.Kind == store.JWTAuthority {
			jwts++
		} else {
			x509s++
		}
	}
	return x509s, jwts
}

func derOf(xb *x509bundle.Bundle) [][]byte {
	var out [][]byte
	for _, c := range xb.X509Authorities() {
		out = append(out, c.Raw)
	}
	return out
}

func TestRefresherRefusesAWrongEndpoint(t *testing.T) {
	b := startServer(t, tdB, time.Hour, "127.0.0.1:0")
	tdC := spiffeid.RequireTrustDomainFromString("c.org")
	wrongID := spiffeRel(tdB, b.FederationAddr())
	wrongID.EndpointID = spiffeid.RequireFromPath(tdB, "/spire/server")
	// c.org's endpoint is said to be B's server (chained trust, SPIFFE
	// Federation 7.6): the TLS check passes, but the roots name b.org.
	wrongTD := spiffeRel(tdC, b.FederationAddr())
	wrongTD.EndpointID = serverID(tdB)
	f := startFetcher(t, wrongID, wrongTD)
	f.set(t, tdB, b.BundlePEM())

	waitFor(t, 30*time.Second, "the wrong endpoint ID refused", func() bool {
		return f.logs.has("bundle refresh failed", "trust_domain=b.org", `unexpected ID "spiffe://b.org/signet/server"`)
	})
	waitFor(t, 30*time.Second, "the wrong trust domain refused", func() bool {
		return f.logs.has("bundle refresh failed", "trust_domain=c.org", "names trust domain b.org")
	})
	// Both refusals kept what was held: b.org's bootstrap roots (no JWT
	// keys: nothing was fetched) and nothing of c.org.
	if x, j := f.kinds(t, tdB); x == 0 || j != 0 {
		t.Fatalf("b.org holds %d roots and %d JWT keys, want the bootstrap roots only", x, j)
	}
	if x, j := f.kinds(t, tdC); x+j != 0 {
		t.Fatalf("c.org holds %d authorities", x+j)
	}
}

// RefreshStatuses (the server's federation metrics) tell a relationship
// that fetches from one that fails, with the failure, and a failure after
// successes keeps the last success.
func TestRefreshStatuses(t *testing.T) {
	b := startServer(t, tdB, time.Hour, "127.0.0.1:0")
	tdC := spiffeid.RequireTrustDomainFromString("c.org")
	wrongTD := spiffeRel(tdC, b.FederationAddr())
	wrongTD.EndpointID = serverID(tdB)
	f := startFetcher(t, spiffeRel(tdB, b.FederationAddr()), wrongTD)
	f.set(t, tdB, b.BundlePEM())

	status := func(td spiffeid.TrustDomain) federation.RefreshStatus {
		for _, st := range f.svc.RefreshStatuses() {
			if st.TrustDomain == td {
				return st
			}
		}
		return federation.RefreshStatus{}
	}
	waitFor(t, 30*time.Second, "b.org fetched and c.org refused", func() bool {
		return !status(tdB).LastSuccess.IsZero() && status(tdC).Failures > 0
	})
	if st := status(tdB); st.ConsecutiveFailures != 0 || st.LastError != "" {
		t.Errorf("b.org status %+v, want no failure since its success", st)
	}
	if st := status(tdC); !st.LastSuccess.IsZero() || st.ConsecutiveFailures == 0 || !strings.Contains(st.LastError, "names trust domain b.org") {
		t.Errorf("c.org status %+v, want failures naming the wrong trust domain and no success", st)
	}
	if got := f.svc.RefreshStatuses(); len(got) != 2 || got[0].TrustDomain != tdB || got[1].TrustDomain != tdC {
		t.Errorf("RefreshStatuses = %+v, want b.org then c.org", got)
	}

	// The endpoint goes away: b.org fails from now on, and its last
	// success is kept for the staleness alert.
	success := status(tdB).LastSuccess
	b.Stop()
	waitFor(t, 30*time.Second, "b.org failing", func() bool { return status(tdB).ConsecutiveFailures > 0 })
	if st := status(tdB); !st.LastSuccess.Equal(success) || st.LastError == "" {
		t.Errorf("b.org status %+v after its endpoint stopped, want the last success %s kept and the error", st, success)
	}
}

// testCA issues Web PKI certificates for the https_web endpoint.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Web CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue writes a serving certificate for 127.0.0.1 and its key, replacing
// both files at once (rename), and returns the certificate's serial.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "bundle.b.org"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// presented is the serial of the certificate the endpoint presents now.
func presented(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("dial the bundle endpoint: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestHTTPSWeb(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.pem")
	ca.issue(t, certFile, keyFile, 100)
	writeAtomic(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	b := servertest.Start(t, tdB, func(c *server.Config) {
		c.Federation.Endpoint = &federation.EndpointConfig{Address: "127.0.0.1:0", RefreshHint: time.Second,
			Profile: federation.ProfileWeb, CertFile: certFile, KeyFile: keyFile}
	})

	// No bootstrap: the Web PKI authenticates the endpoint.
	f := startFetcher(t, federation.Relationship{TrustDomain: tdB, URL: "https://" + b.FederationAddr(), Profile: federation.ProfileWeb, CAFile: caFile})
	waitFor(t, 30*time.Second, "the https_web bundle fetched", func() bool {
		x, j := f.kinds(t, tdB)
		return x > 0 && j > 0
	})
	got, _, err := f.store.ListAuthorities(context.Background(), tdB.Name())
	if err != nil {
		t.Fatal(err)
	}
	var gotRoots [][]byte
	for _, a := range got {
		if a.Kind == store.X509Authority {
			gotRoots = append(gotRoots, a.Data)
		}
	}
	if want := ownRoots(t, b); !sameSet(gotRoots, want) {
		t.Fatalf("fetched %d roots, B has %d", len(gotRoots), len(want))
	}

	// A renewed certificate is served from the next handshake on; a
	// broken pair (key not matching) leaves the last good one in use.
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	if s := presented(t, b.FederationAddr(), pool); s != 100 {
		t.Fatalf("serial %d presented, want 100", s)
	}
	ca.issue(t, certFile, keyFile, 101)
	if s := presented(t, b.FederationAddr(), pool); s != 101 {
		t.Fatalf("after renewal: serial %d presented, want 101", s)
	}
	other := filepath.Join(dir, "other.key")
	ca.issue(t, filepath.Join(dir, "other.crt"), other, 102)
	keyPEM, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, keyFile, keyPEM)
	if s := presented(t, b.FederationAddr(), pool); s != 101 {
		t.Fatalf("with a mismatched key: serial %d presented, want the previous 101", s)
	}
}

func TestAdminAPIRefusals(t *testing.T) {
	a := startServer(t, tdA, time.Hour, "127.0.0.1:0")
	ctx := context.Background()
	own, err := a.Admin().GetBundle(ctx, &api.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	other := newTestCA(t).cert.Raw // a root of b.org
	tests := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"set the own trust domain", func() error {
			_, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: own})
			return err
		}, codes.InvalidArgument, "own trust domain"},
		{"set the own trust domain, spiffe:// form", func() error {
			_, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: &api.Bundle{TrustDomain: "spiffe://a.org", X509Authorities: [][]byte{other}}})
			return err
		}, codes.InvalidArgument, "own trust domain"},
		{"set a malformed root", func() error {
			_, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: &api.Bundle{TrustDomain: "b.org", X509Authorities: [][]byte{{0x30, 1, 2}}}})
			return err
		}, codes.InvalidArgument, "parse X.509 authority"},
		{"set an empty bundle", func() error {
			_, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: &api.Bundle{TrustDomain: "b.org"}})
			return err
		}, codes.InvalidArgument, "no X.509 or JWT authorities"},
		{"set no bundle", func() error {
			_, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{})
			return err
		}, codes.InvalidArgument, "bundle is required"},
		{"set a bad trust domain", func() error {
			_, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: &api.Bundle{TrustDomain: "B.org", X509Authorities: [][]byte{other}}})
			return err
		}, codes.InvalidArgument, "trust domain"},
		{"delete the own trust domain", func() error {
			_, err := a.Admin().DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "a.org"})
			return err
		}, codes.InvalidArgument, "own trust domain"},
		{"delete an unknown trust domain", func() error {
			_, err := a.Admin().DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "nowhere.org"})
			return err
		}, codes.NotFound, "no bundle of nowhere.org"},
	}
	for _, tt := range tests {
		err := tt.call()
		if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %s containing %q", tt.name, err, tt.code, tt.want)
		}
	}
	if resp, err := a.Admin().ListFederatedBundles(ctx, &api.ListFederatedBundlesRequest{}); err != nil || len(resp.Bundles) != 0 {
		t.Fatalf("after the refusals: %v, %v; want no federated bundle", resp, err)
	}
	// Accepted, listed (the own trust domain never is), deleted.
	got, err := a.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: &api.Bundle{TrustDomain: "spiffe://b.org", X509Authorities: [][]byte{other}}})
	if err != nil || got.TrustDomain != "b.org" || got.Sequence != 1 || len(got.X509Authorities) != 1 {
		t.Fatalf("set b.org: %v, %v", got, err)
	}
	if resp, err := a.Admin().ListFederatedBundles(ctx, &api.ListFederatedBundlesRequest{}); err != nil || len(resp.Bundles) != 1 || resp.Bundles[0].TrustDomain != "b.org" {
		t.Fatalf("list: %v, %v", resp, err)
	}
	if _, err := a.Admin().DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "b.org"}); err != nil {
		t.Fatal(err)
	}
	if held(t, a, tdB) != nil {
		t.Fatal("b.org still listed after delete")
	}
}

// TestConfiguredBundleNotDeleted: the bundle of a trust domain the server
// is configured to federate with cannot be deleted (the fetcher would put
// it back, or, for https_spiffe, lose its trust anchor); it stays held.
func TestConfiguredBundleNotDeleted(t *testing.T) {
	b := startServer(t, tdB, time.Hour, "127.0.0.1:0")
	a := startServer(t, tdA, time.Hour, "127.0.0.1:0", spiffeRel(tdB, b.FederationAddr()))
	bootstrap(t, a, b)
	for _, mode := range []api.BundleDeleteMode{api.BundleDeleteMode_BUNDLE_DELETE_MODE_RESTRICT, api.BundleDeleteMode_BUNDLE_DELETE_MODE_DELETE} {
		_, err := a.Admin().DeleteFederatedBundle(context.Background(), &api.DeleteFederatedBundleRequest{TrustDomain: "b.org", Mode: mode})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "the server fetches it from https://"+b.FederationAddr()) {
			t.Errorf("delete (%v) of a configured trust domain's bundle: %v, want FailedPrecondition naming its endpoint", mode, err)
		}
	}
	if held(t, a, tdB) == nil {
		t.Fatal("the refused delete removed the bundle")
	}
}

// TestStoredRelationships: relationships kept in the store are followed as
// they are created, changed and deleted, and the configuration's win.
func TestStoredRelationships(t *testing.T) {
	b := startServer(t, tdB, time.Hour, "127.0.0.1:0")
	tdC := spiffeid.RequireTrustDomainFromString("c.org")
	c := startServer(t, tdC, time.Hour, "127.0.0.1:0")
	deadC := spiffeRel(tdC, freeAddr(t))
	f := startFetcher(t, deadC)
	ctx := context.Background()
	put := func(rel federation.Relationship) {
		t.Helper()
		if _, err := f.store.PutFederationRelationship(ctx, rel.StoreForm("test"), nil); err != nil {
			t.Fatal(err)
		}
	}

	// Created: fetched (the JWT keys come only from a fetch).
	f.set(t, tdB, b.BundlePEM())
	put(spiffeRel(tdB, b.FederationAddr()))
	waitFor(t, 30*time.Second, "the stored relationship's bundle fetched", func() bool {
		_, j := f.kinds(t, tdB)
		return j > 0
	})
	if !f.logs.has("relationship in force", "trust_domain=b.org", "owner=test") {
		t.Error("no log of the stored relationship taking effect")
	}

	// Changed: the next fetch goes to the new URL.
	dead := freeAddr(t)
	put(spiffeRel(tdB, dead))
	waitFor(t, 30*time.Second, "a fetch from the changed URL", func() bool {
		return f.logs.has("bundle refresh failed", "trust_domain=b.org", "url=https://"+dead)
	})

	// Deleted: no more fetches; the bundle stays.
	if err := f.store.DeleteFederationRelationship(ctx, tdB.Name(), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the refresher stopped", func() bool {
		return f.logs.has("relationship removed", "trust_domain=b.org")
	})
	f.logs.mu.Lock()
	f.logs.msgs = nil
	f.logs.mu.Unlock()
	time.Sleep(time.Second) // several retry intervals (100 ms at first)
	if f.logs.has("trust_domain=b.org") {
		t.Error("b.org is still fetched after its relationship was deleted")
	}
	if x, _ := f.kinds(t, tdB); x == 0 {
		t.Error("deleting the relationship deleted the bundle")
	}

	// The configuration's c.org (a dead endpoint) wins over a stored one
	// that would work.
	f.set(t, tdC, c.BundlePEM())
	put(spiffeRel(tdC, c.FederationAddr()))
	waitFor(t, 30*time.Second, "the override logged", func() bool {
		return f.logs.has("configuration overrides stored relationships", "c.org")
	})
	waitFor(t, 30*time.Second, "the configured URL still used", func() bool {
		return f.logs.has("bundle refresh failed", "trust_domain=c.org", "url="+deadC.URL)
	})
	if _, j := f.kinds(t, tdC); j != 0 {
		t.Error("c.org was fetched through the stored relationship the configuration overrides")
	}
}

// storeView reads a server's store through a second handle on its SQLite
// file, as another server sharing the store (or the Kubernetes controller)
// would: for writes the admin API refuses, and to see that a refusal
// wrote nothing.
type storeView struct{ store.Store }

func openStoreOf(t *testing.T, s *servertest.Server) storeView {
	t.Helper()
	st, err := store.Open(context.Background(), s.Config.Datastore, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return storeView{st}
}

// state is everything a relationship write may change: the store's
// revision, its relationships and every bundle.
func (v storeView) state(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	rev, err := v.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rels, err := v.ListFederationRelationships(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tds, err := v.ListBundleTrustDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprintf("revision %d\nrelationships %+v\n", rev, rels)
	for _, td := range tds {
		auths, seq, err := v.ListAuthorities(ctx, td)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf("bundle %s sequence %d: %d authorities\n", td, seq, len(auths))
	}
	return out
}

// dialAdmin is a client of s's admin API over its real Unix socket.
func dialAdmin(t *testing.T, s *servertest.Server) api.AdminServiceClient {
	t.Helper()
	c, closer, err := adminapi.Dial(s.Config.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closer.Close() })
	return c
}

// rootsOnly is s's bundle without its JWT keys: a bootstrap bundle whose
// keys arrive only with a fetch.
func rootsOnly(t *testing.T, s *servertest.Server) *api.Bundle {
	t.Helper()
	b, err := s.Admin().GetBundle(context.Background(), &api.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return &api.Bundle{TrustDomain: b.TrustDomain, X509Authorities: b.X509Authorities}
}

func keyIDs(b *api.Bundle) []string {
	var out []string
	for _, k := range b.JwtAuthorities {
		out = append(out, k.KeyId)
	}
	slices.Sort(out)
	return out
}

// TestRelationshipAdminAPIRefusals: every refused create, update, delete
// and get answers its code and a message naming the cause, and leaves the
// store as it was.
func TestRelationshipAdminAPIRefusals(t *testing.T) {
	tdD := spiffeid.RequireTrustDomainFromString("d.org")
	a := startServer(t, tdA, time.Hour, "127.0.0.1:0", spiffeRel(tdD, freeAddr(t)))
	c := dialAdmin(t, a)
	v := openStoreOf(t, a)
	ctx := context.Background()
	// An operator's relationship, and one the Kubernetes controller manages
	// (dead endpoints: nothing is fetched, so nothing changes the store).
	web := func(td string) *api.FederationRelationship {
		return &api.FederationRelationship{TrustDomain: td, BundleEndpointUrl: "https://" + freeAddr(t), BundleEndpointProfile: "https_web"}
	}
	if _, err := c.CreateFederationRelationship(ctx, &api.CreateFederationRelationshipRequest{Relationship: web("c.org")}); err != nil {
		t.Fatal(err)
	}
	managed := store.FederationRelationship{TrustDomain: "e.org", BundleEndpointURL: "https://" + freeAddr(t), Profile: "https_web", Owner: "k8s_controller/cluster-1"}
	if _, err := v.PutFederationRelationship(ctx, managed, nil); err != nil {
		t.Fatal(err)
	}
	type rel = api.FederationRelationship
	// roots is a bundle of one root naming no trust domain, good for any.
	roots := func() *api.Bundle { return &api.Bundle{X509Authorities: [][]byte{newTestCA(t).cert.Raw}} }
	create := func(r *rel, b *api.Bundle) func() error {
		return func() error {
			_, err := c.CreateFederationRelationship(ctx, &api.CreateFederationRelationshipRequest{Relationship: r, TrustDomainBundle: b})
			return err
		}
	}
	update := func(r *rel, b *api.Bundle) func() error {
		return func() error {
			_, err := c.UpdateFederationRelationship(ctx, &api.UpdateFederationRelationshipRequest{Relationship: r, TrustDomainBundle: b})
			return err
		}
	}
	del := func(td string) func() error {
		return func() error {
			_, err := c.DeleteFederationRelationship(ctx, &api.DeleteFederationRelationshipRequest{TrustDomain: td})
			return err
		}
	}
	get := func(td string) func() error {
		return func() error {
			_, err := c.GetFederationRelationship(ctx, &api.GetFederationRelationshipRequest{TrustDomain: td})
			return err
		}
	}
	// spiffeB is a valid https_spiffe relationship with b.org, changed by f.
	spiffeB := func(f func(r *rel)) *rel {
		r := &rel{TrustDomain: "b.org", BundleEndpointUrl: "https://127.0.0.1:1", BundleEndpointProfile: "https_spiffe"}
		f(r)
		return r
	}
	valid := func(*rel) {}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		want string
	}{
		{"no relationship", create(nil, nil), codes.InvalidArgument, "relationship is required"},
		{"bad trust domain", create(spiffeB(func(r *rel) { r.TrustDomain = "B.org" }), nil), codes.InvalidArgument, "--trust-domain"},
		{"own trust domain", create(spiffeB(func(r *rel) { r.TrustDomain = "spiffe://a.org" }), nil), codes.InvalidArgument, "a.org is this server's own trust domain"},
		{"http URL", create(spiffeB(func(r *rel) { r.BundleEndpointUrl = "http://127.0.0.1:1" }), nil), codes.InvalidArgument, `--bundle-endpoint-url "http://127.0.0.1:1": want https://`},
		{"no URL", create(spiffeB(func(r *rel) { r.BundleEndpointUrl = "" }), nil), codes.InvalidArgument, "--bundle-endpoint-url is required"},
		{"unknown profile", create(spiffeB(func(r *rel) { r.BundleEndpointProfile = "https" }), nil), codes.InvalidArgument, `--bundle-endpoint-profile "https"`},
		{"bad endpoint ID", create(spiffeB(func(r *rel) { r.EndpointSpiffeId = "spiffe://b.org/../x" }), nil), codes.InvalidArgument, "--endpoint-spiffe-id"},
		{"endpoint ID with https_web", create(spiffeB(func(r *rel) { r.BundleEndpointProfile, r.EndpointSpiffeId = "https_web", "spiffe://b.org/x" }), nil),
			codes.InvalidArgument, "--endpoint-spiffe-id goes with the https_spiffe profile only"},
		{"owner given", create(spiffeB(func(r *rel) { r.Owner = "k8s_controller/cluster-1" }), nil), codes.InvalidArgument, `owner "k8s_controller/cluster-1"`},
		{"malformed bootstrap root", create(spiffeB(valid), &api.Bundle{X509Authorities: [][]byte{{0x30, 1, 2}}}), codes.InvalidArgument, "trust domain bundle"},
		{"empty bootstrap bundle", create(spiffeB(valid), &api.Bundle{}), codes.InvalidArgument, "no X.509 or JWT authorities"},
		{"bootstrap bundle of another trust domain", create(spiffeB(valid), &api.Bundle{TrustDomain: "x.org", X509Authorities: roots().X509Authorities}),
			codes.InvalidArgument, "the trust domain bundle is of x.org, not b.org"},
		{"bootstrap root naming another trust domain", create(spiffeB(valid), &api.Bundle{X509Authorities: ownRoots(t, a)}), codes.InvalidArgument, "names trust domain a.org"},
		{"create a configured one", create(web("d.org"), roots()), codes.FailedPrecondition, `d.org is configured in server.conf (federates_with "d.org"`},
		{"update a configured one", update(web("d.org"), nil), codes.FailedPrecondition, "edit that block and restart the server instead"},
		{"delete a configured one", del("d.org"), codes.FailedPrecondition, "d.org is configured in server.conf"},
		{"create an existing one", create(web("c.org"), roots()), codes.AlreadyExists, "a relationship with c.org already exists"},
		{"create a managed one", create(web("e.org"), nil), codes.AlreadyExists, "managed by k8s_controller/cluster-1"},
		{"update a managed one", update(web("e.org"), nil), codes.FailedPrecondition,
			"the relationship with e.org is managed by k8s_controller/cluster-1; change or delete its ClusterFederatedTrustDomain resource instead"},
		{"delete a managed one", del("e.org"), codes.FailedPrecondition, "managed by k8s_controller/cluster-1; change or delete its ClusterFederatedTrustDomain"},
		{"update a missing one", update(web("b.org"), roots()), codes.NotFound, "no relationship with b.org is stored"},
		{"delete a missing one", del("b.org"), codes.NotFound, "no relationship with b.org is stored"},
		{"get a missing one", get("b.org"), codes.NotFound, "no relationship with b.org"},
		{"delete the own trust domain", del("a.org"), codes.InvalidArgument, "own trust domain"},
		{"get a bad trust domain", get("B.org"), codes.InvalidArgument, "trust domain"},
	}
	before := v.state(t)
	for _, tt := range tests {
		err := tt.call()
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("%s: %v, want %s containing %q", tt.name, err, tt.code, tt.want)
		}
		if after := v.state(t); after != before {
			t.Fatalf("%s: the refusal changed the store:\nbefore %s\nafter %s", tt.name, before, after)
		}
	}
	// Another owner than the Kubernetes controller is named, without the
	// resource.
	other := managed
	other.TrustDomain, other.Owner = "f.org", "terraform"
	if _, err := v.PutFederationRelationship(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	before = v.state(t)
	if err := del("f.org")(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "managed by terraform; only its owner may change or delete it") {
		t.Errorf("delete of a terraform-managed relationship: %v", err)
	}
	if after := v.state(t); after != before {
		t.Fatalf("the refused delete changed the store:\nbefore %s\nafter %s", before, after)
	}
}

// TestRelationshipAdminAPI drives a stored relationship through the admin
// API of a real server and watches its federation service follow it: a
// create makes it fetch from a real peer's bundle endpoint, an update moves
// it to another deployment of the same trust domain, a delete stops it.
// List shows the configured relationships beside the stored ones.
func TestRelationshipAdminAPI(t *testing.T) {
	tdD := spiffeid.RequireTrustDomainFromString("d.org")
	b1 := startServer(t, tdB, time.Hour, "127.0.0.1:0")
	b2 := startServer(t, tdB, time.Hour, "127.0.0.1:0") // b.org moved: new CA, new endpoint
	deadD := spiffeRel(tdD, freeAddr(t))
	a := startServer(t, tdA, time.Hour, "127.0.0.1:0", deadD)
	c := dialAdmin(t, a)
	v := openStoreOf(t, a)
	ctx := context.Background()
	rel := func(s *servertest.Server) *api.FederationRelationship {
		return &api.FederationRelationship{TrustDomain: "b.org", BundleEndpointUrl: "https://" + s.FederationAddr(), BundleEndpointProfile: "https_spiffe"}
	}
	// followed: A holds s's roots and the JWT keys only a fetch brings.
	followed := func(s *servertest.Server) func() bool {
		want, err := s.Admin().GetBundle(ctx, &api.GetBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return func() bool {
			h := held(t, a, tdB)
			return h != nil && sameSet(h.X509Authorities, want.X509Authorities) && slices.Equal(keyIDs(h), keyIDs(want))
		}
	}

	// Create, bootstrapped with B1's roots: fetched from B1.
	got, err := c.CreateFederationRelationship(ctx, &api.CreateFederationRelationshipRequest{Relationship: rel(b1), TrustDomainBundle: rootsOnly(t, b1)})
	if err != nil {
		t.Fatal(err)
	}
	r := got.Relationship
	if r.Origin != api.RelationshipOrigin_RELATIONSHIP_ORIGIN_STORE || r.Owner != "" || r.Revision == 0 || r.CreatedAt == 0 ||
		r.EndpointSpiffeId != "spiffe://b.org/signet/server" || r.BundleEndpointUrl != "https://"+b1.FederationAddr() {
		t.Fatalf("created %+v", r)
	}
	if got.TrustDomainBundle == nil || !sameSet(got.TrustDomainBundle.X509Authorities, ownRoots(t, b1)) {
		t.Fatalf("the bootstrap bundle returned is %+v", got.TrustDomainBundle)
	}
	waitFor(t, 30*time.Second, "A fetches B1's bundle", followed(b1))
	shown, err := c.GetFederationRelationship(ctx, &api.GetFederationRelationshipRequest{TrustDomain: "spiffe://b.org"})
	if err != nil || shown.Revision != r.Revision || shown.BundleEndpointUrl != r.BundleEndpointUrl {
		t.Fatalf("get: %+v, %v; want %+v", shown, err, r)
	}

	// The bundle cannot be deleted while the relationship fetches it.
	_, err = c.DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "b.org", Mode: api.BundleDeleteMode_BUNDLE_DELETE_MODE_DELETE})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "delete the relationship first (`signet server federation delete --trust-domain b.org`)") {
		t.Fatalf("bundle delete under a stored relationship: %v", err)
	}
	if !followed(b1)() {
		t.Fatal("the refused bundle delete removed the bundle")
	}

	// Update to B2, with B2's roots: A now follows B2.
	upd, err := c.UpdateFederationRelationship(ctx, &api.UpdateFederationRelationshipRequest{Relationship: rel(b2), TrustDomainBundle: rootsOnly(t, b2)})
	if err != nil {
		t.Fatal(err)
	}
	if upd.Relationship.Revision <= r.Revision || upd.Relationship.CreatedAt != r.CreatedAt || upd.Relationship.BundleEndpointUrl != "https://"+b2.FederationAddr() {
		t.Fatalf("updated %+v, created %+v", upd.Relationship, r)
	}
	waitFor(t, 30*time.Second, "A fetches B2's bundle", followed(b2))

	// List: the configured d.org and the stored b.org; a stored d.org (an
	// older server's, say) is listed as overridden.
	if _, err := v.PutFederationRelationship(ctx, spiffeRel(tdD, freeAddr(t)).StoreForm(""), nil); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListFederationRelationships(ctx, &api.ListFederationRelationshipsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, r := range list.Relationships {
		listed = append(listed, fmt.Sprintf("%s %s %s overridden=%v", r.TrustDomain, r.Origin, r.BundleEndpointUrl, r.Overridden))
	}
	want := []string{
		"b.org RELATIONSHIP_ORIGIN_STORE https://" + b2.FederationAddr() + " overridden=false",
		"d.org RELATIONSHIP_ORIGIN_CONFIG " + deadD.URL + " overridden=false",
		"d.org RELATIONSHIP_ORIGIN_STORE",
	}
	if len(listed) != 3 || listed[0] != want[0] || listed[1] != want[1] || !strings.HasPrefix(listed[2], want[2]) || !strings.HasSuffix(listed[2], "overridden=true") {
		t.Fatalf("list:\n%s\nwant:\n%s", strings.Join(listed, "\n"), strings.Join(want, "\n"))
	}
	// Get answers the one in force: the configured one.
	if g, err := c.GetFederationRelationship(ctx, &api.GetFederationRelationshipRequest{TrustDomain: "d.org"}); err != nil ||
		g.Origin != api.RelationshipOrigin_RELATIONSHIP_ORIGIN_CONFIG || g.BundleEndpointUrl != deadD.URL {
		t.Fatalf("get d.org: %+v, %v", g, err)
	}
	// The overridden stored one may be deleted (the configured one stays).
	if _, err := c.DeleteFederationRelationship(ctx, &api.DeleteFederationRelationshipRequest{TrustDomain: "d.org"}); err != nil {
		t.Fatalf("delete the overridden d.org: %v", err)
	}
	if _, err := v.GetFederationRelationship(ctx, "d.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the stored d.org after its delete: %v", err)
	}

	// Delete b.org: no more fetches. Bootstrap roots set by hand afterwards
	// stay without JWT keys, which a refresher (every second: B2's hint)
	// would fetch at once.
	if _, err := c.DeleteFederationRelationship(ctx, &api.DeleteFederationRelationshipRequest{TrustDomain: "b.org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetFederationRelationship(ctx, &api.GetFederationRelationshipRequest{TrustDomain: "b.org"}); status.Code(err) != codes.NotFound {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := c.SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: rootsOnly(t, b2)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if h := held(t, a, tdB); h == nil || len(h.JwtAuthorities) != 0 {
		t.Fatalf("b.org was fetched after its relationship was deleted: %+v", h)
	}
	// And its bundle may now be deleted.
	if _, err := c.DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "b.org"}); err != nil {
		t.Fatalf("bundle delete after the relationship's: %v", err)
	}
}

// TestBundleDeleteNamesTheManager: the bundle of a trust domain whose
// stored relationship another owner manages cannot be deleted either, and
// the refusal says where it is managed.
func TestBundleDeleteNamesTheManager(t *testing.T) {
	a := startServer(t, tdA, time.Hour, "127.0.0.1:0")
	c := dialAdmin(t, a)
	v := openStoreOf(t, a)
	ctx := context.Background()
	if _, err := c.SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: &api.Bundle{TrustDomain: "b.org", X509Authorities: [][]byte{newTestCA(t).cert.Raw}}}); err != nil {
		t.Fatal(err)
	}
	managed := store.FederationRelationship{TrustDomain: "b.org", BundleEndpointURL: "https://" + freeAddr(t), Profile: "https_spiffe",
		EndpointSPIFFEID: "spiffe://b.org/signet/server", Owner: "k8s_controller/cluster-1"}
	if _, err := v.PutFederationRelationship(ctx, managed, nil); err != nil {
		t.Fatal(err)
	}
	before := v.state(t)
	_, err := c.DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "b.org"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "the server fetches it from "+managed.BundleEndpointURL) ||
		!strings.Contains(err.Error(), "managed by k8s_controller/cluster-1: change or delete its ClusterFederatedTrustDomain resource instead") {
		t.Fatalf("bundle delete under a managed relationship: %v", err)
	}
	if after := v.state(t); after != before {
		t.Fatalf("the refused delete changed the store:\nbefore %s\nafter %s", before, after)
	}
}
