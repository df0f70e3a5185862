package agentapi

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"testing"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

// The store records which CA signed each agent's SVID, at attestation and
// at renewal, so an operator sees who still depends on an old CA.
func TestAgentSVIDIssuerRecorded(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	issuerOf := func(der []byte) string {
		t.Helper()
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(c.AuthorityKeyId)
	}
	key, req := attestRequest(t, h.token(t, ""))
	id, client, resp := h.attestWith(t, key, req)
	first := issuerOf(resp.SvidChain[0])
	if n, err := h.store.GetNode(ctx, id.String()); err != nil || first == "" || n.SVIDIssuer != first {
		t.Fatalf("after attestation: node %+v, %v; want SVIDIssuer %q", n, err, first)
	}

	// A new CA signs the renewal: the record follows.
	p, err := h.ca.Prepare(ctx, ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ca.Activate(ctx, ca.KindX509, p.ID); err != nil {
		t.Fatal(err)
	}
	renewed, err := client.RenewAgent(ctx, &api.RenewAgentRequest{Csr: req.Csr})
	if err != nil {
		t.Fatal(err)
	}
	if got := issuerOf(renewed.SvidChain[0]); got != p.SubjectKeyID {
		t.Fatalf("renewed SVID issued by %s, want the new CA %s", got, p.SubjectKeyID)
	}
	if n, err := h.store.GetNode(ctx, id.String()); err != nil || n.SVIDIssuer != p.SubjectKeyID {
		t.Fatalf("after renewal: node %+v, %v; want SVIDIssuer %s (the new CA)", n, err, p.SubjectKeyID)
	}
}
