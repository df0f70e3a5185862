package test

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestOIDCRelyingPartyRS256 is a workload federating to a cloud that takes
// only RS256 (Microsoft Entra ID workload identity federation): the server
// runs with jwt_key_type rsa-2048 and its OIDC discovery provider, and the
// test, as that cloud, finds the key through the discovery document and
// verifies the workload's JWT-SVID with RS256 alone.
func TestOIDCRelyingPartyRS256(t *testing.T) {
	oidcAddr := freeAddr(t)
	issuer := "http://" + oidcAddr
	cfg := filepath.Join(t.TempDir(), "server.hcl")
	conf := fmt.Sprintf("jwt_issuer = %q\njwt_key_type = \"rsa-2048\"\noidc_discovery {\n  listen = %q\n}\n", issuer, oidcAddr)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, "--config", cfg)
	want := callerID(t)
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", want.String(), "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	waitForID(t, n, want)

	const audience = "api://AzureADTokenExchange"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := workloadapi.WithAddr("unix://" + n.socket)
	svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience}, addr)
	if err != nil {
		t.Fatal(err)
	}
	token := svid.Marshal()

	claims := verifyAsRelyingParty(t, issuer, token, audience, jose.RS256)
	if claims.Subject != want.String() {
		t.Fatalf("sub %s, want %s", claims.Subject, want)
	}
	set := relyingPartyKeys(t, issuer)
	tok, _ := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	k := set.Key(tok.Headers[0].KeyID)[0].Key
	if pub, ok := k.(*rsa.PublicKey); !ok || pub.N.BitLen() != 2048 {
		t.Fatalf("signing key %T, want 2048-bit RSA", k)
	}

	// The operator sees the key type.
	out, err := n.server.cli(t, "server", "localauthority", "jwt", "show")
	if err != nil || !strings.Contains(out, "Key type: rsa-2048 (RS256)") {
		t.Fatalf("localauthority jwt show: %v\n%s", err, out)
	}

	// The agent's own ValidateJWTSVID accepts it too.
	if _, err := workloadapi.ValidateJWTSVID(ctx, token, audience, addr); err != nil {
		t.Fatalf("Workload API ValidateJWTSVID: %v", err)
	}
}

// relyingPartyKeys fetches the issuer's keys as an OIDC relying party does:
// the discovery document, then its jwks_uri.
func relyingPartyKeys(t *testing.T, issuer string) jose.JSONWebKeySet {
	t.Helper()
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	getJSON(t, issuer+"/.well-known/openid-configuration", &disc)
	if disc.Issuer != issuer || !slices.Contains(disc.Algs, "RS256") {
		t.Fatalf("discovery document %+v, want issuer %s and RS256 supported", disc, issuer)
	}
	var set jose.JSONWebKeySet
	getJSON(t, disc.JWKSURI, &set)
	return set
}

// verifyAsRelyingParty checks token as a cloud that accepts only alg would:
// the key named by its kid, in the issuer's JWKS with that alg, verifies
// it; iss, aud and the validity window hold.
func verifyAsRelyingParty(t *testing.T, issuer, token, audience string, alg jose.SignatureAlgorithm) jwt.Claims {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatalf("the JWT-SVID is not %s: %v", alg, err)
	}
	kid := tok.Headers[0].KeyID
	set := relyingPartyKeys(t, issuer)
	keys := set.Key(kid)
	if len(keys) != 1 || keys[0].Algorithm != string(alg) {
		t.Fatalf("kid %s: keys %+v in the JWKS, want one with alg %s", kid, keys, alg)
	}
	var claims jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("signature does not verify with the published key: %v", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: time.Now()}, 0); err != nil {
		t.Fatalf("claims %+v: %v", claims, err)
	}
	return claims
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
