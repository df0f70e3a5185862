package store

import (
	"context"
	"sync"
)

// broadcaster fans change signals out to subscribers. Each subscriber has a
// buffer of one, so a slow one sees one pending signal for any number of
// changes and never blocks a writer.
type broadcaster struct {
	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	closed bool
	done   chan struct{}
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: make(map[chan struct{}]struct{}), done: make(chan struct{})}
}

// subscribe returns a channel that receives signals until ctx ends or the
// broadcaster closes, and is then closed.
func (b *broadcaster) subscribe(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(ch)
		return ch
	}
	b.subs[ch] = struct{}{}
	go func() {
		select {
		case <-ctx.Done():
		case <-b.done:
		}
		b.remove(ch)
	}()
	return ch
}

func (b *broadcaster) remove(ch chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[ch]; ok {
		delete(b.subs, ch)
		close(ch)
	}
}

func (b *broadcaster) signal() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending
		}
	}
}

// close ends every subscription.
func (b *broadcaster) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	close(b.done)
	// Subscription goroutines remove and close their channels; do it here
	// too so every channel is closed when close returns.
	b.mu.Lock()
	for ch := range b.subs {
		delete(b.subs, ch)
		close(ch)
	}
	b.mu.Unlock()
}
