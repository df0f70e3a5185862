package nested

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/nested/bundlev1"
	"github.com/signetid/signet/server/nested/svidv1"
	"github.com/signetid/signet/server/nested/types"
)

// Defaults applied when an UpstreamConfig field is zero.
const (
	// DefaultPollInterval is SPIRE's: a root the upstream prepares is
	// published half a CA life before it signs, so seconds do not matter.
	DefaultPollInterval = 5 * time.Second
	// DefaultStartTimeout bounds how long a first start waits for this
	// server's first SVID.
	DefaultStartTimeout = 2 * time.Minute
)

// UpstreamConfig is the `upstream_authority "signet" { ... }` block.
type UpstreamConfig struct {
	TrustDomain spiffeid.TrustDomain
	// ServerAddress is the upstream server's agent API, host:port.
	ServerAddress string
	// WorkloadAPISocket is the Workload API of an agent of the upstream
	// server on this host, where this server gets the X509-SVID of its
	// downstream entry, as go-spiffe dials it: unix:///abs/path.
	WorkloadAPISocket string
	// ServerID is the upstream's TLS identity (Signet's server ID when zero).
	ServerID spiffeid.ID
	// PollInterval is how often the upstream's bundle is fetched.
	PollInterval time.Duration
	// StartTimeout bounds how long Ready waits for the first SVID.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// Upstream is a downstream server's UpstreamAuthority: another Signet
// server of the trust domain signs its CAs.
type Upstream struct {
	cfg UpstreamConfig

	// ready closes once source holds this server's first SVID (or the
	// source failed: srcErr); stop ends the source's stream.
	ready  chan struct{}
	source *workloadapi.X509Source
	srcErr error
	stop   context.CancelFunc

	mu         sync.Mutex
	conn       *grpc.ClientConn // nil until the first call
	connSerial string           // of the SVID conn's handshake presented
	published  map[string]bool  // kids the upstream holds: acknowledged, or listed in its bundle
	lastSeq    uint64           // of the last bundle applied
	olderSince time.Time        // since when fetches are older than lastSeq (zero: they are not)
	closed     bool
}

var _ ca.UpstreamServer = (*Upstream)(nil)

// staleBundleWait is how long bundles older than the last applied are
// skipped: well past the catalog poll (5 s) of a lagging upstream peer.
const staleBundleWait = 30 * time.Second

// callTimeout bounds each call to the upstream: a black-holed connection
// must not hold the CA's lock for long.
const callTimeout = 30 * time.Second

// ServerAddress is the upstream server's address.
func (u *Upstream) ServerAddress() string { return u.cfg.ServerAddress }

// Dial starts following this server's X509-SVID on the local agent's
// Workload API and returns at once: a server with a stored CA starts
// without the upstream. Calls that need the upstream wait for the first
// SVID (Ready at most StartTimeout, the others at most callTimeout) and
// connect over mTLS, authorizing
// only the upstream's server ID, with the SVID current at the time: the
// connection is made again whenever the SVID rotates.
func Dial(ctx context.Context, cfg UpstreamConfig) (*Upstream, error) {
	if cfg.ServerAddress == "" || cfg.WorkloadAPISocket == "" {
		return nil, errors.New(`upstream_authority "signet": server_address and workload_api_socket are required`)
	}
	if cfg.ServerID.IsZero() {
		cfg.ServerID = spiffeid.RequireFromPath(cfg.TrustDomain, ca.ServerPath)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "upstream_authority", "upstream", cfg.ServerAddress)
	// The source outlives ctx (the server's start): Close ends it.
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	u := &Upstream{cfg: cfg, ready: make(chan struct{}), stop: stop, published: map[string]bool{}}
	go u.follow(bg)
	return u, nil
}

// follow opens the Workload API stream and waits for the first SVID.
func (u *Upstream) follow(ctx context.Context) {
	defer close(u.ready)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(u.cfg.WorkloadAPISocket)))
	if err != nil {
		u.srcErr = err
		return
	}
	svid, err := src.GetX509SVID()
	if err == nil && !svid.ID.MemberOf(u.cfg.TrustDomain) {
		err = fmt.Errorf("the Workload API at %s gives %s, not an ID of trust domain %q: nested servers share one trust domain",
			u.cfg.WorkloadAPISocket, svid.ID, u.cfg.TrustDomain.Name())
	}
	if err != nil {
		src.Close()
		u.srcErr = err
		u.cfg.Logger.Error("upstream_authority \"signet\": cannot use the Workload API", "error", err)
		return
	}
	u.source = src
	u.cfg.Logger.Info("got this server's SVID from the Workload API", "spiffe_id", svid.ID.String())
}

