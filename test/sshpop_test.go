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
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/crypto/ssh"

	"github.com/signetid/signet/server/api/sshpop"
	"github.com/signetid/signet/server/api/sshpop/sshpoptest"
)

// An agent attests with its host's OpenSSH host certificate, made with
// the real ssh-keygen as an operator would (an SSH CA signing the host's
// Ed25519 key with -h), and a workload gets an SVID through a node alias on
// the certificate's principal. The agent renews by attesting again; once
// the CA is removed from the server's cert_authorities_path (no restart),
// the next renewal is refused, saying why.
func TestSSHPoPAgentEndToEnd(t *testing.T) {
	t.Parallel() // mostly waits: runs beside the other long end-to-end tests
	want := callerID(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	caPub := sshpoptest.KeygenCA(t, dir, "host_ca")
	otherPub := sshpoptest.KeygenCA(t, dir, "other_ca")
	keyPath, certPath := sshpoptest.KeygenHost(t, dir, "host_ca", "ssh_host_ed25519_key", "ed25519", "web-1.example.org,web-1", "-5m:+1d")
	certText, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(certText)
	if err != nil {
		t.Fatal(err)
	}
	agentID := "spiffe://example.org/agent/sshpop/" + sshpop.Fingerprint(pub.(*ssh.Certificate))

	// The server reads the CA file the operator keeps, a copy of the CA's
	// public key, at every attestation.
	caFile := filepath.Join(dir, "ssh-cas.pub")
	copyFile(t, caPub, caFile)
	// agent_ttl 10s: the agent renews (by attesting again) every ~5 s.
	conf := writeTestFile(t, dir, "server.conf", fmt.Sprintf(`
agent_ttl = "10s"
sshpop {
  cert_authorities_path = %q
  canonical_domain = "example.org"
}
`, caFile))
	srv := startServerProc(t, "--config", conf)
	bundle := srv.writeBundle(t, dir)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	n := &node{server: srv, socket: filepath.Join(dir, "sockets", "agent.sock")}
	// The certificate is found beside the key, as sshd names it.
	n.agentArgs = []string{"agent", "run", "--server", addr, "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "agent"),
		"--trust-bundle", bundle, "--socket", n.socket, "--sshpop-host-key", keyPath}
	n.agent = startSignet(t, nil, n.agentArgs...)
	if got := fieldValue(n.agent.waitLine(t, "agent attested", 30*time.Second), "agent_id"); got != agentID {
		t.Fatalf("agent attested as %q, want %s", got, agentID)
	}

	ctx := serveThroughNodeAlias(t, n, "sshpop:principal:web-1.example.org", want)
	checkAgentListed(t, srv, agentID, "sshpop")

	// Renewal is a re-attestation with the host certificate.
	n.agent.waitLine(t, "agent SVID renewed by re-attestation", 15*time.Second)
	srv.proc.waitLine(t, "agent re-attested", 5*time.Second)

	// The CA is taken out of the file: the next renewal is refused, and
	// the agent keeps serving its current SVID.
	copyFile(t, otherPub, caFile)
	line := n.agent.waitLine(t, "agent SVID cannot be renewed", 15*time.Second)
	if !strings.Contains(line, "PermissionDenied") || !strings.Contains(line, "which is not in cert_authorities or cert_authorities_path") {
		t.Fatalf("renewal refused for another reason: %s", line)
	}
	if svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket)); err != nil || svid.ID != want {
		t.Fatalf("FetchX509SVID after the refusal: %v, %v", svid, err)
	}
}

// serveThroughNodeAlias registers want (unix:uid:0) under a node alias
// selecting n's agent by nodeSelector, waits for n to serve it and fetches
// it with go-spiffe; the context returned lasts for the rest of the test.
func serveThroughNodeAlias(t *testing.T, n *node, nodeSelector string, want spiffeid.ID) context.Context {
	t.Helper()
	const alias = "spiffe://example.org/nodes/web"
	if _, err := n.server.cli(t, "server", "entry", "create", "--node", "--spiffe-id", alias, "--selector", nodeSelector); err != nil {
		t.Fatal(err)
	}
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", alias,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket)); err != nil || svid.ID != want {
		t.Fatalf("FetchX509SVID: %v, %v", svid, err)
	}
	return ctx
}

// checkAgentListed checks `agent list` shows agentID, of attestation type
// typ.
func checkAgentListed(t *testing.T, srv *serverEnv, agentID, typ string) {
	t.Helper()
	agents, err := srv.cli(t, "server", "agent", "list")
	if err != nil || !strings.Contains(agents, agentID) || !strings.Contains(agents, typ) {
		t.Fatalf("agent list: %v\n%s", err, agents)
	}
}
