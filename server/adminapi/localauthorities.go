package adminapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
)

// GetLocalAuthorities lists this server's authorities of one kind; each
// X.509 CA with the number of agents that still hold an SVID it signed.
func (s *Service) GetLocalAuthorities(ctx context.Context, req *api.GetLocalAuthoritiesRequest) (*api.GetLocalAuthoritiesResponse, error) {
	kind, err := authorityKind(req.GetKind())
	if err != nil {
		return nil, err
	}
	list, err := s.cfg.CA.LocalAuthorities(kind)
	if err != nil {
		return nil, authorityError(err)
	}
	var agents map[string][]string
	if kind == ca.KindX509 {
		if agents, err = s.agentsByIssuer(ctx); err != nil {
			return nil, err
		}
	}
	out := &api.GetLocalAuthoritiesResponse{}
	for _, a := range list {
		p := localAuthorityToProto(a)
		if a.SubjectKeyID != "" {
			p.Agents = int64(len(agents[a.SubjectKeyID]))
		}
		out.Authorities = append(out.Authorities, p)
	}
	return out, nil
}

// agentsByIssuer maps a CA's subject key ID (hex) to the agents, not banned,
// whose current agent SVID it signed and which has not expired.
func (s *Service) agentsByIssuer(ctx context.Context) (map[string][]string, error) {
	nodes, err := s.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list agents: %v", err)
	}
	now := s.cfg.Now()
	out := map[string][]string{}
	for _, n := range nodes {
		if n.SVIDIssuer != "" && !n.Banned && n.ExpiresAt.After(now) {
			out[n.SVIDIssuer] = append(out[n.SVIDIssuer], n.SPIFFEID)
		}
	}
	return out, nil
}

// refuseDependents refuses to revoke what signed the agent SVIDs agents
// still hold (the CAs with subject key IDs skids), unless forced: revoked,
// it cuts those agents off, and a join-token agent among them can only
// come back with a new token.
func (s *Service) refuseDependents(ctx context.Context, what string, skids []string, force bool) error {
	if force {
		return nil
	}
	byIssuer, err := s.agentsByIssuer(ctx)
	if err != nil {
		return err
	}
	var ids []string
	for _, k := range skids {
		ids = append(ids, byIssuer[k]...)
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	shown := ids[:min(len(ids), 5)]
	more := ""
	if len(ids) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(ids)-len(shown))
	}
	return status.Errorf(codes.FailedPrecondition,
		"%d agent(s) still hold an agent SVID %s signed: %s%s. Revoked, it cuts them off until they attest again, and join-token agents need a new token. "+
			"An agent moves to the new CA as soon as it reaches the server after the taint: wait for them (signet server localauthority x509 show counts them), evict the ones that are gone, or revoke anyway with --force",
		len(ids), what, strings.Join(shown, ", "), more)
}

// PrepareLocalAuthority creates and publishes a new authority.
func (s *Service) PrepareLocalAuthority(ctx context.Context, req *api.PrepareLocalAuthorityRequest) (*api.LocalAuthority, error) {
	kind, err := authorityKind(req.GetKind())
	if err != nil {
		return nil, err
	}
	return s.authorityStep(ctx, "prepare", func() (ca.LocalAuthority, error) { return s.cfg.CA.Prepare(ctx, kind) })
}

// ActivateLocalAuthority makes the prepared authority sign.
func (s *Service) ActivateLocalAuthority(ctx context.Context, req *api.ActivateLocalAuthorityRequest) (*api.LocalAuthority, error) {
	kind, id, err := authorityRef(req.GetKind(), req.GetAuthorityId())
	if err != nil {
		return nil, err
	}
	return s.authorityStep(ctx, "activate", func() (ca.LocalAuthority, error) { return s.cfg.CA.Activate(ctx, kind, id) })
}

// TaintLocalAuthority marks an old authority tainted.
func (s *Service) TaintLocalAuthority(ctx context.Context, req *api.TaintLocalAuthorityRequest) (*api.LocalAuthority, error) {
	kind, id, err := authorityRef(req.GetKind(), req.GetAuthorityId())
	if err != nil {
		return nil, err
	}
	return s.authorityStep(ctx, "taint", func() (ca.LocalAuthority, error) { return s.cfg.CA.Taint(ctx, kind, id) })
}

