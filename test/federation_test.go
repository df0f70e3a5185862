package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fedServer is a `signet server run` process of one trust domain with a
// bundle endpoint and an https_spiffe relationship with a peer.
type fedServer struct {
	proc        *proc
	AdminSocket string
}

func startFedServer(t *testing.T, td, endpoint, peerTD, peerEndpoint string) *fedServer {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`trust_domain = %q
data_dir = %q
listen = "127.0.0.1:0"
admin_socket = %q
federation {
  bundle_endpoint {
    address = %q
  }
  federates_with %q {
    bundle_endpoint_url = "https://%s"
    bundle_endpoint_profile "https_spiffe" {}
  }
}
`, td, filepath.Join(dir, "data"), filepath.Join(dir, "admin.sock"), endpoint, peerTD, peerEndpoint)
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &fedServer{AdminSocket: filepath.Join(dir, "admin.sock")}
	s.proc = startSignet(t, nil, "server", "run", "--config", path, "--log-level", "debug")
	s.proc.waitLine(t, "server started", 60*time.Second)
	return s
}

// cli runs `signet server bundle ...` against s with stdin; it returns
// stdout, or an error holding the exit status and stderr.
func (s *fedServer) cli(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, signetBin(t), append(append([]string{"server", "bundle"}, args...), "--admin-socket", s.AdminSocket)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) && strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("signet server bundle %s: stderr is not one line: %q", strings.Join(args, " "), stderr.String())
		}
		return stdout.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// TestFederationCLI runs two real servers that federate over https_spiffe,
