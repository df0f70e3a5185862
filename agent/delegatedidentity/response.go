package delegatedidentity

import (
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/delegatedidentity/types"
	pb "github.com/signetid/signet/agent/delegatedidentity/v1"
	"github.com/signetid/signet/internal/selector"
)

// selectorsFromProto checks the selectors a delegate sent with the rules
// every other entry point applies, so a typo fails loudly instead of
// matching nothing. They come back sorted, without duplicates.
func selectorsFromProto(in []*types.Selector) ([]selector.Selector, error) {
	out := make([]selector.Selector, 0, len(in))
	for i, s := range in {
		if s == nil {
			return nil, fmt.Errorf("selector %d is empty", i)
		}
		sel := selector.Selector{Type: s.Type, Value: s.Value}
		if err := sel.Validate(); err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return selector.Sort(out), nil
}

func spiffeIDProto(id spiffeid.ID) *types.SPIFFEID {
	return &types.SPIFFEID{TrustDomain: id.TrustDomain().Name(), Path: id.Path()}
}

// x509SVIDsResponse renders a workload's state as SPIRE does: every SVID
// but those of admin entries, with its key, and the trust domains whose
// bundles its entries federate with. No SVID is an empty response: the
// workload has no identity (yet).
func x509SVIDsResponse(st *cache.WorkloadState) (*pb.SubscribeToX509SVIDsResponse, error) {
	resp := &pb.SubscribeToX509SVIDsResponse{X509Svids: []*pb.X509SVIDWithKey{}}
	for i, svid := range st.SVIDs {
		if i < len(st.Admin) && st.Admin[i] {
			continue // an admin identity is the agent's to use, not a delegate's
		}
		if len(svid.Certificates) == 0 {
			return nil, fmt.Errorf("SVID of %s has no certificate", svid.ID)
		}
		key, err := st.KeyDER(i)
		if err != nil {
			return nil, err
		}
		chain := make([][]byte, len(svid.Certificates))
		for j, c := range svid.Certificates {
			chain[j] = c.Raw
		}
		resp.X509Svids = append(resp.X509Svids, &pb.X509SVIDWithKey{
			X509Svid: &types.X509SVID{
				CertChain: chain,
				Id:        spiffeIDProto(svid.ID),
				ExpiresAt: svid.Certificates[0].NotAfter.Unix(),
				Hint:      svid.Hint,
			},
			X509SvidKey: key,
		})
	}
	for _, b := range st.FederatedBundles {
		if st.Bundle == nil || b.TrustDomain() != st.Bundle.TrustDomain() {
			resp.FederatesWith = append(resp.FederatesWith, b.TrustDomain().IDString())
		}
	}
	return resp, nil
}

// x509BundlesResponse holds the X.509 roots of every bundle, keyed by
// trust domain ID as SPIRE keys them.
func x509BundlesResponse(bundles []*spiffebundle.Bundle) *pb.SubscribeToX509BundlesResponse {
	resp := &pb.SubscribeToX509BundlesResponse{CaCertificates: make(map[string][]byte, len(bundles))}
	for _, b := range bundles {
		resp.CaCertificates[b.TrustDomain().IDString()] = concatDER(b.X509Authorities())
	}
	return resp
}

// jwtBundlesResponse holds the JWT keys of every bundle as a JWKS document,
// as the Workload API's FetchJWTBundles gives them.
func jwtBundlesResponse(bundles []*spiffebundle.Bundle) (*pb.SubscribeToJWTBundlesResponse, error) {
	resp := &pb.SubscribeToJWTBundlesResponse{Bundles: make(map[string][]byte, len(bundles))}
	for _, b := range bundles {
		doc, err := b.JWTBundle().Marshal()
		if err != nil {
			return nil, fmt.Errorf("marshal JWT bundle of %s: %w", b.TrustDomain(), err)
		}
		resp.Bundles[b.TrustDomain().IDString()] = doc
	}
	return resp, nil
}

// jwtSVIDsResponse renders minted JWT-SVIDs.
func jwtSVIDsResponse(svids []*jwtsvid.SVID) *pb.FetchJWTSVIDsResponse {
	resp := &pb.FetchJWTSVIDsResponse{}
	for _, svid := range svids {
		// The claims were decoded as JSON, so numbers are float64. The
		// server always sets iat; without one, issued_at stays 0.
		iat, _ := svid.Claims["iat"].(float64)
		resp.Svids = append(resp.Svids, &types.JWTSVID{
			Token:     svid.Marshal(),
			Id:        spiffeIDProto(svid.ID),
			ExpiresAt: svid.Expiry.Unix(),
			IssuedAt:  int64(iat),
			Hint:      svid.Hint,
		})
	}
	return resp
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
