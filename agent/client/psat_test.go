package client

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/servertest"
)

// psatServer is a real server with one k8s_psat cluster "prod" whose API
// server (the stand-in) knows an agent pod on node-1.
func psatServer(t *testing.T) (*realServer, *kubetest.APIServer) {
	t.Helper()
	kube := kubetest.NewAPIServer(t)
	kube.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "0f3c-node-1"}})
	kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "signet-agent-x7k2p", UID: "pod-1"},
		Spec:       corev1.PodSpec{NodeName: "node-1"},
	})
	for _, tok := range []string{"token-1", "token-2"} {
		kube.AddToken(jwt(tok), kubetest.Token{Audiences: []string{"signet-server"}, Namespace: "signet-system",
			ServiceAccount: "signet-agent", PodName: "signet-agent-x7k2p", PodUID: "pod-1"})
	}
	kubeconfig := kube.Kubeconfig(t, t.TempDir())
	s := servertest.Start(t, td, func(c *server.Config) {
		c.K8sPSAT = []server.K8sPSATCluster{{Kubeconfig: kubeconfig, PSATCluster: nodeattest.PSATCluster{
			Name: "prod", ServiceAccountAllowList: []string{"signet-system:signet-agent"}, Audience: "signet-server",
		}}}
	})
	return &realServer{s}, kube
}

// jwt shapes a test token name like a service account token.
func jwt(name string) string { return "eyJhbGciOiJSUzI1NiJ9." + name + ".c2ln" }

