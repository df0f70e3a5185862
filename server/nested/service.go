package nested

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nested/bundlev1"
	"github.com/signetid/signet/server/nested/svidv1"
	"github.com/signetid/signet/server/nested/types"
	"github.com/signetid/signet/server/store"
)

// Limits on what downstream servers publish: a kid as long as any real
// one, a key that cannot outlive a year, and a bundle a misbehaving
// downstream cannot flood.
const (
	maxKeyIDLen   = 128
	maxJWTKeyLife = 366 * 24 * time.Hour
	maxJWTKeys    = 256
)

// Signer is the CA: it signs downstream servers' CA certificates, and
// knows the authorities revoked here.
type Signer interface {
	SignDownstreamCA(ctx context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, error)
	Revoked() []ca.Authority
}

// ServiceConfig is what the upstream side needs.
type ServiceConfig struct {
	TrustDomain spiffeid.TrustDomain
	Catalog     *catalog.Catalog
	Store       store.Store
	CA          Signer
	// Authenticate names the caller from its X509-SVID, verified against
	// the trust bundle.
	Authenticate func(ctx context.Context) (spiffeid.ID, error)
	// Forward, when this server is itself a downstream one, publishes a
	// JWT key further upstream too, so the whole nest gets it.
	Forward func(ctx context.Context, key ca.Authority) error
	// RefreshHint is the bundle refresh hint sent with GetBundle.
	RefreshHint time.Duration
	Logger      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service serves downstream servers on the agent API port.
type Service struct {
	svidv1.UnimplementedSVIDServer
	bundlev1.UnimplementedBundleServer
	cfg ServiceConfig
}

// NewService returns the upstream side.
func NewService(cfg ServiceConfig) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg}
}

// Register adds SPIRE's SVID and Bundle services, with the RPCs nested
// servers use, to g.
func (s *Service) Register(g *grpc.Server) {
	svidv1.RegisterSVIDServer(g, s)
	bundlev1.RegisterBundleServer(g, s)
}

// NewDownstreamX509CA signs an intermediate CA for a downstream server.
func (s *Service) NewDownstreamX509CA(ctx context.Context, req *svidv1.NewDownstreamX509CARequest) (*svidv1.NewDownstreamX509CAResponse, error) {
	id, snap, err := s.authorize(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetPreferredTtl() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "preferred_ttl %d is negative", req.GetPreferredTtl())
	}
	chain, err := s.cfg.CA.SignDownstreamCA(ctx, req.GetCsr(), time.Duration(req.GetPreferredTtl())*time.Second)
	if errors.Is(err, ca.ErrInvalidRequest) {
		return nil, status.Errorf(codes.InvalidArgument, "downstream CA for %s: %v", id, err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "downstream CA for %s: %v", id, err)
	}
	resp := &svidv1.NewDownstreamX509CAResponse{}
	for _, c := range chain {
		resp.CaCertChain = append(resp.CaCertChain, c.Raw)
	}
	for _, a := range snap.OwnBundle(s.cfg.TrustDomain).Authorities {
		if a.Kind == store.X509Authority {
			resp.X509Authorities = append(resp.X509Authorities, a.Data)
		}
	}
	cert := chain[0]
	audit.FromContext(ctx).Add(slog.String("serial", cert.SerialNumber.Text(16)), slog.Time("not_after", cert.NotAfter))
	s.cfg.Logger.Info("signed a downstream server's CA", "caller_id", id.String(), "serial", cert.SerialNumber.Text(16),
		"not_after", cert.NotAfter, "subject_key_id", fmt.Sprintf("%x", cert.SubjectKeyId))
	return resp, nil
}

// GetBundle returns the trust domain's bundle. Like SPIRE's, it needs no
// authentication: a bundle is public.
func (s *Service) GetBundle(ctx context.Context, req *bundlev1.GetBundleRequest) (*types.Bundle, error) {
	snap, _ := s.cfg.Catalog.Current()
	b := BundleToProto(snap.OwnBundle(s.cfg.TrustDomain), s.cfg.RefreshHint)
	if m := req.GetOutputMask(); m != nil {
		if !m.X509Authorities {
			b.X509Authorities = nil
		}
		if !m.JwtAuthorities {
			b.JwtAuthorities = nil
		}
		if !m.RefreshHint {
			b.RefreshHint = 0
		}
		if !m.SequenceNumber {
			b.SequenceNumber = 0
		}
	}
	return b, nil
}

