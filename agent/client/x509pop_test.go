package client

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/x509pop"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/servertest"
)

// x509popServer is a real server with an x509pop block trusting the root
// of nodeCA (an intermediate), which it returns.
func x509popServer(t *testing.T) (*realServer, *x509poptest.CA) {
	t.Helper()
	s, ca, _ := x509popServerWith(t, nil)
	return s, ca
}

// x509popServerWith is x509popServer with mutate applied to the server's
// configuration; it also returns the path of the server's node CA bundle,
// which the server reads at every attestation.
func x509popServerWith(t *testing.T, mutate func(*server.Config)) (*realServer, *x509poptest.CA, string) {
	t.Helper()
	root := x509poptest.NewRoot(t, "Example Node Root")
	bundle := filepath.Join(t.TempDir(), "node-ca.pem")
	x509poptest.WritePEM(t, bundle, root.Cert)
	s := servertest.Start(t, td, func(c *server.Config) {
		c.X509PoP = &nodeattest.X509PoPConfig{CABundlePaths: []string{bundle}}
		if mutate != nil {
			mutate(c)
		}
	})
	return &realServer{s}, root.Intermediate(t, "Example Node Issuing"), bundle
}

// syncEntries reads the first Sync message's entries' SPIFFE IDs.
func syncEntries(ctx context.Context, t *testing.T, c *Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := c.Service().Sync(ctx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("first sync message: %v", err)
	}
	var out []string
	for _, e := range msg.Entries {
		out = append(out, e.SpiffeId)
	}
	return out
}

func TestX509PoPAttestation(t *testing.T) {
	s, ca := x509popServer(t)
	ctx := context.Background()
	nodeDir := t.TempDir()
	cert, certPath, keyPath := ca.NodeFiles(t, nodeDir, x509poptest.Leaf{CommonName: "node-1"})
	attestor := X509PoP(td, certPath, keyPath)

	// A node-alias entry by the certificate's common name, and a workload
	// entry under it.
	const alias, workload = "spiffe://example.org/nodes/web", "spiffe://example.org/web"
	for _, e := range []*api.Entry{
		{SpiffeId: alias, Node: true, Selectors: []*api.Selector{{Type: "x509pop", Value: "subject:cn:node-1"}}},
		{SpiffeId: workload, ParentId: alias, Selectors: []*api.Selector{{Type: "unix", Value: "uid:1000"}}},
	} {
		if _, err := s.Admin().CreateEntry(ctx, &api.CreateEntryRequest{Entry: e}); err != nil {
			t.Fatalf("create entry %s: %v", e.SpiffeId, err)
		}
	}

	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wantID := "spiffe://example.org/agent/x509pop/" + x509pop.Fingerprint(cert)
	if got := c.AgentID().String(); got != wantID {
		t.Fatalf("agent ID %s, want %s", got, wantID)
	}
	if got := syncEntries(ctx, t, c); len(got) != 1 || got[0] != workload {
		t.Fatalf("entries reaching the agent %q, want the one under the node alias (%s)", got, workload)
	}
	agents, err := s.Admin().ListAgents(ctx, &api.ListAgentsRequest{})
	if err != nil || len(agents.Agents) != 1 || agents.Agents[0].AttestationType != "x509pop" || !agents.Agents[0].CanReattest {
		t.Fatalf("agents %v, err %v; want the x509pop agent, which can re-attest", agents, err)
	}

	// Not single-use: the same certificate attests again, from a lost data
	// dir (no eviction) and after an eviction, to the same ID.
	again := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := again.Start(ctx); err != nil || again.AgentID().String() != wantID {
		t.Fatalf("attest again with the same certificate: %v, ID %s", err, again.AgentID())
	}
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: wantID}); err != nil {
		t.Fatal(err)
	}
	if err := again.renewOrReattest(ctx); err != nil || again.AgentID().String() != wantID {
		t.Fatalf("re-attest after eviction: %v, ID %s", err, again.AgentID())
	}
	if err := syncWorks(ctx, again); err != nil {
		t.Fatalf("sync after re-attestation: %v", err)
	}

	// The files are read at every attestation: a renewed certificate is a
	// new fingerprint, so a new agent ID, and the alias still matches.
	renewed, _, _ := ca.NodeFiles(t, nodeDir, x509poptest.Leaf{CommonName: "node-1"})
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: wantID}); err != nil {
		t.Fatal(err)
	}
	if err := again.renewOrReattest(ctx); err != nil {
		t.Fatalf("re-attest with the renewed certificate: %v", err)
	}
	renewedID := "spiffe://example.org/agent/x509pop/" + x509pop.Fingerprint(renewed)
	if again.AgentID().String() != renewedID {
		t.Fatalf("after renewal: ID %s, want %s", again.AgentID(), renewedID)
	}
	if got := syncEntries(ctx, t, again); len(got) != 1 || got[0] != workload {
		t.Fatalf("entries after renewal %q, want %s", got, workload)
	}
}

// A banned node stays out, though its certificate still verifies; evicting
// the banned agent lets it back, as for k8s_psat.
func TestX509PoPBan(t *testing.T) {
	s, ca := x509popServer(t)
	ctx := context.Background()
	_, certPath, keyPath := ca.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = X509PoP(td, certPath, keyPath) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	id := c.AgentID().String()
	if _, err := s.Admin().BanAgent(ctx, &api.BanAgentRequest{SpiffeId: id}); err != nil {
		t.Fatal(err)
	}
	if err := c.renewOrReattest(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("re-attest after the ban: %v, want PermissionDenied naming the ban", err)
	}
	fresh := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = X509PoP(td, certPath, keyPath) })
	if err := fresh.Start(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("attest from a new data dir after the ban: %v, want PermissionDenied", err)
	}
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: id}); err != nil {
		t.Fatal(err)
	}
	if err := c.renewOrReattest(ctx); err != nil {
		t.Fatalf("re-attest after the ban was lifted: %v", err)
	}
}

func TestX509PoPRefusals(t *testing.T) {
	s, ca := x509popServer(t)
	ctx := context.Background()
	other := x509poptest.NewRoot(t, "Other Root")
	attest := func(certPath, keyPath string) error {
		c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = X509PoP(td, certPath, keyPath) })
		return c.Start(ctx)
	}
	_, certPath, keyPath := ca.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	_, otherCert, otherKey := other.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	tests := []struct {
		name, cert, key string
		code            codes.Code
		msg             string
	}{
		{"unknown CA", otherCert, otherKey, codes.PermissionDenied, "unknown authority"},
		{"key of another certificate", certPath, otherKey, codes.OK, "is not the key of the first certificate"},
		{"no certificate file", filepath.Join(t.TempDir(), "missing.crt"), keyPath, codes.OK, "read x509pop certificate"},
		{"key file holds a certificate", certPath, certPath, codes.OK, "holds no PEM private key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := attest(tc.cert, tc.key)
			if err == nil || status.Code(err) != tc.code && tc.code != codes.OK || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}

	// A server without an x509pop block says so.
	plain := startServer(t)
	c := newClient(t, plain, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = X509PoP(td, certPath, keyPath) })
	if err := c.Start(ctx); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "add an x509pop block") {
		t.Fatalf("server without x509pop: %v, want FailedPrecondition", err)
	}
}