func TestPSATAttestation(t *testing.T) {
	s, kube := psatServer(t)
	ctx := context.Background()
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte(jwt("token-1")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := newClient(t, s, dir, nil, func(cfg *Config) { cfg.NodeAttestor = PSAT("prod", tokenPath) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const wantID = "spiffe://example.org/agent/k8s_psat/prod/0f3c-node-1"
	if got := c.AgentID().String(); got != wantID {
		t.Fatalf("agent ID %s, want %s", got, wantID)
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync: %v", err)
	}
	agents, err := s.Admin().ListAgents(ctx, &api.ListAgentsRequest{})
	if err != nil || len(agents.Agents) != 1 || agents.Agents[0].AttestationType != "k8s_psat" {
		t.Fatalf("agents %v, err %v", agents, err)
	}

	// Evicted: unlike a join token, the projected token attests again: the
	// same one (the kubelet rotates it only at 80% of its life), and then
	// the kubelet's rotated one, read from the file.
	for _, token := range []string{"token-1", "token-2"} {
		if err := os.WriteFile(tokenPath, []byte(jwt(token)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: wantID}); err != nil {
			t.Fatal(err)
		}
		reviews := kube.Calls("POST /apis/authentication.k8s.io/v1/tokenreviews")
		if err := c.renewOrReattest(ctx); err != nil {
			t.Fatalf("re-attest after eviction with %s: %v", token, err)
		}
		if kube.Calls("POST /apis/authentication.k8s.io/v1/tokenreviews") != reviews+1 {
			t.Fatal("re-attestation did not present the token to the API server")
		}
		if err := c.Ready(); err != nil || c.AgentID().String() != wantID {
			t.Fatalf("after re-attestation: ready %v, ID %s", err, c.AgentID())
		}
		if err := syncWorks(ctx, c); err != nil {
			t.Fatalf("sync after re-attestation: %v", err)
		}
	}

	// A k8s_psat agent renews by attesting again with the token file's
	// current token: RenewAgent is refused.
	if err := c.renew(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "must re-attest") {
		t.Fatalf("RenewAgent from a k8s_psat agent: %v, want PermissionDenied saying it must re-attest", err)
	}
	reviews := kube.Calls("POST /apis/authentication.k8s.io/v1/tokenreviews")
	if err := c.renewOrReattest(ctx); err != nil {
		t.Fatalf("renew by re-attestation: %v", err)
	}
	if kube.Calls("POST /apis/authentication.k8s.io/v1/tokenreviews") != reviews+1 {
		t.Fatal("renewal did not present the token to the API server again")
	}

	// The agent pod is gone: the next renewal (a re-attestation) is
	// refused; the agent keeps its SVID and reports not ready.
	kube.DeletePod("signet-system", "signet-agent-x7k2p")
	held, _ := c.GetX509SVID()
	err = c.renewOrReattest(ctx)
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no longer exists") {
		t.Fatalf("re-attest without the pod: %v, want PermissionDenied naming the pod", err)
	}
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "no longer exists") {
		t.Fatalf("Ready after the refused re-attestation = %v, want not ready naming the pod", err)
	}
	if now, _ := c.GetX509SVID(); now != held {
		t.Fatal("a refused re-attestation dropped the agent SVID")
	}
}

// TestPSATBan: eviction does not keep a k8s_psat node out (its token
// attests again); a ban does, until an admin evicts the banned agent.
func TestPSATBan(t *testing.T) {
	s, _ := psatServer(t)
	ctx := context.Background()
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte(jwt("token-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = PSAT("prod", tokenPath) })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	id := c.AgentID().String()
	stream, err := c.Service().Sync(ctx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first sync message: %v", err)
	}

	if _, err := s.Admin().BanAgent(ctx, &api.BanAgentRequest{SpiffeId: id}); err != nil {
		t.Fatalf("BanAgent: %v", err)
	}
	// The open stream ends, and nothing the agent tries brings it back.
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("open Sync stream after the ban ended with %v, want PermissionDenied", err)
	}
	if err := c.renew(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("renew after the ban: %v, want PermissionDenied naming the ban", err)
	}
	if err := c.renewOrReattest(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("re-attest after the ban: %v, want PermissionDenied naming the ban", err)
	}
	agents, err := s.Admin().ListAgents(ctx, &api.ListAgentsRequest{})
	if err != nil || len(agents.Agents) != 1 || !agents.Agents[0].Banned || agents.Agents[0].SerialNumber != "" {
		t.Fatalf("ListAgents after the ban = %v, %v; want the agent, banned, no serial", agents, err)
	}
	// A join token for the banned ID would be a way around the ban.
	if _, err := s.Admin().CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: id}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("token for the banned ID: %v, want FailedPrecondition naming the ban", err)
	}
	if _, err := s.Admin().BanAgent(ctx, &api.BanAgentRequest{SpiffeId: "spiffe://example.org/agent/k8s_psat/prod/other"}); status.Code(err) != codes.NotFound {
		t.Fatalf("ban an unknown agent: %v, want NotFound", err)
	}

	// Evicting the banned agent lifts the ban: the node attests again.
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: id}); err != nil {
		t.Fatal(err)
	}
	if err := c.renewOrReattest(ctx); err != nil {
		t.Fatalf("re-attest after the ban was lifted: %v", err)
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync after the ban was lifted: %v", err)
	}
}

func TestPSATRefusals(t *testing.T) {
	s, kube := psatServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	attest := func(cluster string) error {
		c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = PSAT(cluster, tokenPath) })
		return c.Start(ctx)
	}
	if err := attest("prod"); err == nil || !strings.Contains(err.Error(), "read projected service account token") {
		t.Fatalf("no token file: %v", err)
	}
	for _, tc := range []struct {
		name, token, cluster string
		code                 codes.Code
		msg                  string
	}{
		{"forged token", "forged", "prod", codes.PermissionDenied, "invalid bearer token"},
		{"unknown cluster", "token-1", "staging", codes.PermissionDenied, `cluster "staging" is not configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(tokenPath, []byte(jwt(tc.token)), 0o600); err != nil {
				t.Fatal(err)
			}
			err := attest(tc.cluster)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
	// The API server is down: a transient error, worth retrying.
	if err := os.WriteFile(tokenPath, []byte(jwt("token-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	kube.Close()
	if err := attest("prod"); status.Code(err) != codes.Unavailable {
		t.Fatalf("API server down: %v, want Unavailable", err)
	}
}

// A server without k8s_psat clusters says so.
func TestPSATNotConfigured(t *testing.T) {
	s := startServer(t)
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte(jwt("token-1")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = PSAT("prod", tokenPath) })
	err := c.Start(context.Background())
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not configured on this server") {
		t.Fatalf("err = %v, want FailedPrecondition", err)
	}
}
