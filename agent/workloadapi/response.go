package workloadapi

import (
	"crypto/x509"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"

	"github.com/signetid/signet/agent/cache"
)

// x509SVIDResponse renders a workload's state: every SVID (default first,
// first of each hint only) with the own trust domain's roots, and the
// federated bundles keyed by trust domain ID, own trust domain excluded.
func x509SVIDResponse(st *cache.WorkloadState) (*workload.X509SVIDResponse, error) {
	if st.Bundle == nil {
		return nil, fmt.Errorf("no trust bundle for the agent's trust domain")
	}
	roots := concatDER(st.Bundle.X509Authorities())
	resp := &workload.X509SVIDResponse{}
	hints := map[string]bool{}
	for i, svid := range st.SVIDs {
		if svid.Hint != "" {
			if hints[svid.Hint] {
				continue
			}
			hints[svid.Hint] = true
		}
		key, err := st.KeyDER(i)
		if err != nil {
			return nil, err
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    svid.ID.String(),
			X509Svid:    concatDER(svid.Certificates),
			X509SvidKey: key,
			Bundle:      roots,
			Hint:        svid.Hint,
		})
	}
	resp.FederatedBundles = federated(st)
	return resp, nil
}

func federated(st *cache.WorkloadState) map[string][]byte {
	out := map[string][]byte{}
	for _, b := range st.FederatedBundles {
		if b == nil || b.TrustDomain() == st.Bundle.TrustDomain() {
			continue
		}
		out[b.TrustDomain().IDString()] = concatDER(b.X509Authorities())
	}
	return out
}

// x509BundlesResponse holds the own and the federated X.509 bundles.
func x509BundlesResponse(st *cache.WorkloadState) (*workload.X509BundlesResponse, error) {
	if st.Bundle == nil {
		return nil, fmt.Errorf("no trust bundle for the agent's trust domain")
	}
	bundles := federated(st)
	bundles[st.Bundle.TrustDomain().IDString()] = concatDER(st.Bundle.X509Authorities())
	return &workload.X509BundlesResponse{Bundles: bundles}, nil
}

// jwtBundlesResponse holds every JWT bundle as a JWKS document.
func jwtBundlesResponse(st *cache.WorkloadState) (*workload.JWTBundlesResponse, error) {
	bundles := map[string][]byte{}
	for _, b := range st.JWTBundles {
		if b == nil {
			continue
		}
		doc, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("marshal JWT bundle of %s: %w", b.TrustDomain(), err)
		}
		bundles[b.TrustDomain().IDString()] = doc
	}
	return &workload.JWTBundlesResponse{Bundles: bundles}, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}
