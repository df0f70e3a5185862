package server

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/signetid/signet/internal/health"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/agentapi"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/k8sbundle"
	"github.com/signetid/signet/server/k8sreg"
	"github.com/signetid/signet/server/nested"
	"github.com/signetid/signet/server/nested/bundlev1"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/oidcdiscovery"
	"github.com/signetid/signet/server/store"
)

// Server is a running (or ready to run) Signet server.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	store   store.Store
	ca      *ca.Manager
	catalog *catalog.Catalog
	agents  *agentapi.Service
	// bundlePub keeps the trust bundle in a Kubernetes ConfigMap (nil: off).
	bundlePub *k8sbundle.Publisher
	admin     *adminapi.Service
	metrics   *prometheus.Registry
	// audit writes the audit log (nil: off).
	audit *audit.Logger

	// federation is the bundle endpoint and the foreign bundles' refreshers.
	federation *federation.Service
	// k8sReg registers pods from ClusterSPIFFEIDs (nil: off).
	k8sReg *k8sreg.Controller
	// oidc serves the JWT keys to OIDC relying parties (nil: off).
	oidc *oidcdiscovery.Server
	// nested serves downstream servers; upstream, when this server is a
	// downstream one, is the server that signs its CAs (nil: not nested).
	nested   *nested.Service
	upstream *nested.Upstream

	agentLn  net.Listener
	adminLn  net.Listener
	healthLn net.Listener

	serverCert atomic.Pointer[tls.Certificate]
	// serverCertCA is the ID of the CA that signed serverCert.
	serverCertCA atomic.Pointer[string]
	dirLock      *os.File // flock on the data dir: one server per data dir
	// warnedJWTKey is the other server's JWT key last warned about.
	warnedJWTKey atomic.Pointer[string]
}

