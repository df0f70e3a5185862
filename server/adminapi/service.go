package adminapi

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/peercred"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// Config is what the admin service needs.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Store       store.Store
	Catalog     *catalog.Catalog
	// CA is this server's CA, for the local-authority RPCs.
	CA *ca.Manager
	// ServingCA is the ID of the CA that signed the agent API's current
	// certificate: it cannot be revoked.
	ServingCA func() string
	// PublishAuthorities writes the CA's authorities (and removes revoked
	// ones) to the store and refreshes the catalog, so a local-authority
	// step is in the bundle when its RPC returns.
	PublishAuthorities func(context.Context) error
	// RefreshHint is put in bundles served here.
	RefreshHint time.Duration
	// FederatesWith are the configured federation relationships (server.conf),
	// listed beside the stored ones: storing one of their trust domains,
	// and deleting their bundles, is refused.
	FederatesWith []federation.Relationship
	// RefreshFederatedBundle fetches a federated bundle now (the
	// federation service's Refresh); nil: refreshing is refused.
	RefreshFederatedBundle func(context.Context, spiffeid.TrustDomain) error
	// RefreshStatuses reports how fetching each federated bundle goes on
	// this server (the federation service's); nil: not reported.
	RefreshStatuses func() []federation.RefreshStatus
	Logger          *slog.Logger
	// LogLevel is the level Logger logs at, which the logger RPCs change
	// (nil: they refuse, the level is fixed).
	LogLevel *slog.LevelVar
	// AllowedUIDs may call the API; nil means root and the process's own uid.
	AllowedUIDs []uint32
	// Audit, when set, writes an audit record for every call, refused
	// ones included (the health service's excepted).
	Audit *audit.Logger
	// Ready reports whether the server can serve (its store answers, its
	// CA can sign): the health service on the socket says SERVING exactly
	// when it returns nil. Nil means always.
	Ready func(context.Context) error
	Now   func() time.Time
}

// Service implements api.AdminServiceServer.
type Service struct {
	api.UnimplementedAdminServiceServer
	cfg    Config
	health *health
	// launchLevel is the log level the server started with.
	launchLevel slog.Level
}

// New returns the service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AllowedUIDs == nil {
		cfg.AllowedUIDs = []uint32{0, uint32(os.Getuid())}
	}
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) error { return nil }
	}
	s := &Service{cfg: cfg, health: newHealth(cfg.Ready, cfg.Logger)}
	if cfg.LogLevel != nil {
		s.launchLevel = cfg.LogLevel.Level()
	}
	return s
}

// NewGRPCServer returns a gRPC server for the admin socket with the service
// and the standard health service registered, and every admin call checked
// by the caller's kernel credentials (and audited, when Config.Audit is
// set).
func (s *Service) NewGRPCServer() *grpc.Server {
	unary := []grpc.UnaryServerInterceptor{s.authorize}
	streams := []grpc.StreamServerInterceptor{s.authorizeStream}
	if s.cfg.Audit != nil {
		// First, so a refusal is audited too.
		o := audit.Options{Fields: auditFields, Skip: isHealth}
		unary = append([]grpc.UnaryServerInterceptor{s.cfg.Audit.UnaryInterceptor(o)}, unary...)
		streams = append([]grpc.StreamServerInterceptor{s.cfg.Audit.StreamInterceptor(o)}, streams...)
	}
	g := grpc.NewServer(grpc.Creds(peercred.Credentials()),
		grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(streams...))
	api.RegisterAdminServiceServer(g, s)
	s.health.register(g)
	return g
}

// isHealth reports the health service's methods: anyone who can reach the
// socket may ask whether the server is up (probes need not run as its
// uid), and probes every few seconds do not belong in the audit log.
func isHealth(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}

func (s *Service) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if isHealth(info.FullMethod) {
		return handler(ctx, req)
	}
	pc, err := s.checkCaller(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	if err != nil {
		s.cfg.Logger.Debug("admin API call failed", "method", info.FullMethod, "uid", pc.UID, "error", err)
	}
	return resp, err
}

func (s *Service) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if isHealth(info.FullMethod) {
		return handler(srv, ss)
	}
	if _, err := s.checkCaller(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// checkCaller lets root and the allowed uids through, by the caller's
// kernel credentials.
func (s *Service) checkCaller(ctx context.Context, method string) (peercred.Info, error) {
	pc, err := peercred.FromContext(ctx)
	if err != nil {
		return pc, status.Errorf(codes.Unauthenticated, "admin API: caller credentials unknown: %v", err)
	}
	for _, uid := range s.cfg.AllowedUIDs {
		if pc.UID == uid {
			return pc, nil
		}
	}
	s.cfg.Logger.Warn("admin API call refused", "method", method, "uid", pc.UID, "pid", pc.PID)
	return pc, status.Errorf(codes.PermissionDenied, "admin API: uid %d may not call it (only root and the server's uid)", pc.UID)
}

// storeError maps store errors to gRPC codes.
func storeError(what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: not found", what)
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Errorf(codes.AlreadyExists, "%s: already exists (an entry with the same ID, or with the same SPIFFE ID, parent and selectors)", what)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}

// publish makes an entry write, committed at store revision rev, visible to
// agents before the call returns.
func (s *Service) publish(ctx context.Context, rev int64, upserted []registry.Entry, deleted ...string) {
	if err := s.cfg.Catalog.EntriesWritten(ctx, rev, upserted, deleted); err != nil {
		// Run's change loop retries; the write itself is durable.
		s.cfg.Logger.Warn("refresh catalog after admin write", "error", err)
	}
}
