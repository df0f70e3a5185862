package agentapi

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/sshpop/sshpoptest"
)

// An sshpop agent attests with its host certificate, is reattestable and
// renews by attesting again, which checks the certificate anew: a CA
// removed from cert_authorities_path, an expired or a user certificate is
// refused with PermissionDenied naming what failed, and changes nothing.
func TestSSHPoPAttestAndReattest(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	cert, hostKey := h.sshCA.Issue(t, sshpoptest.Host{Principals: []string{"web-1.example.org"}})
	key, req := h.sshpopRequest(t, cert, hostKey)
	id, agent, resp := h.attestWith(t, key, req)
	if id.String() != "spiffe://example.org/agent/sshpop/web-1.example.org" || !resp.Reattestable {
		t.Fatalf("attested %s, reattestable %v; want agent/sshpop/web-1.example.org, reattestable", id, resp.Reattestable)
	}
	n, err := h.store.GetNode(ctx, id.String())
	if err != nil || n.AttestationType != "sshpop" || !n.CanReattest || !hasSelector(n.Selectors, "sshpop:principal:web-1.example.org") {
		t.Fatalf("node after attestation: %+v, %v; want an sshpop node, reattestable, with its principal selector", n, err)
	}
	if _, err := agent.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "must re-attest") {
		t.Fatalf("RenewAgent from an sshpop agent: %v, want PermissionDenied saying it must re-attest", err)
	}
	// A renewed host certificate: the same agent.
	cert2, hostKey2 := h.sshCA.Issue(t, sshpoptest.Host{Principals: []string{"web-1.example.org"}})
	key, req = h.sshpopRequest(t, cert2, hostKey2)
	if id2, _, _ := h.attestWith(t, key, req); id2 != id {
		t.Fatalf("re-attested as %s, want %s", id2, id)
	}
	n2, _ := h.store.GetNode(ctx, id.String())

	refusals := []struct {
		name     string
		evidence func(t *testing.T) (*ssh.Certificate, ssh.Signer)
		msg      string
	}{
		{"user certificate", func(t *testing.T) (*ssh.Certificate, ssh.Signer) {
			return h.sshCA.Issue(t, sshpoptest.Host{Principals: []string{"web-1.example.org"}, CertType: ssh.UserCert})
		}, "is a user certificate"},
		{"expired certificate", func(t *testing.T) (*ssh.Certificate, ssh.Signer) {
			return h.sshCA.Issue(t, sshpoptest.Host{Principals: []string{"web-1.example.org"}, ValidAfter: time.Now().Add(-2 * time.Hour), ValidBefore: time.Now().Add(-time.Hour)})
		}, "cert has expired"},
		{"CA removed from cert_authorities_path", func(t *testing.T) (*ssh.Certificate, ssh.Signer) {
			if err := os.WriteFile(h.sshCAFile, []byte(sshpoptest.NewCA(t).AuthorizedKey()), 0o644); err != nil {
				t.Fatal(err)
			}
			return cert2, hostKey2
		}, "which is not in cert_authorities or cert_authorities_path"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			c, k := tc.evidence(t)
			_, req := h.sshpopRequest(t, c, k)
			if _, err := h.anon(t).Attest(ctx, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("re-attestation: %v, want PermissionDenied containing %q", err, tc.msg)
			}
			if n, _ := h.store.GetNode(ctx, id.String()); n.SerialNumber != n2.SerialNumber {
				t.Fatalf("a refused re-attestation changed the node: %+v", n)
			}
		})
	}

	// A join token for the sshpop agent's ID cannot take it over.
	_, req = attestRequest(t, h.token(t, id.String()))
	if _, err := h.anon(t).Attest(ctx, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "held by a sshpop agent") {
		t.Fatalf("join-token attestation as %s: %v; want PermissionDenied naming the sshpop holder", id, err)
	}
}

// Malformed evidence is InvalidArgument; sshpop on a server without an
// sshpop block is FailedPrecondition, saying how to configure it.
func TestSSHPoPAttestCodes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	_, req := attestRequest(t, "")
	req.AttestationType, req.Payload = "sshpop", []byte(`{"certificate":"AAAA","signature":"c2ln"}`)
	if _, err := h.anon(t).Attest(ctx, req); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "malformed sshpop attestation data") {
		t.Fatalf("malformed payload: %v, want InvalidArgument", err)
	}
	cfg := h.svc.cfg
	cfg.SSHPoP = nil
	if _, err := New(cfg).Attest(ctx, req); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "add an sshpop block") {
		t.Fatalf("sshpop without the block: %v, want FailedPrecondition", err)
	}
}
