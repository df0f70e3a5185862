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
	// DefaultStartTimeout bounds the wait for this server's own SVID.
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
	// StartTimeout bounds the wait for the first SVID at Dial.
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// Upstream is a downstream server's UpstreamAuthority: another Signet
// server of the trust domain signs its CAs.
type Upstream struct {
	cfg    UpstreamConfig
	source *workloadapi.X509Source
	conn   *grpc.ClientConn
	svid   svidv1.SVIDClient
	bundle bundlev1.BundleClient

	mu        sync.Mutex
	published map[string]bool // kids the upstream holds: acknowledged, or listed in its bundle
}

var _ ca.UpstreamServer = (*Upstream)(nil)

// ServerAddress is the upstream server's address.
func (u *Upstream) ServerAddress() string { return u.cfg.ServerAddress }

// Dial waits for this server's X509-SVID from the local agent, then
// connects to the upstream server over mTLS, authorizing only its server
// ID. It fails with a reason when no SVID comes within StartTimeout.
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
	wait, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	source, err := workloadapi.NewX509Source(wait, workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.WorkloadAPISocket)))
	if err != nil {
		return nil, fmt.Errorf(`upstream_authority "signet": no X509-SVID from the Workload API at %s within %v (is an agent of the upstream server running there, and an entry with downstream set registered for this server?): %w`,
			cfg.WorkloadAPISocket, cfg.StartTimeout, err)
	}
	svid, err := source.GetX509SVID()
	if err != nil {
		source.Close()
		return nil, fmt.Errorf(`upstream_authority "signet": %w`, err)
	}
	if !svid.ID.MemberOf(cfg.TrustDomain) {
		source.Close()
		return nil, fmt.Errorf(`upstream_authority "signet": the Workload API at %s gives %s, not an ID of trust domain %q: nested servers share one trust domain`,
			cfg.WorkloadAPISocket, svid.ID, cfg.TrustDomain.Name())
	}
	creds := grpccredentials.MTLSClientCredentials(source, source, tlsconfig.AuthorizeID(cfg.ServerID))
	conn, err := grpc.NewClient(cfg.ServerAddress, grpc.WithTransportCredentials(creds))
	if err != nil {
		source.Close()
		return nil, fmt.Errorf(`upstream_authority "signet": server_address %q: %w`, cfg.ServerAddress, err)
	}
	cfg.Logger.Info("connected to the upstream server", "spiffe_id", svid.ID.String())
	return &Upstream{cfg: cfg, source: source, conn: conn, svid: svidv1.NewSVIDClient(conn),
		bundle: bundlev1.NewBundleClient(conn), published: map[string]bool{}}, nil
}

// Close releases the connection and the Workload API stream.
func (u *Upstream) Close() error {
	return errors.Join(u.conn.Close(), u.source.Close())
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
	resp, err := u.svid.NewDownstreamX509CA(ctx, &svidv1.NewDownstreamX509CARequest{Csr: csr, PreferredTtl: int32(min(ttl/time.Second, 1<<31-1))})
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
	u.markPublished(converted.JWT)
	return apply(ctx, converted)
}

func (u *Upstream) fetchBundle(ctx context.Context) (*types.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, max(u.cfg.PollInterval, 10*time.Second))
	defer cancel()
	b, err := u.bundle.GetBundle(ctx, &bundlev1.GetBundleRequest{})
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
	if _, err := u.bundle.PublishJWTAuthority(ctx, req); err != nil {
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
