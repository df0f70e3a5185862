package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
)

// An agent on an "EC2 instance" attests with its instance identity
// document, read with IMDSv2 from a fake metadata service on 127.0.0.1
// (real paths and headers; reads without a token refused), signed by a
// test key the server trusts through aws_certificates_path. A workload
// gets an SVID through a node alias on the instance's account and region
// (go-spiffe). The agent renews in place; a second agent presenting the
// same document is refused (trust on first use), saying how to evict.
func TestAWSIIDAgentEndToEnd(t *testing.T) {
	want := callerID(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	signer := awsiidtest.NewSigner(t)
	certs := filepath.Join(dir, "aws-certs.pem")
	signer.WriteCert(t, certs)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-0123456789abcdef0")
	imds := awsiidtest.NewIMDS(t, doc, signer.Sign(t, doc))
	const agentID = "spiffe://example.org/agent/aws_iid/111122223333/us-test-1/i-0123456789abcdef0"

	// agent_ttl 6s: the agent renews every ~3 s.
	conf := writeTestFile(t, dir, "server.conf", fmt.Sprintf(`
agent_ttl = "6s"
aws_iid {
  account_ids_for_local_validation = ["111122223333"]
  aws_certificates_path = %q
}
`, certs))
	srv := startServerProc(t, "--config", conf)
	bundle := srv.writeBundle(t, dir)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	agentConf := writeTestFile(t, dir, "agent.conf", fmt.Sprintf("aws_iid {\n  ec2_metadata_endpoint = %q\n}\n", imds.URL))
	n := &node{server: srv, socket: filepath.Join(dir, "sockets", "agent.sock")}
	n.agentArgs = []string{"agent", "run", "--config", agentConf, "--server", addr, "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "agent"), "--trust-bundle", bundle, "--socket", n.socket}
	n.agent = startSignet(t, nil, n.agentArgs...)
	if got := fieldValue(n.agent.waitLine(t, "agent attested", 30*time.Second), "agent_id"); got != agentID {
		t.Fatalf("agent attested as %q, want %s", got, agentID)
	}
	for _, r := range imds.Requests() {
		if strings.HasPrefix(r, "GET") && strings.HasSuffix(r, "no-token") {
			t.Fatalf("the agent read the metadata service without an IMDSv2 token: %q", imds.Requests())
		}
	}

	serveThroughNodeAlias(t, n, "aws_iid:account_id:111122223333", want)
	checkAgentListed(t, srv, agentID, "aws_iid")
	n.agent.waitLine(t, "agent SVID renewed", 15*time.Second)

	// The document is no secret: another agent presenting it is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := runSignet(t, ctx, "agent", "run", "--server", addr, "--trust-domain", "example.org", "--data-dir", filepath.Join(dir, "copy"),
		"--trust-bundle", bundle, "--socket", filepath.Join(dir, "copy.sock"), "--aws-iid-metadata-endpoint", imds.URL)
	if err == nil || !strings.Contains(err.Error(), "agent "+agentID+" is already attested") || !strings.Contains(err.Error(), "signet server agent evict --spiffe-id "+agentID) {
		t.Fatalf("second agent with the same document: %v\n%s; want a refusal naming the eviction", err, out)
	}
	waitForID(t, n, want)
}
