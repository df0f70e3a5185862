package client

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
)

// callCounter counts the agent API calls a client makes, by full method
// name, as they leave it.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *callCounter) dialOption() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]int{}
		}
		c.n[method]++
		c.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

func (c *callCounter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// startX509PoPClient starts an x509pop agent client of s with the machine
// certificate at certPath (key at keyPath); calls counts its calls.
func startX509PoPClient(t *testing.T, s *realServer, dataDir, certPath, keyPath string, calls *callCounter) *Client {
	t.Helper()
	c := newClient(t, s, dataDir, nil, func(cfg *Config) {
		cfg.NodeAttestor = X509PoP(td, certPath, keyPath)
		cfg.DialOptions = append(cfg.DialOptions, calls.dialOption())
		cfg.MaxBackoff = time.Second
	})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func serialOf(t *testing.T, c *Client) string {
	t.Helper()
	svid, err := c.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0].SerialNumber.Text(16)
}

// An x509pop agent renews by attesting again with its machine certificate,
// read again from disk: never with RenewAgent. When the server no longer
// accepts that certificate, the renewal fails: the agent keeps serving
// with the SVID it holds, reports not ready saying why, and does not fall
// back to renewing in place.
func TestX509PoPRenewsByReattesting(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		spoil func(t *testing.T, nodeDir, serverBundle string, ca *x509poptest.CA)
		code  codes.Code // codes.Unknown: a local error, before any call
		msg   string
	}{
		{"machine certificate replaced by an expired one", func(t *testing.T, nodeDir, _ string, ca *x509poptest.CA) {
			ca.NodeFiles(t, nodeDir, x509poptest.Leaf{CommonName: "node-1", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		}, codes.PermissionDenied, "expired"},
		{"node CA dropped from the server's bundle", func(t *testing.T, _, serverBundle string, _ *x509poptest.CA) {
			x509poptest.WritePEM(t, serverBundle, x509poptest.NewRoot(t, "Another Node Root").Cert)
		}, codes.PermissionDenied, "unknown authority"},
		{"machine certificate removed", func(t *testing.T, nodeDir, _ string, _ *x509poptest.CA) {
			if err := os.Remove(nodeDir + "/node.crt"); err != nil {
				t.Fatal(err)
			}
		}, codes.Unknown, "read x509pop certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, ca, serverBundle := x509popServerWith(t, nil)
			nodeDir, dataDir := t.TempDir(), t.TempDir()
			_, certPath, keyPath := ca.NodeFiles(t, nodeDir, x509poptest.Leaf{CommonName: "node-1"})
			var calls callCounter
			c := startX509PoPClient(t, s, dataDir, certPath, keyPath, &calls)
			if onDisk, err := (store{dir: dataDir}).loadSVID(); err != nil || !onDisk.reattestable {
				t.Fatalf("persisted identity: reattestable %v, %v; want reattestable", onDisk.reattestable, err)
			}
			id, first := c.AgentID(), serialOf(t, c)

			// A renewal is an attestation: a new SVID, the same agent ID.
			if err := c.renewOrReattest(ctx); err != nil {
				t.Fatalf("renew by re-attestation: %v", err)
			}
			if c.AgentID() != id || serialOf(t, c) == first {
				t.Fatalf("after renewal: %s serial %s; want %s with a new serial (was %s)", c.AgentID(), serialOf(t, c), id, first)
			}
			if got := calls.get(api.AgentService_Attest_FullMethodName); got != 2 {
				t.Fatalf("%d Attest calls, want 2 (start, renewal)", got)
			}
			if err := syncWorks(ctx, c); err != nil {
				t.Fatalf("sync after the renewal: %v", err)
			}

			tc.spoil(t, nodeDir, serverBundle, ca)
			held, _ := c.GetX509SVID()
			err := c.renewOrReattest(ctx)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("renewal: %v, want %s containing %q", err, tc.code, tc.msg)
			}
			if err := c.Ready(); err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "until it expires") {
				t.Fatalf("Ready = %v, want not ready saying why and that the SVID serves until it expires", err)
			}
			if now, _ := c.GetX509SVID(); now != held {
				t.Fatal("the refused renewal dropped the agent SVID")
			}
			if err := syncWorks(ctx, c); err != nil {
				t.Fatalf("sync with the held SVID after the refused renewal: %v", err)
			}
			if got := calls.get(api.AgentService_RenewAgent_FullMethodName); got != 0 {
				t.Fatalf("%d RenewAgent calls, want none: a reattestable agent never renews in place", got)
			}
		})
	}
}