// PublishJWTAuthority adds a downstream server's JWT key to the bundle.
func (s *Service) PublishJWTAuthority(ctx context.Context, req *bundlev1.PublishJWTAuthorityRequest) (*bundlev1.PublishJWTAuthorityResponse, error) {
	id, snap, err := s.authorize(ctx)
	if err != nil {
		return nil, err
	}
	key, err := checkJWTKey(req.GetJwtAuthority(), s.cfg.Now())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "JWT authority from %s: %v", id, err)
	}
	audit.FromContext(ctx).Add(slog.String("kid", key.KeyID), slog.Time("expires_at", key.ExpiresAt))
	for _, r := range s.cfg.CA.Revoked() {
		// A downstream that was down during the revocation still lists it.
		if r.Kind == ca.KindJWT && r.KeyID == key.KeyID {
			return nil, status.Errorf(codes.FailedPrecondition, "JWT authority %q from %s was revoked here; it cannot return to the bundle", key.KeyID, id)
		}
	}
	bundle := snap.OwnBundle(s.cfg.TrustDomain)
	known, jwtKeys := false, 0
	for _, a := range bundle.Authorities {
		if a.Kind != store.JWTAuthority {
			continue
		}
		jwtKeys++
		if a.KeyID == key.KeyID {
			// A kid names one key for good: a downstream may not replace
			// another server's key (or re-publish its own with a new one).
			if string(a.Data) != string(key.Data) {
				return nil, status.Errorf(codes.AlreadyExists, "JWT authority %q from %s: the bundle already holds another key under that kid", key.KeyID, id)
			}
			known = true
		}
	}
	if !known {
		if jwtKeys >= maxJWTKeys {
			return nil, status.Errorf(codes.ResourceExhausted, "JWT authority %q from %s: the bundle already holds %d JWT keys", key.KeyID, id, jwtKeys)
		}
		// Added only if absent: the snapshot may not hold a key another
		// server stored a moment ago.
		stored, added, err := s.cfg.Store.AddAuthority(ctx, store.Authority{
			TrustDomain: s.cfg.TrustDomain.Name(), Kind: store.JWTAuthority, KeyID: key.KeyID, Data: key.Data, ExpiresAt: key.ExpiresAt,
		})
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "store JWT authority %q: %v", key.KeyID, err)
		}
		if !added && string(stored.Data) != string(key.Data) {
			return nil, status.Errorf(codes.AlreadyExists, "JWT authority %q from %s: the bundle already holds another key under that kid", key.KeyID, id)
		}
		if err := s.cfg.Catalog.Refresh(ctx); err != nil {
			return nil, status.Errorf(codes.Unavailable, "reload the bundle: %v", err)
		}
		if added {
			s.cfg.Logger.Info("a downstream server published a JWT authority", "caller_id", id.String(), "kid", key.KeyID, "expires_at", key.ExpiresAt)
		}
	}
	if s.cfg.Forward != nil {
		if err := s.cfg.Forward(ctx, key); err != nil {
			return nil, status.Errorf(codes.Unavailable, "publish JWT authority %q further upstream: %v", key.KeyID, err)
		}
	}
	snap, _ = s.cfg.Catalog.Current()
	return &bundlev1.PublishJWTAuthorityResponse{JwtAuthorities: BundleToProto(snap.OwnBundle(s.cfg.TrustDomain), 0).JwtAuthorities}, nil
}

// authorize admits a caller whose X509-SVID names an unexpired downstream
// entry.
func (s *Service) authorize(ctx context.Context) (spiffeid.ID, *catalog.Snapshot, error) {
	id, err := s.cfg.Authenticate(ctx)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	audit.FromContext(ctx).Add(slog.String("caller_id", id.String()))
	snap, _ := s.cfg.Catalog.Current()
	if _, ok := snap.Entries.Downstream(id, s.cfg.Now()); !ok {
		return spiffeid.ID{}, nil, status.Errorf(codes.PermissionDenied, "%s is not a downstream server: no unexpired entry for it has downstream set", id)
	}
	return id, snap, nil
}

// checkJWTKey checks a published key: a kid, a public key Signet can
// verify tokens with, and an expiry in the near future.
func checkJWTKey(k *types.JWTKey, now time.Time) (ca.Authority, error) {
	switch {
	case k == nil:
		return ca.Authority{}, errors.New("jwt_authority is required")
	case k.KeyId == "":
		return ca.Authority{}, errors.New("key_id is empty")
	case len(k.KeyId) > maxKeyIDLen:
		return ca.Authority{}, fmt.Errorf("key_id is %d bytes long; at most %d", len(k.KeyId), maxKeyIDLen)
	case k.ExpiresAt == 0:
		return ca.Authority{}, errors.New("expires_at is required: a downstream key must expire")
	case k.Tainted:
		return ca.Authority{}, errors.New("a tainted key cannot be published")
	}
	exp := time.Unix(k.ExpiresAt, 0)
	if !exp.After(now) {
		return ca.Authority{}, fmt.Errorf("key %q expired at %s", k.KeyId, exp.UTC().Format(time.RFC3339))
	}
	if exp.After(now.Add(maxJWTKeyLife)) {
		return ca.Authority{}, fmt.Errorf("key %q expires at %s, more than a year from now", k.KeyId, exp.UTC().Format(time.RFC3339))
	}
	if ca.PublicJWTKeyType(k.PublicKey) == "" {
		return ca.Authority{}, fmt.Errorf("key %q: public_key is not a PKIX ECDSA P-256/P-384 or RSA (2048 or 4096 bits) key", k.KeyId)
	}
	return ca.Authority{Kind: ca.KindJWT, KeyID: k.KeyId, Data: k.PublicKey, ExpiresAt: exp}, nil
}
