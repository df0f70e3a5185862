package server

import (
	"context"
	"time"

	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/store"
)

// Housekeeping cadences: expired entries go within a minute (agents have
// dropped them already, at their expiry; this keeps listings and the store
// true), expired join tokens and stale agents hourly.
const (
	pruneEntriesEvery = time.Minute
	pruneHourly       = time.Hour
)

// housekeepingLoop deletes what has expired for good: entries past their
// expires_at (SPIRE's pruning of registration entries), join tokens, and,
// with prune_attested_nodes_expired_for, agents whose SVID expired that
// long ago (SPIRE's). Each server of a shared store runs it; every delete
// is conditional, so they do not step on one another.
func (s *Server) housekeepingLoop(ctx context.Context) error {
	t := time.NewTicker(pruneEntriesEvery)
	defer t.Stop()
	var lastHourly time.Time
	for {
		now := time.Now()
		s.pruneEntries(ctx, now)
		if now.Sub(lastHourly) >= pruneHourly {
			lastHourly = now
			if err := s.store.PruneJoinTokens(ctx, now); err != nil && ctx.Err() == nil {
				s.logger.Warn("prune expired join tokens", "error", err)
			}
			s.pruneAgents(ctx, now)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Server) pruneEntries(ctx context.Context, now time.Time) {
	var rev int64
	ids, err := s.store.PruneEntries(store.WithCommitRevision(ctx, &rev), now)
	if err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("prune expired entries", "error", err)
		}
		return
	}
	if len(ids) == 0 {
		return
	}
	s.logger.Info("expired entries pruned", "count", len(ids), "entry_ids", ids)
	if err := s.catalog.EntriesWritten(ctx, rev, nil, ids); err != nil {
		s.logger.Warn("refresh catalog after pruning entries", "error", err)
	}
}

func (s *Server) pruneAgents(ctx context.Context, now time.Time) {
	if s.cfg.PruneAgentsExpiredFor == 0 {
		return
	}
	before := now.Add(-s.cfg.PruneAgentsExpiredFor)
	ids, err := adminapi.PurgeAgents(ctx, s.store, before, s.cfg.PruneNonReattestable, false)
	if len(ids) > 0 {
		s.logger.Warn("expired agents pruned", "count", len(ids), "expired_before", before.UTC(), "agent_ids", ids)
		if err := s.catalog.Refresh(ctx); err != nil {
			s.logger.Warn("refresh catalog after pruning agents", "error", err)
		}
	}
	if err != nil && ctx.Err() == nil {
		s.logger.Warn("prune expired agents", "error", err)
	}
}
