package adminapi

import (
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// match says whether have (an entry's or agent's selectors or trust
// domains, without repeats) satisfies want under mode, SPIRE's match modes.
// An empty want matches everything: the filter is off.
func match[T comparable](have, want []T, mode api.MatchMode) bool {
	if len(want) == 0 {
		return true
	}
	in := func(xs []T) func(T) bool { return func(x T) bool { return slices.Contains(xs, x) } }
	switch mode {
	case api.MatchMode_MATCH_EXACT:
		return len(dedupe(want)) == len(dedupe(have)) && all(have, in(want))
	case api.MatchMode_MATCH_SUBSET:
		// Non-empty, as SPIRE's: an entry that federates with no one (an
		// agent without selectors) is not one of those filtered for.
		return len(have) > 0 && all(have, in(want))
	case api.MatchMode_MATCH_ANY:
		return slices.ContainsFunc(have, in(want))
	default: // MATCH_SUPERSET
		return all(want, in(have))
	}
}

func all[T any](xs []T, f func(T) bool) bool {
	for _, x := range xs {
		if !f(x) {
			return false
		}
	}
	return true
}

func dedupe[T comparable](xs []T) []T {
	var out []T
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func checkMode(what string, m api.MatchMode) error {
	if _, ok := api.MatchMode_name[int32(m)]; !ok {
		return fmt.Errorf("%s: unknown match mode %d", what, m)
	}
	return nil
}

// entryFilter is a checked ListEntriesRequest.
type entryFilter struct {
	req           *api.ListEntriesRequest
	selectors     []selector.Selector
	federatesWith []spiffeid.TrustDomain
}

func newEntryFilter(req *api.ListEntriesRequest) (*entryFilter, error) {
	for name, id := range map[string]string{"spiffe_id": req.SpiffeId, "parent_id": req.ParentId} {
		if id != "" {
			if _, err := ids.ParseID(id); err != nil {
				return nil, fmt.Errorf("%s filter: %w", name, err)
			}
		}
	}
	f := &entryFilter{req: req}
	var err error
	if f.selectors, err = registry.SelectorsFromProto(req.Selectors); err != nil {
		return nil, err
	}
	for _, name := range req.FederatesWith {
		td, err := ids.ParseTrustDomain(name)
		if err != nil {
			return nil, fmt.Errorf("federates_with filter: %w", err)
		}
		f.federatesWith = append(f.federatesWith, td)
	}
	if err := checkMode("match_selectors_on", req.MatchSelectorsOn); err != nil {
		return nil, err
	}
	if err := checkMode("match_federates_with_on", req.MatchFederatesWithOn); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *entryFilter) keep(e *registry.Entry) bool {
	r := f.req
	return (r.SpiffeId == "" || e.SPIFFEID.String() == r.SpiffeId) &&
		(r.ParentId == "" || e.ParentID.String() == r.ParentId) &&
		(r.Hint == "" || e.Hint == r.Hint) &&
		(r.Downstream == nil || e.Downstream == *r.Downstream) &&
		match(e.Selectors, f.selectors, r.MatchSelectorsOn) &&
		match(e.FederatesWith, f.federatesWith, r.MatchFederatesWithOn)
}

// agentFilter is a checked ListAgentsRequest.
type agentFilter struct {
	req       *api.ListAgentsRequest
	selectors []selector.Selector
}

func newAgentFilter(req *api.ListAgentsRequest) (*agentFilter, error) {
	f := &agentFilter{req: req}
	var err error
	if f.selectors, err = registry.SelectorsFromProto(req.Selectors); err != nil {
		return nil, err
	}
	if req.ExpiresBefore < 0 {
		return nil, fmt.Errorf("expires_before %d is negative (Unix seconds)", req.ExpiresBefore)
	}
	return f, checkMode("match_selectors_on", req.MatchSelectorsOn)
}

func (f *agentFilter) keep(n *store.Node) bool {
	r := f.req
	return (r.AttestationType == "" || n.AttestationType == r.AttestationType) &&
		(r.Banned == nil || n.Banned == *r.Banned) &&
		(r.CanReattest == nil || n.CanReattest == *r.CanReattest) &&
		(r.ExpiresBefore == 0 || n.ExpiresAt.Unix() < r.ExpiresBefore) &&
		match(n.Selectors, f.selectors, r.MatchSelectorsOn)
}
