package cache

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/internal/selector"
)

// JWTMinter has the server mint a JWT-SVID for an entry.
type JWTMinter func(ctx context.Context, entryID string, audience []string) (*jwtsvid.SVID, error)

// Options configure a Cache.
type Options struct {
	// TrustDomain is the agent's own trust domain.
	TrustDomain spiffeid.TrustDomain
	// Dir is where the cache persists entries, bundles, SVIDs and keys
	// (0700 directory, 0600 file). Empty disables persistence.
	Dir string
	// MintJWT mints JWT-SVIDs on demand; nil makes FetchJWTSVIDs fail.
	MintJWT JWTMinter
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Cache holds the SVIDs of every entry the agent serves and pushes each
// workload's state to its subscribers. It implements Provider.
type Cache struct {
	opts Options

	mu      sync.Mutex
	records map[string]*record
	// index holds every record under its rarest selector only: an entry can
	// match a workload only if that selector is among the workload's, so a
	// lookup walks the workload's selectors and never visits an entry twice.
	index     map[selector.Selector][]*record
	own       *spiffebundle.Bundle
	federated map[spiffeid.TrustDomain]*spiffebundle.Bundle
	// subIndex holds every subscription under each of its selectors.
	subIndex   map[selector.Selector]map[*subscription]struct{}
	subs       map[*subscription]struct{}
	expiry     *time.Timer
	lastChange time.Time
	closed     bool

	jwts *jwtCache
	disk *persister
}

// record is one entry and its current SVID (nil until signed).
type record struct {
	entry *Entry
	key   selector.Selector
	svid  *x509svid.SVID
	// keyDER is svid's private key as PKCS#8, encoded once when the SVID
	// arrives: every push and every persist would otherwise re-encode it.
	keyDER []byte
}

// EntrySVID is an entry with its current X509-SVID, as the manager sees it.
type EntrySVID struct {
	Entry Entry
	SVID  *x509svid.SVID // nil when none is cached
}

var _ Provider = (*Cache)(nil)

// New returns a cache. When opts.Dir holds a persisted cache it is loaded,
// keeping only SVIDs that have not expired, so the agent serves at once.
func New(opts Options) (*Cache, error) {
	if opts.TrustDomain.IsZero() {
		return nil, fmt.Errorf("cache: trust domain is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		opts:      opts,
		records:   make(map[string]*record),
		index:     make(map[selector.Selector][]*record),
		federated: make(map[spiffeid.TrustDomain]*spiffebundle.Bundle),
		subIndex:  make(map[selector.Selector]map[*subscription]struct{}),
		subs:      make(map[*subscription]struct{}),
		jwts:      newJWTCache(),
	}
	if opts.Dir != "" {
		c.disk = newPersister(opts.Dir, c.snapshotForDisk, opts.Logger)
		st, err := c.disk.load(opts.TrustDomain, opts.Now())
		if err != nil {
			return nil, err
		}
		if st != nil {
			c.restore(st)
		}
		c.disk.start()
	}
	return c, nil
}

// Close stops background work and writes the cache to disk one last time.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.expiry != nil {
		c.expiry.Stop()
	}
	for s := range c.subs {
		s.closed = true
		close(s.ch)
	}
	c.subs = map[*subscription]struct{}{}
	c.subIndex = map[selector.Selector]map[*subscription]struct{}{}
	c.mu.Unlock()
	if c.disk != nil {
		return c.disk.stop()
	}
	return nil
}

// Flush writes the cache to disk now (persistence is otherwise coalesced in
// the background).
func (c *Cache) Flush() error {
	if c.disk == nil {
		return nil
	}
	return c.disk.flush()
}

