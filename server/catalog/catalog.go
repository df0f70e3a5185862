package catalog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// Snapshot is one consistent, immutable view of the store.
type Snapshot struct {
	Revision int64
	Entries  *registry.Index
	// Nodes are the attested agents by SPIFFE ID.
	Nodes map[string]store.Node
	// Bundles holds the authorities of the own trust domain and of every
	// trust domain an entry federates with, by trust domain name.
	Bundles map[string]Bundle
	// Relationships are the federation relationships kept in the store,
	// sorted by trust domain.
	Relationships []store.FederationRelationship
	// LoadedAt is when the snapshot was read.
	LoadedAt time.Time

	entries []registry.Entry // what Entries indexes, for copy-on-write updates
}

// Bundle is one trust domain's authorities and sequence.
type Bundle struct {
	TrustDomain string
	Authorities []store.Authority
	Sequence    int64
}

// DefaultPollInterval is how often Run compares the store's revision with
// the snapshot's when no Options say otherwise.
const DefaultPollInterval = 5 * time.Second

// Options tune a Catalog; zero values mean the defaults.
type Options struct {
	// PollInterval bounds how long a change whose signal never arrived
	// stays unseen: besides reloading on every store signal, Run checks the
	// store's revision this often (one small query). Signals can be lost:
	// a PostgreSQL LISTEN connection can die silently, or a connection
	// pooler can swallow notifications. Zero means DefaultPollInterval.
	PollInterval time.Duration
}

// Catalog serves the latest snapshot and signals each new one.
type Catalog struct {
	store  store.Store
	td     spiffeid.TrustDomain
	logger *slog.Logger
	poll   time.Duration

	mu      sync.RWMutex
	snap    *Snapshot
	changed chan struct{} // closed when snap is replaced
}

// New loads the first snapshot, with the default Options.
func New(ctx context.Context, st store.Store, td spiffeid.TrustDomain, logger *slog.Logger) (*Catalog, error) {
	return NewWithOptions(ctx, st, td, logger, Options{})
}

// NewWithOptions loads the first snapshot.
func NewWithOptions(ctx context.Context, st store.Store, td spiffeid.TrustDomain, logger *slog.Logger, opts Options) (*Catalog, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	c := &Catalog{store: st, td: td, logger: logger, poll: opts.PollInterval, changed: make(chan struct{})}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Current returns the latest snapshot and a channel closed when a newer one
// replaces it.
func (c *Catalog) Current() (*Snapshot, <-chan struct{}) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.snap, c.changed
}

// Run reloads the snapshot after every store change until ctx ends, and
// checks the store's revision every PollInterval in case a signal was lost.
// Store signals coalesce, so a burst of writes costs a few reloads, not one
// each. A failed reload (store briefly unreachable) is retried every
// second; meanwhile agents keep the last good state.
func (c *Catalog) Run(ctx context.Context) error {
	changes := c.store.Changes(ctx)
	poll := time.NewTicker(c.poll)
	defer poll.Stop()
	// Changes committed between New's load and the subscription above sent
	// their signals to no one: check once now.
	retry := time.After(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changes:
			if !ok {
				return nil
			}
		case <-retry:
		case <-poll.C:
		}
		retry = nil
		if err := c.Refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.logger.Error("reload catalog; retrying", "error", err)
			retry = time.After(time.Second)
		}
	}
}

// Refresh reads the store now and publishes a new snapshot if it changed.
func (c *Catalog) Refresh(ctx context.Context) error {
	rev, err := c.store.Revision(ctx)
	if err != nil {
		return fmt.Errorf("read store revision: %w", err)
	}
	c.mu.RLock()
	same := c.snap != nil && c.snap.Revision == rev
	c.mu.RUnlock()
	if same {
		return nil
	}
	snap, err := c.load(ctx, rev)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.snap != nil && c.snap.Revision >= snap.Revision {
		return nil
	}
	c.snap = snap
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

func (c *Catalog) load(ctx context.Context, rev int64) (*Snapshot, error) {
	entries, err := c.store.ListEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	nodes, err := c.store.ListNodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	rels, err := c.store.ListFederationRelationships(ctx)
	if err != nil {
		return nil, fmt.Errorf("list federation relationships: %w", err)
	}
	snap := &Snapshot{
		Revision:      rev,
		entries:       entries,
		Entries:       registry.NewIndex(entries),
		Nodes:         make(map[string]store.Node, len(nodes)),
		Bundles:       make(map[string]Bundle),
		Relationships: rels,
		LoadedAt:      time.Now(),
	}
	for _, n := range nodes {
		snap.Nodes[n.SPIFFEID] = n
	}
	tds := map[string]bool{c.td.Name(): true}
	for _, e := range entries {
		for _, fed := range e.FederatesWith {
			tds[fed.Name()] = true
		}
	}
	for td := range tds {
		auths, seq, err := c.store.ListAuthorities(ctx, td)
		if err != nil {
			return nil, fmt.Errorf("list authorities of %s: %w", td, err)
		}
		if len(auths) == 0 && td != c.td.Name() {
			continue
		}
		snap.Bundles[td] = Bundle{TrustDomain: td, Authorities: auths, Sequence: seq}
	}
	return snap, nil
}

// EntriesWritten makes an entry write this server just committed, at store
// revision rev (store.WithCommitRevision), visible at once, without the full
// reload that would make n writes cost O(n^2). The snapshot is patched in
// memory only when it is at rev-1: then exactly this write separates it from
// the store as of rev. Otherwise (the snapshot already holds the write, or
// misses others, such as an eviction) it reloads from the store.
func (c *Catalog) EntriesWritten(ctx context.Context, rev int64, upserted []registry.Entry, deleted []string) error {
	c.mu.Lock()
	old := c.snap
	if rev == 0 || old.Revision != rev-1 || !old.knowsBundlesOf(upserted) {
		c.mu.Unlock()
		return c.Refresh(ctx)
	}
	drop := make(map[string]bool, len(upserted)+len(deleted))
	for _, id := range deleted {
		drop[id] = true
	}
	for _, e := range upserted {
		drop[e.ID] = true
	}
	entries := make([]registry.Entry, 0, len(old.entries)+len(upserted))
	for _, e := range old.entries {
		if !drop[e.ID] {
			entries = append(entries, e)
		}
	}
	entries = append(entries, upserted...)
	snap := *old
	snap.Revision, snap.entries, snap.Entries, snap.LoadedAt = rev, entries, registry.NewIndex(entries), time.Now()
	c.snap = &snap
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// knowsBundlesOf reports whether the snapshot already holds the bundle of
// every trust domain the entries federate with (else a reload fetches them).
func (s *Snapshot) knowsBundlesOf(entries []registry.Entry) bool {
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			if _, ok := s.Bundles[td.Name()]; !ok {
				return false
			}
		}
	}
	return true
}

// OwnBundle returns the server's own trust domain bundle from the snapshot.
func (s *Snapshot) OwnBundle(td spiffeid.TrustDomain) Bundle {
	return s.Bundles[td.Name()]
}
