package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults applied when a Config field is zero.
const (
	DefaultSVIDTTL = time.Hour
	DefaultJWTTTL  = 5 * time.Minute
)

// upstreamStartWait bounds a due rotation step at start that needs an
// upstream server, when a stored CA can sign meanwhile.
const upstreamStartWait = 10 * time.Second

// caLifeFactor is how many SVID lifetimes a CA lives: the active CA is
// replaced at 1/6 of its life left, so every SVID it signs still gets its
// full TTL.
const caLifeFactor = 6

// Config configures a Manager.
type Config struct {
	// TrustDomain the CA signs for. Required.
	TrustDomain spiffeid.TrustDomain
	// DataDir holds the keys and the rotation state; created 0700. Required.
	DataDir string
	// SVIDTTL is the default X509-SVID lifetime (DefaultSVIDTTL when 0).
	SVIDTTL time.Duration
	// JWTTTL is the default JWT-SVID lifetime (DefaultJWTTTL when 0).
	JWTTTL time.Duration
	// JWTIssuer, when set, is the iss claim of every JWT-SVID, so that OIDC
	// relying parties accept them; empty leaves iss out.
	JWTIssuer string
	// JWTKeyType is the type of every JWT key created from now on (the
	// default, ec-p256, when empty). Keys that exist keep theirs until they
	// retire, except a prepared one, which is replaced.
	JWTKeyType JWTKeyType
	// CATTL is the root CA lifetime; 0 derives it as 6 x SVIDTTL. A value
	// below 6 x SVIDTTL is refused.
	CATTL time.Duration
	// Upstream, when set, signs every new CA certificate: the CA becomes an
	// intermediate and the upstream's roots the trust domain's X.509
	// authorities. Nil means a self-signed root.
	Upstream UpstreamAuthority
	// Clock returns the current time (time.Now when nil); tests inject one.
	Clock func() time.Time
	// Logger receives rotation events (slog.Default when nil). Key material
	// is never logged.
	Logger *slog.Logger
}

// AuthorityKind says what an Authority holds.
type AuthorityKind string

const (
	// KindX509 data is a DER root certificate.
	KindX509 AuthorityKind = "x509"
	// KindJWT data is a PKIX DER public key.
	KindJWT AuthorityKind = "jwt"
)

// Authority is one published trust anchor of this server's CA.
type Authority struct {
	Kind AuthorityKind
	// KeyID is the JWT kid, or the hex SHA-256 of the root's DER.
	KeyID string
	// Data is the root DER (x509: the CA itself, or an upstream authority's
	// root) or PKIX DER public key (jwt).
	Data []byte
	// ExpiresAt is when the authority may be dropped from the bundle: nothing
	// it signed is valid after it.
	ExpiresAt time.Time
	// Tainted is set by an operator (Taint): the authority still verifies,
	// but agents re-sign what it issued at once.
	Tainted bool
}

// Manager owns the CA and JWT keys, rotates them and signs SVIDs. It is safe
// for concurrent use.
type Manager struct {
	td      spiffeid.TrustDomain
	dir     string
	svidTTL time.Duration
	jwtTTL  time.Duration
	jwtIss  string
	jwtType JWTKeyType
	caTTL   time.Duration
	jwtLife time.Duration
	now     func() time.Time
	log     *slog.Logger
	up      UpstreamAuthority

	// Signers read the active authorities without taking mu.
	activeCA  atomic.Pointer[caKey]
	activeJWT atomic.Pointer[jwtKey]

	mu      sync.Mutex // guards x509, jwt and auths; serialises rotation
	x509    slots[caKey]
	jwt     slots[jwtKey]
	auths   []Authority
	upMarks []upstreamMark // guarded by mu; replaced, never changed in place
	retype  bool           // guarded by mu: the next Rotate applies jwtType to a prepared key
	// upBundle is the upstream server's bundle (nested; nil until it is
	// known), upWithdrawn the roots and JWT keys it listed before and no
	// longer does (by withdrawnKey).
	upBundle    *UpstreamBundle      // guarded by mu
	upWithdrawn map[string]Authority // guarded by mu
	upSaved     []byte               // guarded by mu: what upstreamBundleFile holds
	upBundleAt  time.Time            // guarded by mu: when upBundle was set
	changed     chan struct{}
	leaf        leafParts
}

