package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/client"
	"github.com/signetid/signet/agent/delegatedidentity"
	"github.com/signetid/signet/agent/manager"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/internal/health"
)

// Run runs the agent until ctx ends. Data flows one way:
//
//	client (attest, renew) -> manager (Sync stream, batch signing)
//	  -> cache (SVIDs, bundles; persisted) -> Workload API (Unix socket)
//	                                       -> Delegated Identity API (admin socket, if set)
//	health listener: /live, /ready (attested, synced, serving), /metrics
//
// The Workload API starts before the server is reached, so SVIDs persisted
// by an earlier run are served even while the server is down.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	td, err := cfg.validate()
	if err != nil {
		return err
	}
	if logger == nil {
		logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("agent: create data dir: %w", err)
	}
	// The directory holds private keys: only the agent may enter it.
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("agent: data dir %s: %w", cfg.DataDir, err)
	}
	roots, err := loadTrustBundle(cfg, td)
	if err != nil {
		return err
	}
	var download *bundleDownload
	if cfg.TrustBundleURL != "" {
		if download, err = newBundleDownload(cfg.TrustBundleURL, cfg.TrustBundleFormat, td, cfg.trustBundleURLRoots); err != nil {
			return fmt.Errorf("agent: trust_bundle_url: %w", err)
		}
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	attestLatency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "signet_agent_attestation_duration_seconds",
		Help:    "Time to attest the agent to the server.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	})
	reg.MustRegister(attestLatency)
	mgrMetrics := manager.NewMetrics(reg)

	st := &readiness{notReady: errors.New("not attested")}
	if download != nil {
		st.notReady = fmt.Errorf("not attested: the server's trust bundle is not downloaded yet from %s", cfg.TrustBundleURL)
	}
	svids, err := cache.New(cache.Options{
		TrustDomain: td,
		Dir:         cfg.DataDir,
		MintJWT:     st.mintJWTSVID,
		Logger:      logger.With("component", "cache"),
	})
	if err != nil {
		return err
	}
	st.cache = svids
	defer func() {
		if err := svids.Close(); err != nil {
			logger.Error("persist workload SVID cache", "error", err)
		}
	}()
	defer func() {
		if l := st.link.Load(); l != nil {
			l.client.Close()
		}
	}()
	reg.MustRegister(newStateCollector(svids.Stats, st.agentSVIDExpiry))

	wlAttestor, err := cfg.workloadAttestor(logger.With("component", "attestor"))
	if err != nil {
		return err
	}
	api, err := workloadapi.New(workloadapi.Options{
		Provider: svids,
		Attestor: wlAttestor,
		Logger:   logger.With("component", "workloadapi"),
		Metrics:  reg,
		SDS:      cfg.SDS.options(),
	})
	if err != nil {
		return err
	}
	lis, err := workloadapi.Listen(cfg.SocketPath)
	if err != nil {
		return fmt.Errorf("agent: Workload API socket: %w", err)
	}
	delegated, adminLis, err := delegatedIdentity(cfg, svids, wlAttestor, logger)
	if err != nil {
		lis.Close()
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg     sync.WaitGroup
		errMu  sync.Mutex
		runErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if runErr == nil {
			runErr = err
		}
		errMu.Unlock()
		cancel()
	}

	wg.Go(func() {
		if err := api.ServeListener(ctx, lis); err != nil {
			fail(fmt.Errorf("agent: Workload API: %w", err))
		}
	})
	if delegated != nil {
		wg.Go(func() {
			if err := delegated.ServeListener(ctx, adminLis); err != nil {
				fail(fmt.Errorf("agent: admin socket: %w", err))
			}
		})
		logger.Info("Delegated Identity API serving on the admin socket", "socket", cfg.AdminSocketPath, "authorized_delegates", cfg.AuthorizedDelegates)
	}

	if cfg.HealthListen != "" || cfg.HealthListener != nil {
		hl := cfg.HealthListener
		if hl == nil {
			if hl, err = net.Listen("tcp", cfg.HealthListen); err != nil {
				cancel()
				wg.Wait()
				return fmt.Errorf("agent: health listener %s: %w", cfg.HealthListen, err)
			}
		}
		st.healthAddr = hl.Addr().String()
		hs := &health.Server{Ready: st.check, Registry: reg, Logger: logger}
		wg.Go(func() {
			if err := serveHealth(ctx, hs, st, hl); err != nil {
				fail(err)
			}
		})
	}

	// Download the trust bundle if it comes from a URL, then attest (or
	// load the persisted agent SVID), retrying while either is
	// unreachable: the cache keeps serving meanwhile.
	wg.Go(func() {
		bootRoots := roots
		if download != nil {
			var err error
			if bootRoots, err = download.roots(ctx, cfg.DataDir, logger.With("component", "bootstrap")); err != nil {
				return // ctx ended
			}
		}
		l, err := newServerLink(cfg, td, bootRoots, svids, attestLatency, mgrMetrics, logger)
		if err != nil {
			fail(err)
			return
		}
		st.link.Store(l)
		cl, mgr := l.client, l.manager
		if err := startClient(ctx, cl, cfg, func() bool { return svids.Stats().SVIDs > 0 }, logger); err != nil {
			fail(err)
			return
		}
		if ctx.Err() != nil {
			return // stopped before the agent ever had an SVID
		}
		wg.Go(func() { _ = cl.Run(ctx) })
		wg.Go(func() { _ = mgr.Run(ctx) })
		select {
		case <-ctx.Done():
			return
		case <-mgr.Synced():
		}
		info := ReadyInfo{AgentID: cl.AgentID(), SocketPath: cfg.SocketPath, HealthAddr: st.healthAddr}
		logger.Info("agent ready", "agent_id", info.AgentID.String(), "socket", cfg.SocketPath)
		if cfg.OnReady != nil {
			cfg.OnReady(info)
		}
	})

	<-ctx.Done()
	wg.Wait()
	errMu.Lock()
	defer errMu.Unlock()
	return runErr
}

