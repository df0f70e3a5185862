package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/agentapi"
	"github.com/signetid/signet/server/api"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// testServer is a real server on loopback with a SQLite (or given) store.
type testServer struct {
	*server.Server
	cfg    server.Config
	admin  api.AdminServiceClient
	cancel context.CancelFunc
	done   chan error
}

func startServer(t testing.TB, mutate func(*server.Config)) *testServer {
	t.Helper()
	return runServer(t, testConfig(t, mutate))
}

// testConfig is the configuration startServer runs with.
func testConfig(t testing.TB, mutate func(*server.Config)) server.Config {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{
		TrustDomain: td,
		DataDir:     dir,
		Listen:      "127.0.0.1:0",
		AdminSocket: filepath.Join(dir, "admin.sock"),
		Datastore:   "sqlite://" + filepath.Join(dir, "signet.db"),
		SVIDTTL:     time.Hour,
		JWTTTL:      5 * time.Minute,
		AgentTTL:    time.Hour,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

func runServer(t testing.TB, cfg server.Config) *testServer {
	t.Helper()
	return runServerLogging(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// runServerLogging is runServer with the server's log going to logger.
func runServerLogging(t testing.TB, cfg server.Config, logger *slog.Logger) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	ts := &testServer{Server: s, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Run(ctx) }()
	client, closer, err := adminapi.Dial(cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	ts.admin = client
	t.Cleanup(func() {
		closer.Close()
		ts.stop(t)
	})
	return ts
}

func (ts *testServer) stop(t testing.TB) {
	if ts.cancel == nil {
		return
	}
	ts.cancel()
	ts.cancel = nil
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("server.Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("server did not stop within 10s")
	}
}

func (ts *testServer) bundle(t testing.TB) *x509bundle.Bundle {
	t.Helper()
	b, err := x509bundle.Parse(td, ts.BundlePEM())
	if err != nil {
		t.Fatalf("parse bundle: %v", err)
	}
	return b
}

func (ts *testServer) token(t testing.TB, spiffeID string, ttl time.Duration) string {
	t.Helper()
	resp, err := ts.admin.CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: spiffeID, TtlSeconds: int32(ttl / time.Second)})
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	return resp.Token
}

func (ts *testServer) createEntry(t testing.TB, spiffeID, parentID string, sels ...string) *api.Entry {
	t.Helper()
	e := &api.Entry{SpiffeId: spiffeID, ParentId: parentID}
	for _, s := range sels {
		typ, val, _ := strings.Cut(s, ":")
		e.Selectors = append(e.Selectors, &api.Selector{Type: typ, Value: val})
	}
	got, err := ts.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: e})
	if err != nil {
		t.Fatalf("create entry %s: %v", spiffeID, err)
	}
	return got
}

// testAgent is an agent-side client speaking the real agent API.
type testAgent struct {
	ID     spiffeid.ID
	SVID   *x509svid.SVID
	Client api.AgentServiceClient
	conn   *grpc.ClientConn
}

func newCSR(t testing.TB) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, csr
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// attest runs Attest with a join token and returns an mTLS-connected agent.
func attest(t testing.TB, ts *testServer, token string) (*testAgent, error) {
	t.Helper()
	bundle := ts.bundle(t)
	tlsCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(agentapi.ServerID(td)))
	tlsCfg.MinVersion = tls.VersionTLS13
	conn := dialTLS(t, ts.Addr(), tlsCfg)
	key, csr := newCSR(t)
	resp, err := api.NewAgentServiceClient(conn).Attest(context.Background(), &api.AttestRequest{AttestationType: "join_token", Payload: []byte(token), Csr: csr})
	if err != nil {
		return nil, err
	}
	svid := svidFrom(t, resp.SvidChain, key)
	if got := svid.ID.String(); got != resp.SpiffeId {
		t.Fatalf("SVID ID %s, response says %s", got, resp.SpiffeId)
	}
	a := &testAgent{ID: svid.ID, SVID: svid}
	a.conn = dialTLS(t, ts.Addr(), tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(agentapi.ServerID(td))))
	a.Client = api.NewAgentServiceClient(a.conn)
	return a, nil
}

