package client

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/api"
)

// BundleFromProto converts a bundle the server sent.
func BundleFromProto(b *api.Bundle) (*spiffebundle.Bundle, error) {
	if b == nil {
		return nil, fmt.Errorf("bundle is missing")
	}
	td, err := ids.ParseTrustDomain(b.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	out := spiffebundle.New(td)
	for i, der := range b.X509Authorities {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("bundle of %s: X.509 authority %d: %w", td, i, err)
		}
		out.AddX509Authority(c)
	}
	for _, k := range b.JwtAuthorities {
		if k.KeyId == "" {
			continue // JWT bundles hold only keys with a kid
		}
		pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("bundle of %s: JWT authority %q: %w", td, k.KeyId, err)
		}
		if err := out.AddJWTAuthority(k.KeyId, pub); err != nil {
			return nil, fmt.Errorf("bundle of %s: JWT authority %q: %w", td, k.KeyId, err)
		}
	}
	out.SetSequenceNumber(uint64(max(b.Sequence, 0)))
	if b.RefreshHintSeconds > 0 {
		out.SetRefreshHint(time.Duration(b.RefreshHintSeconds) * time.Second)
	}
	return out, nil
}
