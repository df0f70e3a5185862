package agentapi

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api/x509pop/x509poptest"
)

// An agent ID proved by one attestor's evidence is not taken over by
// another's: a join token issued for an x509pop agent's ID, or a machine
// certificate rendering a join-token agent's ID, is refused with
// PermissionDenied naming the holder's type and the eviction that frees
// the ID. Nothing is written and the token stays unspent; once the holder
// is evicted, the same evidence attests.
func TestAttestRefusesCrossTypeTakeover(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)

	t.Run("join token for an x509pop agent's ID", func(t *testing.T) {
		leaf, leafKey := h.nodeCA.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
		key, req := h.x509popRequest(t, leaf, leafKey)
		id, _, _ := h.attestWith(t, key, req)
		held, err := h.store.GetNode(ctx, id.String())
		if err != nil {
			t.Fatal(err)
		}
		token := h.token(t, id.String())
		_, req = attestRequest(t, token)
		_, err = h.anon(t).Attest(ctx, req)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "held by a x509pop agent") ||
			!strings.Contains(err.Error(), "signet server agent evict --spiffe-id "+id.String()) {
			t.Fatalf("join-token attestation as %s: %v; want PermissionDenied naming the x509pop holder and the eviction", id, err)
		}
		if n, _ := h.store.GetNode(ctx, id.String()); n.AttestationType != "x509pop" || n.SerialNumber != held.SerialNumber {
			t.Fatalf("node after the refusal: %+v; want the x509pop agent's, unchanged", n)
		}
		// The refusal holds when the holder's write overtook Attest's first
		// read: the store refuses in the write transaction.
		cfg := h.svc.cfg
		cfg.Store = staleNodeReads{Store: h.store}
		if _, err := New(cfg).Attest(ctx, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "held by a x509pop agent") {
			t.Fatalf("join-token attestation as %s, the holder written after Attest's read: %v; want PermissionDenied naming the x509pop holder", id, err)
		}
		if err := h.store.DeleteNode(ctx, id.String()); err != nil {
			t.Fatal(err)
		}
		if _, err := h.anon(t).Attest(ctx, req); err != nil {
			t.Fatalf("the token after the eviction: %v (the refusal must not spend it)", err)
		}
	})

	t.Run("machine certificate for a join-token agent's ID", func(t *testing.T) {
		const id = "spiffe://example.org/agent/x509pop/node-2"
		joined, _ := h.attest(t, id)
		held, err := h.store.GetNode(ctx, joined.String())
		if err != nil {
			t.Fatal(err)
		}
		leaf, leafKey := h.nodeCA.Issue(t, x509poptest.Leaf{CommonName: "node-2"})
		_, req := h.x509popRequest(t, leaf, leafKey)
		_, err = h.anon(t).Attest(ctx, req)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "held by a join_token agent") || !strings.Contains(err.Error(), "evict") {
			t.Fatalf("x509pop attestation as %s: %v; want PermissionDenied naming the join_token holder", id, err)
		}
		if n, _ := h.store.GetNode(ctx, id); n.AttestationType != "join_token" || n.SerialNumber != held.SerialNumber {
			t.Fatalf("node after the refusal: %+v; want the join-token agent's, unchanged", n)
		}
	})
}
