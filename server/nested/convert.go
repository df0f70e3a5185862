package nested

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nested/types"
	"github.com/signetid/signet/server/store"
)

// maxBundleAuthorities bounds what a downstream takes from its upstream's
// bundle (every root and JWT key of the trust domain, the published cap
// included, fits many times over).
const maxBundleAuthorities = 4096

// BundleToProto converts the catalog's bundle to SPIRE's message.
func BundleToProto(b catalog.Bundle, refreshHint time.Duration) *types.Bundle {
	out := &types.Bundle{TrustDomain: b.TrustDomain, RefreshHint: int64(refreshHint / time.Second), SequenceNumber: uint64(max(b.Sequence, 0))}
	for _, a := range b.Authorities {
		switch a.Kind {
		case store.X509Authority:
			out.X509Authorities = append(out.X509Authorities, &types.X509Certificate{Asn1: a.Data, Tainted: a.Tainted})
		case store.JWTAuthority:
			k := &types.JWTKey{KeyId: a.KeyID, PublicKey: a.Data, Tainted: a.Tainted}
			if !a.ExpiresAt.IsZero() {
				k.ExpiresAt = a.ExpiresAt.Unix()
			}
			out.JwtAuthorities = append(out.JwtAuthorities, k)
		}
	}
	return out
}

// bundleFromProto checks and converts an upstream's bundle for td: at
// least one root, each a CA certificate, and JWT keys with a kid.
func bundleFromProto(td spiffeid.TrustDomain, b *types.Bundle) (ca.UpstreamBundle, error) {
	if b.GetTrustDomain() != "" && b.GetTrustDomain() != td.Name() {
		return ca.UpstreamBundle{}, fmt.Errorf("upstream bundle is for trust domain %q, not %q", b.GetTrustDomain(), td.Name())
	}
	if len(b.GetX509Authorities()) == 0 {
		return ca.UpstreamBundle{}, errors.New("upstream bundle has no X.509 authorities")
	}
	if n := len(b.GetX509Authorities()) + len(b.GetJwtAuthorities()); n > maxBundleAuthorities {
		return ca.UpstreamBundle{}, fmt.Errorf("upstream bundle holds %d authorities; at most %d are taken", n, maxBundleAuthorities)
	}
	var out ca.UpstreamBundle
	for i, a := range b.GetX509Authorities() {
		cert, err := x509.ParseCertificate(a.GetAsn1())
		if err != nil {
			return ca.UpstreamBundle{}, fmt.Errorf("upstream bundle: X.509 authority %d: %w", i, err)
		}
		if !cert.IsCA {
			return ca.UpstreamBundle{}, fmt.Errorf("upstream bundle: X.509 authority %d (%s) is not a CA", i, cert.Subject)
		}
		out.X509 = append(out.X509, ca.UpstreamX509{Cert: cert, Tainted: a.GetTainted()})
	}
	jwts, err := jwtKeysFromProto(b.GetJwtAuthorities())
	if err != nil {
		return ca.UpstreamBundle{}, err
	}
	out.JWT = jwts
	return out, nil
}

func jwtKeysFromProto(keys []*types.JWTKey) ([]ca.Authority, error) {
	var out []ca.Authority
	for _, k := range keys {
		if k.GetKeyId() == "" {
			return nil, errors.New("upstream bundle: a JWT authority has no key_id")
		}
		if _, err := x509.ParsePKIXPublicKey(k.GetPublicKey()); err != nil {
			return nil, fmt.Errorf("upstream bundle: JWT authority %q: %w", k.GetKeyId(), err)
		}
		a := ca.Authority{Kind: ca.KindJWT, KeyID: k.GetKeyId(), Data: k.GetPublicKey(), Tainted: k.GetTainted()}
		if k.GetExpiresAt() != 0 {
			a.ExpiresAt = time.Unix(k.GetExpiresAt(), 0)
		}
		out = append(out, a)
	}
	return out, nil
}
