package agentapi

import (
	"context"
	"crypto/ecdsa"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
)

// An aws_iid agent attests with its instance identity document once: it
// is not reattestable and renews in place with its SVID. The document can
// be replayed, so presenting it again with another key is refused while
// the node is recorded, and changes nothing. With the key of the agent's
// current SVID, or of the one before until the agent uses the new one, it
// attests again once the node's SVID expired (the agent back after a long
// stop), never before; a forged signature over that key does not count. Once the agent is
// evicted the document attests again with any key. A banned node stays
// banned, even for its agent's key.
func TestAWSIIDTrustOnFirstUse(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-0123456789abcdef0")
	key, req := h.awsiidRequest(t, doc)
	id, agent, resp := h.attestWith(t, key, req)
	if id.String() != "spiffe://example.org/agent/aws_iid/111122223333/us-test-1/i-0123456789abcdef0" || resp.Reattestable {
		t.Fatalf("attested %s, reattestable %v; want agent/aws_iid/<account>/<region>/<instance>, not reattestable", id, resp.Reattestable)
	}
	n, err := h.store.GetNode(ctx, id.String())
	if err != nil || n.AttestationType != "aws_iid" || n.CanReattest || !hasSelector(n.Selectors, "aws_iid:instance:id:i-0123456789abcdef0") ||
		!hasSelector(n.Selectors, "aws_iid:account_id:111122223333") {
		t.Fatalf("node after attestation: %+v, %v; want an aws_iid node, not reattestable, with the document's selectors", n, err)
	}

	// expire makes the node's SVID expired (an instance stopped for long),
	// unexpire valid again.
	setExpiry := func(t *testing.T, at time.Time) {
		t.Helper()
		n, err := h.store.GetNode(ctx, id.String())
		if err != nil {
			t.Fatal(err)
		}
		n.ExpiresAt = at
		if err := h.store.UpsertNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	expire := func(t *testing.T) { setExpiry(t, time.Now().Add(-time.Minute)) }
	unexpire := func(t *testing.T) { setExpiry(t, time.Now().Add(time.Hour)) }

	// The same document again, by whoever read it: refused, nothing changes.
	refused := func(t *testing.T, name string) {
		t.Helper()
		before, _ := h.store.GetNode(ctx, id.String())
		_, replay := h.awsiidRequest(t, doc)
		_, err := h.anon(t).Attest(ctx, replay)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is already attested by another agent key") ||
			!strings.Contains(err.Error(), "signet server agent evict --spiffe-id "+id.String()) {
			t.Fatalf("%s: %v; want PermissionDenied saying it is attested and how to evict it", name, err)
		}
		// The agent of id tries its last SVID's key when told.
		if named, ok := api.AttestedWithAnotherKey(err); !ok || named != id.String() {
			t.Fatalf("%s: the refusal names agent %q (%v) in its details, want %s", name, named, ok, id)
		}
		if got, _ := h.store.GetNode(ctx, id.String()); got.SerialNumber != before.SerialNumber {
			t.Fatalf("%s changed the node: serial %s -> %s", name, before.SerialNumber, got.SerialNumber)
		}
	}
	refused(t, "replayed with another key")

	// The agent's public key with a signature of another key: refused as
	// malformed before the key counts.
	_, forged := h.awsiidRequest(t, doc)
	forged.Csr = slices.Clone(req.Csr)
	forged.Csr[len(forged.Csr)-1] ^= 1
	expire(t)
	if _, err := h.anon(t).Attest(ctx, forged); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("the agent's key with a forged CSR signature: %v, want InvalidArgument", err)
	}
	if got, _ := h.store.GetNode(ctx, id.String()); got.SerialNumber != n.SerialNumber {
		t.Fatalf("a forged CSR changed the node: serial %s -> %s", n.SerialNumber, got.SerialNumber)
	}
	unexpire(t)

	// The agent renews in place with a new key. Once its SVID expired,
	// the document with the first key (its previous SVID's) attests it
	// again; before, that is refused, and changes nothing (a replayed
	// request must not cut the agent off). That agent holds the first key
	// again, so the second no longer attests; after one more renewal, the
	// newest key (its current SVID's) attests.
	attestsWith := func(t *testing.T, name string, key *ecdsa.PrivateKey, csr []byte) api.AgentServiceClient {
		t.Helper()
		_, again := h.awsiidRequest(t, doc)
		again.Csr = csr
		before, _ := h.store.GetNode(ctx, id.String())
		if _, err := h.anon(t).Attest(ctx, again); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "holds an SVID for this key valid until") {
			t.Fatalf("attestation with %s before the SVID expired: %v, want PermissionDenied saying it renews in place", name, err)
		}
		if got, _ := h.store.GetNode(ctx, id.String()); got.SerialNumber != before.SerialNumber {
			t.Fatalf("a refused attestation with %s changed the node: serial %s -> %s", name, before.SerialNumber, got.SerialNumber)
		}
		expire(t)
		back, err := h.anon(t).Attest(ctx, again)
		if err != nil || back.SpiffeId != id.String() {
			t.Fatalf("attestation with %s: %v, %v; want the agent back as %s", name, back, err, id)
		}
		_, agent := h.clientFor(t, key, back)
		return agent
	}
	renew := func(t *testing.T, agent api.AgentServiceClient, csr []byte) {
		t.Helper()
		if r, err := agent.RenewAgent(ctx, &api.RenewAgentRequest{Csr: csr}); err != nil || r.Reattestable {
			t.Fatalf("RenewAgent: %v, %v; want a renewal in place", r, err)
		}
	}
	_, req2 := h.awsiidRequest(t, doc)
	renew(t, agent, req2.Csr)
	if got, _ := h.store.GetNode(ctx, id.String()); got.AgentKeyHash == n.AgentKeyHash || got.PrevAgentKeyHash != n.AgentKeyHash {
		t.Fatalf("node after renewal: keys %s (previous %s); want a new key, the first one previous (%s)", got.AgentKeyHash, got.PrevAgentKeyHash, n.AgentKeyHash)
	}
	agent = attestsWith(t, "the previous SVID's key", key, req.Csr)
	_, stale := h.awsiidRequest(t, doc)
	stale.Csr = req2.Csr
	expire(t)
	if _, err := h.anon(t).Attest(ctx, stale); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("attestation with a key the agent no longer holds: %v, want PermissionDenied", err)
	}
	unexpire(t)
	key3, req3 := h.awsiidRequest(t, doc)
	renew(t, agent, req3.Csr)
	agent = attestsWith(t, "the current SVID's key", key3, req3.Csr)
	renew(t, agent, req3.Csr)
	refused(t, "replayed with another key after the agent came back")

	// Evicted, the instance attests again with the same document.
	if err := h.store.DeleteNode(ctx, id.String()); err != nil {
		t.Fatal(err)
	}
	key, req = h.awsiidRequest(t, doc)
	if id2, _, _ := h.attestWith(t, key, req); id2 != id {
		t.Fatalf("attested after the eviction as %s, want %s", id2, id)
	}

	// Banned, it cannot, even with its agent's key.
	if err := h.store.BanNode(ctx, id.String()); err != nil {
		t.Fatal(err)
	}
	_, again := h.awsiidRequest(t, doc)
	again.Csr = req.Csr
	if _, err := h.anon(t).Attest(ctx, again); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is banned") {
		t.Fatalf("attestation of a banned instance: %v, want PermissionDenied naming the ban", err)
	}
}

