package agentapi

import (
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

// x509BundleOf builds the X.509 bundle of b for verification.
func x509BundleOf(td spiffeid.TrustDomain, b catalog.Bundle) (*x509bundle.Bundle, error) {
	bundle := x509bundle.New(td)
	for _, a := range b.Authorities {
		if a.Kind != store.X509Authority {
			continue
		}
		cert, err := x509.ParseCertificate(a.Data)
		if err != nil {
			return nil, fmt.Errorf("parse %s root %s: %w", td.Name(), a.KeyID, err)
		}
		bundle.AddX509Authority(cert)
	}
	return bundle, nil
}

// BundleToProto converts a catalog bundle for the API.
func BundleToProto(b catalog.Bundle, refreshHintSeconds int32) *api.Bundle {
	out := &api.Bundle{TrustDomain: b.TrustDomain, Sequence: b.Sequence, RefreshHintSeconds: refreshHintSeconds}
	for _, a := range b.Authorities {
		switch a.Kind {
		case store.X509Authority:
			out.X509Authorities = append(out.X509Authorities, a.Data)
			if a.Tainted {
				out.TaintedX509Authorities = append(out.TaintedX509Authorities, a.Data)
			}
		case store.JWTAuthority:
			k := &api.JWTKey{KeyId: a.KeyID, PublicKey: a.Data, Tainted: a.Tainted}
			if !a.ExpiresAt.IsZero() {
				k.ExpiresAt = a.ExpiresAt.Unix()
			}
			out.JwtAuthorities = append(out.JwtAuthorities, k)
		}
	}
	return out
}