// bootstrapped the way operators do: `bundle show --format spiffe` on one
// side, `bundle set` (from a file, and from stdin) on the other.
func TestFederationCLI(t *testing.T) {
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startFedServer(t, "a.org", addrA, "b.org", addrB)
	b := startFedServer(t, "b.org", addrB, "a.org", addrA)
	a.proc.waitLine(t, "signet server bundle set --trust-domain b.org", 30*time.Second)

	docB, err := b.cli(t, "", "show", "--format", "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "b.org.json")
	if err := os.WriteFile(file, []byte(docB), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := a.cli(t, "", "set", "--trust-domain", "b.org", "--format", "spiffe", "--path", file)
	if err != nil || !strings.Contains(out, "Bundle of b.org set") {
		t.Fatalf("bundle set from a file: %v\n%s", err, out)
	}
	pemA, err := a.cli(t, "", "show")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := b.cli(t, pemA, "set", "--trust-domain", "spiffe://a.org", "--path", "-"); err != nil {
		t.Fatalf("bundle set from stdin: %v\n%s", err, out)
	}
	// Each side now authenticates the other's endpoint and fetches from it
	// at once: A finds what it was given; B, given A's roots alone, gets
	// A's JWT key too.
	a.proc.waitLine(t, `msg="federation: bundle unchanged" trust_domain=b.org`, 30*time.Second)
	b.proc.waitLine(t, `msg="federation: bundle updated" trust_domain=a.org x509_roots=1 jwt_keys=1`, 30*time.Second)
	list, err := b.cli(t, "", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Found 1 federated bundles", "Trust domain: a.org", "X.509 roots: 1", "JWT keys: 1", "expires at"} {
		if !strings.Contains(list, want) {
			t.Fatalf("bundle list on B lacks %q:\n%s", want, list)
		}
	}

	pemB, err := b.cli(t, "", "show")
	if err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"own trust domain", pemB, []string{"set", "--trust-domain", "b.org", "--path", "-"}, "b.org is this server's own trust domain"},
		{"malformed PEM", "", []string{"set", "--trust-domain", "c.org", "--path", garbage}, "--path " + garbage + ": parse PEM bundle"},
		{"malformed document", "{", []string{"set", "--trust-domain", "c.org", "--format", "spiffe", "--path", "-"}, "parse SPIFFE bundle document"},
		{"empty document", `{"keys": []}`, []string{"set", "--trust-domain", "c.org", "--format", "spiffe", "--path", "-"}, "holds no X.509 root or JWT key"},
		{"no file", "", []string{"set", "--trust-domain", "c.org", "--path", "/nonexistent/b.pem"}, "no such file"},
		{"no path", "", []string{"set", "--trust-domain", "c.org"}, "--path is required"},
		{"bad trust domain", pemA, []string{"set", "--trust-domain", "C.org", "--path", "-"}, "--trust-domain"},
		{"delete own", "", []string{"delete", "--trust-domain", "b.org"}, "own trust domain"},
		{"delete unknown", "", []string{"delete", "--trust-domain", "nowhere.org"}, "no bundle of nowhere.org is held"},
		{"delete a federates_with one", "", []string{"delete", "--trust-domain", "a.org", "--mode", "delete"}, "the server fetches it from https://"},
	}
	for _, tt := range refused {
		if out, err := b.cli(t, tt.stdin, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v (stdout %q), want an error containing %q", tt.name, err, out, tt.want)
		}
	}
	if list2, _ := b.cli(t, "", "list"); list2 != list {
		t.Fatalf("the refusals changed the list:\n%s", list2)
	}

	// A bundle set by hand, for a trust domain not in the config, and an
	// entry that federates with it: the default (restrict) delete is refused
	// and names the way out; dissociate drops c.org from the entry.
	if out, err := b.cli(t, rootPEM(t, "c.org"), "set", "--trust-domain", "c.org", "--path", "-"); err != nil {
		t.Fatalf("bundle set c.org: %v\n%s", err, out)
	}
	if list, err = b.cli(t, "", "list"); err != nil || !strings.Contains(list, "Found 2 federated bundles") {
		t.Fatalf("list with c.org: %v\n%s", err, list)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	created, err := runSignet(t, ctx, "server", "entry", "create", "--admin-socket", b.AdminSocket, "--parent-id", "spiffe://b.org/agent/n1",
		"--spiffe-id", "spiffe://b.org/w", "--selector", "unix:uid:1", "--federates-with", "c.org")
	if err != nil {
		t.Fatal(err)
	}
	_, entryID, _ := strings.Cut(created, "Entry ID: ")
	entryID, _, _ = strings.Cut(entryID, "\n")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"delete", "--trust-domain", "c.org"}, "1 entries federate with it; choose --mode dissociate"},
		{[]string{"delete", "--trust-domain", "c.org", "--mode", "all"}, `--mode "all": want restrict, dissociate or delete`},
	} {
		if out, err := b.cli(t, "", tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v (stdout %q), want an error containing %q", tt.args, err, out, tt.want)
		}
	}
	if list2, _ := b.cli(t, "", "list"); list2 != list {
		t.Fatalf("a refused delete changed the list:\n%s", list2)
	}
	out, err = b.cli(t, "", "delete", "--trust-domain", "c.org", "--mode", "dissociate")
	if err != nil || !strings.Contains(out, "Deleted the bundle of c.org") || !strings.Contains(out, "Dissociated 1 entries") {
		t.Fatalf("delete --mode dissociate: %v %s", err, out)
	}
	if list, _ := b.cli(t, "", "list"); !strings.Contains(list, "Found 1 federated bundles") || strings.Contains(list, "c.org") {
		t.Fatalf("after delete:\n%s", list)
	}
	shown, err := runSignet(t, ctx, "server", "entry", "show", "--admin-socket", b.AdminSocket, "--id", strings.TrimSpace(entryID))
	if err != nil || !strings.Contains(shown, "spiffe://b.org/w") || strings.Contains(shown, "c.org") {
		t.Fatalf("the entry after dissociation (%v):\n%s", err, shown)
	}
}

// rootPEM is a self-signed CA certificate of trust domain td, as another
// deployment's `bundle show` would print it.
func rootPEM(t *testing.T, td string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: td}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
