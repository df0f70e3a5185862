package client

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/api"
)

// BundleFromProto converts a bundle the server sent. Taint marks are not
// part of a SPIFFE bundle; OwnBundleFromProto reads them too.
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

// Taint lists the authorities of the own trust domain that an operator
// tainted (forced rotation): they still verify, but everything issued
// under them is to be re-signed at once, before they are revoked.
type Taint struct {
	// X509Authorities are tainted roots (also in the bundle).
	X509Authorities []*x509.Certificate
	// JWTKeyIDs are the kids of tainted JWT keys.
	JWTKeyIDs []string
}

// OwnBundleFromProto converts the own trust domain's bundle and its taint
// marks; an error in either fails both, so the caller keeps what it had.
func OwnBundleFromProto(b *api.Bundle) (*spiffebundle.Bundle, Taint, error) {
	out, err := BundleFromProto(b)
	if err != nil {
		return nil, Taint{}, err
	}
	var t Taint
	for i, der := range b.TaintedX509Authorities {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, Taint{}, fmt.Errorf("bundle of %s: tainted X.509 authority %d: %w", out.TrustDomain(), i, err)
		}
		t.X509Authorities = append(t.X509Authorities, c)
	}
	for _, k := range b.JwtAuthorities {
		if k.Tainted && k.KeyId != "" {
			t.JWTKeyIDs = append(t.JWTKeyIDs, k.KeyId)
		}
	}
	return out, t, nil
}

// IssuerOf returns the tainted root that issued the top of chain, nil when
// none did. It matches the certificate's authority key ID against the
// roots' subject key IDs, or checks the signature when either lacks one;
// never the subject name, which a replacement root shares.
func (t Taint) IssuerOf(chain []*x509.Certificate) *x509.Certificate {
	if len(chain) == 0 {
		return nil
	}
	top := chain[len(chain)-1]
	for _, root := range t.X509Authorities {
		if len(top.AuthorityKeyId) > 0 && len(root.SubjectKeyId) > 0 {
			if bytes.Equal(top.AuthorityKeyId, root.SubjectKeyId) {
				return root
			}
			continue
		}
		if top.CheckSignatureFrom(root) == nil {
			return root
		}
	}
	return nil
}

// Equal reports whether t and o taint the same authorities, in order.
func (t Taint) Equal(o Taint) bool {
	return slices.EqualFunc(t.X509Authorities, o.X509Authorities, (*x509.Certificate).Equal) &&
		slices.Equal(t.JWTKeyIDs, o.JWTKeyIDs)
}
