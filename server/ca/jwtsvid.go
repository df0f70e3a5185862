package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// jwtClaims is the JWT-SVID payload. aud is always a list and exp/iat are
// integers, whatever the number of audiences. iss is there only with a
// configured issuer (OIDC relying parties require it; SPIFFE does not).
type jwtClaims struct {
	Iss string   `json:"iss,omitempty"`
	Sub string   `json:"sub"`
	Aud []string `json:"aud"`
	Exp int64    `json:"exp"`
	Iat int64    `json:"iat"`
}

// MintJWTSVID signs a JWT-SVID for id and audience with the active JWT key
// (its key type's algorithm, kid and typ JWT in the header). ttl 0 means the
// default JWT TTL; the expiry never passes the key's own. It returns the
// compact token and its expiry.
func (m *Manager) MintJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error) {
	if err := ctx.Err(); err != nil {
		return "", time.Time{}, err
	}
	if id.IsZero() || !id.MemberOf(m.td) {
		return "", time.Time{}, invalid("ca: SPIFFE ID %q is not in trust domain %q", id, m.td)
	}
	if len(audience) == 0 {
		return "", time.Time{}, invalid("ca: a JWT-SVID needs at least one audience")
	}
	for _, a := range audience {
		if a == "" {
			return "", time.Time{}, invalid("ca: empty JWT-SVID audience")
		}
	}
	if ttl < 0 {
		return "", time.Time{}, invalid("ca: negative TTL %v", ttl)
	}
	if ttl == 0 {
		ttl = m.jwtTTL
	}
	k := m.activeJWT.Load()
	now := m.now()
	exp := now.Add(ttl)
	if exp.After(k.notAfter) {
		exp = k.notAfter
	}
	exp = exp.Truncate(time.Second)
	if !exp.After(now) {
		return "", time.Time{}, errors.New("ca: the active JWT key has expired")
	}
	payload, err := json.Marshal(jwtClaims{Iss: m.jwtIss, Sub: id.String(), Aud: audience, Exp: exp.Unix(), Iat: now.Unix()})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: encode JWT claims: %w", err)
	}
	jws, err := k.signer.Sign(payload)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: sign JWT: %w", err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("ca: serialize JWT: %w", err)
	}
	return token, exp, nil
}