// Run starts a server with cfg and serves until ctx ends.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	s, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// New opens the store, loads (or creates) the CA, and binds every listener,
// so that configuration and address errors surface before Run.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *Server, err error) {
	if cfg.JWTKeyType == "" {
		cfg.JWTKeyType = ca.JWTKeyECP256 // as ParseJWTKeyType("") and the CA
	}
	s := &Server{cfg: cfg, logger: logger, metrics: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if cfg.AuditLog {
		if !logger.Enabled(ctx, slog.LevelInfo) {
			return nil, errors.New("audit_log_enabled: audit records are logged at INFO, which the log level drops; set log_level to info or debug")
		}
		s.audit = audit.New(logger)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod data dir: %w", err)
	}
	if s.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if s.store, err = store.Open(ctx, cfg.Datastore, logger); err != nil {
		return nil, fmt.Errorf("open datastore: %w", err)
	}
	caCfg := ca.Config{
		TrustDomain: cfg.TrustDomain,
		DataDir:     cfg.DataDir,
		SVIDTTL:     cfg.SVIDTTL,
		JWTTTL:      cfg.JWTTTL,
		JWTIssuer:   cfg.JWTIssuer,
		JWTKeyType:  cfg.JWTKeyType,
		CATTL:       cfg.CATTL,
		Logger:      logger,
	}
	if cfg.UpstreamAuthority != nil { // a nil *DiskUpstream is not a nil interface
		caCfg.Upstream = cfg.UpstreamAuthority
	}
	if cfg.UpstreamSignet != nil {
		up := *cfg.UpstreamSignet
		up.Logger = logger
		if s.upstream, err = nested.Dial(ctx, up); err != nil {
			return nil, err
		}
		caCfg.Upstream = s.upstream
	}
	if s.ca, err = ca.New(ctx, caCfg); err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if err := s.publishAuthorities(ctx); err != nil {
		return nil, err
	}
	if s.catalog, err = catalog.New(ctx, s.store, cfg.TrustDomain, logger); err != nil {
		return nil, fmt.Errorf("load catalog: %w", err)
	}
	if err := s.renewServerCert(ctx); err != nil {
		return nil, err
	}
	psat, err := newPSAT(cfg)
	if err != nil {
		return nil, err
	}
	var x509PoP *nodeattest.X509PoP
	if cfg.X509PoP != nil {
		if x509PoP, err = nodeattest.NewX509PoP(cfg.TrustDomain, *cfg.X509PoP); err != nil {
			return nil, err
		}
	}
	var sshPoP *nodeattest.SSHPoP
	if cfg.SSHPoP != nil {
		if sshPoP, err = nodeattest.NewSSHPoP(cfg.TrustDomain, *cfg.SSHPoP); err != nil {
			return nil, err
		}
	}
	var awsIID *nodeattest.AWSIID
	if cfg.AWSIID != nil {
		if awsIID, err = nodeattest.NewAWSIID(cfg.TrustDomain, *cfg.AWSIID); err != nil {
			return nil, err
		}
	}
	var gcpIIT *nodeattest.GCPIIT
	if cfg.GCPIIT != nil {
		if gcpIIT, err = nodeattest.NewGCPIIT(cfg.TrustDomain, *cfg.GCPIIT); err != nil {
			return nil, err
		}
	}
	if s.bundlePub, err = newBundlePublisher(cfg, logger); err != nil {
		return nil, err
	}
	if s.k8sReg, err = newK8sController(cfg, s.store, logger); err != nil {
		return nil, err
	}
	refreshHint := min(5*time.Minute, cfg.SVIDTTL/2)
	s.agents = agentapi.New(agentapi.Config{
		PSAT:        psat,
		X509PoP:     x509PoP,
		SSHPoP:      sshPoP,
		AWSIID:      awsIID,
		GCPIIT:      gcpIIT,
		TrustDomain: cfg.TrustDomain,
		Store:       s.store,
		Catalog:     s.catalog,
		Signer:      s.ca,
		AgentTTL:    cfg.AgentTTL,
		RefreshHint: refreshHint,
		Logger:      logger,
		Metrics:     agentapi.NewMetrics(s.metrics),
	})
	nestedCfg := nested.ServiceConfig{
		TrustDomain: cfg.TrustDomain, Catalog: s.catalog, Store: s.store, CA: s.ca,
		Authenticate: s.agents.AuthenticateSVID, RefreshHint: refreshHint, Logger: logger,
	}
	if s.upstream != nil {
		nestedCfg.Forward = s.upstream.Publish
	}
	s.nested = nested.NewService(nestedCfg)
	s.admin = adminapi.New(adminapi.Config{
		TrustDomain: cfg.TrustDomain,
		Store:       s.store,
		Catalog:     s.catalog,
		CA:          s.ca,
		ServingCA: func() string {
			if id := s.serverCertCA.Load(); id != nil {
				return *id
			}
			return ""
		},
		PublishAuthorities: func(ctx context.Context) error {
			if err := s.publishAuthorities(ctx); err != nil {
				return err
			}
			return s.catalog.Refresh(ctx)
		},
		RefreshHint:   refreshHint,
		FederatesWith: cfg.Federation.Relationships,
		Logger:        logger,
		LogLevel:      cfg.LogLevel,
		RefreshFederatedBundle: func(ctx context.Context, td spiffeid.TrustDomain) error {
			return s.federation.Refresh(ctx, td)
		},
		RefreshStatuses: func() []federation.RefreshStatus { return s.federation.RefreshStatuses() },
		Audit:           s.audit,
		Ready:           s.ready,
	})
	s.registerMetrics()

	if s.agentLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("agent API listener %s: %w", cfg.Listen, err)
	}
	if s.adminLn, err = adminapi.Listen(cfg.AdminSocket); err != nil {
		return nil, err
	}
	if cfg.HealthListen != "" {
		if s.healthLn, err = net.Listen("tcp", cfg.HealthListen); err != nil {
			return nil, fmt.Errorf("health listener %s: %w", cfg.HealthListen, err)
		}
	}
	if cfg.OIDCDiscovery != nil {
		if cfg.OIDCDiscovery.Issuer != cfg.JWTIssuer {
			return nil, fmt.Errorf("oidc_discovery issuer %q differs from jwt_issuer %q: relying parties would refuse every JWT-SVID", cfg.OIDCDiscovery.Issuer, cfg.JWTIssuer)
		}
		// The bundle agents get: in HA, every server's keys.
		bundle := func() catalog.Bundle {
			snap, _ := s.catalog.Current()
			return snap.OwnBundle(cfg.TrustDomain)
		}
		if s.oidc, err = oidcdiscovery.NewServer(oidcdiscovery.Options{Config: *cfg.OIDCDiscovery, Bundle: bundle, Logger: logger}); err != nil {
			return nil, err
		}
	}
	if s.federation, err = federation.New(federation.Options{
		Config: cfg.Federation, TrustDomain: cfg.TrustDomain, Store: s.store, Catalog: s.catalog,
		ServerCert: s.getServerCert, Logger: logger,
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// newPSAT connects to the API server of every k8s_psat cluster; nil when
// none is configured.
func newPSAT(cfg Config) (*nodeattest.PSAT, error) {
	if len(cfg.K8sPSAT) == 0 {
		return nil, nil
	}
	clusters := make([]nodeattest.PSATCluster, 0, len(cfg.K8sPSAT))
	for _, c := range cfg.K8sPSAT {
		client, err := nodeattest.KubeClient(c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("k8s_psat cluster %q: %w", c.Name, err)
		}
		c.Client = client
		clusters = append(clusters, c.PSATCluster)
	}
	return nodeattest.NewPSAT(cfg.TrustDomain, clusters)
}

func newBundlePublisher(cfg Config, logger *slog.Logger) (*k8sbundle.Publisher, error) {
	b := cfg.K8sBundle
	if b == nil {
		return nil, nil
	}
	client, err := nodeattest.KubeClient(b.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("k8s_bundle: %w", err)
	}
	return k8sbundle.New(k8sbundle.Config{Client: client, Namespace: b.Namespace, Name: b.ConfigMap, Key: b.Key,
		Logger: logger.With("component", "k8s_bundle")})
}

func newK8sController(cfg Config, st store.Store, logger *slog.Logger) (*k8sreg.Controller, error) {
	c := cfg.K8sController
	if c == nil {
		return nil, nil
	}
	client, dyn, err := k8sreg.Clients(c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("k8s_controller: %w", err)
	}
	opts := k8sreg.Options{Client: client, Dynamic: dyn, Store: st, TrustDomain: cfg.TrustDomain,
		Cluster: c.Cluster, IgnoreNamespaces: c.IgnoreNamespaces, ClusterDomain: c.ClusterDomain,
		ClassName: c.ClassName, WatchClassless: c.WatchClassless, Logger: logger.With("component", "k8s_controller")}
	if c.LeaderElection {
		ns := c.LeaderElectionNamespace
		if ns == "" {
			if ns, err = k8sreg.PodNamespace(); err != nil {
				return nil, fmt.Errorf("k8s_controller: set leader_election_namespace when the server does not run in a pod: %w", err)
			}
		}
		leaseClient, _, err := k8sreg.Clients(c.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("k8s_controller: %w", err)
		}
		opts.LeaderElection = &k8sreg.LeaderElection{Namespace: ns, Name: c.LeaderElectionLease, Client: leaseClient}
	}
	return k8sreg.New(opts)
}

// Addr is the agent API's bound address.
func (s *Server) Addr() string { return s.agentLn.Addr().String() }

// HealthAddr is the health listener's bound address ("" if none).
func (s *Server) HealthAddr() string {
	if s.healthLn == nil {
		return ""
	}
	return s.healthLn.Addr().String()
}

// OIDCDiscoveryAddr is the OIDC discovery provider's bound address ("" if
// none).
func (s *Server) OIDCDiscoveryAddr() string {
	if s.oidc == nil {
		return ""
	}
	return s.oidc.Addr()
}

// FederationAddr is the bundle endpoint's bound address ("" if none).
func (s *Server) FederationAddr() string { return s.federation.Addr() }

// Admin is the admin service, for in-process callers (`signet dev`).
func (s *Server) Admin() *adminapi.Service { return s.admin }

// BundlePEM returns the trust domain's current X.509 roots as PEM, what an
// agent's --trust-bundle file holds.
func (s *Server) BundlePEM() []byte {
	snap, _ := s.catalog.Current()
	return bundlePEM(snap, s.cfg.TrustDomain)
}

func bundlePEM(snap *catalog.Snapshot, td spiffeid.TrustDomain) []byte {
	var out []byte
	for _, a := range snap.OwnBundle(td).Authorities {
		if a.Kind == store.X509Authority {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Data})...)
		}
	}
	return out
}

