package federation

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/store"
)

// Authorities checks a foreign trust domain's bundle and converts it for
// store.SetBundle. It refuses a bundle with no authorities, and one whose
// roots name another trust domain (a CA certificate's spiffe:// URI SAN),
// so that a misdirected endpoint or file cannot plant its roots under the
// wrong name.
func Authorities(b *spiffebundle.Bundle) ([]store.Authority, error) {
	td := b.TrustDomain()
	var out []store.Authority
	for _, c := range b.X509Authorities() {
		for _, u := range c.URIs {
			if u.Scheme == "spiffe" && u.Host != td.Name() {
				return nil, fmt.Errorf("bundle of %s: root %q names trust domain %s: refused", td, c.Subject, u.Host)
			}
		}
		sum := sha256.Sum256(c.Raw)
		out = append(out, store.Authority{
			TrustDomain: td.Name(),
			Kind:        store.X509Authority,
			KeyID:       hex.EncodeToString(sum[:]),
			Data:        c.Raw,
			ExpiresAt:   c.NotAfter,
		})
	}
	for kid, pub := range b.JWTAuthorities() {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return nil, fmt.Errorf("bundle of %s: JWT authority %q: %w", td, kid, err)
		}
		// A bundle document carries no expiry for JWT keys: they stay
		// until the foreign side drops them.
		out = append(out, store.Authority{TrustDomain: td.Name(), Kind: store.JWTAuthority, KeyID: kid, Data: der})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bundle of %s has no X.509 or JWT authorities: refused", td)
	}
	return out, nil
}

// storedBundle builds trust domain td's bundle from the store's authorities.
func storedBundle(td spiffeid.TrustDomain, auths []store.Authority, sequence int64, refreshHint time.Duration) (*spiffebundle.Bundle, error) {
	cas := make([]ca.Authority, len(auths))
	for i, a := range auths {
		cas[i] = ca.Authority{Kind: ca.AuthorityKind(a.Kind), KeyID: a.KeyID, Data: a.Data, ExpiresAt: a.ExpiresAt}
	}
	return ca.NewBundle(td, cas, uint64(max(sequence, 0)), refreshHint)
}

// heldX509Bundle is the X.509 bundle of td the store holds now (empty if
// none), what authenticates an https_spiffe endpoint of that trust domain.
func heldX509Bundle(ctx context.Context, st store.Store, td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	auths, seq, err := st.ListAuthorities(ctx, td.Name())
	if err != nil {
		return nil, err
	}
	b, err := storedBundle(td, auths, seq, 0)
	if err != nil {
		return nil, fmt.Errorf("stored bundle of %s: %w", td, err)
	}
	return b.X509Bundle(), nil
}