// SetEntries replaces the set of entries the agent serves. SVIDs of entries
// no longer present are dropped, and so is an SVID whose entry now names a
// different SPIFFE ID. Cached JWT-SVIDs of a changed or removed entry are
// dropped.
func (c *Cache) SetEntries(entries []Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var changed []*Entry
	next := make(map[string]*record, len(entries))
	for i := range entries {
		e := cloneEntry(&entries[i])
		e.Selectors = selector.Sort(e.Selectors)
		if old, ok := c.records[e.ID]; ok {
			if old.entry.equal(e) {
				next[e.ID] = old
				continue
			}
			changed = append(changed, old.entry, e)
			// Cached JWT-SVIDs were minted for the old entry (its SPIFFE
			// ID, TTL); serving them would hand out the old identity.
			c.jwts.dropEntry(e.ID)
			rec := &record{entry: e, svid: old.svid, keyDER: old.keyDER}
			if rec.svid != nil && rec.svid.ID != e.SPIFFEID {
				rec.svid, rec.keyDER = nil, nil
			}
			next[e.ID] = rec
			continue
		}
		changed = append(changed, e)
		next[e.ID] = &record{entry: e}
	}
	for id, old := range c.records {
		if _, ok := next[id]; !ok {
			changed = append(changed, old.entry)
			c.jwts.dropEntry(id)
		}
	}
	if len(changed) == 0 {
		return
	}
	c.records = next
	c.reindex()
	c.changedLocked(changed)
}

// reindex files every record under its rarest selector.
func (c *Cache) reindex() {
	freq := make(map[selector.Selector]int)
	for _, r := range c.records {
		for _, s := range r.entry.Selectors {
			freq[s]++
		}
	}
	c.index = make(map[selector.Selector][]*record, len(freq))
	for _, r := range c.records {
		if len(r.entry.Selectors) == 0 {
			continue // an entry without selectors matches nothing
		}
		key := r.entry.Selectors[0]
		for _, s := range r.entry.Selectors[1:] {
			if freq[s] < freq[key] {
				key = s
			}
		}
		r.key = key
		c.index[key] = append(c.index[key], r)
	}
}

// SetBundles replaces the own trust domain's bundle and the federated ones.
func (c *Cache) SetBundles(own *spiffebundle.Bundle, federated []*spiffebundle.Bundle) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fed := make(map[spiffeid.TrustDomain]*spiffebundle.Bundle, len(federated))
	for _, b := range federated {
		if b.TrustDomain() != c.opts.TrustDomain {
			fed[b.TrustDomain()] = b
		}
	}
	same := bundleEqual(c.own, own) && len(fed) == len(c.federated)
	if same {
		for td, b := range fed {
			if !bundleEqual(c.federated[td], b) {
				same = false
				break
			}
		}
	}
	if same {
		return
	}
	c.own = own
	c.federated = fed
	c.lastChange = c.opts.Now()
	for s := range c.subs {
		s.publish(c.stateLocked(s))
	}
	c.dirtyLocked()
}

// SetTaintedJWTKeys sets the key IDs of the own trust domain's tainted JWT
// keys (forced rotation): cached JWT-SVIDs they signed are dropped, so the
// next fetch mints a new one, and none they sign is cached again.
func (c *Cache) SetTaintedJWTKeys(keyIDs []string) {
	if n := c.jwts.setTainted(keyIDs); n > 0 {
		c.opts.Logger.Info("dropped cached JWT-SVIDs signed with a tainted key", "count", n)
	}
}

func bundleEqual(a, b *spiffebundle.Bundle) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

// PutSVIDs stores freshly signed SVIDs by entry ID. SVIDs for entries the
// cache no longer holds are ignored.
func (c *Cache) PutSVIDs(svids map[string]*x509svid.SVID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var changed []*Entry
	for id, s := range svids {
		r, ok := c.records[id]
		if !ok || s == nil || s.ID != r.entry.SPIFFEID {
			continue
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
		if err != nil {
			c.opts.Logger.Error("refusing SVID whose key cannot be encoded", "entry_id", id, "error", err)
			continue
		}
		r.svid, r.keyDER = s, keyDER
		changed = append(changed, r.entry)
	}
	if len(changed) > 0 {
		c.changedLocked(changed)
	}
}

// Entries returns every entry with its current SVID.
func (c *Cache) Entries() []EntrySVID {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]EntrySVID, 0, len(c.records))
	for _, r := range c.records {
		out = append(out, EntrySVID{Entry: *cloneEntry(r.entry), SVID: r.svid})
	}
	slices.SortFunc(out, func(a, b EntrySVID) int { return compareEntries(&a.Entry, &b.Entry) })
	return out
}