// New loads the CA and JWT keys from cfg.DataDir, creating them on first
// start, and catches up on any rotation step that fell due while the server
// was down.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("ca: trust domain is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("ca: data dir is required")
	}
	if cfg.SVIDTTL < 0 || cfg.JWTTTL < 0 || cfg.CATTL < 0 {
		return nil, errors.New("ca: TTLs must not be negative")
	}
	m := &Manager{
		td:      cfg.TrustDomain,
		dir:     cfg.DataDir,
		svidTTL: cfg.SVIDTTL,
		jwtTTL:  cfg.JWTTTL,
		jwtIss:  cfg.JWTIssuer,
		jwtType: cfg.JWTKeyType,
		caTTL:   cfg.CATTL,
		now:     cfg.Clock,
		log:     cfg.Logger,
		up:      cfg.Upstream,
		changed: make(chan struct{}, 1),

		upWithdrawn: map[string]Authority{},
	}
	if m.svidTTL == 0 {
		m.svidTTL = DefaultSVIDTTL
	}
	if m.jwtTTL == 0 {
		m.jwtTTL = DefaultJWTTTL
	}
	if m.jwtType == "" {
		m.jwtType = JWTKeyECP256
	}
	if _, err := ParseJWTKeyType(string(m.jwtType)); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	minCA := caLifeFactor * m.svidTTL
	if m.caTTL == 0 {
		m.caTTL = minCA
	} else if m.caTTL < minCA {
		return nil, fmt.Errorf("ca: CA TTL %v is less than 6 x SVID TTL (%v): SVIDs would outlive the CA's rotation window", m.caTTL, minCA)
	}
	// A JWT key must also outlive six token lifetimes so it retires with
	// room for its last token.
	m.jwtLife = max(m.caTTL, caLifeFactor*m.jwtTTL)
	if m.now == nil {
		m.now = time.Now
	}
	var err error
	if m.leaf, err = newLeafParts(); err != nil {
		return nil, fmt.Errorf("ca: encode leaf template: %w", err)
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.log = m.log.With("component", "ca", "trust_domain", m.td.Name())

	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca: create data dir %s: %w", m.dir, err)
	}
	if err := m.load(); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	_, remote := m.up.(UpstreamServer)
	if err := m.loadUpstreamBundle(remote); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	// A server whose upstream is another server (nested) and that holds a
	// valid CA starts on it: the upstream may be down, or this server's
	// own SVID not served yet. What is due and fails is retried by Run.
	active := m.x509.active
	stored := remote && active != nil && m.now().Before(active.cert.NotAfter)
	if m.up != nil && !stored {
		if remote {
			if err := m.up.(UpstreamServer).Ready(ctx); err != nil {
				return nil, fmt.Errorf("ca: %w", err)
			}
		}
		// A CA signed now proves the upstream works before the server
		// depends on it, not hours later at the next rotation.
		k, err := newUpstreamCA(ctx, m.up, m.td, m.now(), m.caTTL)
		if err == nil {
			err = m.checkUpstreamRoot(k)
		}
		if err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	// The first rotation applies a changed jwt_key_type, in its one write.
	m.retype = true
	rotateCtx := ctx
	if stored {
		var cancel context.CancelFunc
		rotateCtx, cancel = context.WithTimeout(ctx, upstreamStartWait)
		defer cancel()
	}
	if err := m.Rotate(rotateCtx); err != nil {
		if !stored || ctx.Err() != nil {
			return nil, err
		}
		m.log.Warn("a rotation step failed at start (the upstream server cannot sign now?); starting with the stored CA and retrying",
			"upstream", m.up.(UpstreamServer).ServerAddress(), "error", err, "ca_not_after", active.cert.NotAfter)
	}
	m.warnJWTType()
	return m, nil
}

// TrustDomain returns the trust domain the Manager signs for.
func (m *Manager) TrustDomain() spiffeid.TrustDomain { return m.td }

// SVIDTTL returns the default X509-SVID lifetime.
func (m *Manager) SVIDTTL() time.Duration { return m.svidTTL }

// JWTTTL returns the default JWT-SVID lifetime.
func (m *Manager) JWTTTL() time.Duration { return m.jwtTTL }

// Changed signals after every rotation step (an authority published,
// activated or dropped). Signals coalesce; read Authorities() on receipt.
func (m *Manager) Changed() <-chan struct{} { return m.changed }

// Authorities returns the published set: the active and next root and JWT
// key, and retired ones until they expire. The caller may keep the slice.
func (m *Manager) Authorities() []Authority {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Authority, len(m.auths))
	copy(out, m.auths)
	return out
}

// refreshLocked rebuilds the published set and swaps the active signers.
func (m *Manager) refreshLocked() {
	var auths []Authority
	own := map[string]bool{}
	for _, k := range m.jwt.all() {
		auths = append(auths, Authority{Kind: KindJWT, KeyID: k.kid, Data: k.pubDER, ExpiresAt: k.notAfter, Tainted: k.tainted})
		own[k.kid] = true
	}
	// Revoked here stays out, whoever else still lists it.
	for _, t := range m.jwt.revoked {
		own[t.id] = true
	}
	if m.upBundle != nil {
		auths = append(auths, m.upstreamAuthoritiesLocked(own)...)
	} else {
		auths = append(auths, m.caRootsLocked()...)
	}
	sort.SliceStable(auths, func(i, j int) bool {
		if auths[i].Kind != auths[j].Kind {
			return auths[i].Kind > auths[j].Kind // x509 first
		}
		return auths[i].ExpiresAt.Before(auths[j].ExpiresAt)
	})
	m.auths = auths
	m.activeCA.Store(m.x509.active)
	m.activeJWT.Store(m.jwt.active)
}

// caRootsLocked are the roots of this server's CAs.
func (m *Manager) caRootsLocked() []Authority {
	var auths []Authority
	roots := map[string]int{} // key ID -> index in auths
	for _, k := range m.x509.all() {
		// A root stays published while a CA under it may sign (CAs of one
		// upstream share it), and never past its own expiry.
		for _, r := range k.roots {
			id := rootID(r)
			mark := m.markOf(id)
			if mark != nil && mark.revoked {
				continue
			}
			tainted := k.tainted || mark != nil
			exp := minTime(r.NotAfter, k.cert.NotAfter)
			if i, ok := roots[id]; ok {
				if exp.After(auths[i].ExpiresAt) {
					auths[i].ExpiresAt = exp
				}
				continue
			}
			roots[id] = len(auths)
			// A self-signed CA's taint is its own root's; an upstream root's
			// is the operator's mark on it.
			auths = append(auths, Authority{Kind: KindX509, KeyID: id, Data: r.Raw, ExpiresAt: exp, Tainted: tainted})
		}
	}
	return auths
}

func (m *Manager) notify() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}