// delegatedIdentity prepares the Delegated Identity API on the admin socket,
// when one is configured (nil otherwise). It serves from the same cache,
// and attests callers and the PIDs delegates name with the same attestors,
// as the Workload API.
func delegatedIdentity(cfg Config, svids *cache.Cache, wlAttestor attestor.Attestor, logger *slog.Logger) (*delegatedidentity.Server, net.Listener, error) {
	if cfg.AdminSocketPath == "" {
		return nil, nil, nil
	}
	if len(cfg.delegates) == 0 {
		logger.Warn("admin socket without authorized_delegates: every Delegated Identity API caller will be refused", "socket", cfg.AdminSocketPath)
	}
	srv, err := delegatedidentity.New(delegatedidentity.Options{
		Source:              svids,
		Attestor:            wlAttestor,
		AuthorizedDelegates: cfg.delegates,
		Logger:              logger.With("component", "delegatedidentity"),
	})
	if err != nil {
		return nil, nil, err
	}
	lis, err := delegatedidentity.Listen(cfg.AdminSocketPath)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: admin socket: %w", err)
	}
	return srv, lis, nil
}

// serverLink is the agent's side of the server: the client that attests and
// renews, and the manager that syncs the cache. It needs the trust bundle,
// which a download can delay; until then the cache is served alone.
type serverLink struct {
	client  *client.Client
	manager *manager.Manager
}

func newServerLink(cfg Config, td spiffeid.TrustDomain, roots []*x509.Certificate, svids *cache.Cache,
	attestLatency prometheus.Observer, mgrMetrics *manager.Metrics, logger *slog.Logger) (*serverLink, error) {
	cl, err := client.New(client.Config{
		ServerAddr:        cfg.ServerAddress,
		TrustDomain:       td,
		DataDir:           cfg.DataDir,
		NodeAttestor:      cfg.nodeAttestor(td),
		TrustBundle:       roots,
		InsecureBootstrap: cfg.InsecureBootstrap,
		AttestDuration:    attestLatency,
		Logger:            logger.With("component", "client"),
	})
	if err != nil {
		return nil, err
	}
	keyType, err := manager.ParseKeyType(cfg.WorkloadKeyType)
	if err != nil {
		return nil, err
	}
	mgr, err := manager.New(manager.Config{
		KeyType:         keyType,
		Server:          cl.Service(),
		Cache:           svids,
		TrustDomain:     td,
		OnBundle:        cl.UpdateBundle,
		OnAuthFailure:   cl.ReportAuthFailure,
		ConnectionMoved: cl.ConnectionMoved,
		Metrics:         mgrMetrics,
		Logger:          logger.With("component", "manager"),
	})
	if err != nil {
		cl.Close()
		return nil, err
	}
	return &serverLink{client: cl, manager: mgr}, nil
}

// startupBackoff paces the retries of a start: the trust bundle download
// and the first attestation.
func startupBackoff() *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(500*time.Millisecond),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
}

