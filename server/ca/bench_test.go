package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// BenchmarkSignX509SVID is one CSR -> X509-SVID: parse and check the CSR
// (an ECDSA verify), encode and sign the leaf (an ECDSA sign), parse it.
// Compare with BenchmarkRawECDSASign for the ratio to the raw signing rate.
func BenchmarkSignX509SVID(b *testing.B) {
	m := newManager(b, ca.Config{})
	csr := makeCSR(b, p256(b))
	id := spiffeid.RequireFromPath(td, "/ns/payments/sa/checkout")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.SignX509SVID(ctx, csr, id, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignX509SVIDDER is the same without parsing the new certificate
// (what the agent API's batch RPC does).
func BenchmarkSignX509SVIDDER(b *testing.B) {
	m := newManager(b, ca.Config{})
	csr := makeCSR(b, p256(b))
	id := spiffeid.RequireFromPath(td, "/ns/payments/sa/checkout")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.SignX509SVIDDER(ctx, csr, id, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawECDSASign is the floor: ecdsa.Sign of a 32-byte digest with a
// P-256 key.
func BenchmarkRawECDSASign(b *testing.B) {
	key := p256(b)
	digest := sha256.Sum256([]byte("signet"))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ecdsa.Sign(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMintJWTSVID is one JWT-SVID per jwt_key_type: ES256 is the
// default; RS256 is what some OIDC relying parties require.
func BenchmarkMintJWTSVID(b *testing.B) {
	for _, typ := range ca.JWTKeyTypes {
		b.Run(string(typ), func(b *testing.B) {
			m := newManager(b, ca.Config{JWTKeyType: typ})
			id := spiffeid.RequireFromPath(td, "/w")
			aud := []string{"db"}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.MintJWTSVID(ctx, id, aud, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
