package agentapi

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
	"github.com/signetid/signet/server/audit/audittest"
)

// syncOnce opens a Sync stream as client and reads its first message: the
// server authenticated the SVID client presents.
func syncOnce(t *testing.T, client api.AgentServiceClient) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := client.Sync(ctx, &api.SyncRequest{})
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

func hasSelector(sels []selector.Selector, s string) bool {
	return slices.Contains(selector.Strings(sels), s)
}

// serialSelector is the x509pop selector of leaf's serial number (hex of
// its bytes, as SPIRE's).
func serialSelector(leaf *x509.Certificate) string {
	return "x509pop:serialnumber:" + hex.EncodeToString(leaf.SerialNumber.Bytes())
}

// An x509pop agent is reattestable: the server says so, records it, and
// refuses its RenewAgent. It renews by attesting again, which keeps its ID,
// takes the fresh evidence's selectors and ends the SVID the node had (the
// attester, with no client certificate, is not proven to hold it);
// evidence the server no longer accepts (an expired certificate, a CA
// dropped from the bundle) is refused and changes nothing. Every step is
// audited.
func TestReattestToRenew(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	leaf1, leafKey1 := h.nodeCA.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
	key, req := h.x509popRequest(t, leaf1, leafKey1)
	id, first, resp := h.attestWith(t, key, req)
	if id.String() != "spiffe://example.org/agent/x509pop/node-1" || !resp.Reattestable {
		t.Fatalf("attested %s, reattestable %v; want agent/x509pop/node-1, reattestable", id, resp.Reattestable)
	}
	n1, err := h.store.GetNode(ctx, id.String())
	if err != nil || !n1.CanReattest || !hasSelector(n1.Selectors, serialSelector(leaf1)) {
		t.Fatalf("node after attestation: %+v, %v; want reattestable, with the certificate's serial selector", n1, err)
	}

	if _, err := first.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "must re-attest") {
		t.Fatalf("RenewAgent from a reattestable agent: %v, want PermissionDenied saying it must re-attest", err)
	}
	if n, _ := h.store.GetNode(ctx, id.String()); n.SerialNumber != n1.SerialNumber {
		t.Fatal("a refused RenewAgent changed the node")
	}

	// The node's certificate was renewed (same name, new serial): the same
	// agent, the new certificate's selectors.
	leaf2, leafKey2 := h.nodeCA.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
	key, req = h.x509popRequest(t, leaf2, leafKey2)
	id2, second, resp := h.attestWith(t, key, req)
	if id2 != id || !resp.Reattestable {
		t.Fatalf("re-attested as %s, reattestable %v; want %s, reattestable", id2, resp.Reattestable, id)
	}
	n2, err := h.store.GetNode(ctx, id.String())
	switch {
	case err != nil:
		t.Fatal(err)
	case n2.SerialNumber == n1.SerialNumber || n2.PrevSerialNumber != "":
		t.Fatalf("node serials %s (prev %s) after re-attestation; want a new one and no previous one (was %s)", n2.SerialNumber, n2.PrevSerialNumber, n1.SerialNumber)
	case !hasSelector(n2.Selectors, serialSelector(leaf2)) || hasSelector(n2.Selectors, serialSelector(leaf1)):
		t.Fatalf("selectors after re-attestation %v; want the new certificate's only", selector.Strings(n2.Selectors))
	case !n2.CanReattest:
		t.Fatal("node no longer reattestable after re-attestation")
	}
	// The SVID the node had is refused at once: a host reinstalled with a
	// certificate of the same name must not leave its predecessor's SVID
	// (perhaps stolen) valid until it expires.
	if err := syncOnce(t, first); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("sync with the SVID held before the re-attestation: %v; want Unauthenticated (superseded)", err)
	}
	if err := syncOnce(t, second); err != nil {
		t.Fatalf("sync with the re-attested SVID: %v", err)
	}

	// Each case spoils the evidence and returns the certificate to present.
	refusals := []struct {
		name     string
		evidence func(t *testing.T) (*x509.Certificate, crypto.Signer)
		msg      string
	}{
		{"expired certificate", func(t *testing.T) (*x509.Certificate, crypto.Signer) {
			return h.nodeCA.Issue(t, x509poptest.Leaf{CommonName: "node-1", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
		}, "expired"},
		{"node CA dropped from the bundle", func(t *testing.T) (*x509.Certificate, crypto.Signer) {
			x509poptest.WritePEM(t, h.nodeBundle, x509poptest.NewRoot(t, "Another Root").Cert)
			return leaf2, leafKey2
		}, "unknown authority"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			leaf, leafKey := tc.evidence(t)
			_, req := h.x509popRequest(t, leaf, leafKey)
			if _, err := h.anon(t).Attest(ctx, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("re-attestation: %v, want PermissionDenied containing %q", err, tc.msg)
			}
			if n, _ := h.store.GetNode(ctx, id.String()); n.SerialNumber != n2.SerialNumber || !slices.Equal(n.Selectors, n2.Selectors) {
				t.Fatalf("a refused re-attestation changed the node: %+v", n)
			}
			// The agent keeps its identity until its SVID expires.
			if err := syncOnce(t, second); err != nil {
				t.Fatalf("sync with the current SVID after the refusal: %v", err)
			}
		})
	}

	records := audittest.Records(t, h.auditLog.String())
	attests := audittest.Filter(records, map[string]string{"method": api.AgentService_Attest_FullMethodName, "attestation_type": "x509pop", "agent_id": id.String()})
	var got []string
	for _, r := range attests {
		got = append(got, r.Get("status_code")+" reattested="+r.Get("reattested")+" can_reattest="+r.Get("can_reattest"))
	}
	want := []string{"OK reattested=false can_reattest=true", "OK reattested=true can_reattest=true"}
	if !slices.Equal(got, want) {
		t.Errorf("audited attestations %q, want %q", got, want)
	}
	if refused := audittest.Filter(records, map[string]string{"method": api.AgentService_Attest_FullMethodName, "attestation_type": "x509pop", "status_code": "PermissionDenied"}); len(refused) != 2 {
		t.Errorf("%d refused re-attestations audited, want 2: %v", len(refused), refused)
	}
	renew := audittest.Filter(records, map[string]string{"method": api.AgentService_RenewAgent_FullMethodName, "caller_id": id.String(), "status_code": "PermissionDenied"})
	if len(renew) != 1 || !strings.Contains(renew[0].Get("status_message"), "must re-attest") {
		t.Errorf("audited refused RenewAgent: %v, want one naming the agent and saying it must re-attest", renew)
	}
}

