package delegatedidentity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	pb "github.com/signetid/signet/agent/delegatedidentity/v1"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/internal/peercred"
	"github.com/signetid/signet/internal/selector"
)

// Source is what the API serves from: the agent's SVID cache.
type Source interface {
	cache.Provider
	// Identities returns the SPIFFE IDs of the entries matching a
	// workload with these selectors, signed or not.
	Identities(selectors []selector.Selector) []spiffeid.ID
	// Bundles returns every bundle the agent holds, own and federated.
	Bundles() []*spiffebundle.Bundle
}

var _ Source = (*cache.Cache)(nil)

// Options configure a Server.
type Options struct {
	// Source serves the SVIDs and bundles. Required.
	Source Source
	// Attestor turns a PID into selectors: the caller's, and the workload's
	// a delegate names by PID. Required.
	Attestor attestor.Attestor
	// AuthorizedDelegates are the SPIFFE IDs whose holders may call. Empty:
	// every caller is refused.
	AuthorizedDelegates []spiffeid.ID
	// Logger receives refusals (never key material). Default slog.Default().
	Logger *slog.Logger
	// ShutdownGrace bounds how long ServeListener waits for calls in flight
	// when its context ends. Default 5s.
	ShutdownGrace time.Duration
}

// Server serves the Delegated Identity API. A Server serves once: one
// socket, until its context ends.
type Server struct {
	pb.UnimplementedDelegatedIdentityServer

	source    Source
	attestor  attestor.Attestor
	delegates []spiffeid.ID
	log       *slog.Logger
	grace     time.Duration
	served    atomic.Bool
	// stopping is closed when ServeListener's context ends, so open streams
	// end with Unavailable instead of holding up shutdown.
	stopping chan struct{}
}

// New returns a Server.
func New(opts Options) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("delegated identity API: Options.Source is required")
	}
	if opts.Attestor == nil {
		return nil, errors.New("delegated identity API: Options.Attestor is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 5 * time.Second
	}
	return &Server{
		source:    opts.Source,
		attestor:  opts.Attestor,
		delegates: slices.Clone(opts.AuthorizedDelegates),
		log:       opts.Logger,
		grace:     opts.ShutdownGrace,
		stopping:  make(chan struct{}),
	}, nil
}

// Listen prepares socketPath and listens on it: the directory is created
// 0700 when missing (only the agent's user may reach the socket through
// it), the socket is 0770 as SPIRE's admin socket is, so an existing
// directory can admit a delegate's group. Who is served is decided per
// caller, by attestation.
func Listen(socketPath string) (net.Listener, error) {
	dir := filepath.Dir(socketPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("delegated identity API: create socket directory: %w", err)
	}
	if err := checkSocketDir(dir); err != nil {
		return nil, fmt.Errorf("delegated identity API: %w", err)
	}
	lis, err := workloadapi.ListenUnix(socketPath, 0o700, 0o770)
	if err != nil {
		return nil, fmt.Errorf("delegated identity API: %w", err)
	}
	return lis, nil
}

// checkSocketDir refuses a socket directory that others could write to:
// they could put their own socket in the admin socket's place and hand
// delegates keys and bundles of their choosing. A directory the agent
// created is 0700; an existing one must be the agent's (or root's) and
// writable by nobody else.
func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("admin socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("admin socket directory %s is not a directory (a symbolic link?)", dir)
	case !ok:
		return fmt.Errorf("admin socket directory %s: cannot read its owner", dir)
	case st.Uid != uint32(os.Getuid()) && st.Uid != 0:
		return fmt.Errorf("admin socket directory %s belongs to uid %d: want the agent's uid (%d) or root", dir, st.Uid, os.Getuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("admin socket directory %s is writable by group or others (mode %04o): others could replace the socket; chmod go-w it", dir, fi.Mode().Perm())
	}
	return nil
}

// ServeListener serves on lis until ctx ends, then closes it; it returns nil
// after a shutdown caused by ctx.
func (s *Server) ServeListener(ctx context.Context, lis net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		lis.Close()
		return errors.New("delegated identity API: a Server serves only once; create a new one")
	}
	gs := grpc.NewServer(grpc.Creds(peercred.Credentials()))
	pb.RegisterDelegatedIdentityServer(gs, s)
	s.log.Info("delegated identity API serving", "address", lis.Addr().String(), "authorized_delegates", len(s.delegates))
	if err := workloadapi.ServeGRPC(ctx, gs, lis, s.grace, func() { close(s.stopping) }); err != nil {
		return fmt.Errorf("delegated identity API: %w", err)
	}
	return nil
}