// Bundle returns the own trust domain's bundle, nil before the first sync.
func (c *Cache) Bundle() *spiffebundle.Bundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.own
}

// Bundles returns every bundle the agent holds: the own trust domain's
// first (when known), then the federated ones sorted by trust domain.
func (c *Cache) Bundles() []*spiffebundle.Bundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*spiffebundle.Bundle, 0, 1+len(c.federated))
	if c.own != nil {
		out = append(out, c.own)
	}
	feds := slices.SortedFunc(maps.Values(c.federated), func(a, b *spiffebundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})
	return append(out, feds...)
}

// Identities returns the SPIFFE IDs of every live entry matching a workload
// with these selectors, default first, whether or not its SVID is signed
// yet: who the workload is, where a Subscription says what it is served.
func (c *Cache) Identities(selectors []selector.Selector) []spiffeid.ID {
	sels := selector.Sort(slices.Clone(selectors))
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []spiffeid.ID
	for _, r := range c.matchLocked(selector.NewSet(sels...), sels) {
		out = append(out, r.entry.SPIFFEID)
	}
	return out
}

// Stats describes the cache for health and metrics.
type Stats struct {
	Entries int
	// SVIDs counts cached X509-SVIDs that have not expired.
	SVIDs int
	// LastChange is when entries, SVIDs or bundles last changed.
	LastChange time.Time
	// EarliestExpiry is the soonest NotAfter of those SVIDs (zero when
	// none): renewal at half of each lifetime keeps it far ahead, so one
	// close to now means renewals are failing.
	EarliestExpiry time.Time
}

// Stats returns the cache's counts.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	st := Stats{Entries: len(c.records), LastChange: c.lastChange}
	for _, r := range c.records {
		if usable(r.svid, now) {
			st.SVIDs++
			if exp := r.svid.Certificates[0].NotAfter; st.EarliestExpiry.IsZero() || exp.Before(st.EarliestExpiry) {
				st.EarliestExpiry = exp
			}
		}
	}
	return st
}

// changedLocked pushes the new state to every subscriber one of the changed
// entries matches (before or after the change), re-arms the expiry timer and
// schedules a write to disk.
func (c *Cache) changedLocked(changed []*Entry) {
	c.lastChange = c.opts.Now()
	affected := make(map[*subscription]struct{})
	for _, e := range changed {
		if len(e.Selectors) == 0 {
			continue
		}
		// Every selector of e is in each matching workload's set, so the
		// subscriptions filed under any one of them are the candidates:
		// take the shortest list.
		cands := c.subIndex[e.Selectors[0]]
		for _, sel := range e.Selectors[1:] {
			if m := c.subIndex[sel]; len(m) < len(cands) {
				cands = m
			}
		}
		for s := range cands {
			if s.matches(e) {
				affected[s] = struct{}{}
			}
		}
	}
	for s := range affected {
		s.publish(c.stateLocked(s))
	}
	c.armExpiryLocked()
	c.dirtyLocked()
}

func (c *Cache) dirtyLocked() {
	if c.disk != nil {
		c.disk.markDirty()
	}
}

