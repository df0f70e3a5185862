package pemkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 := func(k crypto.Signer) *pem.Block {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	params := &pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}}
	for _, tc := range []struct {
		name    string
		blocks  []*pem.Block
		want    crypto.Signer
		wantErr string
	}{
		{"PKCS#8 ECDSA", []*pem.Block{pkcs8(ec)}, ec, ""},
		{"PKCS#8 RSA", []*pem.Block{pkcs8(rs)}, rs, ""},
		{"PKCS#8 Ed25519", []*pem.Block{pkcs8(ed)}, ed, ""},
		{"SEC 1 after openssl's EC PARAMETERS", []*pem.Block{params, {Type: "EC PRIVATE KEY", Bytes: sec1}}, ec, ""},
		{"PKCS#1", []*pem.Block{{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rs)}}, rs, ""},
		{"no key", []*pem.Block{{Type: "CERTIFICATE", Bytes: []byte{1}}}, nil, "holds no PEM private key"},
		{"corrupt key", []*pem.Block{{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}}, nil, "PRIVATE KEY"},
		{"encrypted", []*pem.Block{{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}}, nil, "encrypted keys are not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var data []byte
			for _, b := range tc.blocks {
				data = append(data, pem.EncodeToMemory(b)...)
			}
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := Read(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("Read: %v; want an error naming %s and containing %q", err, path, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !Matches(got, tc.want.Public()) {
				t.Error("Read returned another key")
			}
			if Matches(got, ec.Public()) != (tc.want == crypto.Signer(ec)) {
				t.Error("Matches confuses keys")
			}
		})
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Read of a missing file succeeded")
	}
}
