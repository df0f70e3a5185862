package adminapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// ListAgents returns the attested agents matching every given filter.
func (s *Service) ListAgents(ctx context.Context, req *api.ListAgentsRequest) (*api.ListAgentsResponse, error) {
	f, err := newAgentFilter(req)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "list agents: %v", err)
	}
	nodes, err := s.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, storeError("list agents", err)
	}
	resp := &api.ListAgentsResponse{}
	for i := range nodes {
		if f.keep(&nodes[i]) {
			resp.Agents = append(resp.Agents, agentToProto(&nodes[i]))
		}
	}
	return resp, nil
}

// GetAgent returns one attested agent.
func (s *Service) GetAgent(ctx context.Context, req *api.GetAgentRequest) (*api.Agent, error) {
	if req.SpiffeId == "" {
		return nil, status.Error(codes.InvalidArgument, "show agent: spiffe_id is required")
	}
	n, err := s.cfg.Store.GetNode(ctx, req.SpiffeId)
	if err != nil {
		return nil, storeError("agent "+req.SpiffeId, err)
	}
	return agentToProto(&n), nil
}

func agentToProto(n *store.Node) *api.Agent {
	return &api.Agent{
		SpiffeId:        n.SPIFFEID,
		AttestationType: n.AttestationType,
		Selectors:       registry.SelectorsToProto(n.Selectors),
		SerialNumber:    n.SerialNumber,
		ExpiresAt:       n.ExpiresAt.Unix(),
		AttestedAt:      n.AttestedAt.Unix(),
		Banned:          n.Banned,
		CanReattest:     n.CanReattest,
	}
}

// EvictAgent forgets an agent: its streams end and it can no longer renew
// or sign; it must attest again (a join token agent with a new token; a
// k8s_psat agent does so by itself). Evicting a banned agent lifts the ban.
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

// BanAgent cuts an agent off as EvictAgent does, and keeps it out: its ID
// is refused at attestation until an admin evicts it. Eviction alone does
// not keep a k8s_psat node out, since its projected token attests again.
func (s *Service) BanAgent(ctx context.Context, req *api.BanAgentRequest) (*api.BanAgentResponse, error) {
	if req.SpiffeId == "" {
		return nil, status.Error(codes.InvalidArgument, "ban agent: spiffe_id is required")
	}
	if err := s.cfg.Store.BanNode(ctx, req.SpiffeId); err != nil {
		return nil, storeError("ban agent "+req.SpiffeId, err)
	}
	s.refreshCatalog(ctx, "ban")
	s.cfg.Logger.Warn("agent banned", "agent_id", req.SpiffeId)
	return &api.BanAgentResponse{}, nil
}
