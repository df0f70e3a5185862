package ca_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func jwtPart(t testing.TB, token string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	d := json.NewDecoder(strings.NewReader(string(raw)))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func jwtHeader(t testing.TB, token string) map[string]any { return jwtPart(t, token, 0) }

func TestMintJWTSVID(t *testing.T) {
	m := newManager(t, ca.Config{})
	id := spiffeid.RequireFromPath(td, "/ns/payments/sa/checkout")
	bundle := bundleOf(t, m)
	kids := keyIDs(m, ca.KindJWT)

	tests := []struct {
		name     string
		audience []string
		ttl      time.Duration
		wantTTL  time.Duration
	}{
		{"one audience, default TTL", []string{"db"}, 0, ca.DefaultJWTTTL},
		{"two audiences, explicit TTL", []string{"db", "api"}, time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			token, exp, err := m.MintJWTSVID(context.Background(), id, tt.audience, tt.ttl)
			if err != nil {
				t.Fatalf("MintJWTSVID: %v", err)
			}
			svid, err := jwtsvid.ParseAndValidate(token, bundle, tt.audience[:1])
			if err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
			}
			if svid.ID != id {
				t.Errorf("sub = %s, want %s", svid.ID, id)
			}
			if !svid.Expiry.Equal(exp) {
				t.Errorf("returned expiry %v, token says %v", exp, svid.Expiry)
			}
			if d := exp.Sub(before); d < tt.wantTTL-time.Second || d > tt.wantTTL+time.Second {
				t.Errorf("lifetime %v, want %v", d, tt.wantTTL)
			}

			h := jwtHeader(t, token)
			if h["alg"] != "ES256" || h["typ"] != "JWT" || h["kid"] != kids[0] {
				t.Errorf("header = %v, want alg ES256, typ JWT, kid %s", h, kids[0])
			}
			// ES256 per RFC 7518: raw 64-byte R||S, not ASN.1.
			sig, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[2])
			if len(sig) != 64 {
				t.Errorf("signature is %d bytes, want 64 (R||S)", len(sig))
			}
			c := jwtPart(t, token, 1)
			aud, ok := c["aud"].([]any)
			if !ok || len(aud) != len(tt.audience) {
				t.Errorf("aud = %#v, want a list of %d", c["aud"], len(tt.audience))
			}
			for _, k := range []string{"exp", "iat"} {
				n, ok := c[k].(json.Number)
				if _, err := n.Int64(); !ok || err != nil {
					t.Errorf("%s = %#v, want an integer", k, c[k])
				}
			}
			if c["sub"] != id.String() {
				t.Errorf("sub = %v", c["sub"])
			}
		})
	}
}

func TestMintJWTSVIDRefuses(t *testing.T) {
	m := newManager(t, ca.Config{})
	id := spiffeid.RequireFromPath(td, "/w")
	tests := []struct {
		name     string
		id       spiffeid.ID
		audience []string
		ttl      time.Duration
		wantErr  string
	}{
		{"no audience", id, nil, 0, "at least one audience"},
		{"empty audience", id, []string{""}, 0, "empty"},
		{"foreign trust domain", spiffeid.RequireFromString("spiffe://other.org/w"), []string{"a"}, 0, "not in trust domain"},
		{"negative TTL", id, []string{"a"}, -time.Second, "negative TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := m.MintJWTSVID(context.Background(), tt.id, tt.audience, tt.ttl)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestMintJWTSVIDIssuer: a configured issuer is the iss claim (what OIDC
// relying parties match against the discovery document); without one the
// claims are exactly the SPIFFE ones, as before.
func TestMintJWTSVIDIssuer(t *testing.T) {
	id := spiffeid.RequireFromPath(td, "/w")
	tests := []struct {
		name     string
		issuer   string
		wantKeys []string
	}{
		{"no issuer", "", []string{"aud", "exp", "iat", "sub"}},
		{"issuer", "https://oidc.example.org", []string{"aud", "exp", "iat", "iss", "sub"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, ca.Config{JWTIssuer: tt.issuer})
			token, _, err := m.MintJWTSVID(context.Background(), id, []string{"sts.amazonaws.com"}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jwtsvid.ParseAndValidate(token, bundleOf(t, m), []string{"sts.amazonaws.com"}); err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
			}
			c := jwtPart(t, token, 1)
			keys := slices.Sorted(maps.Keys(c))
			if !slices.Equal(keys, tt.wantKeys) {
				t.Errorf("claims %v, want %v", keys, tt.wantKeys)
			}
			if tt.issuer != "" && c["iss"] != tt.issuer {
				t.Errorf("iss = %v, want %s", c["iss"], tt.issuer)
			}
		})
	}
}