// Run serves until ctx ends, then stops every listener and closes the store.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	g, ctx := errgroup.WithContext(ctx)

	// CA rotation, and publication of its authorities to the shared store.
	g.Go(func() error { return s.ca.Run(ctx) })
	g.Go(func() error { return s.publishLoop(ctx) })
	// Store changes (ours and other servers') -> catalog -> agent streams.
	g.Go(func() error { return s.catalog.Run(ctx) })
	g.Go(func() error { return s.serverCertLoop(ctx) })
	g.Go(func() error { return s.housekeepingLoop(ctx) })
	g.Go(func() error { return s.federation.Run(ctx) })
	if s.bundlePub != nil {
		g.Go(func() error {
			return s.bundlePub.Run(ctx, func() ([]byte, <-chan struct{}) {
				snap, changed := s.catalog.Current()
				return bundlePEM(snap, s.cfg.TrustDomain), changed
			})
		})
	}

	if s.k8sReg != nil {
		g.Go(func() error { return s.k8sReg.Run(ctx) })
	}
	if s.upstream != nil {
		g.Go(func() error { return s.upstream.Run(ctx, s.ca.OwnJWTAuthorities, s.applyUpstreamBundle) })
	}

	agentUnary := []grpc.UnaryServerInterceptor{s.agents.MetricsInterceptor()}
	if s.audit != nil {
		// Attest, RenewAgent, the signing calls and downstream servers'
		// calls; the handlers add their fields. Sync, a stream that
		// delivers what was granted, and GetBundle, which downstream
		// servers poll for the public bundle, are not audited.
		agentUnary = append(agentUnary, s.audit.UnaryInterceptor(audit.Options{
			Skip: func(method string) bool { return method == bundlev1.Bundle_GetBundle_FullMethodName },
		}))
	}
	agentSrv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.agents.TLSConfig(s.getServerCert))),
		grpc.ChainUnaryInterceptor(agentUnary...),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	s.agents.Register(agentSrv)
	s.nested.Register(agentSrv)
	adminSrv := s.admin.NewGRPCServer()
	g.Go(func() error { return serveGRPC(ctx, agentSrv, s.agentLn, "agent API") })
	g.Go(func() error { return serveGRPC(ctx, adminSrv, s.adminLn, "admin API") })
	g.Go(func() error { return s.admin.RunHealth(ctx) })
	if s.healthLn != nil {
		hs := &health.Server{Live: s.live, Ready: s.ready, Registry: s.metrics, Logger: s.logger}
		g.Go(func() error { return hs.Serve(ctx, s.healthLn) })
	}
	if s.oidc != nil {
		g.Go(func() error { return s.oidc.Serve(ctx) })
	}
	s.logger.Info("server started",
		"trust_domain", s.cfg.TrustDomain.Name(),
		"agent_api", s.Addr(),
		"admin_socket", s.cfg.AdminSocket,
		"health", s.HealthAddr(),
		"oidc_discovery", s.OIDCDiscoveryAddr(),
		"svid_ttl", s.cfg.SVIDTTL,
		"audit_log", s.audit != nil)
	err := g.Wait()
	s.logger.Info("server stopped")
	return err
}

