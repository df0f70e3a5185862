package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
)

// Config configures a Client.
type Config struct {
	// ServerAddr is the server's agent API, HOST:PORT.
	ServerAddr  string
	TrustDomain spiffeid.TrustDomain
	// DataDir keeps the agent SVID, its key and the server's bundle.
	DataDir string
	// NodeAttestor gives the evidence of every (re-)attestation: a join
	// token, a Kubernetes projected service account token or the host's
	// machine certificate (x509pop). Nil: the agent
	// can only use a persisted agent SVID.
	NodeAttestor NodeAttestor
	// TrustBundle are the roots that authenticate the server before the
	// agent has learned its bundle (`signet server bundle show`).
	TrustBundle []*x509.Certificate
	// InsecureBootstrap skips server verification for the first Attest when
	// no trust bundle is known. For labs only: it is logged as a warning.
	InsecureBootstrap bool
	// AttestDuration observes how long each attestation takes (optional).
	AttestDuration prometheus.Observer
	// MaxBackoff caps the renewal retry interval (default 30s) before its
	// ±50% jitter: retries come at most 1.5 x MaxBackoff apart.
	MaxBackoff time.Duration
	// CallTimeout bounds each Attest, RenewAgent and MintJWTSVID call
	// (default 30s), so a server that stopped answering cannot hang them.
	CallTimeout time.Duration
	// DialOptions are added to every server connection (tests).
	DialOptions []grpc.DialOption
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultCallTimeout bounds a unary call to the server when no timeout is
// configured.
const DefaultCallTimeout = 30 * time.Second

// keepaliveParams makes a connection to the server notice a silent network
// drop (no RST, no FIN): without it a Sync stream waits forever and a call
// waits for the kernel's TCP retransmission timeout (~15 min). The server
// permits pings every 10s, with or without streams.
var keepaliveParams = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// ServerID is the SPIFFE ID the server's TLS certificate must carry.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "signet", "server")
}

// Client is the agent's authenticated connection to the server.
type Client struct {
	cfg   Config
	store store

	mu   sync.RWMutex
	svid *x509svid.SVID
	// reattestable: the agent renews by attesting again with fresh
	// evidence (the server said so), not with RenewAgent.
	reattestable bool
	bundle       *x509bundle.Bundle
	conn         *grpc.ClientConn
	notReady     error
	used         string // hash of the last join token presented
	// pending is the key presented with a single-use token whose answer
	// never came (a deadline, a dropped connection). The server may have
	// spent the token for that key; the retry presents the same key, which
	// the server then answers again, and no other key could.
	pending *pendingAttestation
	// unused is the persisted agent SVID Start could not use (expired, or
	// no bundle to verify the server with): with its key, evidence trusted
	// on first use attests its ID again.
	unused *x509svid.SVID
	closed bool
	// taintRenewed holds the tainted roots (by DER) the agent SVID was
	// already renewed away from: a server still signing under one (it
	// should not) is asked once, not at every bundle. A taint is never
	// lifted (the root is revoked next), so the set is never pruned.
	taintRenewed map[string]bool

	// renewAt is when Run renews the current SVID (renewalTime), drawn
	// once per SVID.
	renewAt time.Time
	// randN draws uniformly from [0, n): rand.N, but tests replace it.
	randN func(n time.Duration) time.Duration

	kick chan struct{}
	// kickFor is the agent SVID the pending kick asks to replace. Run drops
	// a kick for an SVID replaced since: the refusal of a superseded SVID
	// on the old connection (which can arrive before the answer that
	// superseded it) must not start another renewal.
	kickFor *x509svid.SVID
	// moved is closed when the client moves to a new connection (a new
	// SVID), and replaced by a fresh channel for the next move.
	moved chan struct{}
}