// A join-token agent cannot attest again (its token is spent): it renews in
// place, and the server lets it.
func TestJoinTokenAgentRenewsInPlace(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	dataDir := t.TempDir()
	var calls callCounter
	c := newClient(t, s, dataDir, static(s.token(t, "")), func(cfg *Config) { cfg.DialOptions = append(cfg.DialOptions, calls.dialOption()) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		before := serialOf(t, c)
		if err := c.renewOrReattest(ctx); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		if serialOf(t, c) == before {
			t.Fatalf("renewal %d kept serial %s", i, before)
		}
	}
	if a, r := calls.get(api.AgentService_Attest_FullMethodName), calls.get(api.AgentService_RenewAgent_FullMethodName); a != 1 || r != 3 {
		t.Fatalf("%d Attest and %d RenewAgent calls, want 1 and 3", a, r)
	}
	if onDisk, err := (store{dir: dataDir}).loadSVID(); err != nil || onDisk.reattestable {
		t.Fatalf("persisted identity: reattestable %v, %v; want renew in place", onDisk.reattestable, err)
	}
	agents, err := s.Admin().ListAgents(ctx, &api.ListAgentsRequest{})
	if err != nil || len(agents.Agents) != 1 || agents.Agents[0].CanReattest {
		t.Fatalf("agents %v, err %v; want the join-token agent, which cannot re-attest", agents, err)
	}
}

// An agent upgraded from a version that did not record how it renews has
// a state file without it: it renews in place, is told by the server that
// it must re-attest, re-attests, and from then on knows (no loop of
// refused RenewAgent calls).
func TestOldStateFileLearnsToReattest(t *testing.T) {
	s, ca := x509popServer(t)
	ctx := context.Background()
	_, certPath, keyPath := ca.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	dataDir := t.TempDir()
	first := newClient(t, s, dataDir, nil, func(cfg *Config) { cfg.NodeAttestor = X509PoP(td, certPath, keyPath) })
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	svid, _ := first.GetX509SVID()
	// The file an earlier version wrote: the chain and the key only.
	if err := (store{dir: dataDir}).saveSVID(identity{svid: svid}); err != nil {
		t.Fatal(err)
	}

	var calls callCounter
	c := startX509PoPClient(t, s, dataDir, certPath, keyPath, &calls)
	if calls.get(api.AgentService_Attest_FullMethodName) != 0 || serialOf(t, c) != svid.Certificates[0].SerialNumber.Text(16) {
		t.Fatal("the restarted agent did not use its persisted SVID")
	}
	for i := range 3 {
		if err := c.renewOrReattest(ctx); err != nil {
			t.Fatalf("renewal %d: %v", i, err)
		}
		if err := c.Ready(); err != nil {
			t.Fatalf("not ready after renewal %d: %v", i, err)
		}
	}
	if a, r := calls.get(api.AgentService_Attest_FullMethodName), calls.get(api.AgentService_RenewAgent_FullMethodName); a != 3 || r != 1 {
		t.Fatalf("%d Attest and %d RenewAgent calls, want 3 and 1 (one refused RenewAgent, then re-attestations)", a, r)
	}
	if onDisk, err := (store{dir: dataDir}).loadSVID(); err != nil || !onDisk.reattestable {
		t.Fatalf("persisted identity after the server's refusal: reattestable %v, %v; want reattestable", onDisk.reattestable, err)
	}
}

// A re-attestation that fails because the server cannot be reached is not
// a refusal: the agent stays ready and retries.
func TestReattestServerDownStaysReady(t *testing.T) {
	s, ca := x509popServer(t)
	ctx := context.Background()
	_, certPath, keyPath := ca.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) {
		cfg.NodeAttestor = X509PoP(td, certPath, keyPath)
		cfg.CallTimeout = 5 * time.Second
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := c.renewOrReattest(ctx); status.Code(err) != codes.Unavailable {
		t.Fatalf("renewal with the server down: %v, want Unavailable", err)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready while the server is down: %v (the SVID is valid and nothing refused it)", err)
	}
}

// End to end through Run, at the agents' own rotations (agent SVIDs of 2s,
// renewed at half that): once the node CA is dropped from the server's
// x509pop bundle, the x509pop agent loses its ability to renew at its next
// rotation and reports not ready, while a join-token agent of the same
// server keeps renewing.
func TestRotationRechecksMachineCertificate(t *testing.T) {
	s, ca, serverBundle := x509popServerWith(t, func(c *server.Config) { c.AgentTTL = 2 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, certPath, keyPath := ca.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	var popCalls callCounter
	pop := startX509PoPClient(t, s, t.TempDir(), certPath, keyPath, &popCalls)
	joined := newClient(t, s, t.TempDir(), static(s.token(t, "")), func(cfg *Config) { cfg.MaxBackoff = time.Second })
	if err := joined.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range []*Client{pop, joined} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Run(ctx)
		}()
	}
	defer wg.Wait()
	defer cancel()

	// waitFor polls cond until it holds; the deadline is generous, the
	// rotations come every second.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	rotated := func(c *Client) func() bool {
		before := serialOf(t, c)
		return func() bool { return serialOf(t, c) != before && c.Ready() == nil }
	}
	waitFor("the x509pop agent's first rotation", rotated(pop))
	waitFor("the join-token agent's first rotation", rotated(joined))

	x509poptest.WritePEM(t, serverBundle, x509poptest.NewRoot(t, "Another Node Root").Cert)
	waitFor("the x509pop agent to report not ready", func() bool {
		err := pop.Ready()
		return err != nil && strings.Contains(err.Error(), "unknown authority")
	})
	held := serialOf(t, pop)
	for i := range 2 {
		waitFor(fmt.Sprintf("join-token agent rotation %d after the x509pop CA was dropped", i+1), rotated(joined))
	}
	if err := pop.Ready(); err == nil || serialOf(t, pop) != held {
		t.Fatalf("the x509pop agent renewed (serial %s, was %s) or became ready (%v) without an accepted certificate", serialOf(t, pop), held, err)
	}
	if got := popCalls.get(api.AgentService_RenewAgent_FullMethodName); got != 0 {
		t.Fatalf("the x509pop agent called RenewAgent %d times; it must only re-attest", got)
	}
}