// RevokeLocalAuthority removes a tainted authority from the bundle.
func (s *Service) RevokeLocalAuthority(ctx context.Context, req *api.RevokeLocalAuthorityRequest) (*api.LocalAuthority, error) {
	kind, id, err := authorityRef(req.GetKind(), req.GetAuthorityId())
	if err != nil {
		return nil, err
	}
	if kind == ca.KindX509 {
		if a, ok := s.oldAuthority(kind, id); ok {
			if s.cfg.ServingCA != nil && s.cfg.ServingCA() == id {
				// Revoked, it would strand every agent that connects.
				return nil, status.Errorf(codes.FailedPrecondition, "X.509 CA %s still signs the agent API's certificate: its renewal under the active CA has not succeeded yet (see the server log); try again shortly", id)
			}
			if err := s.refuseDependents(ctx, "X.509 CA "+id, []string{a.SubjectKeyID}, req.GetForce()); err != nil {
				return nil, err
			}
		}
	}
	return s.authorityStep(ctx, "revoke", func() (ca.LocalAuthority, error) { return s.cfg.CA.Revoke(ctx, kind, id) })
}

// GetUpstreamAuthorities lists the upstream roots this server knows.
func (s *Service) GetUpstreamAuthorities(context.Context, *api.GetUpstreamAuthoritiesRequest) (*api.GetUpstreamAuthoritiesResponse, error) {
	out := &api.GetUpstreamAuthoritiesResponse{}
	for _, u := range s.cfg.CA.UpstreamRoots() {
		out.Authorities = append(out.Authorities, upstreamRootToProto(u))
	}
	return out, nil
}

// TaintUpstreamAuthority marks an upstream root tainted.
func (s *Service) TaintUpstreamAuthority(ctx context.Context, req *api.TaintUpstreamAuthorityRequest) (*api.UpstreamAuthority, error) {
	if req.GetAuthorityId() == "" {
		return nil, errNoUpstreamID
	}
	return s.upstreamStep(ctx, "taint", func() (ca.UpstreamRoot, error) { return s.cfg.CA.TaintUpstream(ctx, req.GetAuthorityId()) })
}

// RevokeUpstreamAuthority removes a tainted upstream root from the bundle.
func (s *Service) RevokeUpstreamAuthority(ctx context.Context, req *api.RevokeUpstreamAuthorityRequest) (*api.UpstreamAuthority, error) {
	ref := req.GetAuthorityId()
	if ref == "" {
		return nil, errNoUpstreamID
	}
	servingUnder := func(u ca.UpstreamRoot) (string, bool) {
		if s.cfg.ServingCA == nil {
			return "", false
		}
		serving := s.cfg.ServingCA()
		return serving, slices.ContainsFunc(u.CAs, func(a ca.LocalAuthority) bool { return a.ID == serving })
	}
	refuse := func(u ca.UpstreamRoot) error {
		if serving, ok := servingUnder(u); ok {
			// Revoked, it would strand every agent that connects.
			return status.Errorf(codes.FailedPrecondition, "X.509 CA %s under upstream root %s still signs the agent API's certificate: its renewal under the active CA has not succeeded yet (see the server log); try again shortly", serving, u.ID)
		}
		return nil
	}
	// Asked before the step, outside the CA's lock (it reads the store):
	// no CA joins a tainted root, so the list cannot grow meanwhile. The
	// serving certificate's refusal, which clears by itself, comes first.
	if u, err := s.cfg.CA.FindUpstreamRoot(ref); err == nil && u.Tainted && !u.Revoked {
		if _, serving := servingUnder(u); serving {
			return nil, refuse(u)
		}
		var skids []string
		for _, a := range u.CAs {
			skids = append(skids, a.SubjectKeyID)
		}
		if err := s.refuseDependents(ctx, "this server's CAs under upstream root "+u.ID, skids, req.GetForce()); err != nil {
			return nil, err
		}
	}
	return s.upstreamStep(ctx, "revoke", func() (ca.UpstreamRoot, error) { return s.cfg.CA.RevokeUpstream(ctx, ref, refuse) })
}

