package adminapi

import (
	"crypto/x509"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/api"
)

// maxBundleFile bounds what `bundle set` reads: real bundles are a few KiB.
const maxBundleFile = 4 << 20

// ParseBundleFile reads the bundle of trust domain td from r for `signet
// server bundle set`: format "spiffe" is a SPIFFE bundle document (what
// `bundle show --format spiffe` prints, on Signet or SPIRE), "pem" is X.509
// roots. A file with no authority is refused.
func ParseBundleFile(td spiffeid.TrustDomain, r io.Reader, format string) (*api.Bundle, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBundleFile+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if len(data) > maxBundleFile {
		return nil, fmt.Errorf("bundle is larger than %d bytes", maxBundleFile)
	}
	var b *spiffebundle.Bundle
	switch format {
	case "spiffe":
		if b, err = spiffebundle.Parse(td, data); err != nil {
			return nil, fmt.Errorf("parse SPIFFE bundle document: %w", err)
		}
	case "pem":
		xb, err := x509bundle.Parse(td, data)
		if err != nil {
			return nil, fmt.Errorf("parse PEM bundle: %w", err)
		}
		b = spiffebundle.FromX509Bundle(xb)
	default:
		return nil, fmt.Errorf("bundle format %q: want spiffe or pem", format)
	}
	out := &api.Bundle{TrustDomain: td.Name()}
	for _, c := range b.X509Authorities() {
		out.X509Authorities = append(out.X509Authorities, c.Raw)
	}
	jwt := b.JWTAuthorities()
	for _, kid := range slices.Sorted(maps.Keys(jwt)) {
		der, err := x509.MarshalPKIXPublicKey(jwt[kid])
		if err != nil {
			return nil, fmt.Errorf("JWT authority %q: %w", kid, err)
		}
		out.JwtAuthorities = append(out.JwtAuthorities, &api.JWTKey{KeyId: kid, PublicKey: der})
	}
	if len(out.X509Authorities) == 0 && len(out.JwtAuthorities) == 0 {
		return nil, fmt.Errorf("the %s bundle holds no X.509 root or JWT key", format)
	}
	return out, nil
}
