package adminapi

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/agentapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// CreateJoinToken makes a single-use join token; only its hash is stored.
func (s *Service) CreateJoinToken(ctx context.Context, req *api.CreateJoinTokenRequest) (*api.CreateJoinTokenResponse, error) {
	if req.TtlSeconds < 0 {
		return nil, status.Error(codes.InvalidArgument, "token ttl cannot be negative")
	}
	token, rec, err := nodeattest.NewJoinToken(s.cfg.TrustDomain, req.SpiffeId, time.Duration(req.TtlSeconds)*time.Second, s.cfg.Now())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// A token for the ID of a live agent would hand that agent's identity
	// and entries to whoever uses it, and lock the running agent out.
	if req.SpiffeId != "" {
		switch n, err := s.cfg.Store.GetNode(ctx, req.SpiffeId); {
		case err == nil && s.cfg.Now().Before(n.ExpiresAt):
			return nil, status.Errorf(codes.FailedPrecondition, "agent %s is attested (its SVID expires at %s); evict it first (signet server agent evict --spiffe-id %s) or choose another ID",
				req.SpiffeId, n.ExpiresAt.UTC().Format(time.RFC3339), req.SpiffeId)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, storeError("look up agent "+req.SpiffeId, err)
		}
	}
	if err := s.cfg.Store.CreateJoinToken(ctx, rec); err != nil {
		return nil, storeError("create join token", err)
	}
	agentID, err := nodeattest.AgentID(s.cfg.TrustDomain, rec)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "name the agent of token %s: %v", rec.ID, err)
	}
	s.cfg.Logger.Info("join token created", "token_id", rec.ID, "agent_id", agentID.String(), "expires_at", rec.ExpiresAt)
	return &api.CreateJoinTokenResponse{Token: token, ExpiresAt: rec.ExpiresAt.Unix(), AgentId: agentID.String()}, nil
}

// GetBundle returns the trust domain's bundle.
func (s *Service) GetBundle(ctx context.Context, _ *api.GetBundleRequest) (*api.Bundle, error) {
	snap, _ := s.cfg.Catalog.Current()
	return agentapi.BundleToProto(snap.OwnBundle(s.cfg.TrustDomain), int32(s.cfg.RefreshHint.Seconds())), nil
}

// ListAgents returns the attested agents.
func (s *Service) ListAgents(ctx context.Context, _ *api.ListAgentsRequest) (*api.ListAgentsResponse, error) {
	nodes, err := s.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, storeError("list agents", err)
	}
	resp := &api.ListAgentsResponse{}
	for _, n := range nodes {
		resp.Agents = append(resp.Agents, &api.Agent{
			SpiffeId:        n.SPIFFEID,
			AttestationType: n.AttestationType,
			Selectors:       registry.SelectorsToProto(n.Selectors),
			SerialNumber:    n.SerialNumber,
			ExpiresAt:       n.ExpiresAt.Unix(),
			AttestedAt:      n.AttestedAt.Unix(),
		})
	}
	return resp, nil
}

// EvictAgent forgets an agent: its streams end and it can no longer renew
// or sign; it must attest again with a new token.
func (s *Service) EvictAgent(ctx context.Context, req *api.EvictAgentRequest) (*api.EvictAgentResponse, error) {
	if req.SpiffeId == "" {
		return nil, status.Error(codes.InvalidArgument, "evict agent: spiffe_id is required")
	}
	if err := s.cfg.Store.DeleteNode(ctx, req.SpiffeId); err != nil {
		return nil, storeError("evict agent "+req.SpiffeId, err)
	}
	// Nodes are not patched in memory: reload so the eviction bites at once.
	s.refreshCatalog(ctx, "eviction")
	s.cfg.Logger.Warn("agent evicted", "agent_id", req.SpiffeId)
	return &api.EvictAgentResponse{}, nil
}