// New returns a Client; Start attests or loads the persisted identity.
func New(cfg Config) (*Client, error) {
	if cfg.ServerAddr == "" {
		return nil, errors.New("client: server address is required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("client: trust domain is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("client: data dir is required")
	}
	if cfg.NodeAttestor == nil {
		cfg.NodeAttestor = JoinToken(func() string { return "" })
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, store: store{dir: cfg.DataDir}, randN: mrand.N[time.Duration], kick: make(chan struct{}, 1), moved: make(chan struct{})}, nil
}

// Start establishes the agent's identity: the persisted agent SVID when it
// is still valid, else a fresh attestation with the join token.
func (c *Client) Start(ctx context.Context) error {
	if err := c.store.ensureDir(); err != nil {
		return err
	}
	roots, err := c.store.loadBundle()
	if err != nil {
		c.cfg.Logger.Warn("ignoring persisted server bundle", "error", err)
	}
	// The persisted bundle follows the server's CA rotations; the configured
	// one is still trusted so an operator can re-bootstrap a moved server.
	roots = appendUnique(roots, c.cfg.TrustBundle...)
	if len(roots) > 0 {
		c.bundle = x509bundle.FromX509Authorities(c.cfg.TrustDomain, roots)
	}
	c.used = c.store.loadUsedToken()

	id, err := c.store.loadSVID()
	if err != nil {
		c.cfg.Logger.Warn("ignoring persisted agent SVID", "error", err)
	}
	svid := id.svid
	now := c.cfg.Now()
	switch {
	case svid == nil:
	case !svid.ID.MemberOf(c.cfg.TrustDomain):
		c.cfg.Logger.Warn("ignoring persisted agent SVID of another trust domain", "agent_id", svid.ID.String())
	case !now.Before(svid.Certificates[0].NotAfter):
		c.cfg.Logger.Warn("persisted agent SVID has expired; attesting again", "agent_id", svid.ID.String(), "expired_at", svid.Certificates[0].NotAfter)
		c.unused = svid
	case c.bundle == nil:
		c.cfg.Logger.Warn("persisted agent SVID found but no server bundle to verify the server; attesting again")
		c.unused = svid
	default:
		c.cfg.Logger.Info("using persisted agent SVID", "agent_id", svid.ID.String(), "expires_at", svid.Certificates[0].NotAfter,
			"reattestable", id.reattestable)
		return c.setIdentity(id, false)
	}
	return c.attest(ctx, false)
}

// Close closes the server connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}

// AgentID is the agent's SPIFFE ID (zero before Start).
func (c *Client) AgentID() spiffeid.ID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.svid == nil {
		return spiffeid.ID{}
	}
	return c.svid.ID
}

// Ready reports nil when the agent holds a valid agent SVID and the server
// has not refused it, else why not.
func (c *Client) Ready() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.notReady != nil {
		return c.notReady
	}
	if c.svid == nil {
		return errors.New("not attested")
	}
	if na := c.svid.Certificates[0].NotAfter; !c.cfg.Now().Before(na) {
		return fmt.Errorf("agent SVID expired at %s", na.Format(time.RFC3339))
	}
	return nil
}

// GetX509SVID returns the current agent SVID (x509svid.Source): every new
// TLS connection presents the newest one.
func (c *Client) GetX509SVID() (*x509svid.SVID, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.svid == nil {
		return nil, errors.New("agent is not attested")
	}
	return c.svid, nil
}

// GetX509BundleForTrustDomain returns the server's current bundle
// (x509bundle.Source).
func (c *Client) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if td != c.cfg.TrustDomain || c.bundle == nil {
		return nil, fmt.Errorf("no bundle for trust domain %q", td)
	}
	return c.bundle, nil
}

// UpdateBundle adopts the own trust domain's bundle the server pushed, so
// the server stays verifiable across CA rotations, and persists it. When
// taint marks the root that issued the agent SVID, the SVID is renewed at
// once rather than at half its lifetime.
func (c *Client) UpdateBundle(b *spiffebundle.Bundle, taint Taint) {
	if b == nil || b.TrustDomain() != c.cfg.TrustDomain || len(b.X509Authorities()) == 0 {
		return
	}
	c.adoptBundle(b)
	c.renewIfTainted(taint)
}

