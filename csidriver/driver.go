package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Defaults for Config fields left empty.
const (
	DefaultDriverName = "csi.signet.dev"
	DefaultPodsRoot   = "/var/lib/kubelet/pods"
	DefaultSocketDir  = "/run/signet/sockets"
	DefaultSocketName = "agent.sock"
	DefaultEndpoint   = "unix:///var/lib/kubelet/plugins/csi.signet.dev/csi.sock"

	// agentDialTimeout bounds how long Probe waits for the agent socket.
	agentDialTimeout = time.Second
)

// Config is everything `signet csi` needs.
type Config struct {
	// DriverName is the CSI plugin name; it must match the CSIDriver object.
	DriverName string
	// Version is reported as the plugin's vendor version.
	Version string
	// Endpoint is where the CSI gRPC server listens: unix:///PATH.
	Endpoint string
	// SocketDir is the agent's Workload API socket directory, bind-mounted
	// into pods.
	SocketDir string
	// SocketName is the agent socket's name inside SocketDir (for Probe).
	SocketName string
	// NodeID is reported by NodeGetInfo.
	NodeID string
	// PodsRoot is kubelet's pods dir; every target path must be below it.
	PodsRoot string
	// HealthListen is the /healthz listener address; empty disables it.
	HealthListen string
	// Logger receives the driver's logs; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DriverName == "" {
		c.DriverName = DefaultDriverName
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	if c.SocketDir == "" {
		c.SocketDir = DefaultSocketDir
	}
	if c.SocketName == "" {
		c.SocketName = DefaultSocketName
	}
	if c.PodsRoot == "" {
		c.PodsRoot = DefaultPodsRoot
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if err := ValidateDriverName(c.DriverName); err != nil {
		return err
	}
	if _, err := ParseEndpoint(c.Endpoint); err != nil {
		return err
	}
	if c.NodeID == "" {
		return errors.New("node ID is empty: set --node-id or the MY_NODE_NAME environment variable")
	}
	if !filepath.IsAbs(c.SocketDir) {
		return fmt.Errorf("workload API socket dir %q: want an absolute path", c.SocketDir)
	}
	if filepath.Base(c.SocketName) != c.SocketName {
		return fmt.Errorf("agent socket name %q: want a file name, not a path", c.SocketName)
	}
	return ValidatePodsRoot(c.PodsRoot)
}

// ResolveNodeID returns flagValue, or else MY_NODE_NAME from getenv (the
// downward API variable the DaemonSet sets).
func ResolveNodeID(flagValue string, getenv func(string) string) string {
	if flagValue != "" {
		return flagValue
	}
	return getenv("MY_NODE_NAME")
}

// Driver is the CSI Identity and Node service. Its exported methods are the
// plain functions the gRPC services call.
type Driver struct {
	cfg   Config
	log   *slog.Logger
	mnt   *mounter
	locks keyedMutex
}

// NewDriver checks cfg (filling defaults) and returns a Driver.
func NewDriver(cfg Config) (*Driver, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Driver{cfg: cfg, log: cfg.Logger, mnt: newMounter()}, nil
}

// Config returns the driver's configuration with defaults filled in.
func (d *Driver) Config() Config { return d.cfg }

// Ready reports nil when the agent's socket directory exists and its socket
// accepts a connection, else why not.
func (d *Driver) Ready(ctx context.Context) error {
	fi, err := os.Stat(d.cfg.SocketDir)
	if err != nil {
		return fmt.Errorf("workload API socket dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("workload API socket dir %s is not a directory", d.cfg.SocketDir)
	}
	sock := filepath.Join(d.cfg.SocketDir, d.cfg.SocketName)
	ctx, cancel := context.WithTimeout(ctx, agentDialTimeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", sock)
	if err != nil {
		return fmt.Errorf("agent socket does not answer: %w", err)
	}
	return conn.Close()
}

// NewGRPCServer returns a gRPC server with the Identity and Node services
// registered and calls logged.
func (d *Driver) NewGRPCServer() *grpc.Server {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(d.logCalls))
	csi.RegisterIdentityServer(srv, &identityServer{d: d})
	csi.RegisterNodeServer(srv, &nodeServer{d: d})
	return srv
}

func (d *Driver) logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	// Debug only: Publish and Unpublish log their own outcome with pod details.
	resp, err := handler(ctx, req)
	d.log.Debug("CSI call", "method", info.FullMethod, "code", status.Code(err).String())
	return resp, err
}

// Listen opens the unix endpoint, creating its directory and removing a
// stale socket left by a previous run. A socket that still answers belongs
// to a live driver and is left alone.
func Listen(ctx context.Context, endpoint string) (net.Listener, error) {
	path, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create endpoint dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("endpoint %s exists and is not a socket; not removing it", path)
		}
		dctx, cancel := context.WithTimeout(ctx, agentDialTimeout)
		conn, derr := (&net.Dialer{}).DialContext(dctx, "unix", path)
		cancel()
		if derr == nil {
			conn.Close()
			return nil, fmt.Errorf("endpoint %s is in use by a running process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale endpoint socket: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("stat endpoint: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}
