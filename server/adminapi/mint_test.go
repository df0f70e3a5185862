package adminapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit/audittest"
)

// TestMintAudited: a mint is audited with the ID, audience and expiry,
// and neither the audit record nor the log holds the token.
func TestMintAudited(t *testing.T) {
	env := startAdmin(t, true, nil)
	ctx := context.Background()
	resp, err := env.admin.MintJWT(ctx, &api.MintJWTRequest{SpiffeId: "spiffe://example.org/batch", Audience: []string{"vault"}})
	if err != nil {
		t.Fatal(err)
	}
	audittest.One(t, env.log.String(), map[string]string{"method": api.AdminService_MintJWT_FullMethodName, "spiffe_id": "spiffe://example.org/batch"})
	if strings.Contains(env.log.String(), resp.Token) || strings.Contains(env.log.String(), strings.Split(resp.Token, ".")[2]) {
		t.Fatal("the log holds the minted token")
	}
}

// TestMintRefusesDownstreamID: an X509-SVID for the ID of a downstream
// entry would let whoever holds the minted files have the nested servers'
// API sign an intermediate CA for the whole trust domain (it authorizes by
// ID alone); a downstream server gets its SVID from its agent. A JWT-SVID,
// which no downstream check accepts, and other IDs still mint.
func TestMintRefusesDownstreamID(t *testing.T) {
	env := startAdmin(t, false, nil)
	ctx := context.Background()
	in := entry("spiffe://example.org/server/east", "spiffe://example.org/agent/a", "unix:uid:1000")
	in.Downstream = true
	created, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: in})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = env.admin.MintX509SVID(ctx, &api.MintX509SVIDRequest{SpiffeId: "spiffe://example.org/server/east", Csr: csr})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), created.Id) || !strings.Contains(err.Error(), "downstream") {
		t.Fatalf("mint for a downstream entry's ID: %v; want InvalidArgument naming the entry", err)
	}
	if _, err := env.admin.MintJWT(ctx, &api.MintJWTRequest{SpiffeId: "spiffe://example.org/server/east", Audience: []string{"a"}}); err != nil {
		t.Fatalf("JWT mint for a downstream entry's ID: %v", err)
	}
	if _, err := env.admin.MintX509SVID(ctx, &api.MintX509SVIDRequest{SpiffeId: "spiffe://example.org/server/west", Csr: csr}); err != nil {
		t.Fatalf("mint for another ID: %v", err)
	}
}