// renewIfTainted kicks a renewal when the agent SVID was issued under a
// tainted root it was not already renewed away from.
func (c *Client) renewIfTainted(taint Taint) {
	c.mu.Lock()
	var root *x509.Certificate
	if c.svid != nil {
		root = taint.IssuerOf(c.svid.Certificates)
	}
	kick := root != nil && !c.taintRenewed[string(root.Raw)]
	if kick {
		if c.taintRenewed == nil {
			c.taintRenewed = make(map[string]bool)
		}
		c.taintRenewed[string(root.Raw)] = true
	}
	svid := c.svid
	c.mu.Unlock()
	if !kick {
		return
	}
	c.cfg.Logger.Info("agent SVID was issued under a tainted authority; renewing it now", "agent_id", svid.ID.String())
	c.renewNow(svid)
}

// adoptBundle makes b's X.509 authorities the roots that verify the server.
func (c *Client) adoptBundle(b *spiffebundle.Bundle) {
	xb := b.X509Bundle()
	c.mu.Lock()
	same := c.bundle != nil && c.bundle.Equal(xb)
	if !same {
		c.bundle = xb
	}
	c.mu.Unlock()
	if same {
		return
	}
	if err := c.store.saveBundle(xb.X509Authorities()); err != nil {
		c.cfg.Logger.Error("persist server bundle", "error", err)
	}
	c.cfg.Logger.Info("server bundle updated", "x509_authorities", len(xb.X509Authorities()))
}

// ReportAuthFailure tells the client that the server refused the agent on
// another call; the client renews (or re-attests) at once, unless the SVID
// it holds when Run takes the request is no longer the one it held now.
func (c *Client) ReportAuthFailure(err error) {
	c.mu.RLock()
	svid := c.svid
	c.mu.RUnlock()
	c.cfg.Logger.Warn("server refused the agent; renewing its SVID now", "error", err)
	c.renewNow(svid)
}

// renewNow has Run replace the agent SVID svid without waiting for its
// renewal time (a pending request already covers this one).
func (c *Client) renewNow(svid *x509svid.SVID) {
	c.mu.Lock()
	c.kickFor = svid
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// kickCurrent reports whether the pending kick is for the SVID held now.
func (c *Client) kickCurrent() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.kickFor == c.svid
}

// Service is the agent API over the current connection: every call uses
// the newest agent SVID.
func (c *Client) Service() api.AgentServiceClient { return service{c} }

func (c *Client) current() (api.AgentServiceClient, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.conn == nil {
		return nil, errNotConnected
	}
	return api.NewAgentServiceClient(c.conn), nil
}

// MintJWTSVID has the server mint a JWT-SVID for an entry (cache.JWTMinter).
func (c *Client) MintJWTSVID(ctx context.Context, entryID string, audience []string) (*jwtsvid.SVID, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	resp, err := c.Service().MintJWTSVID(ctx, &api.MintJWTSVIDRequest{EntryId: entryID, Audience: audience})
	if err != nil {
		return nil, fmt.Errorf("mint JWT-SVID for entry %s: %w", entryID, err)
	}
	svid, err := jwtsvid.ParseInsecure(resp.Token, audience)
	if err != nil {
		return nil, fmt.Errorf("JWT-SVID minted for entry %s: %w", entryID, err)
	}
	return svid, nil
}

// maxKickDelay bounds the random wait before a renewal the server's refusal
// or a taint asked for: a taint or an outage's end reaches every agent at
// once, and their renewals should not all hit the server in the same
// instant. Short, so a taint still takes effect within seconds.
const maxKickDelay = 3 * time.Second

