package manager

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/client"
	"github.com/signetid/signet/server/api"
)

// Config configures a Manager.
type Config struct {
	// Server is the agent API, authenticated as the agent.
	Server api.AgentServiceClient
	Cache  *cache.Cache
	// TrustDomain is the agent's own trust domain.
	TrustDomain spiffeid.TrustDomain
	// OnBundle receives every own-trust-domain bundle the server pushes,
	// with its taint marks (the client verifies the server with it across
	// CA rotations, and renews its SVID when its issuer is tainted).
	OnBundle func(*spiffebundle.Bundle, client.Taint)
	// OnAuthFailure is told when the server refuses the agent on Sync
	// (evicted, or a superseded SVID), so the client can renew or re-attest.
	OnAuthFailure func(error)
	// ConnectionMoved, when set, gives a channel closed when the agent API
	// client moves to a new connection (client.Client.ConnectionMoved):
	// the Sync stream then reopens on it at once, quietly, instead of
	// failing when the old connection closes.
	ConnectionMoved func() <-chan struct{}
	// BatchSize caps the CSRs per BatchSignX509SVID call (default 500).
	BatchSize int
	// Workers bounds the goroutines generating keys (default GOMAXPROCS).
	Workers int
	// KeyType is the type of the workload keys (default KeyECP256).
	KeyType KeyType
	// MaxBackoff caps the retry interval when the server is unreachable
	// (default 30s).
	MaxBackoff time.Duration
	// CallTimeout bounds each BatchSignX509SVID call (default 30s): a call
	// to a server that stopped answering would otherwise freeze rotation.
	CallTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now     func() time.Time
	Logger  *slog.Logger
	Metrics *Metrics
}

// Metrics are the manager's Prometheus metrics.
type Metrics struct {
	Signed      *prometheus.CounterVec // by reason
	SyncUpdates prometheus.Counter
	LastSync    prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Signed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signet_agent_svid_signings_total",
			Help: "Workload X509-SVIDs signed, by reason: new, rotation (half lifetime passed), expired, spiffe_id_changed, dns_names_changed, issuer_untrusted, authority_tainted (issued under a root an operator tainted).",
		}, []string{"reason"}),
		SyncUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "signet_agent_sync_updates_total",
			Help: "Sync messages received from the server.",
		}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "signet_agent_last_sync_timestamp_seconds",
			Help: "Unix time of the last Sync message from the server.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Signed, m.SyncUpdates, m.LastSync)
	}
	return m
}

// Manager keeps the cache in step with the server.
type Manager struct {
	cfg Config

	mu       sync.Mutex
	lastSync time.Time
	synced   chan struct{} // closed at the first applied sync
	once     sync.Once

	// taint is the latest own bundle's; taintChanged asks the next
	// reconcile to log how many SVIDs it found tainted. Both belong to
	// Run's goroutine (apply and reconcile).
	taint        client.Taint
	taintChanged bool
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Server == nil || cfg.Cache == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("manager: server, cache and trust domain are required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, synced: make(chan struct{})}, nil
}

// LastSync is when the last Sync message was applied (zero before).
func (m *Manager) LastSync() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastSync
}

// Synced is closed once the first Sync message has been applied.
func (m *Manager) Synced() <-chan struct{} { return m.synced }

// Run syncs until ctx ends. It returns nil on cancellation; server errors
// are retried, never returned.
func (m *Manager) Run(ctx context.Context) error {
	updates := make(chan *api.SyncResponse, 1)
	var wg sync.WaitGroup
	wg.Go(func() { m.syncLoop(ctx, updates) })
	defer wg.Wait()

	retry := newBackoff(m.cfg.MaxBackoff)
	timer := time.NewTimer(0) // reconcile what the persisted cache holds at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u := <-updates:
			if err := m.apply(u); err != nil {
				m.cfg.Logger.Error("apply sync from server", "error", err)
			}
		case <-timer.C:
		}
		next, err := m.reconcile(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d := retry.NextBackOff()
			m.cfg.Logger.Warn("signing workload SVIDs failed; serving cached SVIDs and retrying", "error", err, "retry_in", d.Round(time.Millisecond))
			if next.IsZero() || m.cfg.Now().Add(d).Before(next) {
				next = m.cfg.Now().Add(d)
			}
		} else {
			retry.Reset()
		}
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(m.cfg.Now()), 0))
		}
	}
}

func newBackoff(maxInterval time.Duration) *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(200*time.Millisecond),
		backoff.WithMaxInterval(maxInterval),
		backoff.WithMaxElapsedTime(0),
	)
}

