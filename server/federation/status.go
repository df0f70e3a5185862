package federation

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// RefreshStatus is how fetching one federated trust domain's bundle has
// gone on this server since it started: what an operator alerts on, since
// a bundle that stops refreshing goes stale while the old one is kept.
type RefreshStatus struct {
	TrustDomain spiffeid.TrustDomain
	// LastSuccess is when a fetch last succeeded (zero if none has).
	LastSuccess time.Time
	// Failures counts failed fetches; ConsecutiveFailures those since the
	// last success.
	Failures, ConsecutiveFailures uint64
	// LastError is the last failure's message while failures continue.
	LastError string
}

// refreshStatuses holds a RefreshStatus per relationship in force.
type refreshStatuses struct {
	mu sync.Mutex
	m  map[spiffeid.TrustDomain]*RefreshStatus
}

// record notes one fetch of td's bundle.
func (r *refreshStatuses) record(td spiffeid.TrustDomain, now time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[spiffeid.TrustDomain]*RefreshStatus)
	}
	st := r.m[td]
	if st == nil {
		st = &RefreshStatus{TrustDomain: td}
		r.m[td] = st
	}
	if err != nil {
		st.Failures++
		st.ConsecutiveFailures++
		st.LastError = err.Error()
		return
	}
	st.LastSuccess = now
	st.ConsecutiveFailures = 0
	st.LastError = ""
}

// forget drops td's status when its relationship ends.
func (r *refreshStatuses) forget(td spiffeid.TrustDomain) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, td)
}

// RefreshStatuses returns the status of every relationship that has
// fetched (or tried to) since the server started, sorted by trust domain.
func (s *Service) RefreshStatuses() []RefreshStatus {
	s.statuses.mu.Lock()
	defer s.statuses.mu.Unlock()
	out := make([]RefreshStatus, 0, len(s.statuses.m))
	for _, st := range s.statuses.m {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b RefreshStatus) int { return strings.Compare(a.TrustDomain.Name(), b.TrustDomain.Name()) })
	return out
}