// armExpiryLocked sets a timer for the earliest SVID or entry expiry, so an
// expired SVID or entry (the server being unreachable) stops being served at
// once.
func (c *Cache) armExpiryLocked() {
	if c.closed {
		return
	}
	now := c.opts.Now()
	var next time.Time
	for _, r := range c.records {
		if r.svid == nil {
			continue
		}
		na := r.svid.Certificates[0].NotAfter
		if r.entry.Expired(now) {
			na = now // dropped on the next run
		} else if ea := r.entry.ExpiresAt; !ea.IsZero() && ea.Before(na) {
			na = ea
		}
		if next.IsZero() || na.Before(next) {
			next = na
		}
	}
	if next.IsZero() {
		return
	}
	d := max(next.Sub(now), 0) + time.Millisecond
	if c.expiry == nil {
		c.expiry = time.AfterFunc(d, c.DropExpired)
		return
	}
	c.expiry.Reset(d)
}

// DropExpired removes SVIDs past their NotAfter, or whose entry has expired,
// and tells the subscribers. It runs on a timer; it is exported for tests
// with a fake clock.
func (c *Cache) DropExpired() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	now := c.opts.Now()
	var changed []*Entry
	for _, r := range c.records {
		if r.svid != nil && (!usable(r.svid, now) || r.entry.Expired(now)) {
			r.svid, r.keyDER = nil, nil
			changed = append(changed, r.entry)
		}
	}
	if len(changed) > 0 {
		c.opts.Logger.Warn("dropped expired workload SVIDs; is the server reachable?", "count", len(changed))
		c.changedLocked(changed)
		return
	}
	c.armExpiryLocked()
}

func usable(s *x509svid.SVID, now time.Time) bool {
	return s != nil && len(s.Certificates) > 0 && now.Before(s.Certificates[0].NotAfter)
}

// Subscribe implements Provider.
func (c *Cache) Subscribe(selectors []selector.Selector) Subscription {
	sels := selector.Sort(slices.Clone(selectors))
	s := &subscription{cache: c, selectors: sels, set: selector.NewSet(sels...), ch: make(chan *WorkloadState, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		s.closed = true
		close(s.ch)
		return s
	}
	c.subs[s] = struct{}{}
	for _, sel := range sels {
		m := c.subIndex[sel]
		if m == nil {
			m = make(map[*subscription]struct{})
			c.subIndex[sel] = m
		}
		m[s] = struct{}{}
	}
	s.publish(c.stateLocked(s))
	return s
}

func (c *Cache) unsubscribe(s *subscription) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.closed {
		return
	}
	delete(c.subs, s)
	for _, sel := range s.selectors {
		if m := c.subIndex[sel]; m != nil {
			delete(m, s)
			if len(m) == 0 {
				delete(c.subIndex, sel)
			}
		}
	}
	s.closed = true
	close(s.ch)
}

