package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// NewBundle builds td's SPIFFE bundle from auths (typically the union every
// server published to the store), with the given sequence number and
// refresh hint (0 leaves the hint out). Use its X509Bundle and JWTBundle
// methods for the go-spiffe sources.
func NewBundle(td spiffeid.TrustDomain, auths []Authority, sequence uint64, refreshHint time.Duration) (*spiffebundle.Bundle, error) {
	b := spiffebundle.New(td)
	for _, a := range auths {
		switch a.Kind {
		case KindX509:
			cert, err := x509.ParseCertificate(a.Data)
			if err != nil {
				return nil, fmt.Errorf("bundle: parse X.509 authority %s: %w", a.KeyID, err)
			}
			b.AddX509Authority(cert)
		case KindJWT:
			if a.KeyID == "" {
				return nil, fmt.Errorf("bundle: JWT authority without a key ID")
			}
			pub, err := x509.ParsePKIXPublicKey(a.Data)
			if err != nil {
				return nil, fmt.Errorf("bundle: parse JWT authority %s: %w", a.KeyID, err)
			}
			if err := b.AddJWTAuthority(a.KeyID, pub); err != nil {
				return nil, fmt.Errorf("bundle: add JWT authority %s: %w", a.KeyID, err)
			}
		default:
			return nil, fmt.Errorf("bundle: authority %s has unknown kind %q", a.KeyID, a.Kind)
		}
	}
	b.SetSequenceNumber(sequence)
	if refreshHint > 0 {
		b.SetRefreshHint(refreshHint)
	}
	return b, nil
}

// MarshalBundlePEM returns the bundle's X.509 roots as concatenated PEM
// (`bundle show --format pem`, helper's bundle.pem).
func MarshalBundlePEM(b *spiffebundle.Bundle) []byte {
	var buf bytes.Buffer
	for _, c := range b.X509Authorities() {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // writes to a Buffer do not fail
	}
	return buf.Bytes()
}

// MarshalBundleJSON returns the SPIFFE bundle document: a JWKS with
// x509-svid and jwt-svid keys, spiffe_sequence and spiffe_refresh_hint
// (`bundle show --format spiffe`, federation endpoint).
func MarshalBundleJSON(b *spiffebundle.Bundle) ([]byte, error) {
	data, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("bundle: marshal %s: %w", b.TrustDomain(), err)
	}
	return data, nil
}
