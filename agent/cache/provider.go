package cache

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/internal/selector"
)

// ErrNoIdentity means no entry the agent serves matches the caller: the
// Workload API answers PermissionDenied.
var ErrNoIdentity = errors.New("no identity issued")

// WorkloadState is the complete state one workload (one selector set) sees.
type WorkloadState struct {
	// SVIDs of every matching entry: the default (oldest entry) first, hints
	// unique (the first entry with a given hint wins). Empty means no identity.
	SVIDs []*x509svid.SVID
	// KeysDER holds, for each SVIDs[i], its private key as PKCS#8 DER,
	// encoded once by the cache.
	KeysDER [][]byte
	// Admin holds, for each SVIDs[i], whether its entry is an admin entry
	// (the Delegated Identity API withholds those, as SPIRE's does).
	Admin []bool
	// Bundle is the agent's own trust domain's X.509 bundle.
	Bundle *x509bundle.Bundle
	// FederatedBundles are the X.509 bundles of the trust domains the matching
	// entries federate with (own trust domain excluded).
	FederatedBundles []*x509bundle.Bundle
	// JWTBundles are the own and federated JWT bundles, same rule.
	JWTBundles []*jwtbundle.Bundle
}

// KeyDER returns the private key of SVIDs[i] as PKCS#8 DER: the one the
// cache encoded, else encoded now.
func (st *WorkloadState) KeyDER(i int) ([]byte, error) {
	if i < len(st.KeysDER) && st.KeysDER[i] != nil {
		return st.KeysDER[i], nil
	}
	key, err := x509.MarshalPKCS8PrivateKey(st.SVIDs[i].PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("marshal private key of %s: %w", st.SVIDs[i].ID, err)
	}
	return key, nil
}

// Subscription delivers a workload's state at once and after every change
// (rotation, entry change, bundle change).
type Subscription interface {
	// Updates yields the latest state. A slow reader skips intermediate
	// states but always ends up with the newest one.
	Updates() <-chan *WorkloadState
	// Close releases the subscription; Updates is closed after it.
	Close()
}

// Provider is what the Workload API serves from: the agent's SVID cache and
// its JWT minting.
type Provider interface {
	// Subscribe watches the state of the workload with these selectors.
	Subscribe(selectors []selector.Selector) Subscription
	// FetchJWTSVIDs returns a JWT-SVID for audience for every identity
	// matching selectors, or only for id when it is not zero. It returns
	// ErrNoIdentity when nothing matches (or id is not among the matches).
	FetchJWTSVIDs(ctx context.Context, selectors []selector.Selector, id spiffeid.ID, audience []string) ([]*jwtsvid.SVID, error)
	// JWTBundles returns the JWT bundles of the workload with these
	// selectors, as its WorkloadState has them (own trust domain plus those
	// its matching entries federate with), for ValidateJWTSVID: a token from
	// a trust domain the caller does not federate with must not validate.
	JWTBundles(selectors []selector.Selector) *jwtbundle.Set
}
