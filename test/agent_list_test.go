package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/agent/client"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
)

// `signet server agent list` says of each agent whether it renews by
// attesting again: true for an x509pop agent, false for a join-token one
// (agents attested against the real server binary by the agent's client).
// A join token for the x509pop agent's ID is refused while that agent is
// attested, naming the eviction that frees it.
func TestAgentListCanReattest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	root := x509poptest.NewRoot(t, "Example Node Root")
	rootPath := filepath.Join(dir, "node-root.pem")
	x509poptest.WritePEM(t, rootPath, root.Cert)
	conf := filepath.Join(dir, "server.conf")
	conffile := fmt.Sprintf("x509pop {\n  ca_bundle_path = %q\n  agent_path_template = \"x509pop/{{ .Subject.CommonName }}\"\n}\n", rootPath)
	if err := os.WriteFile(conf, []byte(conffile), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServerProc(t, "--config", conf)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	bundle, err := os.ReadFile(srv.writeBundle(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := client.ParsePEMCertificates(bundle)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	attest := func(attestor client.NodeAttestor) spiffeid.ID {
		t.Helper()
		c, err := client.New(client.Config{ServerAddr: addr, TrustDomain: td, DataDir: t.TempDir(), NodeAttestor: attestor, TrustBundle: roots})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		return c.AgentID()
	}
	tok, err := srv.cli(t, "server", "token", "generate", "--spiffe-id", "spiffe://example.org/agent/joined")
	if err != nil {
		t.Fatal(err)
	}
	joined := attest(client.JoinToken(func() string { return strings.TrimSpace(tok) }))
	_, certPath, keyPath := root.Intermediate(t, "Example Node Issuing").NodeFiles(t, dir, x509poptest.Leaf{CommonName: "web-1"})
	popped := attest(client.X509PoP(td, certPath, keyPath))

	out, err := srv.cli(t, "server", "agent", "list")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{joined.String(): "Can re-attest: false", popped.String(): "Can re-attest: true"}
	for _, block := range strings.Split(strings.TrimSpace(out), "\n\n")[1:] {
		id := fieldAfter(block, "SPIFFE ID: ")
		line, ok := want[id]
		if !ok {
			t.Fatalf("agent list shows an unexpected agent:\n%s", block)
		}
		if !strings.Contains(block, "\n"+line+"\n") {
			t.Errorf("agent list for %s:\n%s\nwant the line %q", id, block, line)
		}
		delete(want, id)
	}
	if len(want) != 0 {
		t.Fatalf("agent list lacks %v:\n%s", want, out)
	}

	_, err = srv.cli(t, "server", "token", "generate", "--spiffe-id", popped.String())
	if err == nil || !strings.Contains(err.Error(), "evict it first") {
		t.Fatalf("token generate for the x509pop agent's ID: %v; want a refusal naming the eviction", err)
	}
}
