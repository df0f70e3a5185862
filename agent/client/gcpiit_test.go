package client

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/gcpiit"
	"github.com/signetid/signet/server/api/gcpiit/gcpiittest"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/servertest"
)

var gceInstance = gcpiittest.Instance("project-a", "us-west1-b", "blog-server", "4567890123456789012")

// The token is asked of the metadata server as SPIRE's agent asks: the
// service account's identity path, SPIRE's audience, format=full, the
// Metadata-Flavor header; it is sent as served.
func TestGCPIITEvidence(t *testing.T) {
	signer := gcpiittest.NewSigner(t)
	md := gcpiittest.NewMetadata(t, signer, gceInstance)
	for _, tc := range []struct{ account, path string }{
		{"", "/computeMetadata/v1/instance/service-accounts/default/identity"},
		{gcpiittest.ServiceAccountEmail, "/computeMetadata/v1/instance/service-accounts/" + gcpiittest.ServiceAccountEmail + "/identity"},
	} {
		ev, err := GCPIIT(md.Host, tc.account).Evidence(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, kid, err := nodeattest.ParseGCPIITPayload(ev.Payload)
		var c gcpiit.Claims
		if err != nil || kid != signer.KeyID || tok.Claims(&signer.Key.PublicKey, &c) != nil || ev.Type != "gcp_iit" || ev.SingleUse || !ev.TrustOnFirstUse ||
			c.Google.ComputeEngine != gceInstance || !slices.Equal(c.Audience, []string{gcpiit.Audience}) {
			t.Fatalf("evidence %s: %v, claims %+v", ev.Type, err, c)
		}
		reqs := md.Requests()
		if want := "GET " + tc.path + "?audience=spire-gcp-node-attestor&format=full flavor=Google"; reqs[len(reqs)-1] != want {
			t.Fatalf("request %q, want %q", reqs[len(reqs)-1], want)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct{ name, host, account, want string }{
		{"unknown service account", md.Host, "nobody@example.iam.gserviceaccount.com", `the instance has no service account "nobody@example.iam.gserviceaccount.com"`},
		{"no metadata server", down, "", "is this a GCE instance?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := GCPIIT(tc.host, tc.account).Evidence(context.Background(), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Evidence: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// An agent attests with the token against a real server, renews in place,
// and a second agent of the instance is refused until the eviction.
func TestGCPIITAttestation(t *testing.T) {
	ctx := context.Background()
	signer := gcpiittest.NewSigner(t)
	certs := gcpiittest.NewCerts(t, signer)
	s := &realServer{servertest.Start(t, td, func(c *server.Config) {
		c.GCPIIT = &nodeattest.GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: certs.URL}
	})}
	attestor := GCPIIT(gcpiittest.NewMetadata(t, signer, gceInstance).Host, "")
	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const wantID = "spiffe://example.org/agent/gcp_iit/project-a/4567890123456789012"
	if got := c.AgentID().String(); got != wantID {
		t.Fatalf("agent ID %s, want %s", got, wantID)
	}
	if err := c.renewOrReattest(ctx); err != nil || c.AgentID().String() != wantID {
		t.Fatalf("renewal in place: %v, ID %s", err, c.AgentID())
	}
	second := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := second.Start(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is already attested") {
		t.Fatalf("second agent of the instance: %v, want PermissionDenied saying it is attested", err)
	}
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: wantID}); err != nil {
		t.Fatal(err)
	}
	fresh := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := fresh.Start(ctx); err != nil || fresh.AgentID().String() != wantID {
		t.Fatalf("attestation after the eviction: %v, ID %s", err, fresh.AgentID())
	}
}
