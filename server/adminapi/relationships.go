package adminapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/k8sreg"
	"github.com/signetid/signet/server/store"
)

// configured returns the relationship server.conf configures with td.
func (s *Service) configured(td spiffeid.TrustDomain) (federation.Relationship, bool) {
	for _, r := range s.cfg.FederatesWith {
		if r.TrustDomain == td {
			return r, true
		}
	}
	return federation.Relationship{}, false
}

// configuredRefusal: a configured relationship is changed in server.conf,
// which is read at start, not through the store (the configuration would
// win over a stored one anyway).
func configuredRefusal(what string, r federation.Relationship) error {
	td := r.TrustDomain.Name()
	return status.Errorf(codes.FailedPrecondition, "%s: %s is configured in server.conf (federates_with %q, fetched from %s); edit that block and restart the server instead",
		what, td, td, r.URL)
}

// managedRefusal: a relationship with an owner is changed only by it (the
// Kubernetes controller would write it back).
func managedRefusal(what string, cur store.FederationRelationship) error {
	return status.Errorf(codes.FailedPrecondition, "%s: the relationship with %s is managed by %s; %s",
		what, cur.TrustDomain, cur.Owner, ownerAdvice(cur.Owner))
}

// ownerAdvice says where a managed relationship is changed.
func ownerAdvice(owner string) string {
	if strings.HasPrefix(owner, k8sreg.RelationshipOwnerPrefix) {
		return "change or delete its ClusterFederatedTrustDomain resource instead"
	}
	return "only its owner may change or delete it"
}

// refusedOr returns the status a store write's check refused with (the
// store wraps it), or err mapped as storeError does.
func refusedOr(what string, err error) error {
	var st interface{ GRPCStatus() *status.Status }
	if errors.As(err, &st) {
		return st.GRPCStatus().Err()
	}
	return storeError(what, err)
}

