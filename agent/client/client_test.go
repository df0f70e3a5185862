package client

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/servertest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// realServer is an in-process Signet server on 127.0.0.1:0 with SQLite.
type realServer struct{ *servertest.Server }

func startServer(t *testing.T) *realServer {
	return &realServer{servertest.Start(t, td, nil)}
}

func (s *realServer) token(t *testing.T, agentID string) string {
	t.Helper()
	resp, err := s.Admin().CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	return resp.Token
}

// syncWorks opens a Sync stream with the client's current identity and
// reads the first message.
func syncWorks(ctx context.Context, c *Client) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := c.Service().Sync(ctx, &api.SyncRequest{})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func newClient(t *testing.T, s *realServer, dir string, token func() string, mutate func(*Config)) *Client {
	t.Helper()
	roots, err := ParsePEMCertificates(s.BundlePEM())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ServerAddr: s.Addr(), TrustDomain: td, DataDir: dir, NodeAttestor: JoinToken(token), TrustBundle: roots}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func static(tok string) func() string { return func() string { return tok } }

func TestAttestPersistRestart(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "agent")
	agentID := "spiffe://example.org/agent/node1"

	c := newClient(t, s, dir, static(s.token(t, agentID)), nil)
	if err := c.Start(ctx); err != nil {
		t.Fatalf("attest: %v", err)
	}
	if got := c.AgentID().String(); got != agentID {
		t.Fatalf("agent ID = %s, want %s", got, agentID)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready after attestation: %v", err)
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync with the agent SVID: %v", err)
	}
	for name, want := range map[string]os.FileMode{SVIDFile: 0o600, TokenFile: 0o600, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}

	// A restart needs no token: the persisted SVID is used.
	c2 := newClient(t, s, dir, static(""), func(cfg *Config) { cfg.TrustBundle = nil })
	if err := c2.Start(ctx); err != nil {
		t.Fatalf("restart without token: %v", err)
	}
	if c2.AgentID() != c.AgentID() {
		t.Fatalf("restarted as %s, want %s", c2.AgentID(), c.AgentID())
	}
	if err := syncWorks(ctx, c2); err != nil {
		t.Fatalf("sync after restart: %v", err)
	}
}

func TestAttestTrust(t *testing.T) {
	s := startServer(t)
	other := startServer(t) // another trust root: its bundle must not verify s
	ctx := context.Background()

	tests := []struct {
		name     string
		mutate   func(*Config)
		wantErr  string
		wantWarn bool
	}{
		{name: "trust bundle from the server"},
		{name: "wrong trust bundle", mutate: func(c *Config) {
			c.TrustBundle, _ = ParsePEMCertificates(other.BundlePEM())
		}, wantErr: "certificate"},
		{name: "no bundle, no insecure bootstrap", mutate: func(c *Config) { c.TrustBundle = nil }, wantErr: "--trust-bundle"},
		{name: "insecure bootstrap warns", mutate: func(c *Config) {
			c.TrustBundle = nil
			c.InsecureBootstrap = true
		}, wantWarn: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logtest.Buffer{}
			c := newClient(t, s, t.TempDir(), static(s.token(t, fmt.Sprintf("spiffe://example.org/agent/case%d", i))), func(cfg *Config) {
				cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
				if tc.mutate != nil {
					tc.mutate(cfg)
				}
			})
			err := c.Start(ctx)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Start error = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			if err := syncWorks(ctx, c); err != nil {
				t.Fatalf("sync: %v", err)
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "INSECURE BOOTSTRAP")
			if warned != tc.wantWarn {
				t.Fatalf("insecure warning logged = %v, want %v; logs:\n%s", warned, tc.wantWarn, logs)
			}
		})
	}
}

func TestRenewAndReattest(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	agentID := "spiffe://example.org/agent/node1"
	var (
		mu    sync.Mutex
		token = s.token(t, agentID)
	)
	tokenFn := func() string {
		mu.Lock()
		defer mu.Unlock()
		return token
	}
	dir := t.TempDir()
	c := newClient(t, s, dir, tokenFn, nil)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := c.GetX509SVID()

	// Renewal: a new SVID, persisted, and the server accepts it.
	if err := c.renewOrReattest(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	renewed, _ := c.GetX509SVID()
	if renewed.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatal("renewal kept the same certificate")
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync with the renewed SVID: %v", err)
	}
	onDisk, err := store{dir: dir}.loadSVID()
	if err != nil || !onDisk.svid.Certificates[0].Equal(renewed.Certificates[0]) || onDisk.reattestable {
		t.Fatalf("renewed SVID not persisted (err %v)", err)
	}

	// Evicted, and only the used token: not ready, says why.
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: agentID}); err != nil {
		t.Fatal(err)
	}
	if err := c.renewOrReattest(ctx); err == nil {
		t.Fatal("renewal of an evicted agent with a used token succeeded")
	}
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "join token") {
		t.Fatalf("Ready = %v, want not ready naming the join token", err)
	}

	// A fresh token arrives: re-attested without a restart.
	mu.Lock()
	token = s.token(t, agentID)
	mu.Unlock()
	if err := c.renewOrReattest(ctx); err != nil {
		t.Fatalf("re-attest with a fresh token: %v", err)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready after re-attestation: %v", err)
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync after re-attestation: %v", err)
	}
}

// loseFirstAnswer is a client interceptor that lets the first Attest reach
// the server, which commits it, and then loses the answer, as a deadline or
// a dropped connection would.
func loseFirstAnswer(lost *atomic.Int32) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == api.AgentService_Attest_FullMethodName && err == nil && lost.Add(1) == 1 {
			return status.Error(codes.DeadlineExceeded, "answer lost")
		}
		return err
	}
}

// An agent whose attestation committed on the server but whose answer was
// lost retries with the same token and key, and the server answers again;
// with a fresh key the spent token would be refused for good.
func TestAttestRetryAfterLostAnswer(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	const agentID = "spiffe://example.org/agent/lost-answer"
	var lost atomic.Int32
	c := newClient(t, s, t.TempDir(), static(s.token(t, agentID)), func(cfg *Config) {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithUnaryInterceptor(loseFirstAnswer(&lost)))
	})
	if err := c.Start(ctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("first attestation: %v, want the lost answer's DeadlineExceeded", err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("retry after the lost answer: %v", err)
	}
	if got := c.AgentID().String(); got != agentID {
		t.Fatalf("attested as %s", got)
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync after the retry: %v", err)
	}
	// Answered, the token is used up on this side too.
	if err := c.attest(ctx, false); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("attesting again with the answered token: %v", err)
	}
}
