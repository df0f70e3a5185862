package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/internal/peercred"
)

// DefaultSocketPath is where the agent serves the Workload API by default.
const DefaultSocketPath = "/run/signet/sockets/agent.sock"

// Options configure a Server.
type Options struct {
	// Provider serves the SVIDs and bundles. Required.
	Provider cache.Provider
	// Attestor turns a caller's PID into selectors. Required.
	Attestor attestor.Attestor
	// Logger receives attestation failures and refusals (never key
	// material). Default slog.Default().
	Logger *slog.Logger
	// Metrics, when set, receives the Workload API metrics.
	Metrics *prometheus.Registry
	// SDS configures the Envoy SDS v3 service served beside the Workload
	// API on the same socket.
	SDS SDSOptions
	// ShutdownGrace bounds how long Serve waits for calls in flight when
	// its context ends. Default 5s.
	ShutdownGrace time.Duration
}

// Server is a Workload API server. A Server serves once: one socket, until
// its context ends.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	provider cache.Provider
	attestor attestor.Attestor
	log      *slog.Logger
	metrics  *metrics
	grace    time.Duration
	sds      SDSOptions
	served   atomic.Bool
	// stopping is closed when Serve's context ends, so open streams end with
	// Unavailable (which clients retry) instead of holding up shutdown.
	stopping chan struct{}
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Provider == nil {
		return nil, errors.New("workload API: Options.Provider is required")
	}
	if opts.Attestor == nil {
		return nil, errors.New("workload API: Options.Attestor is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 5 * time.Second
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, err
	}
	return &Server{
		provider: opts.Provider,
		attestor: opts.Attestor,
		log:      opts.Logger,
		metrics:  m,
		grace:    opts.ShutdownGrace,
		sds:      opts.SDS.withDefaults(),
		stopping: make(chan struct{}),
	}, nil
}

// Serve listens on socketPath (see Listen) and serves until ctx ends, then
// stops and removes the socket. It returns nil after a shutdown caused by
// ctx.
func (s *Server) Serve(ctx context.Context, socketPath string) error {
	lis, err := Listen(socketPath)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, lis)
}

// ServeListener serves on lis until ctx ends, then closes it. A Unix
// listener from Listen removes its socket file when closed.
func (s *Server) ServeListener(ctx context.Context, lis net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		lis.Close()
		return errors.New("workload API: a Server serves only once; create a new one")
	}
	gs := grpc.NewServer(
		grpc.Creds(peercred.Credentials()),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	workload.RegisterSpiffeWorkloadAPIServer(gs, s)
	secretv3.RegisterSecretDiscoveryServiceServer(gs, &sdsService{s: s})
	s.log.Info("workload API serving", "address", lis.Addr().String())
	if err := ServeGRPC(ctx, gs, lis, s.grace, func() { close(s.stopping) }); err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	return nil
}

// ServeGRPC serves gs on lis until ctx ends or serving fails. When ctx ends
// it calls stopping (which should end open streams with a status clients
// retry), then stops gs gracefully, and forcibly after grace. It returns nil
// after a shutdown caused by ctx.
func ServeGRPC(ctx context.Context, gs *grpc.Server, lis net.Listener, grace time.Duration, stopping func()) error {
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	stopping()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		gs.Stop()
		<-done
	}
	<-errc
	return nil
}

// Listen prepares socketPath and listens on it (ListenUnix) with the parent
// directory 0755 and the socket 0777: who may use it is decided per caller,
// by attestation.
func Listen(socketPath string) (net.Listener, error) {
	lis, err := ListenUnix(socketPath, 0o755, 0o777)
	if err != nil {
		return nil, fmt.Errorf("workload API: %w", err)
	}
	return lis, nil
}

// ListenUnix prepares socketPath and listens on it: it creates the parent
// directory (dirMode) if missing, replaces a stale socket left by a dead
// process, refuses to take over a socket another server is answering on or a
// path that is not a socket, and gives the socket sockMode.
func ListenUnix(socketPath string, dirMode, sockMode fs.FileMode) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socketPath), dirMode); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if fi, err := os.Lstat(socketPath); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", socketPath)
		}
		if c, err := net.DialTimeout("unix", socketPath, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use by another server", socketPath)
		}
		if err := os.Remove(socketPath); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := os.Chmod(socketPath, sockMode); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return lis, nil
}
