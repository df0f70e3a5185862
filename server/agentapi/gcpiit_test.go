package agentapi

import (
	"context"
	"crypto/ecdsa"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/gcpiit"
	"github.com/signetid/signet/server/api/gcpiit/gcpiittest"
)

// A gcp_iit agent attests once with its instance's token and renews in
// place; another token of the same instance (any process there can get
// one) is refused while the node is recorded, and attests after an
// eviction. A token Google did not sign is PermissionDenied, a payload
// that is no JWT InvalidArgument, Google's certificates out of reach
// Unavailable (nothing recorded), gcp_iit without the block
// FailedPrecondition.
func TestGCPIITAttest(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	instance := gcpiittest.Instance("project-a", "us-west1-b", "blog-server", "4567890123456789012")
	withKey := func(signer *gcpiittest.Signer) (*ecdsa.PrivateKey, *api.AttestRequest) {
		key, req := attestRequest(t, "")
		req.AttestationType, req.Payload = "gcp_iit", []byte(signer.Token(t, gcpiittest.Claims(instance, gcpiit.Audience)))
		return key, req
	}
	request := func(signer *gcpiittest.Signer) *api.AttestRequest {
		_, req := withKey(signer)
		return req
	}

	key, req := withKey(h.gcpSigner)
	id, agent, resp := h.attestWith(t, key, req)
	if id.String() != "spiffe://example.org/agent/gcp_iit/project-a/4567890123456789012" || resp.Reattestable {
		t.Fatalf("attested %s, reattestable %v", id, resp.Reattestable)
	}
	if n, err := h.store.GetNode(ctx, id.String()); err != nil || n.AttestationType != "gcp_iit" || !hasSelector(n.Selectors, "gcp_iit:instance-name:blog-server") {
		t.Fatalf("node %+v, %v", n, err)
	}
	if _, err := agent.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr}); err != nil {
		t.Fatalf("RenewAgent: %v; want a renewal in place", err)
	}
	if _, err := h.anon(t).Attest(ctx, request(h.gcpSigner)); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is already attested") {
		t.Fatalf("a second token of the instance: %v, want PermissionDenied saying it is attested", err)
	}
	// A fresh token with the agent's key: the agent back after its SVID
	// expired (not before).
	back := request(h.gcpSigner)
	back.Csr = req.Csr
	if _, err := h.anon(t).Attest(ctx, back); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "holds an SVID for this key valid until") {
		t.Fatalf("a fresh token with the agent's key before its SVID expired: %v, want PermissionDenied", err)
	}
	expired, err := h.store.GetNode(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	expired.ExpiresAt = time.Now().Add(-time.Minute)
	if err := h.store.UpsertNode(ctx, expired); err != nil {
		t.Fatal(err)
	}
	if r, err := h.anon(t).Attest(ctx, back); err != nil || r.SpiffeId != id.String() {
		t.Fatalf("a fresh token with the agent's key: %v, %v; want the agent back as %s", r, err, id)
	}
	if err := h.store.DeleteNode(ctx, id.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.anon(t).Attest(ctx, request(h.gcpSigner)); err != nil {
		t.Fatalf("attestation after the eviction: %v", err)
	}

	if _, err := h.anon(t).Attest(ctx, request(gcpiittest.NewSigner(t))); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not among Google's certificates") {
		t.Fatalf("token of another signer: %v, want PermissionDenied", err)
	}
	_, bad := attestRequest(t, "")
	bad.AttestationType, bad.Payload = "gcp_iit", []byte("not-a-jwt")
	if _, err := h.anon(t).Attest(ctx, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "malformed gcp_iit attestation data") {
		t.Fatalf("payload that is no JWT: %v, want InvalidArgument", err)
	}

	// A server that has not fetched Google's certificates, and cannot.
	h.gcpCerts.Close()
	fresh := newHarness(t)
	fresh.gcpCerts.Close()
	if _, err := fresh.anon(t).Attest(ctx, request(fresh.gcpSigner)); status.Code(err) != codes.Unavailable || strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("Google's certificates out of reach: %v, want Unavailable without the detail", err)
	}
	if nodes, _ := fresh.store.ListNodes(ctx); len(nodes) != 0 {
		t.Fatalf("an unverified attestation recorded %d nodes", len(nodes))
	}
	cfg := h.svc.cfg
	cfg.GCPIIT = nil
	if _, err := New(cfg).Attest(ctx, request(h.gcpSigner)); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "add a gcp_iit block") {
		t.Fatalf("gcp_iit without the block: %v, want FailedPrecondition", err)
	}
}