// Ready waits, at most StartTimeout, for this server's first SVID.
func (u *Upstream) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.StartTimeout)
	defer cancel()
	_, err := u.connect(ctx)
	return err
}

// Close releases the connection and the Workload API stream.
func (u *Upstream) Close() error {
	u.stop()
	<-u.ready
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	var errs []error
	if u.conn != nil {
		errs = append(errs, u.conn.Close())
	}
	if u.source != nil {
		errs = append(errs, u.source.Close())
	}
	return errors.Join(errs...)
}

// connect returns a connection made with the current SVID, after waiting
// (as long as ctx allows) for the first one.
func (u *Upstream) connect(ctx context.Context) (*grpc.ClientConn, error) {
	select {
	case <-u.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf(`upstream_authority "signet": no X509-SVID from the Workload API at %s yet (is an agent of the upstream server running there, and an entry with downstream set registered for this server?): %w`,
			u.cfg.WorkloadAPISocket, ctx.Err())
	}
	if u.source == nil {
		return nil, fmt.Errorf(`upstream_authority "signet": Workload API at %s: %w`, u.cfg.WorkloadAPISocket, u.srcErr)
	}
	svid, err := u.source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf(`upstream_authority "signet": %w`, err)
	}
	serial := svid.Certificates[0].SerialNumber.String()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, errors.New(`upstream_authority "signet": closed`)
	}
	if u.conn != nil && u.connSerial == serial {
		return u.conn, nil
	}
	// The upstream checks the SVID a connection's handshake presented at
	// every call: a rotated SVID needs a new connection.
	creds := grpccredentials.MTLSClientCredentials(u.source, u.source, tlsconfig.AuthorizeID(u.cfg.ServerID))
	conn, err := grpc.NewClient(u.cfg.ServerAddress, grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return nil, fmt.Errorf(`upstream_authority "signet": server_address %q: %w`, u.cfg.ServerAddress, err)
	}
	if old := u.conn; old != nil {
		// Calls in flight on it finish first.
		time.AfterFunc(callTimeout, func() { old.Close() })
	}
	u.conn, u.connSerial = conn, serial
	return conn, nil
}

// MintX509CA has the upstream server sign the CA: the CSR proves
// possession of key; the upstream decides the subject and may shorten the
// lifetime to fit its own CA's.
func (u *Upstream) MintX509CA(ctx context.Context, tmpl *x509.Certificate, key crypto.Signer) ([]*x509.Certificate, []*x509.Certificate, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: tmpl.Subject, URIs: tmpl.URIs}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA CSR: %w", err)
	}
	ttl := time.Until(tmpl.NotAfter).Round(time.Second)
	// Under the CA's lock: no long wait for a first SVID here (Ready).
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	conn, err := u.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	resp, err := svidv1.NewSVIDClient(conn).NewDownstreamX509CA(ctx, &svidv1.NewDownstreamX509CARequest{Csr: csr, PreferredTtl: int32(min(ttl/time.Second, 1<<31-1))})
	if err != nil {
		return nil, nil, fmt.Errorf("upstream server %s: NewDownstreamX509CA: %w", u.cfg.ServerAddress, err)
	}
	chain, err := parseCerts(resp.GetCaCertChain())
	if err != nil {
		return nil, nil, fmt.Errorf("upstream server's CA chain: %w", err)
	}
	roots, err := parseCerts(resp.GetX509Authorities())
	if err != nil {
		return nil, nil, fmt.Errorf("upstream server's X.509 authorities: %w", err)
	}
	return chain, roots, nil
}