// syncLoop keeps one Sync stream open, reconnecting with backoff, and hands
// the newest message to updates (a slow reconcile skips stale ones: every
// message is the complete state).
func (m *Manager) syncLoop(ctx context.Context, updates chan *api.SyncResponse) {
	bo := newBackoff(m.cfg.MaxBackoff)
	for {
		err := m.syncOnce(ctx, updates, bo)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errConnectionMoved) {
			m.cfg.Logger.Debug("sync stream moving to the agent's new connection")
			continue
		}
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
			if m.cfg.OnAuthFailure != nil {
				m.cfg.OnAuthFailure(err)
			}
		}
		d := bo.NextBackOff()
		m.cfg.Logger.Warn("sync stream to server ended; serving cached SVIDs and reconnecting", "error", err, "retry_in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// errConnectionMoved ends a Sync stream whose connection the client has
// replaced.
var errConnectionMoved = errors.New("agent API connection moved")

func (m *Manager) syncOnce(ctx context.Context, updates chan *api.SyncResponse, bo backoff.BackOff) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var moved <-chan struct{} // nil: never
	if m.cfg.ConnectionMoved != nil {
		moved = m.cfg.ConnectionMoved() // before the stream opens, so no move is missed
	}
	go func() {
		select {
		case <-moved:
			cancel()
		case <-ctx.Done():
		}
	}()
	ended := func(err error) error {
		select {
		case <-moved:
			return errConnectionMoved
		default:
			return err
		}
	}
	stream, err := m.cfg.Server.Sync(ctx, &api.SyncRequest{})
	if err != nil {
		return ended(fmt.Errorf("open sync stream: %w", err))
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return ended(fmt.Errorf("sync stream: %w", err))
		}
		bo.Reset()
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.SyncUpdates.Inc()
		}
		select {
		case <-updates: // superseded
		default:
		}
		updates <- resp
	}
}

// apply puts a Sync message's entries and bundles into the cache.
func (m *Manager) apply(u *api.SyncResponse) error {
	var errs []error
	own, taint, err := client.OwnBundleFromProto(u.Bundle)
	if err == nil && own.TrustDomain() != m.cfg.TrustDomain {
		err = fmt.Errorf("bundle is for %s, not %s", own.TrustDomain(), m.cfg.TrustDomain)
	}
	if err != nil {
		// Keep the bundle we have rather than serve none.
		errs = append(errs, fmt.Errorf("own bundle: %w", err))
		own, taint = m.cfg.Cache.Bundle(), m.taint
	}
	var feds []*spiffebundle.Bundle
	for _, fb := range u.FederatedBundles {
		b, err := client.BundleFromProto(fb)
		if err != nil {
			errs = append(errs, fmt.Errorf("federated bundle: %w", err))
			continue
		}
		feds = append(feds, b)
	}
	entries := make([]cache.Entry, 0, len(u.Entries))
	for _, pe := range u.Entries {
		if pe.Node {
			continue // node-alias entries name agents, not workloads
		}
		e, err := entryFromProto(pe)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, e)
	}
	if own != nil {
		m.cfg.Cache.SetBundles(own, feds)
		m.cfg.Cache.SetTaintedJWTKeys(taint.JWTKeyIDs)
		if m.cfg.OnBundle != nil {
			m.cfg.OnBundle(own, taint)
		}
	}
	if !taint.Equal(m.taint) {
		m.taint, m.taintChanged = taint, true
	}
	m.cfg.Cache.SetEntries(entries)
	now := m.cfg.Now()
	m.mu.Lock()
	m.lastSync = now
	m.mu.Unlock()
	if m.cfg.Metrics != nil {
		m.cfg.Metrics.LastSync.Set(float64(now.UnixNano()) / 1e9)
	}
	m.once.Do(func() { close(m.synced) })
	m.cfg.Logger.Debug("applied sync", "revision", u.Revision, "entries", len(entries), "federated_bundles", len(feds))
	return errors.Join(errs...)
}

// pending is one entry waiting for its SVID.
type pending struct {
	entry  cache.Entry
	reason reason
	key    crypto.Signer
	csr    []byte
}

