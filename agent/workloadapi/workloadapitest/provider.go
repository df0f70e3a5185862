package workloadapitest

import (
	"context"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/internal/selector"
)

// Provider is an in-memory cache.Provider. Callers whose selectors include
// all of Match see State; others see State without SVIDs (no identity).
// JWT-SVIDs are signed by CA for the state's SVID IDs.
type Provider struct {
	CA    *CA
	Match []selector.Selector

	mu    sync.Mutex
	state *cache.WorkloadState
	subs  map[*subscription]struct{}
}

var _ cache.Provider = (*Provider)(nil)

// NewProvider returns a Provider serving st to callers matching match.
func NewProvider(ca *CA, st *cache.WorkloadState, match ...selector.Selector) *Provider {
	return &Provider{CA: ca, Match: match, state: st, subs: map[*subscription]struct{}{}}
}

// SetState replaces the state and pushes it to every subscriber.
func (p *Provider) SetState(st *cache.WorkloadState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = st
	for s := range p.subs {
		s.push(p.view(s.selectors))
	}
}

// State returns the current state.
func (p *Provider) State() *cache.WorkloadState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// Pending returns how many subscriptions hold a state their reader has not
// taken yet.
func (p *Provider) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for s := range p.subs {
		n += len(s.ch)
	}
	return n
}

// Subscribers returns how many subscriptions are open.
func (p *Provider) Subscribers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs)
}

func (p *Provider) view(sels []selector.Selector) *cache.WorkloadState {
	if selector.NewSet(sels...).Includes(p.Match) {
		return p.state
	}
	return &cache.WorkloadState{Bundle: p.state.Bundle, JWTBundles: p.state.JWTBundles}
}

// Subscribe implements cache.Provider.
func (p *Provider) Subscribe(sels []selector.Selector) cache.Subscription {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &subscription{p: p, selectors: sels, ch: make(chan *cache.WorkloadState, 1)}
	s.push(p.view(sels))
	p.subs[s] = struct{}{}
	return s
}

// FetchJWTSVIDs implements cache.Provider.
func (p *Provider) FetchJWTSVIDs(_ context.Context, sels []selector.Selector, id spiffeid.ID, audience []string) ([]*jwtsvid.SVID, error) {
	p.mu.Lock()
	st := p.view(sels)
	p.mu.Unlock()
	var out []*jwtsvid.SVID
	for _, x := range st.SVIDs {
		if !id.IsZero() && x.ID != id {
			continue
		}
		svid, err := p.CA.JWTSVID(x.ID, audience, x.Hint)
		if err != nil {
			return nil, err
		}
		out = append(out, svid)
	}
	if len(out) == 0 {
		return nil, cache.ErrNoIdentity
	}
	return out, nil
}

// JWTBundles implements cache.Provider.
func (p *Provider) JWTBundles(sels []selector.Selector) *jwtbundle.Set {
	p.mu.Lock()
	defer p.mu.Unlock()
	return jwtbundle.NewSet(p.view(sels).JWTBundles...)
}

type subscription struct {
	p         *Provider
	selectors []selector.Selector
	ch        chan *cache.WorkloadState
	once      sync.Once
}

// push replaces any unread state with st; called with p.mu held.
func (s *subscription) push(st *cache.WorkloadState) {
	select {
	case <-s.ch:
	default:
	}
	s.ch <- st
}

func (s *subscription) Updates() <-chan *cache.WorkloadState { return s.ch }

func (s *subscription) Close() {
	s.once.Do(func() {
		s.p.mu.Lock()
		defer s.p.mu.Unlock()
		delete(s.p.subs, s)
		close(s.ch)
	})
}
