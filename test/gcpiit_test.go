package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/api/gcpiit/gcpiittest"
)

// An agent on a "GCE instance" attests with its instance identity token,
// asked (Metadata-Flavor: Google, format=full) of a fake metadata server on
// 127.0.0.1 minting RS256 tokens with a test key, whose certificate the
// server fetches from a fake Google certificates endpoint
// (google_certificates_url). A workload gets an SVID through a node alias
// on the instance's zone (go-spiffe). A second agent of the instance is
// refused (trust on first use).
func TestGCPIITAgentEndToEnd(t *testing.T) {
	want := callerID(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	signer := gcpiittest.NewSigner(t)
	certs := gcpiittest.NewCerts(t, signer)
	md := gcpiittest.NewMetadata(t, signer, gcpiittest.Instance("project-a", "us-west1-b", "blog-server", "4567890123456789012"))
	const agentID = "spiffe://example.org/agent/gcp_iit/project-a/4567890123456789012"

	conf := writeTestFile(t, dir, "server.conf", fmt.Sprintf(`
gcp_iit {
  projectid_allow_list = ["project-a"]
  google_certificates_url = %q
}
`, certs.URL))
	srv := startServerProc(t, "--config", conf)
	bundle := srv.writeBundle(t, dir)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	n := &node{server: srv, socket: filepath.Join(dir, "sockets", "agent.sock")}
	n.agentArgs = []string{"agent", "run", "--server", addr, "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "agent"),
		"--trust-bundle", bundle, "--socket", n.socket, "--gcp-iit-identity-token-host", md.Host}
	n.agent = startSignet(t, nil, n.agentArgs...)
	if got := fieldValue(n.agent.waitLine(t, "agent attested", 30*time.Second), "agent_id"); got != agentID {
		t.Fatalf("agent attested as %q, want %s", got, agentID)
	}
	serveThroughNodeAlias(t, n, "gcp_iit:zone:us-west1-b", want)
	checkAgentListed(t, srv, agentID, "gcp_iit")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := runSignet(t, ctx, "agent", "run", "--server", addr, "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "second"),
		"--trust-bundle", bundle, "--socket", filepath.Join(dir, "second.sock"), "--gcp-iit-identity-token-host", md.Host)
	if err == nil || !strings.Contains(err.Error(), "agent "+agentID+" is already attested") {
		t.Fatalf("second agent of the instance: %v\n%s; want a refusal", err, out)
	}
}