func mustAttest(t testing.TB, ts *testServer, token string) *testAgent {
	t.Helper()
	a, err := attest(t, ts, token)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	return a
}

func svidFrom(t testing.TB, chain [][]byte, key *ecdsa.PrivateKey) *x509svid.SVID {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		t.Fatalf("SVID has no SPIFFE ID: %v", err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
}

func wantCode(t testing.TB, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("%s: got %v, want %s", what, err, code)
	}
}

func TestRestartKeepsCA(t *testing.T) {
	ts := startServer(t, nil)
	before := ts.BundlePEM()
	ts.stop(t)
	ts2 := runServer(t, ts.cfg)
	if after := ts2.BundlePEM(); string(after) != string(before) {
		t.Fatalf("bundle changed across restart:\nbefore %s\nafter %s", before, after)
	}
	block, _ := pem.Decode(before)
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !root.IsCA || root.URIs[0].String() != "spiffe://example.org" {
		t.Fatalf("root: IsCA=%v URIs=%v", root.IsCA, root.URIs)
	}
}

// A data dir belongs to one trust domain and one running server.
func TestDataDirIsGuarded(t *testing.T) {
	ts := startServer(t, nil)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	second := ts.cfg
	second.Listen, second.AdminSocket = "127.0.0.1:0", filepath.Join(t.TempDir(), "admin2.sock")
	if _, err := server.New(context.Background(), second, logger); err == nil || !strings.Contains(err.Error(), "in use by another signet server") {
		t.Fatalf("a second server on the same data dir: %v, want it refused", err)
	}
	ts.stop(t)

	other := ts.cfg
	other.TrustDomain = spiffeid.RequireTrustDomainFromString("other.org")
	other.Datastore = "sqlite://" + filepath.Join(t.TempDir(), "other.db")
	_, err := server.New(context.Background(), other, logger)
	if err == nil || !strings.Contains(err.Error(), `not for trust domain "other.org"`) {
		t.Fatalf("restart with another trust domain: %v, want it refused", err)
	}
	// The refused starts took nothing away: the first configuration runs.
	runServer(t, ts.cfg)
}

