package cache

import (
	"sync"

	"github.com/signetid/signet/internal/selector"
)

// subscription is one Subscribe call: a workload's selectors and a
// latest-value channel.
type subscription struct {
	cache     *Cache
	selectors []selector.Selector
	set       selector.Set
	ch        chan *WorkloadState

	closeOnce sync.Once
	closed    bool // guarded by cache.mu
}

// Updates yields the latest state.
func (s *subscription) Updates() <-chan *WorkloadState { return s.ch }

// Close releases the subscription and closes Updates.
func (s *subscription) Close() {
	s.closeOnce.Do(func() { s.cache.unsubscribe(s) })
}

// publish replaces any unread state with st. It is called with cache.mu held,
// so there is a single sender and the send after the drain never blocks.
func (s *subscription) publish(st *WorkloadState) {
	if s.closed {
		return
	}
	select {
	case <-s.ch:
	default:
	}
	s.ch <- st
}

// matches reports whether the subscriber's workload matches entry e.
func (s *subscription) matches(e *Entry) bool {
	return s.set.Includes(e.Selectors)
}
