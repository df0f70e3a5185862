package x509pop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestSignVerify(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	must := func(k crypto.Signer, err error) crypto.Signer {
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     crypto.Signer
		wantErr string
	}{
		{"P-256", must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)), ""},
		{"P-521", must(ecdsa.GenerateKey(elliptic.P521(), rand.Reader)), ""},
		{"RSA 2048", must(rsa.GenerateKey(rand.Reader, 2048)), ""},
		{"Ed25519", ed, ""},
		{"P-224", must(ecdsa.GenerateKey(elliptic.P224(), rand.Reader)), "curve P-224 is not supported"},
		{"RSA 1024", must(rsa.GenerateKey(rand.Reader, 1024)), "too short"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := Message(td, []byte("agent key"))
			sig, err := Sign(tc.key, msg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Sign: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(tc.key.Public(), msg, sig); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			for _, other := range [][]byte{
				Message(td, []byte("other key")),
				Message(spiffeid.RequireTrustDomainFromString("example.org.evil"), []byte("agent key")),
			} {
				if err := Verify(tc.key.Public(), other, sig); err == nil {
					t.Fatalf("signature verifies over %q", other)
				}
			}
		})
	}
}

// The separators keep one (trust domain, key) pair from reading as another.
func TestMessageUnambiguous(t *testing.T) {
	a := Message(spiffeid.RequireTrustDomainFromString("a.org"), []byte("x"))
	b := Message(spiffeid.RequireTrustDomainFromString("a.or"), []byte("gx"))
	if string(a) == string(b) {
		t.Fatal("two different inputs give the same message")
	}
}