func TestEntryValidation(t *testing.T) {
	ts := startServer(t, nil)
	parent := "spiffe://example.org/agent/a"
	bad := []string{
		"", "spiffe:///w", "spiffe://Example.org/w", "spiffe://example.org:8080/w", "spiffe://example.org//w",
		"spiffe://example.org/./w", "spiffe://example.org/../w", "spiffe://example.org/w/", "spiffe://example.org/w%20",
		"spiffe://example.org/" + strings.Repeat("a", 2049-len("spiffe://example.org/")),
		"spiffe://" + strings.Repeat("a", 256) + "/w", "spiffe://example.org", "spiffe://other.org/w",
	}
	for _, id := range bad {
		_, err := ts.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: &api.Entry{
			SpiffeId: id, ParentId: parent, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}},
		}})
		wantCode(t, err, codes.InvalidArgument, "spiffe_id "+clip(id))
		_, err = ts.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: &api.Entry{
			SpiffeId: "spiffe://example.org/w", ParentId: id, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}},
		}})
		if id != "" { // an empty parent is "parent_id is required", also InvalidArgument
			wantCode(t, err, codes.InvalidArgument, "parent_id "+clip(id))
		}
	}
	badEntries := map[string]*api.Entry{
		"server's own ID": {SpiffeId: "spiffe://example.org/signet/server", ParentId: parent, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}},
		"no selectors":    {SpiffeId: "spiffe://example.org/w", ParentId: parent},
		"bad selector":    {SpiffeId: "spiffe://example.org/w", ParentId: parent, Selectors: []*api.Selector{{Type: "unix", Value: "uid:abc"}}},
		"negative ttl":    {SpiffeId: "spiffe://example.org/w", ParentId: parent, X509TtlSeconds: -1, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}},
		"huge ttl":        {SpiffeId: "spiffe://example.org/w", ParentId: parent, X509TtlSeconds: 1 << 30, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}},
		"bad dns":         {SpiffeId: "spiffe://example.org/w", ParentId: parent, DnsNames: []string{"a..b"}, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}},
		"own federated":   {SpiffeId: "spiffe://example.org/w", ParentId: parent, FederatesWith: []string{"example.org"}, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}},
	}
	for name, e := range badEntries {
		_, err := ts.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: e})
		wantCode(t, err, codes.InvalidArgument, name)
	}
	list, err := ts.admin.ListEntries(context.Background(), &api.ListEntriesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Entries) != 0 {
		t.Fatalf("refused entries were stored: %v", list.Entries)
	}

	good := ts.createEntry(t, "spiffe://example.org/w", parent, "unix:uid:1")
	_, err = ts.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: &api.Entry{
		SpiffeId: "spiffe://example.org/w", ParentId: parent, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}},
	}})
	wantCode(t, err, codes.AlreadyExists, "duplicate entry")
	upd, err := ts.admin.UpdateEntry(context.Background(), &api.UpdateEntryRequest{
		Entry: &api.Entry{Id: good.Id, Hint: "internal"}, UpdateMask: []string{"hint"},
	})
	if err != nil || upd.Hint != "internal" || upd.Revision <= good.Revision || upd.SpiffeId != good.SpiffeId {
		t.Fatalf("update hint: %v %v", upd, err)
	}
	_, err = ts.admin.UpdateEntry(context.Background(), &api.UpdateEntryRequest{
		Entry: &api.Entry{Id: good.Id, SpiffeId: "spiffe://example.org/w/"}, UpdateMask: []string{"spiffe_id"},
	})
	wantCode(t, err, codes.InvalidArgument, "update to a bad ID")
	_, err = ts.admin.UpdateEntry(context.Background(), &api.UpdateEntryRequest{
		Entry: &api.Entry{Id: good.Id, Hint: "x"}, UpdateMask: []string{"hint", "colour"},
	})
	wantCode(t, err, codes.InvalidArgument, "update with an unknown mask field")
	_, err = ts.admin.UpdateEntry(context.Background(), &api.UpdateEntryRequest{
		Entry: &api.Entry{Id: good.Id, ExpiresAt: time.Now().Add(-time.Hour).Unix()}, UpdateMask: []string{"expires_at"},
	})
	wantCode(t, err, codes.InvalidArgument, "update to an expiry in the past")
	for name, exp := range map[string]int64{"past": time.Now().Add(-time.Minute).Unix(), "negative": -5} {
		_, err = ts.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: &api.Entry{
			SpiffeId: "spiffe://example.org/expiring", ParentId: parent, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}, ExpiresAt: exp,
		}})
		wantCode(t, err, codes.InvalidArgument, "create with a "+name+" expiry")
	}
	_, err = ts.admin.UpdateEntry(context.Background(), &api.UpdateEntryRequest{
		Entry: &api.Entry{Id: "00000000-0000-4000-8000-000000000000", Hint: "x"}, UpdateMask: []string{"hint"},
	})
	wantCode(t, err, codes.NotFound, "update of an unknown entry")
	got, err := ts.admin.GetEntry(context.Background(), &api.GetEntryRequest{Id: good.Id})
	if err != nil || got.SpiffeId != "spiffe://example.org/w" {
		t.Fatalf("refused update changed the entry: %v %v", got, err)
	}
}