// A join-token agent cannot attest again (its token is spent): the server
// says so, and renews it in place.
func TestJoinTokenAgentIsNotReattestable(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	key, req := attestRequest(t, h.token(t, ""))
	id, client, resp := h.attestWith(t, key, req)
	if resp.Reattestable {
		t.Fatal("a join-token attestation answered reattestable")
	}
	if n, err := h.store.GetNode(ctx, id.String()); err != nil || n.CanReattest {
		t.Fatalf("node %+v, %v; want not reattestable", n, err)
	}
	renewed, err := client.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr})
	if err != nil || renewed.Reattestable {
		t.Fatalf("RenewAgent of a join-token agent: reattestable %v, %v; want renewed in place", renewed.GetReattestable(), err)
	}
}

// A node of a type that re-attests but recorded without can_reattest (by
// an older server, during a rolling upgrade) is refused RenewAgent all the
// same: its agent must re-attest, its evidence checked again, rather than
// renew in place for good.
func TestRenewAgentRefusesReattestableTypeWithoutFlag(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	for _, typ := range []string{"x509pop", "sshpop", "k8s_psat"} {
		t.Run(typ, func(t *testing.T) {
			// A join-token agent gives a client presenting a real SVID; its
			// node is then rewritten as the older server would write it.
			id, client := h.attest(t, "spiffe://example.org/agent/"+typ+"/upgraded")
			n, err := h.store.GetNode(ctx, id.String())
			if err != nil {
				t.Fatal(err)
			}
			if err := h.store.DeleteNode(ctx, id.String()); err != nil {
				t.Fatal(err)
			}
			n.AttestationType, n.CanReattest = typ, false
			if err := h.store.UpsertNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if err := h.cat.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			_, req := attestRequest(t, "")
			if _, err := client.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "must re-attest") {
				t.Fatalf("RenewAgent of a %s agent recorded without can_reattest: %v; want PermissionDenied saying it must re-attest", typ, err)
			}
			if got, _ := h.store.GetNode(ctx, id.String()); got.SerialNumber != n.SerialNumber {
				t.Fatal("the refused RenewAgent renewed the node")
			}
		})
	}
}

// After an in-place renewal the replaced SVID still works (calls in
// flight on the agent's old connection), but only until the agent first
// presents the new one: from then on the old SVID, perhaps copied off the
// host, is refused as superseded, in the store too.
func TestRenewedAgentRetiresPreviousSVID(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	id, old := h.attest(t, "")
	key, req := attestRequest(t, "")
	resp, err := old.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr})
	if err != nil {
		t.Fatal(err)
	}
	if err := syncOnce(t, old); err != nil {
		t.Fatalf("sync with the replaced SVID before the agent used the new one: %v", err)
	}
	if n, _ := h.store.GetNode(ctx, id.String()); n.PrevSerialNumber == "" {
		t.Fatal("the replaced SVID's serial was retired before the agent used the new SVID")
	}
	_, renewed := h.clientFor(t, key, resp)
	if err := syncOnce(t, renewed); err != nil {
		t.Fatalf("sync with the new SVID: %v", err)
	}
	if n, _ := h.store.GetNode(ctx, id.String()); n.PrevSerialNumber != "" {
		t.Fatalf("previous serial %s still recorded after the agent presented its new SVID", n.PrevSerialNumber)
	}
	if err := syncOnce(t, old); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("sync with the replaced SVID after the agent moved to the new one: %v; want Unauthenticated (superseded)", err)
	}
	if _, err := old.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("RenewAgent with the replaced SVID: %v; want Unauthenticated", err)
	}
	if err := syncOnce(t, renewed); err != nil {
		t.Fatalf("sync with the new SVID after the old one was refused: %v", err)
	}
}

// An eviction that commits between Attest's read of the node and its
// write does not bring the evicted SVID back: the re-created node holds
// the new serial only.
func TestReattestRacingEvictionKeepsEvictedSVIDOut(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	leaf, leafKey := h.nodeCA.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
	key, req := h.x509popRequest(t, leaf, leafKey)
	id, evicted, _ := h.attestWith(t, key, req)
	before, err := h.store.GetNode(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.DeleteNode(ctx, id.String()); err != nil {
		t.Fatal(err)
	}
	cfg := h.svc.cfg
	cfg.Store = staleNodeReads{Store: h.store, node: &before}
	_, req = h.x509popRequest(t, leaf, leafKey)
	if _, err := New(cfg).Attest(ctx, req); err != nil {
		t.Fatal(err)
	}
	n, err := h.store.GetNode(ctx, id.String())
	if err != nil || n.SerialNumber == before.SerialNumber || n.PrevSerialNumber != "" {
		t.Fatalf("node after the attestation that raced the eviction: %+v, %v; want a new serial and no previous one (evicted %s)", n, err, before.SerialNumber)
	}
	if err := h.cat.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syncOnce(t, evicted); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("sync with the evicted SVID: %v; want Unauthenticated", err)
	}
}
