package adminapi

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/store"
)

// PurgeAgents removes the agents whose SVID expired before the given time:
// those that attest again by themselves (x509pop, sshpop, k8s_psat), and
// join-token, aws_iid and gcp_iit agents (trusted on first use) too when
// includeNonReattestable. A banned agent is
// never removed (that would lift its ban), nor one that renewed or
// attested again since it was listed: each removal is one conditional
// write. With dryRun nothing is removed. It returns the agents removed
// (or that would be), sorted; the server's pruning loop calls it too.
func PurgeAgents(ctx context.Context, st store.Store, expiredBefore time.Time, includeNonReattestable, dryRun bool) ([]string, error) {
	nodes, err := st.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range nodes {
		if n.Banned || !n.ExpiresAt.Before(expiredBefore) ||
			!(includeNonReattestable || n.CanReattest || nodeattest.Reattests(n.AttestationType)) {
			continue
		}
		if !dryRun {
			removed, err := st.DeleteExpiredNode(ctx, n.SPIFFEID, expiredBefore)
			if err != nil {
				return out, err
			}
			if !removed {
				continue
			}
		}
		out = append(out, n.SPIFFEID)
	}
	slices.Sort(out)
	return out, nil
}

// PurgeAgents is SPIRE's agent purge over the admin API.
func (s *Service) PurgeAgents(ctx context.Context, req *api.PurgeAgentsRequest) (*api.PurgeAgentsResponse, error) {
	before := time.Unix(req.ExpiredBefore, 0)
	if req.ExpiredBefore <= 0 || before.After(s.cfg.Now()) {
		return nil, status.Errorf(codes.InvalidArgument, "purge agents: expired_before %d must be a Unix time in the past", req.ExpiredBefore)
	}
	purged, err := PurgeAgents(ctx, s.cfg.Store, before, req.IncludeNonReattestable, req.DryRun)
	if len(purged) > 0 && !req.DryRun {
		s.refreshCatalog(ctx, "purge")
		s.cfg.Logger.Warn("agents purged", "count", len(purged), "expired_before", before.UTC(), "agent_ids", purged)
	}
	if err != nil {
		return nil, storeError(fmt.Sprintf("purge agents (%d purged before the failure)", len(purged)), err)
	}
	return &api.PurgeAgentsResponse{Agents: purged}, nil
}