// TestAdminCannotTakeControllerEntryIDs: an admin may choose an entry's
// ID (SPIRE's custom entry IDs), but not one that passes for the
// Kubernetes controller's (whose IDs it may then neither update nor
// delete): that is refused, in a single and a batch create, and nothing
// is stored.
func TestAdminCannotTakeControllerEntryIDs(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	entry := func(id, path string) *api.Entry {
		return &api.Entry{Id: id, SpiffeId: "spiffe://example.org/" + path, ParentId: "spiffe://example.org/agent/a",
			Selectors: []*api.Selector{{Type: "unix", Value: "uid:1"}}}
	}
	const forged = "k8s.kubernetes.0123456789abcdef"
	if _, err := ts.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry(forged, "one")}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("create with the controller's ID: %v, want InvalidArgument", err)
	}
	if _, err := ts.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: []*api.Entry{entry("mine", "two"), entry(forged, "three")}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("batch create with the controller's ID: %v, want InvalidArgument", err)
	}
	if resp, err := ts.admin.ListEntries(ctx, &api.ListEntriesRequest{}); err != nil || len(resp.Entries) != 0 {
		t.Fatalf("after the refusals: %v, %v; want no entries", resp, err)
	}
	got, err := ts.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry("mine", "two")})
	if err != nil || got.Id != "mine" {
		t.Fatalf("create with an ID of the admin's: %v, %v", got, err)
	}
	if _, err := ts.admin.DeleteEntry(ctx, &api.DeleteEntryRequest{Id: got.Id}); err != nil {
		t.Errorf("the admin cannot delete its own entry %s: %v", got.Id, err)
	}
}

func TestJoinTokenSingleUseAndExpiry(t *testing.T) {
	ts := startServer(t, nil)
	gen, err := ts.admin.CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	tok := gen.Token
	a := mustAttest(t, ts, tok)
	if !strings.HasPrefix(a.ID.String(), "spiffe://example.org/agent/join_token/") || strings.Contains(a.ID.String(), tok) {
		t.Fatalf("agent ID %s: want spiffe://example.org/agent/join_token/<token-id> that does not reveal the token", a.ID)
	}
	if gen.AgentId != a.ID.String() {
		t.Fatalf("token generation announced agent %s; the agent got %s", gen.AgentId, a.ID)
	}
	_, err = attest(t, ts, tok)
	wantCode(t, err, codes.PermissionDenied, "reused token")
	_, err = attest(t, ts, "not-a-token")
	wantCode(t, err, codes.PermissionDenied, "unknown token")

	short := ts.token(t, "spiffe://example.org/agent/custom", time.Second)
	time.Sleep(1500 * time.Millisecond)
	_, err = attest(t, ts, short)
	wantCode(t, err, codes.PermissionDenied, "expired token")

	// A bad CSR is refused before the token is spent: the token still works.
	kept := ts.token(t, "", 0)
	anon := api.NewAgentServiceClient(dialTLS(t, ts.Addr(), tlsconfig.TLSClientConfig(ts.bundle(t), tlsconfig.AuthorizeID(agentapi.ServerID(td)))))
	_, err = anon.Attest(context.Background(), &api.AttestRequest{AttestationType: "join_token", Payload: []byte(kept), Csr: []byte("garbage")})
	wantCode(t, err, codes.InvalidArgument, "attest with a garbage CSR")
	// Well formed and well signed, but with a key type the CA refuses.
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521CSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p521)
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.Attest(context.Background(), &api.AttestRequest{AttestationType: "join_token", Payload: []byte(kept), Csr: p521CSR})
	wantCode(t, err, codes.InvalidArgument, "attest with a P-521 CSR")
	mustAttest(t, ts, kept)

	custom := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/custom", 0))
	if custom.ID.String() != "spiffe://example.org/agent/custom" {
		t.Fatalf("token with --spiffe-id gave %s", custom.ID)
	}
	// While that agent lives, no token hands its ID to anyone else...
	_, err = ts.admin.CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: custom.ID.String()})
	wantCode(t, err, codes.FailedPrecondition, "token for the ID of a live agent")
	// ...until it is evicted.
	if _, err := ts.admin.EvictAgent(context.Background(), &api.EvictAgentRequest{SpiffeId: custom.ID.String()}); err != nil {
		t.Fatal(err)
	}
	mustAttest(t, ts, ts.token(t, custom.ID.String(), 0))
}

