package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/api/sshpop/sshpoptest"
	"github.com/signetid/signet/server/nodeattest"
)

// The sshpop evidence of host keys and certificates made by the real
// ssh-keygen (RSA, ECDSA, Ed25519) is accepted by the server's attestor
// for the agent key it signs; each unusable file is refused naming it.
func TestSSHPoPEvidence(t *testing.T) {
	dir := t.TempDir()
	caPub := sshpoptest.KeygenCA(t, dir, "host_ca")
	server, err := nodeattest.NewSSHPoP(td, nodeattest.SSHPoPConfig{CertAuthoritiesPath: caPub, CanonicalDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	host := func(name, keyType string) (string, string) {
		return sshpoptest.KeygenHost(t, dir, "host_ca", name, keyType, name+".example.org,"+name, "-5m:+1h")
	}
	rsaKey, rsaCert := host("rsa-host", "rsa")
	ecKey, ecCert := host("ec-host", "ecdsa")
	edKey, edCert := host("ed-host", "ed25519")
	encKey := filepath.Join(dir, "enc-host")
	sshpoptest.Keygen(t, dir, "-q", "-t", "ed25519", "-N", "secret", "-f", "enc-host")
	sshpoptest.Keygen(t, dir, "-q", "-s", "host_ca", "-I", "enc", "-h", "-n", "enc.example.org", "enc-host.pub")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key, cert string
		wantErr         string
	}{
		{name: "RSA", key: rsaKey, cert: rsaCert},
		{name: "ECDSA", key: ecKey, cert: ecCert},
		{name: "Ed25519", key: edKey, cert: edCert},
		{name: "missing certificate", key: edKey, cert: filepath.Join(dir, "none-cert.pub"), wantErr: "read sshpop host certificate"},
		{name: "plain public key", key: edKey, cert: edKey + ".pub", wantErr: "holds a plain ssh-ed25519 public key, not a certificate"},
		{name: "garbage certificate", key: edKey, cert: garbage, wantErr: "sshpop host certificate " + garbage},
		{name: "another host's key", key: ecKey, cert: edCert, wantErr: "sshpop host key " + ecKey + " is not the key of the certificate in " + edCert},
		{name: "encrypted key", key: encKey, cert: encKey + "-cert.pub", wantErr: "is encrypted"},
		{name: "garbage key", key: garbage, cert: edCert, wantErr: "sshpop host key " + garbage + ":"},
		{name: "missing key", key: filepath.Join(dir, "none"), cert: edCert, wantErr: "read sshpop host key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agentKey := newAgentSPKI(t)
			ev, err := SSHPoP(td, tc.key, tc.cert).Evidence(context.Background(), agentKey)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != "sshpop" || ev.SingleUse {
				t.Fatalf("evidence %s, single use %v", ev.Type, ev.SingleUse)
			}
			res, err := server.Attest(context.Background(), ev.Payload, agentKey, time.Now())
			if err != nil {
				t.Fatalf("server refused the evidence: %v", err)
			}
			if !strings.HasPrefix(res.AgentID.String(), "spiffe://example.org/agent/sshpop/") {
				t.Fatalf("agent ID %s", res.AgentID)
			}
			// Bound to the agent key: for another one it is refused.
			if _, err := server.Attest(context.Background(), ev.Payload, newAgentSPKI(t), time.Now()); err == nil {
				t.Fatal("evidence accepted for another agent key")
			}
		})
	}
}

func newAgentSPKI(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return spki
}