// Run renews the agent SVID at a random point between 50% and 60% of its
// lifetime until ctx ends, and within maxKickDelay when the server refused
// it or its issuing root was tainted.
func (c *Client) Run(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(time.Second),
		backoff.WithMaxInterval(c.cfg.MaxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	var retryAt time.Time // after a failed renewal; zero: none pending
	for {
		at := retryAt
		if at.IsZero() {
			c.mu.RLock()
			at = c.renewAt
			c.mu.RUnlock()
		}
		timer := time.NewTimer(max(at.Sub(c.cfg.Now()), 0))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-c.kick:
			timer.Stop()
			if !c.kickCurrent() {
				c.cfg.Logger.Debug("renewal request dropped: it was for an agent SVID replaced since")
				continue
			}
			delay := c.randN(maxKickDelay)
			c.cfg.Logger.Debug("renewing the agent SVID on request", "in", delay.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
		case <-timer.C:
		}
		if err := c.renewOrReattest(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait := bo.NextBackOff()
			retryAt = c.cfg.Now().Add(wait)
			c.cfg.Logger.Warn("agent SVID renewal failed; retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
			continue
		}
		bo.Reset()
		retryAt = time.Time{}
	}
}

// renewalTime is a point drawn (with randN) uniformly between 50% and 60%
// of leaf's lifetime: agents attested in the same moment (a fleet started
// together, a server back from an outage) drift apart instead of renewing
// together at every rotation after.
func renewalTime(leaf *x509.Certificate, randN func(time.Duration) time.Duration) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := leaf.NotBefore.Add(life / 2)
	if span := life / 10; span > 0 {
		at = at.Add(randN(span))
	}
	return at
}

// renewOrReattest renews the agent SVID: a reattestable agent by attesting
// again with fresh evidence, any other with RenewAgent. When the server
// refuses the renewal (evicted, or it says the agent must re-attest) or the
// SVID has expired, it attests again: with a fresh join token, or reports
// not ready when there is none. A refused re-attestation keeps the current
// SVID, which serves until it expires, and reports not ready.
func (c *Client) renewOrReattest(ctx context.Context) error {
	c.mu.RLock()
	svid, reattestable := c.svid, c.reattestable
	c.mu.RUnlock()
	notAfter := svid.Certificates[0].NotAfter
	var err error
	switch {
	case !c.cfg.Now().Before(notAfter):
		err = fmt.Errorf("agent SVID expired at %s", notAfter.Format(time.RFC3339))
	case reattestable:
		err = c.attest(ctx, true)
		if err != nil && !transient(err) {
			c.cfg.Logger.Warn("agent SVID cannot be renewed: re-attestation refused; serving the current SVID until it expires",
				"reason", err, "expires_at", notAfter)
			c.setNotReady(fmt.Errorf("re-attestation to renew the agent SVID refused (serving the current one until it expires at %s): %w",
				notAfter.Format(time.RFC3339), err))
		}
		return err
	default:
		if err = c.renew(ctx); err == nil {
			return nil
		}
		if status.Code(err) != codes.PermissionDenied {
			// The server is unreachable or busy: keep the SVID, retry.
			return err
		}
	}
	c.cfg.Logger.Warn("agent SVID cannot be renewed; attesting again", "reason", err)
	if aerr := c.attest(ctx, false); aerr != nil {
		c.setNotReady(fmt.Errorf("%v; re-attestation: %w", err, aerr))
		return aerr
	}
	return nil
}

// transient reports whether err is the server being unreachable or busy,
// worth retrying as it is; anything else refused the agent or its evidence.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}

func (c *Client) setNotReady(err error) {
	c.mu.Lock()
	c.notReady = err
	c.mu.Unlock()
}

func newCSR() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate agent key: %w", err)
	}
	csr, err := csrFor(key)
	return key, csr, err
}

func csrFor(key *ecdsa.PrivateKey) ([]byte, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create agent CSR: %w", err)
	}
	return csr, nil
}

// lastSVID is the agent's last SVID, valid or expired: the current one,
// else the persisted one Start did not use; nil if none.
func (c *Client) lastSVID() *x509svid.SVID {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.svid != nil {
		return c.svid
	}
	return c.unused
}