func TestAgentSVIDAndServerCert(t *testing.T) {
	ts := startServer(t, nil)
	a := mustAttest(t, ts, ts.token(t, "", 0))
	if _, _, err := x509svid.Verify(a.SVID.Certificates, ts.bundle(t)); err != nil {
		t.Fatalf("agent SVID does not verify against the bundle: %v", err)
	}
	// TLS 1.2 is refused by the agent API.
	cfg := tlsconfig.TLSClientConfig(ts.bundle(t), tlsconfig.AuthorizeID(agentapi.ServerID(td)))
	cfg.MaxVersion = tls.VersionTLS12
	if c, err := tls.Dial("tcp", ts.Addr(), cfg); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 handshake succeeded; the agent API must be TLS 1.3 only")
	}
	// Renewal gives a new SVID for the same ID.
	key, csr := newCSR(t)
	resp, err := a.Client.RenewAgent(context.Background(), &api.RenewAgentRequest{Csr: csr})
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	renewed := svidFrom(t, resp.SvidChain, key)
	if renewed.ID != a.ID || renewed.Certificates[0].SerialNumber.Cmp(a.SVID.Certificates[0].SerialNumber) == 0 {
		t.Fatalf("renewed SVID %s serial %s", renewed.ID, renewed.Certificates[0].SerialNumber)
	}
	// Without a client certificate, only Attest is allowed.
	anon := api.NewAgentServiceClient(dialTLS(t, ts.Addr(), tlsconfig.TLSClientConfig(ts.bundle(t), tlsconfig.AuthorizeID(agentapi.ServerID(td)))))
	_, err = anon.RenewAgent(context.Background(), &api.RenewAgentRequest{Csr: csr})
	wantCode(t, err, codes.Unauthenticated, "renew without client cert")
}

func TestSignOnlyAuthorizedEntries(t *testing.T) {
	ts := startServer(t, nil)
	a := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/a", 0))
	b := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/b", 0))
	mine := ts.createEntry(t, "spiffe://example.org/web", a.ID.String(), "unix:uid:1000")
	theirs := ts.createEntry(t, "spiffe://example.org/db", b.ID.String(), "unix:uid:1000")
	// Parented to a workload entry the agent serves: not the agent's (DESIGN.md).
	nested := ts.createEntry(t, "spiffe://example.org/web/child", "spiffe://example.org/web", "unix:uid:1001")

	ctx := context.Background()
	key, csr := newCSR(t)
	resp, err := a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: mine.Id, Csr: csr}}})
	if err != nil {
		t.Fatalf("sign own entry: %v", err)
	}
	_, err = a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: nested.Id, Csr: csr}}})
	wantCode(t, err, codes.PermissionDenied, "CSR for an entry parented to a workload entry")
	svid := svidFrom(t, resp.Svids[0].CertChain, key)
	if svid.ID.String() != "spiffe://example.org/web" {
		t.Fatalf("SVID ID %s", svid.ID)
	}
	leaf := svid.Certificates[0]
	if len(leaf.URIs) != 1 || leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("leaf violates X509-SVID rules: URIs=%v IsCA=%v KeyUsage=%v", leaf.URIs, leaf.IsCA, leaf.KeyUsage)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ts.bundle(t)); err != nil {
		t.Fatalf("workload SVID does not verify: %v", err)
	}
	if got := resp.Svids[0].ExpiresAt; got != leaf.NotAfter.Unix() {
		t.Errorf("expires_at = %d, the certificate says %d", got, leaf.NotAfter.Unix())
	}

	_, err = a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{
		{EntryId: mine.Id, Csr: csr}, {EntryId: theirs.Id, Csr: csr},
	}})
	wantCode(t, err, codes.PermissionDenied, "CSR for another agent's entry")
	_, err = a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: "no-such-entry", Csr: csr}}})
	wantCode(t, err, codes.PermissionDenied, "CSR for an unknown entry")
	_, err = a.Client.MintJWTSVID(ctx, &api.MintJWTSVIDRequest{EntryId: theirs.Id, Audience: []string{"x"}})
	wantCode(t, err, codes.PermissionDenied, "JWT for another agent's entry")
	_, err = a.Client.MintJWTSVID(ctx, &api.MintJWTSVIDRequest{EntryId: mine.Id, Audience: []string{""}})
	wantCode(t, err, codes.InvalidArgument, "JWT with an empty audience")
	jwt, err := a.Client.MintJWTSVID(ctx, &api.MintJWTSVIDRequest{EntryId: mine.Id, Audience: []string{"x"}})
	if err != nil || jwt.SpiffeId != "spiffe://example.org/web" || jwt.Token == "" {
		t.Fatalf("JWT for own entry: %v %v", jwt, err)
	}
	_, err = a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: mine.Id, Csr: []byte("garbage")}}})
	wantCode(t, err, codes.InvalidArgument, "garbage CSR")
	// A well-formed CSR whose signature does not verify: no proof that the
	// agent holds the key, so no certificate for it.
	forged := slices.Clone(csr)
	forged[len(forged)-1] ^= 0x01
	_, err = a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: mine.Id, Csr: forged}}})
	wantCode(t, err, codes.InvalidArgument, "CSR with a bad signature")
}