// Run keeps this server and the upstream in step until ctx ends: now and
// every PollInterval it publishes the JWT keys of ownKeys the upstream
// lacks, then fetches the upstream's bundle and hands it to apply.
// Failures (apply's too) are logged once per kind of failure and retried
// at the next tick; the last bundle stays in use.
func (u *Upstream) Run(ctx context.Context, ownKeys func() []ca.Authority, apply func(context.Context, ca.UpstreamBundle) error) error {
	t := time.NewTicker(u.cfg.PollInterval)
	defer t.Stop()
	var failing string
	for {
		err := u.sync(ctx, ownKeys, apply)
		switch {
		case ctx.Err() != nil:
		case err != nil && err.Error() != failing:
			u.cfg.Logger.Warn("keep in step with the upstream server; retrying, with its last bundle in use", "error", err, "retry_in", u.cfg.PollInterval)
			failing = err.Error()
		case err == nil && failing != "":
			u.cfg.Logger.Info("in step with the upstream server again")
			failing = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (u *Upstream) sync(ctx context.Context, ownKeys func() []ca.Authority, apply func(context.Context, ca.UpstreamBundle) error) error {
	if err := u.PublishJWTKeys(ctx, ownKeys()); err != nil {
		return err
	}
	b, err := u.fetchBundle(ctx)
	if err != nil {
		return err
	}
	converted, err := bundleFromProto(u.cfg.TrustDomain, b)
	if err != nil {
		return err
	}
	if u.stale(b.GetSequenceNumber(), time.Now()) {
		return nil
	}
	u.markPublished(converted.JWT)
	return apply(ctx, converted)
}

// stale reports whether a bundle of sequence seq, fetched at now, is to be
// skipped. Upstream servers sharing a store answer from their own
// catalogs: one that has not loaded the newest bundle yet would make
// authorities just added look withdrawn. Older bundles are skipped for
// staleBundleWait; answered for longer, they are the upstream's (a
// restored store) and taken.
func (u *Upstream) stale(seq uint64, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if seq >= u.lastSeq {
		u.lastSeq, u.olderSince = seq, time.Time{}
		return false
	}
	if u.olderSince.IsZero() {
		u.olderSince = now
	}
	if now.Sub(u.olderSince) < staleBundleWait {
		return true
	}
	u.lastSeq, u.olderSince = seq, time.Time{}
	return false
}

func (u *Upstream) fetchBundle(ctx context.Context) (*types.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, max(u.cfg.PollInterval, 10*time.Second))
	defer cancel()
	conn, err := u.connect(ctx)
	if err != nil {
		return nil, err
	}
	b, err := bundlev1.NewBundleClient(conn).GetBundle(ctx, &bundlev1.GetBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetBundle: %w", err)
	}
	return b, nil
}

// markPublished records keys the upstream lists, so they are not sent back.
func (u *Upstream) markPublished(keys []ca.Authority) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, k := range keys {
		u.published[k.KeyID] = true
	}
}

// PublishJWTKeys publishes, in order, each of keys the upstream does not
// hold yet, so tokens this server signs verify everywhere in the trust
// domain. Tainted keys are not published. It stops at the first failure;
// the next call goes on from there.
func (u *Upstream) PublishJWTKeys(ctx context.Context, keys []ca.Authority) error {
	for _, k := range keys {
		u.mu.Lock()
		done := u.published[k.KeyID]
		u.mu.Unlock()
		if done || k.Kind != ca.KindJWT || k.Tainted {
			continue
		}
		if err := u.Publish(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// Publish publishes one JWT key to the upstream server.
func (u *Upstream) Publish(ctx context.Context, k ca.Authority) error {
	req := &bundlev1.PublishJWTAuthorityRequest{JwtAuthority: &types.JWTKey{KeyId: k.KeyID, PublicKey: k.Data}}
	if !k.ExpiresAt.IsZero() {
		req.JwtAuthority.ExpiresAt = k.ExpiresAt.Unix()
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	conn, err := u.connect(ctx)
	if err != nil {
		return err
	}
	if _, err := bundlev1.NewBundleClient(conn).PublishJWTAuthority(ctx, req); err != nil {
		return fmt.Errorf("publish JWT key %s to the upstream server %s: %w", k.KeyID, u.cfg.ServerAddress, err)
	}
	u.markPublished([]ca.Authority{k})
	u.cfg.Logger.Info("published a JWT key to the upstream server", "kid", k.KeyID, "expires_at", k.ExpiresAt)
	return nil
}

func parseCerts(ders [][]byte) ([]*x509.Certificate, error) {
	if len(ders) == 0 {
		return nil, errors.New("none")
	}
	out := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}