// lastKeyFor is the key of the agent's last SVID if that SVID is for
// agentID, else nil.
func (c *Client) lastKeyFor(agentID string) *ecdsa.PrivateKey {
	last := c.lastSVID()
	if last == nil || last.ID.String() != agentID {
		return nil
	}
	k, _ := last.PrivateKey.(*ecdsa.PrivateKey)
	return k
}

// renew asks the server for a fresh agent SVID over mutual TLS.
func (c *Client) renew(ctx context.Context) error {
	key, csr, err := newCSR()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	resp, err := c.Service().RenewAgent(ctx, &api.RenewAgentRequest{Csr: csr})
	if err != nil {
		return fmt.Errorf("renew agent SVID: %w", err)
	}
	id, bundle, taint, err := c.parseResponse(resp, key)
	if err != nil {
		return fmt.Errorf("renew agent SVID: %w", err)
	}
	c.cfg.Logger.Info("agent SVID renewed", "agent_id", id.svid.ID.String(), "expires_at", id.svid.Certificates[0].NotAfter)
	if err := c.setIdentity(id, true); err != nil {
		return err
	}
	// After setIdentity, so a taint is checked against the new SVID.
	c.UpdateBundle(bundle, taint)
	return nil
}

// attest proves the node with the node attestor's evidence and adopts the
// returned SVID and bundle; renewal says the attestation renews a
// reattestable agent's SVID (for the log).
func (c *Client) attest(ctx context.Context, renewal bool) error {
	key, csr, ev, hash, err := c.attestKey(ctx)
	if err != nil {
		return err
	}
	tlsConf, err := c.bootstrapTLS()
	if err != nil {
		return err
	}
	conn, err := c.dial(tlsConf)
	if err != nil {
		return fmt.Errorf("dial server %s: %w", c.cfg.ServerAddr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
	defer cancel()
	start := time.Now()
	req := &api.AttestRequest{AttestationType: ev.Type, Payload: ev.Payload, Csr: csr}
	resp, err := api.NewAgentServiceClient(conn).Attest(ctx, req)
	if id, refused := api.AttestedWithAnotherKey(err); refused && ev.TrustOnFirstUse {
		// The server knows the agent of id by another key; if it is this
		// agent's (its last SVID is for id), attest again with
		// that key. The evidence is not bound to a key, so it stays as
		// made. A fresh key goes first, so a key is only ever presented
		// for the ID it was certified for (not, say, for another
		// instance's ID by a data directory copied into a machine image).
		if last := c.lastKeyFor(id); last != nil {
			c.cfg.Logger.Info("the server knows this agent by the key of its last SVID; attesting with it", "agent_id", id)
			if req.Csr, err = csrFor(last); err != nil {
				return err
			}
			key = last
			resp, err = api.NewAgentServiceClient(conn).Attest(ctx, req)
		}
	}
	if c.cfg.AttestDuration != nil {
		c.cfg.AttestDuration.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		if code := status.Code(err); ev.SingleUse && (code == codes.PermissionDenied || code == codes.InvalidArgument) {
			c.markTokenUsed(hash)
		}
		return fmt.Errorf("attest to %s: %w", c.cfg.ServerAddr, err)
	}
	if ev.SingleUse {
		c.markTokenUsed(hash)
	}
	id, bundle, taint, err := c.parseResponse(resp, key)
	if err != nil {
		return fmt.Errorf("attest to %s: %w", c.cfg.ServerAddr, err)
	}
	svid := id.svid
	if bundle == nil || len(bundle.X509Authorities()) == 0 {
		return fmt.Errorf("attest to %s: the server sent no bundle", c.cfg.ServerAddr)
	}
	// The server's own bundle replaces the bootstrap one: it is what the
	// server's certificates will chain to from now on.
	xb := bundle.X509Bundle()
	if _, _, err := x509svid.Verify(svid.Certificates, xb); err != nil {
		return fmt.Errorf("attest to %s: agent SVID does not chain to the server's bundle: %w", c.cfg.ServerAddr, err)
	}
	c.mu.Lock()
	c.bundle = xb
	c.mu.Unlock()
	if err := c.store.saveBundle(xb.X509Authorities()); err != nil {
		return err
	}
	msg := "agent attested"
	if renewal {
		msg = "agent SVID renewed by re-attestation"
	}
	c.cfg.Logger.Info(msg, "agent_id", svid.ID.String(), "expires_at", svid.Certificates[0].NotAfter, "reattestable", id.reattestable,
		"took", time.Since(start).Round(time.Millisecond))
	if err := c.setIdentity(id, true); err != nil {
		return err
	}
	c.renewIfTainted(taint)
	return nil
}

// pendingAttestation is a key and CSR presented with the token of hash.
type pendingAttestation struct {
	hash string
	key  *ecdsa.PrivateKey
	csr  []byte
}

// attestKey returns the key, CSR and evidence of an attestation (and, for
// a single-use token, the token's hash). The key and CSR are those of an
// unanswered attestation with the same token, else new ones, remembered
// for a single-use token until it is answered. The evidence is made for
// the CSR's key, which it may be bound to (x509pop).
func (c *Client) attestKey(ctx context.Context) (*ecdsa.PrivateKey, []byte, Evidence, string, error) {
	c.mu.RLock()
	pending, used := c.pending, c.used
	c.mu.RUnlock()
	var key *ecdsa.PrivateKey
	var csr []byte
	var err error
	if pending != nil {
		key, csr = pending.key, pending.csr
	} else if key, csr, err = newCSR(); err != nil {
		return nil, nil, Evidence{}, "", err
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey) // the CSR's SubjectPublicKeyInfo
	if err != nil {
		return nil, nil, Evidence{}, "", fmt.Errorf("encode agent key: %w", err)
	}
	ev, err := c.cfg.NodeAttestor.Evidence(ctx, spki)
	if err != nil {
		return nil, nil, Evidence{}, "", err
	}
	if !ev.SingleUse {
		return key, csr, ev, "", nil
	}
	hash := tokenHash(string(ev.Payload))
	if used == hash {
		return nil, nil, Evidence{}, "", errors.New("the join token was already used; join tokens are single-use: give a fresh --join-token")
	}
	if pending == nil || pending.hash != hash {
		// A new token gets a new key (a token's evidence is not bound to it).
		if pending != nil {
			if key, csr, err = newCSR(); err != nil {
				return nil, nil, Evidence{}, "", err
			}
		}
		c.mu.Lock()
		c.pending = &pendingAttestation{hash: hash, key: key, csr: csr}
		c.mu.Unlock()
	}
	return key, csr, ev, hash, nil
}

func (c *Client) markTokenUsed(hash string) {
	c.mu.Lock()
	c.used = hash
	c.pending = nil
	c.mu.Unlock()
	if err := c.store.saveUsedToken(hash); err != nil {
		c.cfg.Logger.Error("record used join token", "error", err)
	}
}

// bootstrapTLS is the TLS configuration for Attest: server verified against
// the known bundle, no client certificate.
func (c *Client) bootstrapTLS() (*tls.Config, error) {
	c.mu.RLock()
	haveBundle := c.bundle != nil
	c.mu.RUnlock()
	var conf *tls.Config
	switch {
	case haveBundle:
		conf = tlsconfig.TLSClientConfig(c, tlsconfig.AuthorizeID(ServerID(c.cfg.TrustDomain)))
	case c.cfg.InsecureBootstrap:
		c.cfg.Logger.Warn("INSECURE BOOTSTRAP: the server's certificate is NOT verified for this attestation; "+
			"anyone able to intercept the connection can impersonate the server and receive the join token. "+
			"Use --trust-bundle outside labs.", "server", c.cfg.ServerAddr)
		conf = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // explicit, logged lab opt-in
	default:
		return nil, errors.New("no trust bundle to verify the server: give --trust-bundle (PEM from `signet server bundle show`) or, in labs, --insecure-bootstrap")
	}
	conf.MinVersion = tls.VersionTLS13
	return conf, nil
}

// parseResponse checks an attest or renew response: the leaf carries key's
// public key and an ID in the agent's trust domain. The bundle, with its
// taint marks, is nil when the server sent none.
func (c *Client) parseResponse(resp *api.AttestResponse, key *ecdsa.PrivateKey) (identity, *spiffebundle.Bundle, Taint, error) {
	if len(resp.SvidChain) == 0 {
		return identity{}, nil, Taint{}, errors.New("the server sent no agent SVID")
	}
	certs := make([]*x509.Certificate, 0, len(resp.SvidChain))
	for _, der := range resp.SvidChain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return identity{}, nil, Taint{}, fmt.Errorf("parse agent SVID: %w", err)
		}
		certs = append(certs, cert)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return identity{}, nil, Taint{}, errors.New("agent SVID is not for the requested key")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return identity{}, nil, Taint{}, fmt.Errorf("agent SVID: %w", err)
	}
	if !id.MemberOf(c.cfg.TrustDomain) {
		return identity{}, nil, Taint{}, fmt.Errorf("agent SVID %s is not in trust domain %s", id, c.cfg.TrustDomain)
	}
	var bundle *spiffebundle.Bundle
	var taint Taint
	if resp.Bundle != nil {
		if bundle, taint, err = OwnBundleFromProto(resp.Bundle); err != nil {
			return identity{}, nil, Taint{}, err
		}
		if bundle.TrustDomain() != c.cfg.TrustDomain {
			return identity{}, nil, Taint{}, fmt.Errorf("server bundle is for %s, not %s", bundle.TrustDomain(), c.cfg.TrustDomain)
		}
	}
	return identity{svid: &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, reattestable: resp.Reattestable}, bundle, taint, nil
}