func TestSyncPushesChangesAndEvictionCutsOff(t *testing.T) {
	ts := startServer(t, nil)
	a := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/a", 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := a.Client.Sync(ctx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("first sync message: %v", err)
	}
	if len(first.Entries) != 0 || len(first.Bundle.X509Authorities) == 0 || len(first.Bundle.JwtAuthorities) == 0 {
		t.Fatalf("first message: %d entries, bundle %v", len(first.Entries), first.Bundle)
	}
	// An entry for another agent does not concern a; one for a is pushed.
	ts.createEntry(t, "spiffe://example.org/other", "spiffe://example.org/agent/b", "unix:uid:1")
	e := ts.createEntry(t, "spiffe://example.org/web", a.ID.String(), "unix:uid:1000")
	next, err := stream.Recv()
	if err != nil {
		t.Fatalf("pushed message: %v", err)
	}
	if len(next.Entries) != 1 || next.Entries[0].Id != e.Id {
		t.Fatalf("pushed entries %v, want only %s", next.Entries, e.Id)
	}

	if _, err := ts.admin.EvictAgent(context.Background(), &api.EvictAgentRequest{SpiffeId: a.ID.String()}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.PermissionDenied, "sync stream after eviction")
	_, csr := newCSR(t)
	_, err = a.Client.RenewAgent(context.Background(), &api.RenewAgentRequest{Csr: csr})
	wantCode(t, err, codes.PermissionDenied, "renew after eviction")
	_, err = a.Client.BatchSignX509SVID(context.Background(), &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: e.Id, Csr: csr}}})
	wantCode(t, err, codes.PermissionDenied, "sign after eviction")
}

// New binds the agent API and admin socket before the health address; when
// that fails, what it bound must be released: the retry (a supervisor's
// restart, the operator's corrected config) binds the same addresses.
func TestNewReleasesListenersOnError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agentAddr := probe.Addr().String()
	probe.Close()
	dir := t.TempDir()
	cfg := server.Config{
		TrustDomain: td, DataDir: dir, Listen: agentAddr, AdminSocket: filepath.Join(dir, "admin.sock"),
		Datastore: "sqlite://" + filepath.Join(dir, "signet.db"), SVIDTTL: time.Hour, JWTTTL: 5 * time.Minute, AgentTTL: time.Hour,
		HealthListen: busy.Addr().String(),
	}
	if _, err := server.New(context.Background(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "health listener") {
		t.Fatalf("New with a busy health address: %v, want a health listener error", err)
	}
	cfg.HealthListen = "127.0.0.1:0"
	ts := runServer(t, cfg)
	if ts.Addr() != agentAddr {
		t.Fatalf("agent API on %s, want %s", ts.Addr(), agentAddr)
	}
}

