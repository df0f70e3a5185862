package registry

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
)

// Index is an immutable view of all entries, indexed by parent for the
// authorization walk, and downstream entries by SPIFFE ID for the nested
// servers' check. Build one per change of the entry set and share it.
type Index struct {
	byID     map[string]*Entry
	byParent map[spiffeid.ID][]*Entry
	aliases  []*Entry
	// downstream holds only the entries with Downstream set: the check runs
	// on every request of a downstream server.
	downstream map[spiffeid.ID][]*Entry
}

// NewIndex indexes entries. The slice is not copied; do not modify it after.
func NewIndex(entries []Entry) *Index {
	ix := &Index{
		byID:       make(map[string]*Entry, len(entries)),
		byParent:   make(map[spiffeid.ID][]*Entry),
		downstream: make(map[spiffeid.ID][]*Entry),
	}
	for i := range entries {
		e := &entries[i]
		ix.byID[e.ID] = e
		// A node alias is skipped before its downstream flag is read:
		// Validate refuses the pair, but a server of the previous version
		// sharing the store (which knows no downstream) can make a
		// downstream entry a node alias.
		if e.Node {
			ix.aliases = append(ix.aliases, e)
			continue
		}
		ix.byParent[e.ParentID] = append(ix.byParent[e.ParentID], e)
		if e.Downstream {
			ix.downstream[e.SPIFFEID] = append(ix.downstream[e.SPIFFEID], e)
		}
	}
	return ix
}

// Get returns the entry with the given ID.
func (ix *Index) Get(id string) (*Entry, bool) {
	e, ok := ix.byID[id]
	return e, ok
}

// Len is the number of entries indexed.
func (ix *Index) Len() int { return len(ix.byID) }

// Downstream returns an entry for id with Downstream set that has not
// expired at now: the caller holding id's SVID is a downstream server of
// this trust domain. It looks only at the downstream entries of id.
func (ix *Index) Downstream(id spiffeid.ID, now time.Time) (*Entry, bool) {
	for _, e := range ix.downstream[id] {
		if !e.Expired(now) {
			return e, true
		}
	}
	return nil, false
}

// Authorized returns the entries the agent may serve at now: those whose
// parent is the agent's ID, or the ID of a node-alias entry whose selectors
// the agent's node selectors include (DESIGN.md's rule, and nothing wider:
// an entry's own ID never makes it a parent, so a workload entry that happens
// to carry another agent's ID cannot hand this agent that agent's entries).
// Expired entries are skipped. The result has no duplicates.
func (ix *Index) Authorized(agentID spiffeid.ID, nodeSelectors []selector.Selector, now time.Time) []*Entry {
	out, _ := ix.AuthorizedUntil(agentID, nodeSelectors, now)
	return out
}

// AuthorizedUntil is Authorized, plus the time the answer next changes by
// itself: the earliest expiry of a returned entry or of a node alias that
// grants some (zero if none expires). Callers that push the set wake then.
func (ix *Index) AuthorizedUntil(agentID spiffeid.ID, nodeSelectors []selector.Selector, now time.Time) ([]*Entry, time.Time) {
	var until time.Time
	expires := func(e *Entry) {
		if !e.ExpiresAt.IsZero() && (until.IsZero() || e.ExpiresAt.Before(until)) {
			until = e.ExpiresAt
		}
	}
	parents := []spiffeid.ID{agentID}
	nodeSet := selector.NewSet(nodeSelectors...)
	for _, alias := range ix.aliases {
		if !alias.Expired(now) && nodeSet.Includes(alias.Selectors) && alias.SPIFFEID != agentID {
			parents = append(parents, alias.SPIFFEID)
			expires(alias)
		}
	}
	seen := make(map[string]bool)
	var out []*Entry
	for _, p := range parents {
		for _, e := range ix.byParent[p] {
			if seen[e.ID] || e.Expired(now) {
				continue
			}
			seen[e.ID] = true
			out = append(out, e)
			expires(e)
		}
	}
	return out, until
}
