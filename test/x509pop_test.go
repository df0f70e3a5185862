package test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/api/x509pop"
)

// nodePKI makes, with the openssl CLI as an operator would, a node CA (an
// RSA root and an ECDSA issuing CA under it) and one host's certificate for
// client authentication, with its SEC 1 key as `openssl ecparam -genkey`
// writes it (EC PARAMETERS first). It returns the root's path, the host's
// chain (leaf then issuing CA) and key paths, and the leaf.
func nodePKI(t *testing.T, cn string) (rootPath, chainPath, keyPath string, leaf *x509.Certificate) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	ext := "[issuing]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n" +
		"[node]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n" +
		"subjectAltName = DNS:" + cn + "\n"
	if err := os.WriteFile(filepath.Join(dir, "ext.cnf"), []byte(ext), 0o600); err != nil {
		t.Fatal(err)
	}
	openssl(t, dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.crt",
		"-days", "3650", "-subj", "/O=Example Corp/CN=Example Node Root")
	openssl(t, dir, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "issuing.key")
	openssl(t, dir, "req", "-new", "-key", "issuing.key", "-out", "issuing.csr", "-subj", "/O=Example Corp/CN=Example Node Issuing")
	openssl(t, dir, "x509", "-req", "-in", "issuing.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
		"-days", "365", "-extfile", "ext.cnf", "-extensions", "issuing", "-out", "issuing.crt")
	openssl(t, dir, "ecparam", "-name", "prime256v1", "-genkey", "-out", "node.key")
	openssl(t, dir, "req", "-new", "-key", "node.key", "-out", "node.csr", "-subj", "/O=Example Corp/CN="+cn)
	openssl(t, dir, "x509", "-req", "-in", "node.csr", "-CA", "issuing.crt", "-CAkey", "issuing.key", "-CAcreateserial",
		"-days", "30", "-extfile", "ext.cnf", "-extensions", "node", "-out", "node.crt")
	nodePEM, err := os.ReadFile(filepath.Join(dir, "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	issuingPEM, err := os.ReadFile(filepath.Join(dir, "issuing.crt"))
	if err != nil {
		t.Fatal(err)
	}
	chainPath = filepath.Join(dir, "node-chain.pem")
	if err := os.WriteFile(chainPath, append(nodePEM, issuingPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(nodePEM)
	if block == nil {
		t.Fatal("openssl wrote no PEM certificate")
	}
	if leaf, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "root.crt"), chainPath, filepath.Join(dir, "node.key"), leaf
}

// An agent attests with its host's machine certificate, gets a workload
// entry through a node alias on the certificate's common name, and, with
// its data dir gone, attests again to the same ID: no token anywhere.
func TestX509PoPAgentEndToEnd(t *testing.T) {
	want := callerID(t)
	rootPath, chainPath, keyPath, leaf := nodePKI(t, "web-1.example.org")
	conf := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("x509pop {\n  ca_bundle_path = %q\n}\n", rootPath)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServerProc(t, "--config", conf)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	bundle := srv.writeBundle(t, dir)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	n := &node{server: srv, socket: filepath.Join(dir, "sockets", "agent.sock")}
	dataDir := filepath.Join(dir, "agent")
	n.agentArgs = []string{"agent", "run", "--server", addr, "--trust-domain", "example.org", "--data-dir", dataDir,
		"--trust-bundle", bundle, "--socket", n.socket, "--x509pop-cert", chainPath, "--x509pop-key", keyPath}
	n.agent = startSignet(t, nil, n.agentArgs...)
	agentID := "spiffe://example.org/agent/x509pop/" + x509pop.Fingerprint(leaf)
	if got := fieldValue(n.agent.waitLine(t, "agent attested", 30*time.Second), "agent_id"); got != agentID {
		t.Fatalf("agent attested as %q, want %s", got, agentID)
	}
	n.agent.waitLine(t, "agent ready", 30*time.Second)

	serveThroughNodeAlias(t, n, "x509pop:subject:cn:web-1.example.org", want)
	checkAgentListed(t, srv, agentID, "x509pop")

	// The data dir is lost: the agent attests again with the same
	// certificate, to the same ID, and serves the same workload.
	n.agent.Stop()
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	n.agent = startSignet(t, nil, n.agentArgs...)
	if got := fieldValue(n.agent.waitLine(t, "agent attested", 30*time.Second), "agent_id"); got != agentID {
		t.Fatalf("re-attested as %q, want %s", got, agentID)
	}
	waitForID(t, n, want)
}

// An agent given two ways to attest stops with one line saying so.
func TestX509PoPAgentConfigRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := runSignet(t, ctx, "agent", "run", "--server", "127.0.0.1:1", "--trust-domain", "example.org",
		"--data-dir", t.TempDir(), "--join-token", "abc", "--x509pop-cert", "/c.pem", "--x509pop-key", "/k.pem")
	if err == nil || !strings.Contains(err.Error()+out, "not a join token and x509pop_cert_path") {
		t.Fatalf("agent with a token and x509pop: %v\n%s", err, out)
	}
}
