package adminapi

import (
	"context"
	"strings"
	"testing"

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
