package agentapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
)

// An aws_iid agent whose SVID expired (its instance stopped longer than
// agent_ttl) presents its document again with the key of that SVID: it is
// back, with no eviction, and a new SVID. The same
// document with another key (the host's agent lost its data directory, or
// someone else read the document) is refused, in one line that names both
// causes and what to do for each (an eviction for the lost data directory;
// investigate or ban first when the host's agent never attested).
func TestTOFUAgentBackAfterExpiry(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-stopped")
	key, req := h.awsiidRequest(t, doc)
	id, _, _ := h.attestWith(t, key, req)
	n, err := h.store.GetNode(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	n.ExpiresAt = time.Now().Add(-time.Minute)
	if err := h.store.UpsertNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	_, again := h.awsiidRequest(t, doc)
	again.Csr = req.Csr
	resp, err := h.anon(t).Attest(ctx, again)
	if err != nil || resp.SpiffeId != id.String() {
		t.Fatalf("Attest with the expired agent's key: %v, %v; want the agent back as %s", resp, err, id)
	}
	if got, err := h.store.GetNode(ctx, id.String()); err != nil || !got.ExpiresAt.After(time.Now()) || got.SerialNumber == n.SerialNumber {
		t.Fatalf("node after the agent came back: %+v, %v; want a new, unexpired SVID", got, err)
	}

	// The agent renewed while this attestation was checked (Attest read
	// the node expired; the store holds it renewed): refused in the write,
	// with no expiry it cannot know.
	stale, err := h.store.GetNode(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	stale.ExpiresAt = time.Now().Add(-time.Minute)
	cfg := h.svc.cfg
	cfg.Store = staleNodeReads{Store: h.store, node: &stale}
	_, racing := h.awsiidRequest(t, doc)
	racing.Csr = req.Csr
	if _, err := New(cfg).Attest(ctx, racing); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "holds an SVID for this key: it renews that SVID in place") {
		t.Fatalf("Attest racing the agent's renewal: %v, want PermissionDenied saying it renews in place, without an expiry", err)
	}
	if got, _ := h.store.GetNode(ctx, id.String()); got.SerialNumber != stale.SerialNumber {
		t.Fatalf("a refused attestation changed the node: serial %s -> %s", stale.SerialNumber, got.SerialNumber)
	}

	_, lost := h.awsiidRequest(t, doc)
	_, err = h.anon(t).Attest(ctx, lost)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Attest with another key: %v, want PermissionDenied", err)
	}
	msg := status.Convert(err).Message()
	for _, want := range []string{
		"agent " + id.String() + " is already attested by another agent key",
		"again only with the key of the agent that attested (kept in its data directory)",
		"if this host's agent lost its data directory (a reinstalled host, a wiped or new disk), only an eviction lets it attest again (signet server agent evict --spiffe-id " + id.String() + ")",
		"if the agent on this host never attested, someone else presented its evidence",
		"ban the ID (signet server agent ban --spiffe-id " + id.String() + "), before evicting",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("message %q is not one line", msg)
	}

	// A node recorded before servers kept agent keys: its agent cannot
	// prove it is the same one, and the message says so.
	keyless, err := h.store.GetNode(ctx, id.String())
	if err != nil {
		t.Fatal(err)
	}
	keyless.AgentKeyHash, keyless.PrevAgentKeyHash, keyless.ExpiresAt = "", "", time.Now().Add(-time.Minute)
	if err := h.store.UpsertNode(ctx, keyless); err != nil {
		t.Fatal(err)
	}
	_, again = h.awsiidRequest(t, doc)
	again.Csr = req.Csr
	_, err = h.anon(t).Attest(ctx, again)
	if want := "recorded by a server that did not keep agent keys and has not renewed since, so it cannot prove it is the same agent: only an eviction lets it attest again"; status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), want) {
		t.Fatalf("Attest for a node recorded without a key: %v, want PermissionDenied saying %q", err, want)
	}
}
