package adminapi

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/nodeattest"
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
		case err == nil && n.Banned:
			return nil, status.Errorf(codes.FailedPrecondition, "agent %s is banned; evict it first to lift the ban (signet server agent evict --spiffe-id %s)", req.SpiffeId, req.SpiffeId)
		case err == nil && s.cfg.Now().Before(n.ExpiresAt):
			return nil, status.Errorf(codes.FailedPrecondition, "agent %s is attested (its SVID expires at %s); evict it first (signet server agent evict --spiffe-id %s) or choose another ID",
				req.SpiffeId, n.ExpiresAt.UTC().Format(time.RFC3339), req.SpiffeId)
		case err == nil && n.AttestationType != nodeattest.JoinTokenType:
			// An ID keeps its attestation type: the token's attestation
			// would be refused, so say so now rather than at the agent.
			return nil, status.Errorf(codes.FailedPrecondition, "agent %s is recorded as a %s agent (its SVID expired at %s), and an ID keeps its attestation type; evict it first (signet server agent evict --spiffe-id %s) or choose another ID",
				req.SpiffeId, n.AttestationType, n.ExpiresAt.UTC().Format(time.RFC3339), req.SpiffeId)
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
