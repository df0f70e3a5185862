// Package sshpoptest makes real SSH CAs and host certificates for sshpop
// tests with golang.org/x/crypto/ssh, and writes them as OpenSSH does.
package sshpoptest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// CA is an SSH certificate authority.
type CA struct {
	Signer ssh.Signer
}

// NewCA makes an Ed25519 CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Signer: Signer(t, key)}
}

// AuthorizedKey is the CA's public key in authorized_keys format (one
// line, with a newline), as cert_authorities and their file hold it.
func (ca *CA) AuthorizedKey() string {
	return string(ssh.MarshalAuthorizedKey(ca.Signer.PublicKey()))
}

// Host describes a host certificate; the zero value is a valid one for a
// new ECDSA P-256 key, for principal host-1.example.org, valid for an
// hour.
type Host struct {
	Key         crypto.Signer // nil: a new P-256 key
	Principals  []string      // nil: host-1.example.org; empty: none
	CertType    uint32        // zero: ssh.HostCert
	ValidAfter  time.Time     // zero: an hour ago
	ValidBefore time.Time     // zero: an hour from now
	Forever     bool          // valid for ever (ValidBefore ignored)
	KeyID       string
	Serial      uint64
	// CriticalOptions are put in the certificate (host certificates have
	// none in practice).
	CriticalOptions map[string]string
}

// Issue signs a host certificate as h describes; it returns it and the
// host key.
func (ca *CA) Issue(t testing.TB, h Host) (*ssh.Certificate, ssh.Signer) {
	t.Helper()
	if h.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h.Key = k
	}
	if h.Principals == nil {
		h.Principals = []string{"host-1.example.org"}
	}
	if h.CertType == 0 {
		h.CertType = ssh.HostCert
	}
	now := time.Now()
	if h.ValidAfter.IsZero() {
		h.ValidAfter = now.Add(-time.Hour)
	}
	if h.ValidBefore.IsZero() {
		h.ValidBefore = now.Add(time.Hour)
	}
	hostKey := Signer(t, h.Key)
	cert := &ssh.Certificate{
		Key: hostKey.PublicKey(), CertType: h.CertType, KeyId: h.KeyID, Serial: h.Serial,
		ValidPrincipals: h.Principals,
		ValidAfter:      uint64(h.ValidAfter.Unix()), ValidBefore: uint64(h.ValidBefore.Unix()),
		Permissions: ssh.Permissions{CriticalOptions: h.CriticalOptions},
	}
	if h.Forever {
		cert.ValidBefore = ssh.CertTimeInfinity
	}
	if err := cert.SignCert(rand.Reader, ca.Signer); err != nil {
		t.Fatal(err)
	}
	return cert, hostKey
}

// HostFiles issues a host certificate as h describes and writes it and its
// key under dir as sshd keeps them (ssh_host_key, 0600, and
// ssh_host_key-cert.pub); it returns the certificate and the paths.
func (ca *CA) HostFiles(t testing.TB, dir string, h Host) (cert *ssh.Certificate, keyPath, certPath string) {
	t.Helper()
	if h.Key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		h.Key = k
	}
	cert, _ = ca.Issue(t, h)
	keyPath = filepath.Join(dir, "ssh_host_key")
	certPath = keyPath + "-cert.pub"
	WriteKey(t, keyPath, h.Key)
	if err := os.WriteFile(certPath, ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return cert, keyPath, certPath
}

// WriteKey writes key to path in the OpenSSH private key format (0600).
func WriteKey(t testing.TB, path string, key crypto.Signer) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Signer wraps key as an ssh.Signer.
func Signer(t testing.TB, key crypto.Signer) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Keygen runs the real ssh-keygen in dir, as an operator would; the test
// is skipped when it is not installed (test/setup.sh installs
// openssh-client).
func Keygen(t testing.TB, dir string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen is not installed (apt-get install openssh-client)")
	}
	cmd := exec.Command("ssh-keygen", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// KeygenCA makes an Ed25519 CA key named name in dir with ssh-keygen; it
// returns the path of its public key (name.pub).
func KeygenCA(t testing.TB, dir, name string) string {
	t.Helper()
	Keygen(t, dir, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", name)
	return filepath.Join(dir, name+".pub")
}

// KeygenHost makes a host key of keyType (rsa, ecdsa, ed25519) named
// name in dir and has the CA ca (a key file in dir) sign a host
// certificate for principals, valid for validity (ssh-keygen -V), as
// `ssh-keygen -s ca -h` does; it returns the key and certificate paths.
func KeygenHost(t testing.TB, dir, ca, name, keyType, principals, validity string) (keyPath, certPath string) {
	t.Helper()
	Keygen(t, dir, "-q", "-t", keyType, "-N", "", "-C", "root@"+name, "-f", name)
	Keygen(t, dir, "-q", "-s", ca, "-I", name+"-host-key", "-h", "-n", principals, "-V", validity, name+".pub")
	return filepath.Join(dir, name), filepath.Join(dir, name+"-cert.pub")
}
