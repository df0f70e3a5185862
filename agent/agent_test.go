package agent_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/servertest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

const agentID = "spiffe://example.org/agent/node1"

type realServer struct{ *servertest.Server }

// startServer runs a real Signet server in-process on 127.0.0.1:0 with SQLite.
func startServer(t testing.TB) *realServer {
	return &realServer{servertest.Start(t, td, nil)}
}

func (s *realServer) entry(t *testing.T, path string, sels ...string) *api.Entry {
	t.Helper()
	e := &api.Entry{SpiffeId: "spiffe://example.org" + path, ParentId: agentID}
	for _, sel := range sels {
		typ, val, _ := strings.Cut(sel, ":")
		e.Selectors = append(e.Selectors, &api.Selector{Type: typ, Value: val})
	}
	got, err := s.Admin().CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: e})
	if err != nil {
		t.Fatalf("create entry: %v", err)
	}
	return got
}

// runningAgent is agent.Run in a goroutine.
type runningAgent struct {
	ready  chan agent.ReadyInfo
	health string
	cancel context.CancelFunc
	done   chan error
}

func startAgent(t *testing.T, cfg agent.Config) *runningAgent {
	t.Helper()
	return startAgentLogging(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func startAgentLogging(t *testing.T, cfg agent.Config, logger *slog.Logger) *runningAgent {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &runningAgent{ready: make(chan agent.ReadyInfo, 1), health: "http://" + hl.Addr().String(), done: make(chan error, 1)}
	cfg.HealthListener = hl
	cfg.OnReady = func(info agent.ReadyInfo) { a.ready <- info }
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- agent.Run(ctx, cfg, logger) }()
	t.Cleanup(a.stop(t))
	return a
}

func (a *runningAgent) stop(t *testing.T) func() {
	return func() {
		a.cancel()
		if err := <-a.done; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
		a.done <- nil // later calls return at once
	}
}

func (a *runningAgent) waitReady(t *testing.T) agent.ReadyInfo {
	t.Helper()
	select {
	case info := <-a.ready:
		return info
	case err := <-a.done:
		t.Fatalf("agent exited before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("agent not ready within 60s")
	}
	return agent.ReadyInfo{}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAgentEndToEnd runs a real server and agent.Run in-process and uses
// go-spiffe's Workload API client over the real socket (the caller is
// attested by the real Unix attestor: this test process's uid).
func TestAgentEndToEnd(t *testing.T) {
	s := startServer(t)
	tok, err := s.Admin().CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	uidSel := fmt.Sprintf("unix:uid:%d", os.Getuid())
	s.entry(t, "/first", uidSel)

	dir, err := os.MkdirTemp("", "sgt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := agent.Config{
		ServerAddress:  s.Addr(),
		TrustDomain:    td.Name(),
		DataDir:        filepath.Join(dir, "data"),
		JoinToken:      tok.Token,
		TrustBundlePEM: s.BundlePEM(),
		SocketPath:     filepath.Join(dir, "agent.sock"),
	}
	a := startAgent(t, cfg)
	info := a.waitReady(t)
	if info.AgentID.String() != agentID || info.SocketPath != cfg.SocketPath {
		t.Fatalf("ready info = %+v", info)
	}
	if code, body := httpGet(t, a.health+"/ready"); code != http.StatusOK || !strings.Contains(body, "last sync") {
		t.Fatalf("/ready = %d %q, want 200 with the last sync age", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	svid, err := wl.FetchX509SVID(ctx)
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if svid.ID.Path() != "/first" {
		t.Fatalf("SVID %s, want /first", svid.ID)
	}
	// The state an operator alerts on: every entry has an SVID, and when
	// the soonest one and the agent's own expire.
	m := scrape(t, a.health)
	wantMetrics := map[string]float64{
		"signet_agent_entries":      1,
		"signet_agent_svids_cached": 1,
		"signet_agent_workload_svid_earliest_expiry_timestamp_seconds": float64(svid.Certificates[0].NotAfter.Unix()),
	}
	for name, want := range wantMetrics {
		if got, ok := m[name]; !ok || got != want {
			t.Errorf("metric %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if own, ok := m["signet_agent_svid_expiry_timestamp_seconds"]; !ok || own < float64(time.Now().Unix()) {
		t.Errorf("metric signet_agent_svid_expiry_timestamp_seconds = %v (present %v), want the agent SVID's future expiry", own, ok)
	}

	// A new entry reaches an open stream without reconnecting.
	updates := make(chan *workloadapi.X509Context, 16)
	go func() { _ = wl.WatchX509Context(ctx, watcher(updates)) }()
	s.entry(t, "/second", uidSel)
	for found := false; !found; {
		select {
		case x := <-updates:
			for _, sv := range x.SVIDs {
				found = found || sv.ID.Path() == "/second"
			}
		case <-ctx.Done():
			t.Fatal("the new entry never reached the open stream")
		}
	}

	// Server down, agent restarted (no join token): the persisted SVIDs
	// are still served.
	a.stop(t)()
	s.Stop()
	cfg.JoinToken = ""
	cfg.TrustBundlePEM = nil
	a2 := startAgent(t, cfg)
	wl2, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatal(err)
	}
	defer wl2.Close()
	// Watch, not fetch: the client retries until the restarted agent's
	// socket exists, as real clients do.
	updates2 := make(chan *workloadapi.X509Context, 16)
	go func() { _ = wl2.WatchX509Context(ctx, watcher(updates2)) }()
	var x *workloadapi.X509Context
	select {
	case x = <-updates2:
	case <-ctx.Done():
		t.Fatal("no X.509 context from the restarted agent with the server down")
	}
	var got []string
	for _, sv := range x.SVIDs {
		got = append(got, sv.ID.Path())
	}
	// Both entries were created in the same second (created_at has second
	// resolution), so their order is by entry ID: compare as a set.
	slices.Sort(got)
	if strings.Join(got, ",") != "/first,/second" {
		t.Fatalf("served %v with the server down, want [/first /second]", got)
	}
	if code, _ := httpGet(t, a2.health+"/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("/ready = %d with the server down, want 503", code)
	}
}

type watcher chan *workloadapi.X509Context

func (w watcher) OnX509ContextUpdate(x *workloadapi.X509Context) { w <- x }

// OnX509ContextWatchError ignores errors: the client retries by itself.
func (w watcher) OnX509ContextWatchError(error) {}

// TestJWTBeforeAttestationIsUnavailable: an agent restarted while the server
// is unreachable, with no usable agent SVID but a persisted workload cache,
// serves the Workload API at once. A JWT request for a cached entry must get
// a retryable Unavailable, not crash the agent on the missing connection.
func TestJWTBeforeAttestationIsUnavailable(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	c, err := cache.New(cache.Options{TrustDomain: td, Dir: data})
	if err != nil {
		t.Fatal(err)
	}
	c.SetEntries([]cache.Entry{{ID: "e1", SPIFFEID: spiffeid.RequireFromPath(td, "/w"),
		Selectors: []selector.Selector{{Type: "unix", Value: fmt.Sprintf("uid:%d", os.Getuid())}}, CreatedAt: time.Now()}})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := agent.Config{
		ServerAddress: "127.0.0.1:1", TrustDomain: td.Name(), DataDir: data, JoinToken: "unused-token",
		TrustBundlePEM: selfSignedRootPEM(t), SocketPath: filepath.Join(dir, "agent.sock"),
	}
	a := startAgent(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(cfg.SocketPath); err == nil {
			break
		}
		select {
		case err := <-a.done:
			t.Fatalf("agent exited: %v", err)
		case <-ctx.Done():
			t.Fatal("the Workload API socket never appeared")
		case <-time.After(20 * time.Millisecond):
		}
	}
	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatal(err)
	}
	defer wl.Close()
	_, err = wl.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("FetchJWTSVID before attestation: %v, want Unavailable", err)
	}
	select {
	case err := <-a.done:
		t.Fatalf("agent exited after the JWT request: %v", err)
	default:
	}
}

func selfSignedRootPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// When the agent renews its own SVID (here because its CA is tainted), its
// Sync stream moves to the new connection at once: revoking the old CA
// then cuts nothing, entries keep arriving, and no WARN is logged. (Before,
// the stream stayed on the old connection until it closed or was refused.)
func TestAgentSyncMovesWithItsSVID(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	tok, err := s.Admin().CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	uidSel := fmt.Sprintf("unix:uid:%d", os.Getuid())
	s.entry(t, "/first", uidSel)
	dir := t.TempDir()
	logs := &logtest.Buffer{}
	a := startAgentLogging(t, agent.Config{ServerAddress: s.Addr(), TrustDomain: td.Name(), DataDir: filepath.Join(dir, "data"),
		JoinToken: tok.Token, TrustBundlePEM: s.BundlePEM(), SocketPath: filepath.Join(dir, "agent.sock")}, logs.Logger())
	info := a.waitReady(t)
	addr := workloadapi.WithAddr("unix://" + info.SocketPath)

	admin := s.Admin()
	list, err := admin.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	old := list.Authorities[0].AuthorityId
	prepared, err := admin.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ActivateLocalAuthority(ctx, &api.ActivateLocalAuthorityRequest{Kind: "x509", AuthorityId: prepared.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); err != nil {
		t.Fatal(err)
	}
	logs.WaitFor(t, "sync stream moving to the agent's new connection", 30*time.Second)
	if _, err := admin.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); err != nil {
		t.Fatal(err)
	}
	s.entry(t, "/after-revoke", uidSel)
	deadline := time.Now().Add(30 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		svids, err := workloadapi.FetchX509SVIDs(fctx, addr)
		cancel()
		if err == nil && slices.ContainsFunc(svids, func(s *x509svid.SVID) bool { return s.ID.Path() == "/after-revoke" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the entry created after the revocation did not reach the workload (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "sync stream to server ended"); n != 0 {
		t.Errorf("%d sync stream failures logged, want 0:\n%s", n, logs.String())
	}
}

// scrape reads the agent's /metrics into name -> value (gauges and
// counters without labels).
func scrape(t *testing.T, health string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, health+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := make(map[string]float64)
	for name, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) > 0 {
				continue
			}
			switch {
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// workload_x509_svid_key_type = "rsa-2048": workloads get RSA keys through
// the real server and Workload API; an unknown type is refused at start.
func TestAgentRSAWorkloadKeys(t *testing.T) {
	s := startServer(t)
	tok, err := s.Admin().CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	s.entry(t, "/rsa", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	dir, err := os.MkdirTemp("", "sgt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := agent.Config{
		ServerAddress: s.Addr(), TrustDomain: td.Name(), DataDir: filepath.Join(dir, "data"),
		JoinToken: tok.Token, TrustBundlePEM: s.BundlePEM(), SocketPath: filepath.Join(dir, "agent.sock"),
		WorkloadKeyType: "rsa-2048",
	}
	bad := cfg
	bad.WorkloadKeyType = "rsa-1024"
	if err := agent.Run(context.Background(), bad, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "workload_x509_svid_key_type") {
		t.Fatalf("agent with key type rsa-1024: %v, want a refusal naming workload_x509_svid_key_type", err)
	}
	a := startAgent(t, cfg)
	a.waitReady(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Ready comes with the first sync; the RSA keys take a moment more.
	var svid *x509svid.SVID
	for {
		if svid, err = workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+cfg.SocketPath)); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	key, ok := svid.PrivateKey.(*rsa.PrivateKey)
	if !ok || key.N.BitLen() != 2048 || !key.PublicKey.Equal(svid.Certificates[0].PublicKey) {
		t.Fatalf("workload key %T, want the 2048-bit RSA key of the SVID", svid.PrivateKey)
	}
}
