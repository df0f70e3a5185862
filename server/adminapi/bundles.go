package adminapi

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/agentapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/store"
)

// foreignTrustDomain parses a federated trust domain's name; the server's
// own is refused, since its bundle comes from its CA alone.
func (s *Service) foreignTrustDomain(what, name string) (spiffeid.TrustDomain, error) {
	td, err := ids.ParseTrustDomain(name)
	if err != nil {
		return td, status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	if td == s.cfg.TrustDomain {
		return td, status.Errorf(codes.InvalidArgument, "%s: %s is this server's own trust domain; its bundle comes from its CA (see `signet server bundle show`)", what, td.Name())
	}
	return td, nil
}

// storedBundle returns td's bundle as the store holds it now.
func (s *Service) storedBundle(ctx context.Context, td string) (*api.Bundle, error) {
	auths, seq, err := s.cfg.Store.ListAuthorities(ctx, td)
	if err != nil {
		return nil, storeError("read bundle of "+td, err)
	}
	return agentapi.BundleToProto(catalog.Bundle{TrustDomain: td, Authorities: auths, Sequence: seq}, 0), nil
}

// SetFederatedBundle replaces a foreign trust domain's bundle.
func (s *Service) SetFederatedBundle(ctx context.Context, req *api.SetFederatedBundleRequest) (*api.Bundle, error) {
	if req.Bundle == nil {
		return nil, status.Error(codes.InvalidArgument, "set federated bundle: bundle is required")
	}
	td, err := s.foreignTrustDomain("set federated bundle", req.Bundle.TrustDomain)
	if err != nil {
		return nil, err
	}
	b, err := BundleFromProto(req.Bundle)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set federated bundle of %s: %v", td.Name(), err)
	}
	auths, err := federation.Authorities(b)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set federated bundle: %v", err)
	}
	changed, err := s.cfg.Store.SetBundle(ctx, td.Name(), auths)
	if err != nil {
		return nil, storeError("set federated bundle of "+td.Name(), err)
	}
	if changed {
		s.refreshCatalog(ctx, "set federated bundle")
		s.cfg.Logger.Info("federated bundle set", "trust_domain", td.Name(),
			"x509_roots", len(b.X509Authorities()), "jwt_keys", len(b.JWTAuthorities()))
	}
	return s.storedBundle(ctx, td.Name())
}

// ListFederatedBundles returns every foreign trust domain's bundle.
func (s *Service) ListFederatedBundles(ctx context.Context, _ *api.ListFederatedBundlesRequest) (*api.ListFederatedBundlesResponse, error) {
	tds, err := s.cfg.Store.ListBundleTrustDomains(ctx)
	if err != nil {
		return nil, storeError("list federated bundles", err)
	}
	resp := &api.ListFederatedBundlesResponse{}
	for _, td := range tds {
		if td == s.cfg.TrustDomain.Name() {
			continue
		}
		b, err := s.storedBundle(ctx, td)
		if err != nil {
			return nil, err
		}
		// Deleted between the two reads: not listed.
		if len(b.X509Authorities)+len(b.JwtAuthorities) > 0 {
			resp.Bundles = append(resp.Bundles, b)
		}
	}
	return resp, nil
}

// DeleteFederatedBundle forgets a foreign trust domain's bundle: workloads
// whose entries federate with it stop receiving it. By default it is
// refused while entries federate with it, and always while a relationship
// (configured or stored) fetches it; the other modes dissociate or
// delete those entries in the same transaction.
func (s *Service) DeleteFederatedBundle(ctx context.Context, req *api.DeleteFederatedBundleRequest) (*api.DeleteFederatedBundleResponse, error) {
	td, err := s.foreignTrustDomain("delete federated bundle", req.TrustDomain)
	if err != nil {
		return nil, err
	}
	// The fetcher would write it back (https_web), or could no longer
	// authenticate the endpoint at all (https_spiffe, which trusts the
	// bundle it holds): either way the delete would not do what was asked.
	if err := s.bundleFetcherRefusal(ctx, "delete federated bundle", td); err != nil {
		return nil, err
	}
	mode, ok := map[api.BundleDeleteMode]store.BundleDeleteMode{
		api.BundleDeleteMode_BUNDLE_DELETE_MODE_RESTRICT:   store.BundleRestrict,
		api.BundleDeleteMode_BUNDLE_DELETE_MODE_DISSOCIATE: store.BundleDissociate,
		api.BundleDeleteMode_BUNDLE_DELETE_MODE_DELETE:     store.BundleDeleteEntries,
	}[req.Mode]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "delete federated bundle: unknown mode %d", req.Mode)
	}
	n, err := s.cfg.Store.DeleteBundle(ctx, td.Name(), mode)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "delete federated bundle: no bundle of %s is held (see `signet server bundle list`)", td.Name())
	case errors.Is(err, store.ErrFetched):
		// A relationship stored since the check above.
		return nil, status.Errorf(codes.FailedPrecondition, "delete federated bundle of %s: a federation relationship fetches it; delete that first (signet server federation delete --trust-domain %s)", td.Name(), td.Name())
	case errors.Is(err, store.ErrInUse):
		return nil, status.Errorf(codes.FailedPrecondition, "delete federated bundle of %s: %d entries federate with it; choose --mode dissociate (drop %s from them) or --mode delete (delete them)", td.Name(), n, td.Name())
	case err != nil:
		return nil, storeError("delete federated bundle of "+td.Name(), err)
	}
	s.refreshCatalog(ctx, "delete federated bundle")
	s.cfg.Logger.Warn("federated bundle deleted", "trust_domain", td.Name(), "mode", req.Mode.String(), "entries", n)
	return &api.DeleteFederatedBundleResponse{Entries: int32(n)}, nil
}

// refreshCatalog reloads the catalog so a bundle write reaches agent
// streams before the call returns.
func (s *Service) refreshCatalog(ctx context.Context, after string) {
	if err := s.cfg.Catalog.Refresh(ctx); err != nil {
		// Run's change loop retries; the write itself is durable.
		s.cfg.Logger.Warn("refresh catalog after "+after, "error", err)
	}
}

// GetBundle returns the trust domain's bundle.
func (s *Service) GetBundle(ctx context.Context, _ *api.GetBundleRequest) (*api.Bundle, error) {
	snap, _ := s.cfg.Catalog.Current()
	return agentapi.BundleToProto(snap.OwnBundle(s.cfg.TrustDomain), int32(s.cfg.RefreshHint.Seconds())), nil
}

// RefreshFederatedBundle fetches a federated trust domain's bundle from its
// bundle endpoint now and returns it as stored.
func (s *Service) RefreshFederatedBundle(ctx context.Context, req *api.RefreshFederatedBundleRequest) (*api.Bundle, error) {
	td, err := ids.ParseTrustDomain(req.TrustDomain)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "refresh bundle: trust_domain: %v", err)
	}
	if s.cfg.RefreshFederatedBundle == nil {
		return nil, status.Error(codes.FailedPrecondition, "refresh bundle: this server does not fetch federated bundles")
	}
	if err := s.cfg.RefreshFederatedBundle(ctx, td); err != nil {
		if errors.Is(err, federation.ErrNoRelationship) {
			return nil, status.Errorf(codes.NotFound, "refresh bundle: %v (see signet server federation list)", err)
		}
		return nil, status.Errorf(codes.Unavailable, "refresh bundle: %v", err)
	}
	s.refreshCatalog(ctx, "bundle refresh")
	return s.storedBundle(ctx, td.Name())
}