// setIdentity adopts id, persists it when asked, and moves to a new
// connection that presents its SVID. The old connection is closed after a
// grace period so in-flight calls finish. After an in-place renewal the
// server accepts the previous SVID until the agent first presents the new
// one; after a re-attestation, not at all: a call refused as superseded is
// the caller's to retry, on the new connection.
func (c *Client) setIdentity(id identity, persist bool) error {
	if persist {
		if err := c.store.saveSVID(id); err != nil {
			return err
		}
	}
	tlsConf := tlsconfig.MTLSClientConfig(c, c, tlsconfig.AuthorizeID(ServerID(c.cfg.TrustDomain)))
	tlsConf.MinVersion = tls.VersionTLS13
	conn, err := c.dial(tlsConf)
	if err != nil {
		return fmt.Errorf("dial server %s: %w", c.cfg.ServerAddr, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return errors.New("client is closed")
	}
	old := c.conn
	c.svid, c.reattestable = id.svid, id.reattestable
	c.renewAt = renewalTime(id.svid.Certificates[0], c.randN)
	c.conn = conn
	c.notReady = nil
	close(c.moved)
	c.moved = make(chan struct{})
	c.mu.Unlock()
	if old != nil {
		time.AfterFunc(5*time.Second, func() { old.Close() })
	}
	return nil
}

// ConnectionMoved returns a channel closed when the client next moves to a
// new connection. A long-lived stream (Sync) takes it before it opens and
// reopens when it closes: the stream's connection closes after a grace
// period, and the server would otherwise see the old SVID on it until then.
func (c *Client) ConnectionMoved() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.moved
}

// dial returns a connection to the server with tlsConf and keepalive.
func (c *Client) dial(tlsConf *tls.Config) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
		grpc.WithKeepaliveParams(keepaliveParams),
	}, c.cfg.DialOptions...)
	return grpc.NewClient(c.cfg.ServerAddr, opts...)
}

func appendUnique(dst []*x509.Certificate, certs ...*x509.Certificate) []*x509.Certificate {
	for _, c := range certs {
		if !slices.ContainsFunc(dst, c.Equal) {
			dst = append(dst, c)
		}
	}
	return dst
}