func serveGRPC(ctx context.Context, srv *grpc.Server, ln net.Listener, name string) error {
	go func() {
		<-ctx.Done()
		// Streams (Sync) never end by themselves; bound the graceful stop.
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			srv.Stop()
		}
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// close releases what New acquired. After Run, the gRPC and health
// servers have closed their listeners already; closing again is harmless.
func (s *Server) close() {
	for _, ln := range []net.Listener{s.agentLn, s.adminLn, s.healthLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.adminLn != nil {
		os.Remove(s.cfg.AdminSocket)
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.federation != nil {
		s.federation.Close()
	}
	if s.oidc != nil {
		s.oidc.Close()
	}
	if s.upstream != nil {
		s.upstream.Close()
	}
	if s.dirLock != nil {
		s.dirLock.Close() // releases the flock
	}
}

// lockDataDir takes an exclusive lock on dir for the life of the process:
// two servers on one data dir would rotate the same CA files under each
// other. The kernel drops the lock when the process dies.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "server.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another signet server (it holds %s)", dir, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// publishLoop publishes the CA's authorities whenever they change, and
// again just after the earliest published authority expires so the expired
// root leaves the bundle then, not at the next rotation step hours later.
func (s *Server) publishLoop(ctx context.Context) error {
	for {
		expiry := time.NewTimer(s.untilNextExpiry(ctx))
		select {
		case <-ctx.Done():
			expiry.Stop()
			return nil
		case <-s.ca.Changed():
		case <-expiry.C:
		}
		expiry.Stop()
		// A newly active CA (on schedule or by an operator) also signs the
		// agent API's certificate at once: the old CA may be revoked next.
		if id := s.serverCertCA.Load(); id == nil || *id != s.ca.ActiveCAID() {
			b := backoff.NewExponentialBackOff(backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
			_ = backoff.RetryNotify(func() error { return s.renewServerCert(ctx) }, backoff.WithContext(b, ctx), func(err error, d time.Duration) {
				s.logger.Error("renew server certificate under the new CA; retrying", "error", err, "retry_in", d.Round(time.Millisecond))
			})
		}
		// Until a new root is published, agents cannot verify what it
		// signs: retry a failed write (store briefly down) until it lands.
		op := func() error { return s.publishAuthorities(ctx) }
		b := backoff.NewExponentialBackOff(backoff.WithMaxInterval(30*time.Second), backoff.WithMaxElapsedTime(0))
		_ = backoff.RetryNotify(op, backoff.WithContext(b, ctx), func(err error, d time.Duration) {
			s.logger.Error("publish CA authorities; retrying", "error", err, "retry_in", d.Round(time.Millisecond))
		})
	}
}

// untilNextExpiry is how long until just after the earliest expiry among
// the trust domain's stored authorities (an hour if none, or unreadable).
func (s *Server) untilNextExpiry(ctx context.Context) time.Duration {
	const idle = time.Hour
	auths, _, err := s.store.ListAuthorities(ctx, s.cfg.TrustDomain.Name())
	if err != nil {
		return idle
	}
	now := time.Now()
	wait := idle
	for _, a := range auths {
		// Pruning removes authorities strictly past their expiry: wake a
		// moment after it.
		if d := a.ExpiresAt.Sub(now) + 100*time.Millisecond; !a.ExpiresAt.IsZero() && d < wait {
			wait = max(d, 100*time.Millisecond)
		}
	}
	return wait
}

// publishAuthorities writes this server's authorities to the store (the
// bundle is the union over every server sharing it) and drops expired ones.
func (s *Server) publishAuthorities(ctx context.Context) error {
	var auths []store.Authority
	for _, a := range s.ca.Authorities() {
		auths = append(auths, store.Authority{
			TrustDomain: s.cfg.TrustDomain.Name(),
			Kind:        store.AuthorityKind(a.Kind),
			KeyID:       a.KeyID,
			Data:        a.Data,
			ExpiresAt:   a.ExpiresAt,
			Tainted:     a.Tainted,
		})
	}
	if err := s.store.PutAuthorities(ctx, auths); err != nil {
		return fmt.Errorf("publish CA authorities: %w", err)
	}
	// Revoked authorities leave the bundle; this runs until they expire, so
	// a delete that failed once, or a restore from backup, is undone.
	revoked := map[store.AuthorityKind][]string{}
	for _, a := range s.ca.Revoked() {
		revoked[store.AuthorityKind(a.Kind)] = append(revoked[store.AuthorityKind(a.Kind)], a.KeyID)
	}
	for kind, ids := range revoked {
		n, err := s.store.DeleteAuthorities(ctx, s.cfg.TrustDomain.Name(), kind, ids)
		if err != nil {
			return fmt.Errorf("remove revoked %s authorities from the bundle: %w", kind, err)
		}
		if n > 0 {
			s.logger.Warn("revoked or withdrawn authorities removed from the bundle", "kind", kind, "count", n)
		}
	}
	if err := s.store.PruneAuthorities(ctx, s.cfg.TrustDomain.Name(), time.Now()); err != nil {
		return fmt.Errorf("prune expired authorities: %w", err)
	}
	s.checkJWTKeyTypes(ctx)
	return nil
}

// checkJWTKeyTypes warns, once per key, when another server sharing the
// store signs with JWT keys of another type: agents get tokens of either
// type depending on the server they reach, and a relying party that takes
// only one type refuses some of them.
func (s *Server) checkJWTKeyTypes(ctx context.Context) {
	auths, _, err := s.store.ListAuthorities(ctx, s.cfg.TrustDomain.Name())
	if err != nil {
		return // the publish itself reports a store that fails
	}
	own := map[string]bool{}
	for _, a := range s.ca.Authorities() {
		own[a.KeyID] = true
	}
	kid, typ := foreignJWTKeyType(auths, own)
	if kid == "" || typ == s.cfg.JWTKeyType {
		return
	}
	if prev := s.warnedJWTKey.Swap(&kid); prev != nil && *prev == kid {
		return
	}
	s.logger.Warn("another server on this store signs JWT-SVIDs with keys of another type: give every server the same jwt_key_type, or relying parties that take only one type refuse some tokens",
		"kid", kid, "key_type", typ, "jwt_key_type", s.cfg.JWTKeyType)
}

// foreignJWTKeyType is the newest JWT key in auths that is not one of own
// (another server's), and its type ("" if Signet makes no such key).
func foreignJWTKeyType(auths []store.Authority, own map[string]bool) (string, ca.JWTKeyType) {
	var newest *store.Authority
	for i, a := range auths {
		if a.Kind == store.JWTAuthority && !own[a.KeyID] && (newest == nil || a.ExpiresAt.After(newest.ExpiresAt)) {
			newest = &auths[i]
		}
	}
	if newest == nil {
		return "", ""
	}
	return newest.KeyID, ca.PublicJWTKeyType(newest.Data)
}

// applyUpstreamBundle takes in the upstream server's bundle (nested) and,
// when the upstream tainted the root this server's CA chains to, has it
// sign a new CA at once.
func (s *Server) applyUpstreamBundle(ctx context.Context, b ca.UpstreamBundle) error {
	if err := s.ca.SetUpstreamBundle(b); err != nil {
		return err
	}
	if _, err := s.ca.ReplaceTaintedCA(ctx); err != nil {
		return fmt.Errorf("replace the CA under the root the upstream server tainted: %w", err)
	}
	return nil
}

// renewServerCert has the CA sign a fresh TLS certificate (new key) for the
// agent API.
func (s *Server) renewServerCert(ctx context.Context) error {
	// Read before signing: a rotation in between only costs one more renewal.
	caID := s.ca.ActiveCAID()
	svid, err := s.ca.SignServerSVID(ctx, nil)
	if err != nil {
		return fmt.Errorf("sign server certificate: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s.serverCert.Store(cert)
	s.serverCertCA.Store(&caID)
	return nil
}

func (s *Server) getServerCert(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.serverCert.Load(), nil
}

// serverCertLoop renews the server certificate at half its lifetime.
func (s *Server) serverCertLoop(ctx context.Context) error {
	for {
		leaf := s.serverCert.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, time.Second)):
		}
		if err := s.renewServerCert(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("renew server certificate", "error", err)
		}
	}
}

func (s *Server) live(context.Context) error { return nil }

// ready means the store answers and the server can sign.
func (s *Server) ready(ctx context.Context) error {
	if err := s.store.Ping(ctx); err != nil {
		return fmt.Errorf("datastore unreachable: %w", err)
	}
	if leaf := s.serverCert.Load().Leaf; time.Now().After(leaf.NotAfter) {
		return errors.New("server certificate expired: CA cannot sign")
	}
	return nil
}