var errNoUpstreamID = status.Error(codes.InvalidArgument, "upstream authority ID is required (signet server upstreamauthority list shows them)")

// upstreamStep is authorityStep for an upstream root.
func (s *Service) upstreamStep(ctx context.Context, what string, step func() (ca.UpstreamRoot, error)) (*api.UpstreamAuthority, error) {
	u, err := step()
	if err != nil {
		return nil, authorityError(err)
	}
	if err := s.cfg.PublishAuthorities(ctx); err != nil {
		return nil, status.Errorf(codes.Aborted, "%s upstream root %s: done in the CA, but the store's bundle could not be updated yet (the server keeps retrying; `signet server upstreamauthority list` says where it stands): %v",
			what, u.ID, err)
	}
	return upstreamRootToProto(u), nil
}

// authorityStep runs one CA step, then publishes the result so the bundle
// in the store (and agents) reflect it when the call returns. Activate,
// taint and revoke are idempotent; a repeated prepare says one is prepared.
func (s *Service) authorityStep(ctx context.Context, what string, step func() (ca.LocalAuthority, error)) (*api.LocalAuthority, error) {
	a, err := step()
	if err != nil {
		return nil, authorityError(err)
	}
	if err := s.cfg.PublishAuthorities(ctx); err != nil {
		return nil, status.Errorf(codes.Aborted, "%s %s authority %s: done in the CA, but the store's bundle could not be updated yet (the server keeps retrying; `signet server localauthority %s show` says where it stands): %v",
			what, a.Kind, a.ID, a.Kind, err)
	}
	return localAuthorityToProto(a), nil
}

// oldAuthority returns id when it is an old authority of kind (one the CA
// would let an operator revoke once tainted); other states get the CA's
// refusal.
func (s *Service) oldAuthority(kind ca.AuthorityKind, id string) (ca.LocalAuthority, bool) {
	list, err := s.cfg.CA.LocalAuthorities(kind)
	if err != nil {
		return ca.LocalAuthority{}, false
	}
	for _, a := range list {
		if a.ID == id {
			return a, a.Status == ca.StatusOld
		}
	}
	return ca.LocalAuthority{}, false
}

func authorityKind(kind string) (ca.AuthorityKind, error) {
	switch k := ca.AuthorityKind(kind); k {
	case ca.KindX509, ca.KindJWT:
		return k, nil
	}
	return "", status.Errorf(codes.InvalidArgument, "authority kind %q: want %q or %q", kind, ca.KindX509, ca.KindJWT)
}

func authorityRef(kind, id string) (ca.AuthorityKind, string, error) {
	k, err := authorityKind(kind)
	if err != nil {
		return "", "", err
	}
	if id == "" {
		return "", "", status.Error(codes.InvalidArgument, "authority ID is required (signet server localauthority "+kind+" show lists them)")
	}
	return k, id, nil
}

func authorityError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err // already says what the caller should do
	}
	switch {
	case errors.Is(err, ca.ErrUnknownAuthority):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ca.ErrAuthorityState):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

func localAuthorityToProto(a ca.LocalAuthority) *api.LocalAuthority {
	out := &api.LocalAuthority{
		Kind:                string(a.Kind),
		AuthorityId:         a.ID,
		Status:              string(a.Status),
		Tainted:             a.Tainted,
		ExpiresAt:           a.ExpiresAt.Unix(),
		UpstreamIssuer:      a.UpstreamIssuer,
		UpstreamAuthorityId: a.UpstreamRootID,
		KeyType:             string(a.KeyType),
		SubjectKeyId:        a.SubjectKeyID,
	}
	if !a.PublishedAt.IsZero() {
		out.PublishedAt = a.PublishedAt.Unix()
	}
	return out
}

func upstreamRootToProto(u ca.UpstreamRoot) *api.UpstreamAuthority {
	out := &api.UpstreamAuthority{
		AuthorityId:  u.ID,
		SubjectKeyId: u.SubjectKeyID,
		Subject:      u.Subject,
		ExpiresAt:    u.ExpiresAt.Unix(),
		Tainted:      u.Tainted,
		Revoked:      u.Revoked,
	}
	for _, a := range u.CAs {
		out.LocalAuthorities = append(out.LocalAuthorities, localAuthorityToProto(a))
	}
	return out
}