// Replays racing the first attestation: exactly one gets an SVID, every
// other is told the instance is attested (the store records the node only
// if none is).
func TestAWSIIDConcurrentFirstUse(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-race")
	client := h.anon(t)
	const n = 8
	reqs := make([]*api.AttestRequest, n)
	for i := range reqs {
		_, reqs[i] = h.awsiidRequest(t, doc)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, errs[i] = client.Attest(ctx, reqs[i]) })
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is already attested"):
			t.Errorf("racing attestation: %v, want success or PermissionDenied saying it is attested", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d racing attestations with one document got an SVID, want exactly 1", wins, n)
	}
}

// Refusals of the attestor are PermissionDenied (another signer, an
// account not allowed), an unreadable payload InvalidArgument, aws_iid on
// a server without the block FailedPrecondition; none records a node.
func TestAWSIIDAttestCodes(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	other := awsiidtest.NewSigner(t)
	tests := []struct {
		name    string
		payload []byte
		code    codes.Code
		msg     string
	}{
		{"another signer", other.Payload(t, awsiidtest.Doc("111122223333", "us-test-1", "i-1")), codes.PermissionDenied, "not signed by AWS's certificate"},
		{"account not allowed", h.awsSigner.Payload(t, awsiidtest.Doc("999988887777", "us-test-1", "i-1")), codes.PermissionDenied, "not in account_ids_for_local_validation"},
		{"malformed", []byte(`{"document":"{}","rsa2048":"MAA="}`), codes.InvalidArgument, "malformed aws_iid attestation data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, req := attestRequest(t, "")
			req.AttestationType, req.Payload = "aws_iid", tc.payload
			if _, err := h.anon(t).Attest(ctx, req); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Attest: %v, want %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
	if nodes, _ := h.store.ListNodes(ctx); len(nodes) != 0 {
		t.Fatalf("refused attestations recorded %d nodes", len(nodes))
	}
	cfg := h.svc.cfg
	cfg.AWSIID = nil
	_, req := h.awsiidRequest(t, awsiidtest.Doc("111122223333", "us-test-1", "i-1"))
	if _, err := New(cfg).Attest(ctx, req); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "add an aws_iid block") {
		t.Fatalf("aws_iid without the block: %v, want FailedPrecondition", err)
	}
}
