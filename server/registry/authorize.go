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

// Authorized returns the entries the agent may serve at now: those parented
// to the agent's ID or to a node-alias entry whose selectors the agent's node
// selectors include, and, transitively, entries parented to those entries'
// IDs. Expired entries are skipped. The result has no duplicates.
func (ix *Index) Authorized(agentID spiffeid.ID, nodeSelectors []selector.Selector, now time.Time) []*Entry {
	parents := []spiffeid.ID{agentID}
	nodeSet := selector.NewSet(nodeSelectors...)
	for _, alias := range ix.aliases {
		if !alias.Expired(now) && nodeSet.Includes(alias.Selectors) {
			parents = append(parents, alias.SPIFFEID)
		}
	}
	seenParent := make(map[spiffeid.ID]bool, len(parents))
	seenEntry := make(map[string]bool)
	var out []*Entry
	for len(parents) > 0 {
		p := parents[0]
		parents = parents[1:]
		if seenParent[p] {
			continue
		}
		seenParent[p] = true
		for _, e := range ix.byParent[p] {
			if seenEntry[e.ID] || e.Expired(now) {
				continue
			}
			seenEntry[e.ID] = true
			out = append(out, e)
			// An entry may itself parent further entries (downstream chains).
			parents = append(parents, e.SPIFFEID)
		}
	}
	return out
}
