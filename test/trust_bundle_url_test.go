package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// webCA is a Web PKI certificate authority, as a company's or a public one
// would sign the bundle endpoint's certificate.
type webCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newWebCA(t *testing.T, name string) *webCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &webCA{cert: cert, key: key}
}

// writeCA writes the CA certificate (PEM) to path.
func (ca *webCA) writeCA(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// issue writes a serving certificate for 127.0.0.1 and its key.
func (ca *webCA) issue(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bundle.example.org"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAgentTrustBundleURL bootstraps a host the way a fleet would: no
// bundle file, no insecure bootstrap, only the URL of the server's own
// federation bundle endpoint (https_web, a SPIFFE bundle document), whose
// certificate the agent verifies with the system's roots: here
// SSL_CERT_FILE, set in the agent's environment alone.
func TestAgentTrustBundleURL(t *testing.T) {
	want := callerID(t)
	dir := t.TempDir()
	ca := newWebCA(t, "Example Web CA")
	caFile, certFile, keyFile := filepath.Join(dir, "web-ca.pem"), filepath.Join(dir, "endpoint.crt"), filepath.Join(dir, "endpoint.key")
	ca.writeCA(t, caFile)
	ca.issue(t, certFile, keyFile)
	otherCAFile := filepath.Join(dir, "other-ca.pem")
	newWebCA(t, "Unrelated Web CA").writeCA(t, otherCAFile)

	endpoint := freeAddr(t)
	srv := &serverEnv{Dir: dir, AdminSocket: filepath.Join(dir, "admin.sock")}
	conf := fmt.Sprintf(`trust_domain = "example.org"
data_dir = %q
listen = "127.0.0.1:0"
admin_socket = %q
federation {
  bundle_endpoint {
    address = %q
    profile "https_web" {
      serving_cert_file {
        cert_file_path = %q
        key_file_path  = %q
      }
    }
  }
}
`, filepath.Join(dir, "server"), srv.AdminSocket, endpoint, certFile, keyFile)
	serverConf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(serverConf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.proc = startSignet(t, nil, "server", "run", "--config", serverConf)
	srv.proc.waitLine(t, "server started", 60*time.Second)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
	tok, err := srv.cli(t, "server", "token", "generate", "--spiffe-id", nodeAgentID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", want.String(),
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid())); err != nil {
		t.Fatal(err)
	}

	// The agent's config file names a bundle file that does not exist and
	// asks for an insecure bootstrap: the --trust-bundle-url flag replaces
	// both, as flags replace the file's keys.
	agentConf := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(agentConf, []byte("agent {\n  trust_bundle_path = \"/nonexistent/bundle.pem\"\n  insecure_bootstrap = true\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bundleURL := "https://" + endpoint + "/"
	socket := filepath.Join(dir, "sockets", "agent.sock")
	args := []string{"agent", "run", "--config", agentConf, "--server", addr, "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "agent"), "--socket", socket,
		"--trust-bundle-url", bundleURL, "--trust-bundle-format", "spiffe", "--join-token", strings.TrimSpace(tok)}
	// SSL_CERT_DIR names an empty directory: the system's own roots are
	// left out, so only SSL_CERT_FILE can vouch for the endpoint.
	noDir := t.TempDir()

	t.Run("roots that do not vouch for the endpoint", func(t *testing.T) {
		p := startSignet(t, []string{"SSL_CERT_FILE=" + otherCAFile, "SSL_CERT_DIR=" + noDir}, args...)
		line := p.waitLine(t, `msg="trust bundle download failed; retrying"`, 30*time.Second)
		if !strings.Contains(line, "url="+bundleURL) || !strings.Contains(line, "certificate signed by unknown authority") {
			t.Fatalf("failure line lacks the URL or the reason: %s", line)
		}
		p.waitLine(t, "retry_in=", time.Second)
		p.Stop()
		if strings.Contains(p.Output(), "agent attested") {
			t.Fatalf("the agent attested without a verified bundle:\n%s", p.Output())
		}
	})

	t.Run("both bundle flags", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := runSignet(t, ctx, append(args, "--trust-bundle", caFile)...)
		if err == nil || !strings.Contains(err.Error(), "signet: agent: give trust_bundle_path or trust_bundle_url, not both") {
			t.Fatalf("both --trust-bundle and --trust-bundle-url: %v", err)
		}
	})

	t.Run("bundle and insecure bootstrap flags", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := runSignet(t, ctx, append(args, "--insecure-bootstrap")...)
		if err == nil || !strings.Contains(err.Error(), "insecure_bootstrap cannot be used with trust_bundle_url") {
			t.Fatalf("--trust-bundle-url and --insecure-bootstrap: %v", err)
		}
		noURL := slices.Clone(args)
		i := slices.Index(noURL, "--trust-bundle-url")
		noURL = slices.Delete(noURL, i, i+4) // and --trust-bundle-format spiffe
		_, err = runSignet(t, ctx, append(noURL, "--trust-bundle", caFile, "--insecure-bootstrap")...)
		if err == nil || !strings.Contains(err.Error(), "give trust_bundle_path or insecure_bootstrap, not both") {
			t.Fatalf("--trust-bundle and --insecure-bootstrap: %v", err)
		}
		// --insecure-bootstrap alone replaces the file's trust_bundle_path
		// (and insecure_bootstrap is what the file says too): the agent
		// bootstraps without a bundle. Its own token, so the next agent's
		// is unspent.
		tok2, err := srv.cli(t, "server", "token", "generate", "--spiffe-id", nodeAgentID+"-insecure")
		if err != nil {
			t.Fatal(err)
		}
		insecure := slices.Clone(noURL)
		insecure[len(insecure)-1] = strings.TrimSpace(tok2)
		i = slices.Index(insecure, "--data-dir")
		insecure[i+1] = filepath.Join(dir, "agent-insecure")
		i = slices.Index(insecure, "--socket")
		insecure[i+1] = filepath.Join(dir, "sockets-insecure", "agent.sock")
		p := startSignet(t, nil, append(insecure, "--insecure-bootstrap")...)
		p.waitLine(t, "INSECURE BOOTSTRAP", 30*time.Second)
		p.Stop()
	})

	agent := startSignet(t, []string{"SSL_CERT_FILE=" + caFile, "SSL_CERT_DIR=" + noDir}, args...)
	line := agent.waitLine(t, `msg="trust bundle downloaded"`, 30*time.Second)
	if !strings.Contains(line, "url="+bundleURL) || !strings.Contains(line, "format=spiffe roots=1 sha256=") {
		t.Fatalf("download line: %s", line)
	}
	agent.waitLine(t, "agent ready", 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != want {
		t.Fatalf("SVID %s, want %s", svid.ID, want)
	}
	// The root the agent downloaded is the server's.
	shown, err := runSignet(t, ctx, "server", "bundle", "show", "--admin-socket", srv.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(shown))
	if block == nil {
		t.Fatalf("bundle show printed no PEM:\n%s", shown)
	}
	sum := sha256.Sum256(block.Bytes)
	if got := fieldValue(line, "sha256"); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("downloaded root sha256=%s, the server's is %x", got, sum)
	}
}
