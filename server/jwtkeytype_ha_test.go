package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

// Servers on one store: with the same jwt_key_type, no warning; a server
// with another type warns when it publishes, naming the others' key and
// the two types.
func TestServersWithDifferentJWTKeyTypesWarn(t *testing.T) {
	url := pgtest.NewDatabase(t)
	a := startServer(t, func(c *server.Config) { c.Datastore = url })
	ctx := context.Background()
	keys, err := a.admin.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: "jwt"})
	if err != nil || len(keys.Authorities) != 1 {
		t.Fatalf("A's JWT keys: %v, %v", keys, err)
	}
	kidA := keys.Authorities[0].AuthorityId

	var same logtest.Buffer
	b := runServerLogging(t, testConfig(t, func(c *server.Config) { c.Datastore = url }), same.Logger())
	keys, err = b.admin.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: "jwt"})
	if err != nil || len(keys.Authorities) != 1 {
		t.Fatalf("B's JWT keys: %v, %v", keys, err)
	}
	kidB := keys.Authorities[0].AuthorityId
	// B has published (New does) beside A's key of its own type: no warning.
	if strings.Contains(same.String(), "keys of another type") {
		t.Fatalf("a server of the same type warned:\n%s", same.String())
	}
	var other logtest.Buffer
	runServerLogging(t, testConfig(t, func(c *server.Config) { c.Datastore = url; c.JWTKeyType = ca.JWTKeyRSA2048 }), other.Logger())
	other.WaitFor(t, "another server on this store signs JWT-SVIDs with keys of another type", 10*time.Second)
	out := other.String()
	if !strings.Contains(out, "kid="+kidA) && !strings.Contains(out, "kid="+kidB) || !strings.Contains(out, "key_type=ec-p256 jwt_key_type=rsa-2048") {
		t.Fatalf("warning does not name another server's key and the two types:\n%s", out)
	}
}
