package agentapi

import (
	"context"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/store"
)

// Signer is the CA: it signs X509-SVIDs from CSRs and mints JWT-SVIDs.
type Signer interface {
	SignX509SVID(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) ([]*x509.Certificate, error)
	// SignX509SVIDDER is SignX509SVID for the workload hot path: the chain
	// stays DER, as it goes on the wire.
	SignX509SVIDDER(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) (ca.SignedX509, error)
	MintJWTSVID(ctx context.Context, id spiffeid.ID, audience []string, ttl time.Duration) (string, time.Time, error)
}

// Config is what the service needs.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Store       store.Store
	Catalog     *catalog.Catalog
	Signer      Signer
	// PSAT attests agents with Kubernetes projected service account tokens;
	// nil when no cluster is configured.
	PSAT *nodeattest.PSAT
	// X509PoP attests agents with their host's machine certificate; nil
	// when the server has no x509pop block.
	X509PoP *nodeattest.X509PoP
	// SSHPoP attests agents with their host's OpenSSH host certificate;
	// nil when the server has no sshpop block.
	SSHPoP *nodeattest.SSHPoP
	// AWSIID attests agents with their EC2 instance identity document; nil
	// when the server has no aws_iid block.
	AWSIID *nodeattest.AWSIID
	// GCPIIT attests agents with their GCE instance identity token; nil
	// when the server has no gcp_iit block.
	GCPIIT *nodeattest.GCPIIT
	// AgentTTL is the lifetime of agent SVIDs.
	AgentTTL time.Duration
	// RefreshHint is the bundle refresh hint sent to agents.
	RefreshHint time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service implements api.AgentServiceServer.
type Service struct {
	api.UnimplementedAgentServiceServer
	cfg Config
	// refreshes coalesces the catalog reloads that refused callers trigger:
	// many calls from evicted agents must not each reload the store.
	refreshes singleflight.Group
	// verified remembers agent SVIDs whose chain verified, by leaf DER, with
	// the own bundle's sequence then: a call re-verifies only after the
	// bundle changed (a rotation step, a taint, a revocation).
	verifiedMu sync.Mutex
	verified   map[string]int64
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Service{cfg: cfg, verified: map[string]int64{}}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(g *grpc.Server) { api.RegisterAgentServiceServer(g, s) }
