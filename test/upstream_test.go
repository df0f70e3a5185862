package test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
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

// upstreamRoot is one root as `upstreamauthority ... --output json` prints it.
type upstreamRoot struct {
	AuthorityID      string           `json:"authority_id"`
	SubjectKeyID     string           `json:"subject_key_id"`
	Tainted          bool             `json:"tainted"`
	Revoked          bool             `json:"revoked"`
	LocalAuthorities []localAuthority `json:"local_authorities"`
}

func upstreamCLI(t *testing.T, n *node, args ...string) (upstreamRoot, error) {
	t.Helper()
	out, err := n.server.cli(t, append([]string{"server", "upstreamauthority"}, append(args, "--output", "json")...)...)
	if err != nil {
		return upstreamRoot{}, fmt.Errorf("%w\n%s", err, out)
	}
	var u upstreamRoot
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatalf("upstreamauthority %v output: %v\n%s", args, err, out)
	}
	return u, nil
}

// issuedUnder reports whether the workload's SVID chains to root.
func issuedUnder(t *testing.T, n *node, root *x509.Certificate) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket))
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[len(svid.Certificates)-1].CheckSignatureFrom(root) == nil
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// The organisation's root is compromised and replaced by one with the same
// name: the operator points the upstream files at the new PKI, rotates the
// CA onto it, taints the old root (the agent re-signs the workload's SVID
// and its own under the new root at once) and revokes it (it leaves the
// bundle), with the CLI an operator uses.
func TestUpstreamRootReplaced(t *testing.T) {
	oldPKI, newPKI := newOrgPKI(t), newOrgPKI(t)
	oldRoot, newRoot := readCert(t, oldPKI.rootCert), readCert(t, newPKI.rootCert)
	files := t.TempDir()
	cert, key, bundle := filepath.Join(files, "tls.crt"), filepath.Join(files, "tls.key"), filepath.Join(files, "ca.crt")
	use := func(p *orgPKI) {
		copyFile(t, p.caCert, cert)
		copyFile(t, p.caKey, key)
		copyFile(t, p.rootCert, bundle)
	}
	use(oldPKI)
	conf := filepath.Join(t.TempDir(), "server.conf")
	body := fmt.Sprintf("upstream_authority \"disk\" {\n  cert_file_path = %q\n  key_file_path = %q\n  bundle_file_path = %q\n}\n", cert, key, bundle)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "--config", conf)
	want := callerID(t)
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)
	if !issuedUnder(t, n, oldRoot) {
		t.Fatal("the workload's SVID is not issued under the organisation's root")
	}
	oldID := hex.EncodeToString(sha256Sum(oldRoot.Raw))
	oldCA := activeAuthority(t, n, "x509")
	oldAgentSerial := agentSerial(t, n)

	if _, err := upstreamCLI(t, n, "taint", "--authority-id", oldID); err == nil || !strings.Contains(err.Error(), "chains to upstream root") {
		t.Fatalf("taint the root the active CA chains to: %v", err)
	}
	if _, err := upstreamCLI(t, n, "revoke", "--authority-id", oldID); err == nil || !strings.Contains(err.Error(), "is not tainted") {
		t.Fatalf("revoke an untainted root: %v", err)
	}

	use(newPKI)
	newCA := authorityCLI(t, n, "x509", "prepare")
	eventually(t, "the workload's bundle holds both roots", func() bool { return len(rootKeyIDs(t, n)) == 2 })
	authorityCLI(t, n, "x509", "activate", "--authority-id", newCA.AuthorityID)
	if !issuedUnder(t, n, oldRoot) {
		t.Fatal("activation alone re-signed the workload's SVID; only a taint should")
	}
	// By subject key ID, as SPIRE names upstream authorities.
	u, err := upstreamCLI(t, n, "taint", "--authority-id", hex.EncodeToString(oldRoot.SubjectKeyId))
	if err != nil || u.AuthorityID != oldID || !u.Tainted || len(u.LocalAuthorities) != 1 || u.LocalAuthorities[0].AuthorityID != oldCA {
		t.Fatalf("taint answered %+v, %v", u, err)
	}
	eventually(t, "the workload's SVID is re-signed under the new root", func() bool { return issuedUnder(t, n, newRoot) })
	eventually(t, "the agent's own SVID is renewed", func() bool { return agentSerial(t, n) != oldAgentSerial })

	if u, err := upstreamCLI(t, n, "revoke", "--authority-id", oldID); err != nil || !u.Revoked {
		t.Fatalf("revoke answered %+v, %v", u, err)
	}
	shown, err := n.server.cli(t, "server", "bundle", "show")
	if err != nil {
		t.Fatal(err)
	}
	newPEM, err := os.ReadFile(newPKI.rootCert)
	if err != nil {
		t.Fatal(err)
	}
	if !samePEMCerts(t, shown, string(newPEM)) {
		t.Fatalf("bundle after the revocation is not the new root alone:\n%s", shown)
	}
	eventually(t, "the workload's bundle holds the new root alone", func() bool {
		ids := rootKeyIDs(t, n)
		return len(ids) == 1 && ids[string(newRoot.SubjectKeyId)]
	})
	if a, _ := statusOfCA(t, n, oldCA); a != "revoked" {
		t.Errorf("the old CA under the revoked root is %q, want revoked", a)
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func statusOfCA(t *testing.T, n *node, id string) (string, bool) {
	t.Helper()
	for _, a := range authorities(t, n, "x509") {
		if a.AuthorityID == id {
			return a.Status, true
		}
	}
	return "", false
}
