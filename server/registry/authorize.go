package registry

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
)

// Index is an immutable view of all entries, indexed by parent for the
// authorization walk. Build one per change of the entry set and share it.
type Index struct {
	byID     map[string]*Entry
	byParent map[spiffeid.ID][]*Entry
	aliases  []*Entry
}

// NewIndex indexes entries. The slice is not copied; do not modify it after.
func NewIndex(entries []Entry) *Index {
	ix := &Index{
		byID:     make(map[string]*Entry, len(entries)),
		byParent: make(map[spiffeid.ID][]*Entry),
	}
	for i := range entries {
		e := &entries[i]
		ix.byID[e.ID] = e
		if e.Node {
			ix.aliases = append(ix.aliases, e)
			continue
		}
		ix.byParent[e.ParentID] = append(ix.byParent[e.ParentID], e)
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