// reconcile signs every entry that is due and returns when the next one
// will be (zero if none). An error means some entries are still due.
func (m *Manager) reconcile(ctx context.Context) (time.Time, error) {
	now := m.cfg.Now()
	trusted := issuersOf(m.cfg.Cache.Bundle())
	var todo []*pending
	var next time.Time
	tainted := 0
	for _, es := range m.cfg.Cache.Entries() {
		if es.Entry.Expired(now) {
			continue // the server would refuse it, failing the whole batch
		}
		if r := due(&es.Entry, es.SVID, trusted, m.taint, now); r != none {
			todo = append(todo, &pending{entry: es.Entry, reason: r})
			if r == reasonTainted {
				tainted++
			}
			continue
		}
		if at := RotateAt(es.SVID.Certificates[0]); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if m.taintChanged {
		m.taintChanged = false
		if len(m.taint.X509Authorities) > 0 {
			m.cfg.Logger.Info("the bundle has a tainted authority; re-signing the workload SVIDs issued under it now",
				"count", tainted, "tainted_x509_authorities", len(m.taint.X509Authorities))
		}
	}
	if len(todo) == 0 {
		return next, nil
	}
	start := time.Now()
	signed, err := m.sign(ctx, todo)
	m.cfg.Logger.Info("signed workload SVIDs", "count", signed, "due", len(todo), "took", time.Since(start).Round(time.Millisecond))
	if signed > 0 {
		// Newly signed SVIDs rotate later than anything still pending.
		return m.reconcileNext(next, err)
	}
	return next, err
}

// reconcileNext recomputes the next rotation after a signing round.
func (m *Manager) reconcileNext(next time.Time, err error) (time.Time, error) {
	for _, es := range m.cfg.Cache.Entries() {
		if es.SVID == nil {
			continue
		}
		if at := RotateAt(es.SVID.Certificates[0]); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next, err
}

// sign generates keys and CSRs (in parallel, chunk by chunk) and sends
// each chunk as one BatchSignX509SVID call while the next chunk's keys are
// generated. It returns how many SVIDs it put in the cache.
func (m *Manager) sign(ctx context.Context, todo []*pending) (int, error) {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		errs   []error
		signed int
	)
	for start := 0; start < len(todo); start += m.cfg.BatchSize {
		chunk := todo[start:min(start+m.cfg.BatchSize, len(todo))]
		if err := m.generate(ctx, chunk); err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			break
		}
		wg.Go(func() {
			n, err := m.signChunk(ctx, chunk)
			mu.Lock()
			defer mu.Unlock()
			signed += n
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return signed, errors.Join(errs...)
}

// generate fills in keys and CSRs using up to Workers goroutines: key
// generation and CSR signing dominate the agent's share of the work.
func (m *Manager) generate(ctx context.Context, chunk []*pending) error {
	workers := min(m.cfg.Workers, len(chunk))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(chunk); i += workers {
				if ctx.Err() != nil {
					errs[w] = ctx.Err()
					return
				}
				p := chunk[i]
				key, err := m.cfg.KeyType.generate()
				if err != nil {
					errs[w] = fmt.Errorf("generate key for entry %s: %w", p.entry.ID, err)
					return
				}
				csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
				if err != nil {
					errs[w] = fmt.Errorf("create CSR for entry %s: %w", p.entry.ID, err)
					return
				}
				p.key, p.csr = key, csr
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (m *Manager) signChunk(ctx context.Context, chunk []*pending) (int, error) {
	req := &api.BatchSignX509SVIDRequest{Requests: make([]*api.X509SVIDRequest, len(chunk))}
	byID := make(map[string]*pending, len(chunk))
	for i, p := range chunk {
		req.Requests[i] = &api.X509SVIDRequest{EntryId: p.entry.ID, Csr: p.csr}
		byID[p.entry.ID] = p
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.CallTimeout)
	defer cancel()
	resp, err := m.cfg.Server.BatchSignX509SVID(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("batch-sign %d CSRs: %w", len(chunk), err)
	}
	svids := make(map[string]*x509svid.SVID, len(resp.Svids))
	var errs []error
	for _, s := range resp.Svids {
		p, ok := byID[s.EntryId]
		if !ok {
			errs = append(errs, fmt.Errorf("server returned an SVID for entry %s, which was not requested", s.EntryId))
			continue
		}
		svid, err := svidFromProto(s, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		svids[p.entry.ID] = svid
		if m.cfg.Metrics != nil {
			m.cfg.Metrics.Signed.WithLabelValues(string(p.reason)).Inc()
		}
	}
	if missing := len(chunk) - len(svids) - len(errs); missing > 0 {
		errs = append(errs, fmt.Errorf("server returned no SVID for %d of %d entries", missing, len(chunk)))
	}
	m.cfg.Cache.PutSVIDs(svids)
	return len(svids), errors.Join(errs...)
}

// svidFromProto checks a signed SVID against its request: the leaf must
// carry our public key and the entry's SPIFFE ID.
func svidFromProto(s *api.X509SVID, p *pending) (*x509svid.SVID, error) {
	if len(s.CertChain) == 0 {
		return nil, fmt.Errorf("SVID for entry %s: empty chain", p.entry.ID)
	}
	certs := make([]*x509.Certificate, 0, len(s.CertChain))
	for _, der := range s.CertChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("SVID for entry %s: %w", p.entry.ID, err)
		}
		certs = append(certs, c)
	}
	if pub, ok := p.key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("SVID for entry %s: certificate is not for the requested key", p.entry.ID)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, fmt.Errorf("SVID for entry %s: %w", p.entry.ID, err)
	}
	if id != p.entry.SPIFFEID {
		return nil, fmt.Errorf("SVID for entry %s: has ID %s, want %s", p.entry.ID, id, p.entry.SPIFFEID)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: p.key}, nil
}
