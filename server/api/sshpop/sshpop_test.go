package sshpop

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"

	"github.com/signetid/signet/server/api/sshpop/sshpoptest"
)

// The fingerprint is x/crypto's SHA-256 fingerprint of the certificate in
// SPIRE's URL-safe form, which fits a SPIFFE ID path segment.
func TestFingerprint(t *testing.T) {
	cert, _ := sshpoptest.NewCA(t).Issue(t, sshpoptest.Host{})
	std := strings.TrimPrefix(ssh.FingerprintSHA256(cert), "SHA256:")
	raw, err := base64.RawStdEncoding.DecodeString(std)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Fingerprint(cert), base64.RawURLEncoding.EncodeToString(raw); got != want || len(got) != 43 {
		t.Fatalf("Fingerprint = %q, want %q", got, want)
	}
}

// The wire form of a signature reads back; a message for one (trust
// domain, key) pair never reads as another's.
func TestSignatureAndMessage(t *testing.T) {
	sig := &ssh.Signature{Format: ssh.KeyAlgoED25519, Blob: []byte("blob")}
	got, err := ParseSignature(MarshalSignature(sig))
	if err != nil || got.Format != sig.Format || string(got.Blob) != "blob" {
		t.Fatalf("ParseSignature: %+v, %v", got, err)
	}
	if _, err := ParseSignature(ssh.Marshal(&ssh.Signature{Format: "x"})); err == nil {
		t.Fatal("a signature with no blob parsed")
	}
	a := Message(spiffeid.RequireTrustDomainFromString("a.org"), []byte("x"))
	b := Message(spiffeid.RequireTrustDomainFromString("a.or"), []byte("gx"))
	if string(a) == string(b) {
		t.Fatal("two different inputs give the same message")
	}
}