func TestAdminSocketMode(t *testing.T) {
	ts := startServer(t, nil)
	if _, err := ts.admin.ListAgents(context.Background(), &api.ListAgentsRequest{}); err != nil {
		t.Fatalf("admin call as own uid: %v", err)
	}
	fi, err := os.Stat(ts.cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o770 {
		t.Fatalf("admin socket mode %o, want 0770", perm)
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

func TestCARotationKeepsBothRoots(t *testing.T) {
	// SVID TTL 2 s: the CA lives 12 s, the next one is published at 6 s and
	// used from 10 s; the old root must stay until the last SVID it signed
	// (just before 10 s) expires, and leave when it expires. (A CA's life
	// starts when it is published, so from then on the bundle holds two
	// roots: the active one and the next.) The agent SVID's TTL is capped at
	// its CA's expiry, so the agent can ask for SVIDs through the activation.
	ts := startServer(t, func(c *server.Config) { c.SVIDTTL, c.AgentTTL = 2*time.Second, time.Minute })
	roots := func() []*x509.Certificate {
		b, err := x509bundle.Parse(td, ts.BundlePEM())
		if err != nil {
			t.Fatal(err)
		}
		return b.X509Authorities()
	}
	first := roots()
	if len(first) != 1 {
		t.Fatalf("fresh server publishes %d roots, want 1", len(first))
	}
	a := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/a", 0))
	w := ts.createEntry(t, "spiffe://example.org/w", a.ID.String(), "unix:uid:1")
	sign := func(agent *testAgent, entryID string) *x509svid.SVID {
		key, csr := newCSR(t)
		resp, err := agent.Client.BatchSignX509SVID(context.Background(), &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: entryID, Csr: csr}}})
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		return svidFrom(t, resp.Svids[0].CertChain, key)
	}
	// oldValidUntil is the latest expiry of an SVID the old root signed.
	var oldValidUntil time.Time
	sawBoth, activated := false, false
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		rs := roots()
		if len(rs) == 2 {
			sawBoth = true
		}
		// From publication of the next root to activation, keep asking
		// for SVIDs: the last one the old root signs is at most one poll
		// before the activation.
		if sawBoth && !activated {
			leaf := sign(a, w.Id).Certificates[0]
			if leaf.CheckSignatureFrom(first[0]) == nil {
				oldValidUntil = leaf.NotAfter
			} else {
				activated = true
				if !time.Now().Before(oldValidUntil) {
					t.Fatalf("the old root's last SVID expired (%s) before the activation: nothing to check the overlap with", oldValidUntil.Format(time.RFC3339Nano))
				}
			}
		}
		if !containsCert(rs, first[0]) && time.Now().Before(oldValidUntil) {
			t.Fatalf("old root dropped while an SVID it signed is valid until %s", oldValidUntil.Format(time.RFC3339Nano))
		}
		if activated && !containsCert(rs, first[0]) {
			break
		}
		// An expired root must leave the bundle when it expires, not linger
		// until the next rotation step (the next CA is published 4 s later).
		if containsCert(rs, first[0]) && time.Now().After(first[0].NotAfter.Add(3*time.Second)) {
			t.Fatalf("the old root is still in the bundle 3 s after it expired (%d roots)", len(rs))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !activated {
		t.Fatalf("never saw the next root activated (published beside the active one: %v)", sawBoth)
	}
	rs := roots()
	if len(rs) == 0 || containsCert(rs, first[0]) {
		t.Fatalf("after rotation the bundle holds %d roots (old still there: %v)", len(rs), containsCert(rs, first[0]))
	}
	// New SVIDs chain to a root of the current bundle, not the old one.
	b := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/b", 0))
	svid := sign(b, ts.createEntry(t, "spiffe://example.org/w", b.ID.String(), "unix:uid:1").Id)
	if _, _, err := x509svid.Verify(svid.Certificates, ts.bundle(t)); err != nil {
		t.Fatalf("SVID after rotation does not verify against the current bundle: %v", err)
	}
	if svid.Certificates[0].CheckSignatureFrom(first[0]) == nil {
		t.Fatal("SVID after rotation is still signed by the expired root")
	}
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}
