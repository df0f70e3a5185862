package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"

	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/agentapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

// TestTwoServersOnePostgres runs two servers sharing one PostgreSQL store:
// both roots are in the bundle, an agent attested to B sees an entry created
// on A pushed through its open Sync stream (LISTEN/NOTIFY), and its CSR is
// signed by B.
func TestTwoServersOnePostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	onPG := func(c *server.Config) { c.Datastore = url }
	a := startServer(t, onPG)
	b := startServer(t, onPG)

	// Each server publishes its own root; the shared bundle is the union.
	waitFor(t, 10*time.Second, "both roots in both servers' bundles", func() bool {
		return len(a.bundle(t).X509Authorities()) == 2 && len(b.bundle(t).X509Authorities()) == 2
	})

	tok := a.token(t, "spiffe://example.org/agent/ha", 0) // token made on A, consumed on B
	agent := mustAttest(t, b, tok)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := agent.Client.Sync(ctx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	e := a.createEntry(t, "spiffe://example.org/ha/web", agent.ID.String(), "unix:uid:1000")
	msg, err := stream.Recv()
	if err != nil {
		t.Fatalf("push from the other server: %v", err)
	}
	if len(msg.Entries) != 1 || msg.Entries[0].Id != e.Id {
		t.Fatalf("pushed %v, want entry %s", msg.Entries, e.Id)
	}
	key, csr := newCSR(t)
	resp, err := agent.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: e.Id, Csr: csr}}})
	if err != nil {
		t.Fatal(err)
	}
	svid := svidFrom(t, resp.Svids[0].CertChain, key)
	if svid.ID.String() != "spiffe://example.org/ha/web" {
		t.Fatalf("signed %s", svid.ID)
	}
	// Evicting on A cuts the agent off on B.
	if _, err := a.admin.EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: agent.ID.String()}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.PermissionDenied, "B's stream after eviction on A")
}

// TestTwoServersOneUpstream: servers under one upstream CA publish one
// root between them, and an agent of one verifies the other's SVIDs.
func TestTwoServersOneUpstream(t *testing.T) {
	url := pgtest.NewDatabase(t)
	up := selfSignedUpstream(t)
	cfg := func(c *server.Config) { c.Datastore, c.UpstreamAuthority = url, up.DiskUpstream }
	a := startServer(t, cfg)
	b := startServer(t, cfg)
	for _, s := range []*testServer{a, b} {
		if roots := s.bundle(t).X509Authorities(); len(roots) != 1 || !roots[0].Equal(up.root) {
			t.Fatalf("bundle holds %d X.509 roots, want the upstream's alone", len(roots))
		}
	}
	// Each agent verifies its server's chain through the upstream root.
	mustAttest(t, b, a.token(t, "spiffe://example.org/agent/hb", 0))
	agent := mustAttest(t, a, b.token(t, "spiffe://example.org/agent/ha", 0))
	e := a.createEntry(t, "spiffe://example.org/ha/web", agent.ID.String(), "unix:uid:1000")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, csr := newCSR(t)
	resp, err := agent.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: e.Id, Csr: csr}}})
	if err != nil || len(resp.Svids) != 1 {
		t.Fatalf("sign on A: %v", err)
	}
	chain := resp.Svids[0].CertChain
	svid := svidFrom(t, chain, key)
	if _, _, err := x509svid.Verify(svid.Certificates, b.bundle(t)); err != nil {
		t.Errorf("an SVID signed by A does not verify against B's bundle: %v", err)
	}
}

// upstreamCA is a self-signed upstream CA in files.
type upstreamCA struct {
	*ca.DiskUpstream
	root *x509.Certificate
}

func selfSignedUpstream(t testing.TB) upstreamCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	up := upstreamCA{DiskUpstream: &ca.DiskUpstream{CertFile: filepath.Join(dir, "ca.crt"), KeyFile: filepath.Join(dir, "ca.key")}, root: root}
	for path, b := range map[string]*pem.Block{up.CertFile: {Type: "CERTIFICATE", Bytes: der}, up.KeyFile: {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return up
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAgentKnownToStoreButNotYetToThisServer: an agent attests on A and calls
// B before B has heard of it. Two servers on one SQLite file model the
// extreme case, since SQLite signals only its own process's commits: B learns
// of A's writes only by reading the store. B must do so when its snapshot
// refuses an agent, instead of answering "not attested".
func TestAgentKnownToStoreButNotYetToThisServer(t *testing.T) {
	db := "sqlite://" + filepath.Join(t.TempDir(), "shared.db")
	onShared := func(c *server.Config) { c.Datastore = db }
	a := startServer(t, onShared)
	b := startServer(t, onShared)

	agent := mustAttest(t, a, a.token(t, "spiffe://example.org/agent/ha", 0))
	e := a.createEntry(t, "spiffe://example.org/ha/web", agent.ID.String(), "unix:uid:1000")
	// A's bundle holds both roots (A reloaded at attest); dial B with it.
	conn := dialTLS(t, b.Addr(), tlsconfig.MTLSClientConfig(agent.SVID, a.bundle(t), tlsconfig.AuthorizeID(agentapi.ServerID(td))))
	onB := api.NewAgentServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, csr := newCSR(t)
	if _, err := onB.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: e.Id, Csr: csr}}}); err != nil {
		t.Fatalf("sign on B for an agent attested on A: %v", err)
	}
	stream, err := onB.Sync(ctx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || len(msg.Entries) != 1 || msg.Entries[0].Id != e.Id {
		t.Fatalf("sync on B: %v, %v; want entry %s", msg, err, e.Id)
	}
}