// matchLocked returns the live records matching a workload, default first.
func (c *Cache) matchLocked(set selector.Set, sels []selector.Selector) []*record {
	now := c.opts.Now()
	var out []*record
	for _, sel := range sels {
		for _, r := range c.index[sel] {
			if set.Includes(r.entry.Selectors) && !r.entry.Expired(now) {
				out = append(out, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b *record) int { return compareEntries(a.entry, b.entry) })
	return out
}

// dedupHints keeps the first record of each non-empty hint.
func dedupHints(recs []*record) []*record {
	seen := make(map[string]bool)
	out := recs[:0:0]
	for _, r := range recs {
		if h := r.entry.Hint; h != "" {
			if seen[h] {
				continue
			}
			seen[h] = true
		}
		out = append(out, r)
	}
	return out
}

// servedLocked returns the records whose SVIDs a workload is served: live,
// matching, with a usable SVID, hints unique.
func (c *Cache) servedLocked(set selector.Set, sels []selector.Selector) []*record {
	now := c.opts.Now()
	var served []*record
	for _, r := range c.matchLocked(set, sels) {
		if usable(r.svid, now) {
			served = append(served, r)
		}
	}
	return dedupHints(served)
}

// federatedLocked returns the bundles of the trust domains the served
// records federate with, sorted by trust domain, own trust domain excluded.
func (c *Cache) federatedLocked(served []*record) []*spiffebundle.Bundle {
	feds := make(map[spiffeid.TrustDomain]bool)
	for _, r := range served {
		for _, td := range r.entry.FederatesWith {
			feds[td] = true
		}
	}
	tds := make([]spiffeid.TrustDomain, 0, len(feds))
	for td := range feds {
		if _, ok := c.federated[td]; ok && td != c.opts.TrustDomain {
			tds = append(tds, td)
		}
	}
	slices.SortFunc(tds, func(a, b spiffeid.TrustDomain) int { return strings.Compare(a.Name(), b.Name()) })
	out := make([]*spiffebundle.Bundle, 0, len(tds))
	for _, td := range tds {
		out = append(out, c.federated[td])
	}
	return out
}

// stateLocked computes a subscriber's complete state.
func (c *Cache) stateLocked(s *subscription) *WorkloadState {
	served := c.servedLocked(s.set, s.selectors)
	st := &WorkloadState{}
	if c.own != nil {
		st.Bundle = c.own.X509Bundle()
		st.JWTBundles = append(st.JWTBundles, c.own.JWTBundle())
	} else {
		st.Bundle = x509bundle.New(c.opts.TrustDomain)
	}
	for _, r := range served {
		st.SVIDs = append(st.SVIDs, &x509svid.SVID{
			ID:           r.svid.ID,
			Certificates: r.svid.Certificates,
			PrivateKey:   r.svid.PrivateKey,
			Hint:         r.entry.Hint,
		})
		st.KeysDER = append(st.KeysDER, r.keyDER)
		st.Admin = append(st.Admin, r.entry.Admin)
	}
	for _, b := range c.federatedLocked(served) {
		st.FederatedBundles = append(st.FederatedBundles, b.X509Bundle())
		st.JWTBundles = append(st.JWTBundles, b.JWTBundle())
	}
	return st
}

// FetchJWTSVIDs implements Provider. Tokens are cached per entry and
// audience set until half their lifetime has passed.
func (c *Cache) FetchJWTSVIDs(ctx context.Context, selectors []selector.Selector, id spiffeid.ID, audience []string) ([]*jwtsvid.SVID, error) {
	sels := selector.Sort(slices.Clone(selectors))
	c.mu.Lock()
	var entries []*Entry
	for _, r := range dedupHints(c.matchLocked(selector.NewSet(sels...), sels)) {
		if id.IsZero() || r.entry.SPIFFEID == id {
			entries = append(entries, r.entry)
		}
	}
	c.mu.Unlock()
	if len(entries) == 0 {
		return nil, ErrNoIdentity
	}
	if c.opts.MintJWT == nil {
		return nil, fmt.Errorf("fetch JWT-SVID: no minter configured")
	}
	out := make([]*jwtsvid.SVID, 0, len(entries))
	for _, e := range entries {
		svid, err := c.jwts.get(ctx, e.ID, audience, c.opts.Now, c.opts.MintJWT)
		if err != nil {
			return nil, fmt.Errorf("fetch JWT-SVID for %s: %w", e.SPIFFEID, err)
		}
		cp := *svid
		cp.Hint = e.Hint
		out = append(out, &cp)
	}
	return out, nil
}

// JWTBundles implements Provider: the same bundles stateLocked gives a
// subscriber with these selectors.
func (c *Cache) JWTBundles(selectors []selector.Selector) *jwtbundle.Set {
	sels := selector.Sort(slices.Clone(selectors))
	c.mu.Lock()
	defer c.mu.Unlock()
	set := jwtbundle.NewSet()
	if c.own != nil {
		set.Add(c.own.JWTBundle())
	}
	for _, b := range c.federatedLocked(c.servedLocked(selector.NewSet(sels...), sels)) {
		set.Add(b.JWTBundle())
	}
	return set
}

func cloneEntry(e *Entry) *Entry {
	cp := *e
	cp.Selectors = slices.Clone(e.Selectors)
	cp.DNSNames = slices.Clone(e.DNSNames)
	cp.FederatesWith = slices.Clone(e.FederatesWith)
	return &cp
}