// requestedRelationship checks a create or update request before anything
// is written: the relationship (named by the CLI's flags), that server.conf
// does not configure its trust domain, and the bootstrap bundle.
func (s *Service) requestedRelationship(what string, in *api.FederationRelationship, bundle *api.Bundle) (federation.Relationship, []store.Authority, error) {
	if in == nil {
		return federation.Relationship{}, nil, status.Errorf(codes.InvalidArgument, "%s: relationship is required", what)
	}
	if in.Owner != "" {
		return federation.Relationship{}, nil, status.Errorf(codes.InvalidArgument, "%s: owner %q: the admin API writes the operator's relationships, whose owner is empty", what, in.Owner)
	}
	rel, err := federation.RelationshipSpec{
		TrustDomain: in.TrustDomain, BundleEndpointURL: in.BundleEndpointUrl,
		Profile: federation.Profile(in.BundleEndpointProfile), EndpointSPIFFEID: in.EndpointSpiffeId,
	}.Resolve(s.cfg.TrustDomain, federation.FlagFields)
	if err != nil {
		return rel, nil, status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	if c, ok := s.configured(rel.TrustDomain); ok {
		return rel, nil, configuredRefusal(what, c)
	}
	if bundle == nil {
		return rel, nil, nil
	}
	if bundle.TrustDomain != "" {
		td, err := ids.ParseTrustDomain(bundle.TrustDomain)
		if err != nil {
			return rel, nil, status.Errorf(codes.InvalidArgument, "%s: trust domain bundle: %v", what, err)
		}
		if td != rel.TrustDomain {
			return rel, nil, status.Errorf(codes.InvalidArgument, "%s: the trust domain bundle is of %s, not %s", what, td.Name(), rel.TrustDomain.Name())
		}
	}
	named := &api.Bundle{TrustDomain: rel.TrustDomain.Name(), X509Authorities: bundle.X509Authorities, JwtAuthorities: bundle.JwtAuthorities}
	b, err := BundleFromProto(named)
	if err != nil {
		return rel, nil, status.Errorf(codes.InvalidArgument, "%s: trust domain bundle: %v", what, err)
	}
	auths, err := federation.Authorities(b)
	if err != nil {
		return rel, nil, status.Errorf(codes.InvalidArgument, "%s: trust domain bundle: %v", what, err)
	}
	return rel, auths, nil
}

// CreateFederationRelationship stores a new operator's relationship and
// its bootstrap bundle, if given, in one transaction.
func (s *Service) CreateFederationRelationship(ctx context.Context, req *api.CreateFederationRelationshipRequest) (*api.FederationRelationshipResult, error) {
	const what = "create federation relationship"
	rel, auths, err := s.requestedRelationship(what, req.Relationship, req.TrustDomainBundle)
	if err != nil {
		return nil, err
	}
	_, err = s.cfg.Store.PutFederationRelationship(ctx, rel.StoreForm(""), func(cur *store.FederationRelationship) error {
		switch {
		case cur == nil:
			return nil
		case cur.Owner != "":
			return status.Errorf(codes.AlreadyExists, "%s: a relationship with %s already exists, managed by %s; %s", what, cur.TrustDomain, cur.Owner, ownerAdvice(cur.Owner))
		}
		return status.Errorf(codes.AlreadyExists, "%s: a relationship with %s already exists (fetching from %s); change it with `signet server federation update`", what, cur.TrustDomain, cur.BundleEndpointURL)
	}, store.WithBundle(auths))
	if err != nil {
		return nil, refusedOr(what+" with "+rel.TrustDomain.Name(), err)
	}
	s.cfg.Logger.Info("federation relationship created", relationshipAttrs(rel, auths)...)
	return s.afterRelationshipWrite(ctx, what, rel, auths)
}

// UpdateFederationRelationship replaces a stored operator's relationship
// and its bundle, if one is given, in one transaction.
func (s *Service) UpdateFederationRelationship(ctx context.Context, req *api.UpdateFederationRelationshipRequest) (*api.FederationRelationshipResult, error) {
	const what = "update federation relationship"
	rel, auths, err := s.requestedRelationship(what, req.Relationship, req.TrustDomainBundle)
	if err != nil {
		return nil, err
	}
	changed, err := s.cfg.Store.PutFederationRelationship(ctx, rel.StoreForm(""), func(cur *store.FederationRelationship) error {
		switch {
		case cur == nil:
			return status.Errorf(codes.NotFound, "%s: no relationship with %s is stored; create it with `signet server federation create`", what, rel.TrustDomain.Name())
		case cur.Owner != "":
			return managedRefusal(what, *cur)
		}
		return nil
	}, store.WithBundle(auths))
	if err != nil {
		return nil, refusedOr(what+" with "+rel.TrustDomain.Name(), err)
	}
	if changed {
		s.cfg.Logger.Info("federation relationship updated", relationshipAttrs(rel, auths)...)
	}
	return s.afterRelationshipWrite(ctx, what, rel, auths)
}

// relationshipAttrs are the log attributes of a written relationship.
func relationshipAttrs(rel federation.Relationship, auths []store.Authority) []any {
	spec := rel.Spec()
	return []any{"trust_domain", spec.TrustDomain, "url", spec.BundleEndpointURL, "profile", spec.Profile,
		"endpoint_spiffe_id", spec.EndpointSPIFFEID, "bootstrap_bundle", auths != nil}
}

// afterRelationshipWrite makes a stored relationship (and its bundle)
// visible to the federation service, and returns what is stored.
func (s *Service) afterRelationshipWrite(ctx context.Context, what string, rel federation.Relationship, auths []store.Authority) (*api.FederationRelationshipResult, error) {
	td := rel.TrustDomain.Name()
	out := &api.FederationRelationshipResult{}
	if auths != nil {
		var err error
		if out.TrustDomainBundle, err = s.storedBundle(ctx, td); err != nil {
			return nil, err
		}
	}
	s.refreshCatalog(ctx, what)
	cur, err := s.cfg.Store.GetFederationRelationship(ctx, td)
	if err != nil {
		return nil, storeError(what+": read it back", err)
	}
	out.Relationship = storedToProto(cur, false)
	return out, nil
}

// DeleteFederationRelationship deletes a stored operator's relationship;
// the bundle fetched so far stays (`bundle delete` removes it).
func (s *Service) DeleteFederationRelationship(ctx context.Context, req *api.DeleteFederationRelationshipRequest) (*api.DeleteFederationRelationshipResponse, error) {
	const what = "delete federation relationship"
	td, err := s.foreignTrustDomain(what, req.TrustDomain)
	if err != nil {
		return nil, err
	}
	c, configured := s.configured(td)
	err = s.cfg.Store.DeleteFederationRelationship(ctx, td.Name(), func(cur store.FederationRelationship) error {
		if cur.Owner != "" {
			return managedRefusal(what, cur)
		}
		return nil
	})
	switch {
	// A stored one that the configuration overrides may go: it is not in
	// force, and only clutters the list.
	case errors.Is(err, store.ErrNotFound) && configured:
		return nil, configuredRefusal(what, c)
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "%s: no relationship with %s is stored (see `signet server federation list`)", what, td.Name())
	case err != nil:
		return nil, refusedOr(what+" with "+td.Name(), err)
	}
	s.refreshCatalog(ctx, what)
	s.cfg.Logger.Info("federation relationship deleted; its bundle is kept", "trust_domain", td.Name())
	return &api.DeleteFederationRelationshipResponse{}, nil
}

