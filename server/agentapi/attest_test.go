package agentapi

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"strings"
	"sync"
	"testing"

	"github.com/signetid/signet/server/api"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A join token is spent only together with the node's record: when that
// write fails (here the database refuses it, as on a full disk or a
// PostgreSQL failover), the agent is told to retry, and its retry with the
// same token succeeds. Once spent, the token attests no one else.
func TestAttestRetryAfterFailedNodeWriteKeepsToken(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	db, err := sql.Open("sqlite", h.dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	anon := h.dial(t, tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(ServerID(td))))
	token := h.token(t, "spiffe://example.org/agent/retry")

	if _, err := db.ExecContext(ctx, `CREATE TRIGGER refuse_nodes BEFORE INSERT ON nodes BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END`); err != nil {
		t.Fatal(err)
	}
	_, req := attestRequest(t, token)
	_, err = anon.Attest(ctx, req)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("attest while the node cannot be written: %v, want Unavailable (the agent retries only then)", err)
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER refuse_nodes`); err != nil {
		t.Fatal(err)
	}
	resp, err := anon.Attest(ctx, req)
	if err != nil {
		t.Fatalf("retry with the same token: %v", err)
	}
	if resp.SpiffeId != "spiffe://example.org/agent/retry" {
		t.Fatalf("retry attested %s", resp.SpiffeId)
	}
	_, req = attestRequest(t, token)
	if _, err := anon.Attest(ctx, req); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("third use of the token: %v, want PermissionDenied", err)
	}
}

// The token is read before signing and spent with the node's write; of
// concurrent attestations with one token, exactly one must succeed.
func TestAttestConcurrentUsesOfOneToken(t *testing.T) {
	h := newHarness(t)
	anon := h.dial(t, tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(ServerID(td))))
	token := h.token(t, "")
	const n = 8
	codesSeen := make([]codes.Code, n)
	var wg sync.WaitGroup
	for i := range n {
		_, req := attestRequest(t, token)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := anon.Attest(context.Background(), req)
			codesSeen[i] = status.Code(err)
		}()
	}
	wg.Wait()
	ok := 0
	for _, c := range codesSeen {
		switch c {
		case codes.OK:
			ok++
		case codes.PermissionDenied:
		default:
			t.Fatalf("attestation answered %s; want OK or PermissionDenied (%v)", c, codesSeen)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent attestations with one token succeeded, want 1 (%v)", ok, n, codesSeen)
	}
}

// An agent whose attestation committed but whose answer was lost asks
// again with the same token and key, and gets an SVID for the node
// recorded then; another key cannot, nor can the same key once the node is
// banned or evicted.
func TestAttestAgainAfterLostAnswer(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	anon := h.dial(t, tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(ServerID(td))))
	const id = "spiffe://example.org/agent/lost"
	token := h.token(t, id)
	key, req := attestRequest(t, token)
	first, err := anon.Attest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	serialOf := func(resp *api.AttestResponse) string {
		t.Helper()
		c, err := x509.ParseCertificate(resp.SvidChain[0])
		if err != nil {
			t.Fatal(err)
		}
		return serialHex(c.SerialNumber)
	}

	// The same key, in a new CSR: answered again, as the same node.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	again, err := anon.Attest(ctx, &api.AttestRequest{AttestationType: req.AttestationType, Payload: req.Payload, Csr: csr})
	if err != nil {
		t.Fatalf("retry with the spending key: %v", err)
	}
	if again.SpiffeId != id || serialOf(again) == serialOf(first) {
		t.Fatalf("retry attested %s with serial %s (first %s)", again.SpiffeId, serialOf(again), serialOf(first))
	}
	n, err := h.store.GetNode(ctx, id)
	if err != nil || n.SerialNumber != serialOf(again) || n.PrevSerialNumber != serialOf(first) {
		t.Fatalf("node after the retry: %+v, %v", n, err)
	}

	// Another key: the token is spent.
	_, other := attestRequest(t, token)
	if _, err := anon.Attest(ctx, other); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another key: %v, want PermissionDenied", err)
	}
	if got, _ := h.store.GetNode(ctx, id); got.SerialNumber != n.SerialNumber {
		t.Fatal("a refused attestation rewrote the node")
	}

	// Banned, then evicted: the spending key is refused too.
	if err := h.store.BanNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Attest(ctx, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "banned") {
		t.Fatalf("retry of a banned node: %v, want PermissionDenied (banned)", err)
	}
	if err := h.store.DeleteNode(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Attest(ctx, req); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "evicted") {
		t.Fatalf("retry of an evicted node: %v, want PermissionDenied (evicted)", err)
	}
	if _, err := h.store.GetNode(ctx, id); err == nil {
		t.Fatal("a retry brought an evicted node back")
	}
}