// startClient attests (or loads the persisted agent SVID), retrying while
// the server is unreachable. A server whose certificate the trust bundle does
// not vouch for is a configuration error (wrong --trust-domain or
// --trust-bundle): with nothing cached to serve the agent stops at once and
// says so, instead of retrying forever as if the server were down. Refused
// evidence (a used join token, a service account not allowed) is final too.
func startClient(ctx context.Context, cl *client.Client, cfg Config, servingCached func() bool, logger *slog.Logger) error {
	bo := startupBackoff()
	for {
		err := cl.Start(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		default:
			return fmt.Errorf("agent: %s", statusMessage(err))
		}
		d := bo.NextBackOff()
		if reason, ok := untrustedServer(err); ok {
			msg := fmt.Sprintf("the server at %s is not trusted: %s; check --trust-domain (%s) and %s, which must hold the roots of that server's trust domain",
				cfg.ServerAddress, reason, cfg.TrustDomain, cfg.trustBundleSource())
			if !servingCached() {
				return fmt.Errorf("agent: %s", msg)
			}
			logger.Error(msg+"; serving cached SVIDs and retrying", "retry_in", d.Round(time.Millisecond))
		} else {
			logger.Warn("server unreachable; serving cached SVIDs and retrying attestation", "error", err, "retry_in", d.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// untrustedServer reports whether err is a TLS handshake the agent refused
// because of the server's certificate (it does not verify against the
// bundle, or is not the trust domain's server ID), and why. A handshake cut
// short (EOF, reset, timeout: a load balancer with no backend) is not: the
// server is then retried as unreachable. gRPC keeps only the text of the
// verifier's error, so it is recognised by go-spiffe's wording.
func untrustedServer(err error) (string, bool) {
	const marker = "authentication handshake failed: "
	msg := err.Error()
	i := strings.Index(msg, marker)
	if i < 0 {
		return "", false
	}
	reason := strings.ReplaceAll(strings.TrimSuffix(msg[i+len(marker):], `"`), `\"`, `"`)
	for _, verdict := range []string{"x509svid: ", "unexpected ID", "tls: failed to verify certificate"} {
		if strings.HasPrefix(reason, verdict) {
			return reason, true
		}
	}
	return "", false
}

// rpcPrefix is how gRPC prefixes a status in an error's text.
var rpcPrefix = regexp.MustCompile(`rpc error: code = \w+ desc = `)

// statusMessage is err's text without gRPC's "rpc error: code = ... desc ="
// prefix, which means nothing to a user.
func statusMessage(err error) string {
	return rpcPrefix.ReplaceAllString(err.Error(), "")
}

// trustBundleSource names, for a message, where the server's roots came from.
func (c *Config) trustBundleSource() string {
	if c.TrustBundleURL != "" {
		return "--trust-bundle-url (" + c.TrustBundleURL + ")"
	}
	return "--trust-bundle"
}

// loadTrustBundle reads the configured roots: TrustBundlePEM, else
// TrustBundleFile in TrustBundleFormat (validated). It is read at every
// start, and its roots are trusted alongside the persisted server bundle; a
// TrustBundleURL is downloaded at every start likewise, by Run.
func loadTrustBundle(cfg Config, td spiffeid.TrustDomain) ([]*x509.Certificate, error) {
	if len(cfg.TrustBundlePEM) > 0 {
		roots, err := parseTrustBundle(cfg.TrustBundlePEM, TrustBundleFormatPEM, td)
		if err != nil {
			return nil, fmt.Errorf("agent: trust bundle: %w", err)
		}
		return roots, nil
	}
	if cfg.TrustBundleFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(cfg.TrustBundleFile)
	if err != nil {
		return nil, fmt.Errorf("agent: trust bundle: %w", err)
	}
	roots, err := parseTrustBundle(data, cfg.TrustBundleFormat, td)
	if err != nil {
		return nil, fmt.Errorf("agent: trust bundle %s (format %s): %w", cfg.TrustBundleFile, cfg.TrustBundleFormat, err)
	}
	return roots, nil
}

// readiness answers /ready: attested, synced at least once, and serving.
type readiness struct {
	// link is nil until the trust bundle is known; notReady says why then.
	link       atomic.Pointer[serverLink]
	notReady   error
	cache      *cache.Cache
	healthAddr string
}

// agentSVIDExpiry is when the agent's current SVID expires, if it has one.
func (r *readiness) agentSVIDExpiry() (time.Time, bool) {
	l := r.link.Load()
	if l == nil {
		return time.Time{}, false
	}
	svid, err := l.client.GetX509SVID()
	if err != nil {
		return time.Time{}, false
	}
	return svid.Certificates[0].NotAfter, true
}

func (r *readiness) check(context.Context) error {
	l := r.link.Load()
	if l == nil {
		return r.notReady
	}
	if err := l.client.Ready(); err != nil {
		return err
	}
	last := l.manager.LastSync()
	if last.IsZero() {
		return errors.New("attested; waiting for the first sync from the server")
	}
	return nil
}

// describe is the /ready body: who the agent is and how fresh its state.
// Called only after check passed.
func (r *readiness) describe() string {
	l := r.link.Load()
	last := l.manager.LastSync()
	st := r.cache.Stats()
	return fmt.Sprintf("ok: agent %s; last sync %s ago; %d workload SVIDs cached for %d entries\n",
		l.client.AgentID(), time.Since(last).Round(time.Millisecond), st.SVIDs, st.Entries)
}

// mintJWTSVID is the cache's JWT minter: the server's, once there is a
// link; before, a retryable Unavailable, as the client answers before it
// has attested.
func (r *readiness) mintJWTSVID(ctx context.Context, entryID string, audience []string) (*jwtsvid.SVID, error) {
	l := r.link.Load()
	if l == nil {
		return nil, status.Error(codes.Unavailable, "the agent has not attested to the server yet")
	}
	return l.client.MintJWTSVID(ctx, entryID, audience)
}

// serveHealth serves health.Server's handler, with /ready answering the
// age of the last sync in its body.
func serveHealth(ctx context.Context, hs *health.Server, r *readiness, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/", hs.Handler())
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := r.check(req.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ok: %v\n", err)
			return
		}
		fmt.Fprint(w, r.describe())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("agent: health listener: %w", err)
	}
	return nil
}
