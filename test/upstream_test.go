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

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// orgPKI is an organisation's PKI made the way an operator would, with
// the openssl CLI: an RSA root and an ECDSA issuing CA under it.
type orgPKI struct {
	dir                          string
	rootCert, caCert, caKey, cnf string
}

func openssl(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newOrgPKI(t *testing.T) *orgPKI {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	dir := t.TempDir()
	p := &orgPKI{dir: dir, rootCert: filepath.Join(dir, "root.crt"), caCert: filepath.Join(dir, "issuing.crt"),
		caKey: filepath.Join(dir, "issuing.key"), cnf: filepath.Join(dir, "ext.cnf")}
	ext := "[issuing]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
	if err := os.WriteFile(p.cnf, []byte(ext), 0o600); err != nil {
		t.Fatal(err)
	}
	openssl(t, dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.crt",
		"-days", "3650", "-subj", "/O=Example Corp/CN=Example Root CA")
	openssl(t, dir, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "issuing.key") // SEC 1
	openssl(t, dir, "req", "-new", "-key", "issuing.key", "-out", "issuing.csr", "-subj", "/O=Example Corp/CN=Example Issuing CA")
	openssl(t, dir, "x509", "-req", "-in", "issuing.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
		"-days", "365", "-extfile", "ext.cnf", "-extensions", "issuing", "-out", "issuing.crt")
	return p
}

func (p *orgPKI) config(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "server.conf")
	body := fmt.Sprintf("upstream_authority \"disk\" {\n  cert_file_path = %q\n  key_file_path = %q\n  bundle_file_path = %q\n}\n",
		certFile, keyFile, p.rootCert)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return conf
}

// A trust domain under an organisation's PKI: the bundle is the
// organisation's root, an agent attests and verifies the server through the
// issuing CA, and workloads get chains that go-spiffe and openssl verify.
func TestServerUpstreamAuthority(t *testing.T) {
	pki := newOrgPKI(t)
	n := startNode(t, "--config", pki.config(t, pki.caCert, pki.caKey))
	bundle, err := n.server.cli(t, "server", "bundle", "show")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(pki.rootCert)
	if err != nil {
		t.Fatal(err)
	}
	if !samePEMCerts(t, bundle, string(rootPEM)) {
		t.Fatalf("bundle show is not the organisation's root:\n%s", bundle)
	}

	want := callerID(t)
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		t.Fatal(err)
	}
	if len(svid.Certificates) != 3 || svid.Certificates[2].Subject.CommonName != "Example Issuing CA" {
		t.Fatalf("SVID chain has %d certificates; want leaf, Signet CA, Example Issuing CA", len(svid.Certificates))
	}

	// The files legacy apps read verify with openssl, for both TLS roles.
	out := t.TempDir()
	if _, err := runSignet(t, ctx, "agent", "api", "fetch", "x509", "--socket", n.socket, "--write", out); err != nil {
		t.Fatal(err)
	}
	for _, purpose := range []string{"sslserver", "sslclient"} {
		openssl(t, out, "verify", "-purpose", purpose, "-CAfile", "bundle.0.pem", "-untrusted", "svid.0.pem", "svid.0.pem")
	}

	// Restarted, the server keeps its CA under the same root.
	n.server.proc.Stop()
	restarted := startSignet(t, nil, n.server.proc.cmd.Args[1:]...)
	restarted.waitLine(t, "server started", 60*time.Second)
	if again, err := n.server.cli(t, "server", "bundle", "show"); err != nil || again != bundle {
		t.Fatalf("bundle after a restart: %v\n%s", err, again)
	}
}

// A server whose upstream key does not match its certificate does not
// start, and says why in one line.
func TestServerUpstreamAuthorityRefused(t *testing.T) {
	pki := newOrgPKI(t)
	other := filepath.Join(pki.dir, "other.key")
	openssl(t, pki.dir, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", other)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	_, err := runSignet(t, ctx, "server", "run", "--config", pki.config(t, pki.caCert, other), "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "data"), "--admin-socket", filepath.Join(dir, "admin.sock"), "--listen", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), "does not match certificate") {
		t.Fatalf("server with a mismatched upstream key: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "data"))
	for _, e := range entries { // the store may exist; CA files must not
		if strings.HasPrefix(e.Name(), "ca-") {
			t.Errorf("a refused start wrote CA file %s", e.Name())
		}
	}
}

// samePEMCerts reports whether two PEM texts hold the same certificates.
func samePEMCerts(t *testing.T, a, b string) bool {
	t.Helper()
	parse := func(s string) []string {
		var out []string
		rest := []byte(s)
		for {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				return out
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(c.Raw))
		}
	}
	x, y := parse(a), parse(b)
	return len(x) == len(y) && len(x) > 0 && strings.Join(x, "") == strings.Join(y, "")
}