// GetFederationRelationship returns the relationship with a trust domain
// in force: the configured one, else the stored one.
func (s *Service) GetFederationRelationship(ctx context.Context, req *api.GetFederationRelationshipRequest) (*api.FederationRelationship, error) {
	const what = "get federation relationship"
	td, err := s.foreignTrustDomain(what, req.TrustDomain)
	if err != nil {
		return nil, err
	}
	if c, ok := s.configured(td); ok {
		return s.withRefresh(configuredToProto(c)), nil
	}
	cur, err := s.cfg.Store.GetFederationRelationship(ctx, td.Name())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "%s: the server has no relationship with %s (see `signet server federation list`)", what, td.Name())
	case err != nil:
		return nil, storeError(what+" with "+td.Name(), err)
	}
	return s.withRefresh(storedToProto(cur, false)), nil
}

// withRefresh adds to rels, where in force, how fetching their bundles
// goes on this server.
func (s *Service) withRefresh(rels ...*api.FederationRelationship) *api.FederationRelationship {
	if s.cfg.RefreshStatuses == nil || len(rels) == 0 {
		return nil
	}
	byTD := make(map[string]federation.RefreshStatus)
	for _, st := range s.cfg.RefreshStatuses() {
		byTD[st.TrustDomain.Name()] = st
	}
	for _, r := range rels {
		st, ok := byTD[r.TrustDomain]
		if !ok || r.Overridden {
			continue
		}
		r.Refresh = &api.BundleRefreshStatus{Failures: st.Failures, ConsecutiveFailures: st.ConsecutiveFailures, LastError: st.LastError}
		if !st.LastSuccess.IsZero() {
			r.Refresh.LastSuccess = st.LastSuccess.Unix()
		}
	}
	return rels[0]
}

// ListFederationRelationships returns the configured relationships and the
// stored ones, sorted by trust domain, a configured one first.
func (s *Service) ListFederationRelationships(ctx context.Context, _ *api.ListFederationRelationshipsRequest) (*api.ListFederationRelationshipsResponse, error) {
	stored, err := s.cfg.Store.ListFederationRelationships(ctx)
	if err != nil {
		return nil, storeError("list federation relationships", err)
	}
	resp := &api.ListFederationRelationshipsResponse{}
	for _, r := range s.cfg.FederatesWith {
		resp.Relationships = append(resp.Relationships, configuredToProto(r))
	}
	for _, r := range stored {
		td, err := spiffeid.TrustDomainFromString(r.TrustDomain)
		_, overridden := s.configured(td)
		resp.Relationships = append(resp.Relationships, storedToProto(r, err == nil && overridden))
	}
	slices.SortStableFunc(resp.Relationships, func(a, b *api.FederationRelationship) int {
		return strings.Compare(a.TrustDomain, b.TrustDomain)
	})
	s.withRefresh(resp.Relationships...)
	return resp, nil
}

func configuredToProto(r federation.Relationship) *api.FederationRelationship {
	spec := r.Spec()
	return &api.FederationRelationship{
		TrustDomain: spec.TrustDomain, BundleEndpointUrl: spec.BundleEndpointURL,
		BundleEndpointProfile: string(spec.Profile), EndpointSpiffeId: spec.EndpointSPIFFEID,
		Origin: api.RelationshipOrigin_RELATIONSHIP_ORIGIN_CONFIG,
	}
}

func storedToProto(r store.FederationRelationship, overridden bool) *api.FederationRelationship {
	return &api.FederationRelationship{
		TrustDomain: r.TrustDomain, BundleEndpointUrl: r.BundleEndpointURL,
		BundleEndpointProfile: r.Profile, EndpointSpiffeId: r.EndpointSPIFFEID,
		Owner: r.Owner, Revision: r.Revision, CreatedAt: r.CreatedAt.Unix(),
		Origin: api.RelationshipOrigin_RELATIONSHIP_ORIGIN_STORE, Overridden: overridden,
	}
}

// bundleFetcherRefusal refuses to delete the bundle of td while a
// relationship, configured or stored, fetches it.
func (s *Service) bundleFetcherRefusal(ctx context.Context, what string, td spiffeid.TrustDomain) error {
	if c, ok := s.configured(td); ok {
		return status.Errorf(codes.FailedPrecondition, "%s of %s: the server fetches it from %s (federates_with %q in its config); remove that block and restart first, or replace the bundle with `bundle set`", what, td.Name(), c.URL, td.Name())
	}
	cur, err := s.cfg.Store.GetFederationRelationship(ctx, td.Name())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return storeError(what+" of "+td.Name(), err)
	}
	first := fmt.Sprintf("delete the relationship first (`signet server federation delete --trust-domain %s`)", td.Name())
	if cur.Owner != "" {
		first = fmt.Sprintf("the relationship is managed by %s: %s", cur.Owner, ownerAdvice(cur.Owner))
	}
	return status.Errorf(codes.FailedPrecondition, "%s of %s: the server fetches it from %s (a stored federation relationship) and would fetch it back; %s, or replace the bundle with `bundle set`", what, td.Name(), cur.BundleEndpointURL, first)
}
