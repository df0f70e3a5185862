package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/agent/client"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
)

// Config configures `signet dev`.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	// DataDir holds everything; empty means a temporary directory removed on exit.
	DataDir string
	// SocketPath is the Workload API socket; empty: <DataDir>/sockets/agent.sock.
	SocketPath string
	// AdminSocket is the server's admin socket; empty: <DataDir>/admin.sock.
	AdminSocket string
	SVIDTTL     time.Duration
	// HealthListen, if set, serves the agent's /live, /ready and /metrics.
	HealthListen string
	// Out receives the SPIFFE_ENDPOINT_SOCKET line and the guidance for humans.
	Out io.Writer
}

// devJoinToken returns a token for the dev agent, or "" when a restart finds
// it attested with its SVID on disk (the server refuses a token for a live
// agent's ID). If the SVID is gone, the stale agent is evicted first.
func devJoinToken(ctx context.Context, admin api.AdminServiceServer, agentID spiffeid.ID, agentDir string) (string, error) {
	tok, err := admin.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: agentID.String()})
	if status.Code(err) == codes.FailedPrecondition {
		if _, statErr := os.Stat(filepath.Join(agentDir, client.SVIDFile)); statErr == nil {
			return "", nil
		}
		if _, err := admin.EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: agentID.String()}); err != nil {
			return "", fmt.Errorf("evict the dev agent, whose SVID is gone: %w", err)
		}
		tok, err = admin.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: agentID.String()})
	}
	if err != nil {
		return "", fmt.Errorf("create dev join token: %w", err)
	}
	return tok.Token, nil
}

// AgentPath is the path of the dev agent's SPIFFE ID; entries it serves
// take spiffe://<td>/agent/dev as parent.
const AgentPath = "/agent/dev"

// Run starts the server and the agent, registers the calling user and
// prints the SPIFFE_ENDPOINT_SOCKET line once the Workload API serves it.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) error {
	if cfg.DataDir == "" {
		dir, err := os.MkdirTemp("", "signet-dev-")
		if err != nil {
			return fmt.Errorf("create temp data dir: %w", err)
		}
		defer os.RemoveAll(dir)
		cfg.DataDir = dir
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Other users' workloads (nginx as www-data) must reach the socket in
	// <dir>/sockets: the data dir is traversable, while the server's and
	// the agent's own dirs inside it stay 0700.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("chmod data dir: %w", err)
	}
	if cfg.SocketPath == "" {
		cfg.SocketPath = filepath.Join(dir, "sockets", "agent.sock")
	}
	if cfg.AdminSocket == "" {
		cfg.AdminSocket = filepath.Join(dir, "admin.sock")
	}
	if cfg.SocketPath, err = filepath.Abs(cfg.SocketPath); err != nil {
		return fmt.Errorf("socket path: %w", err)
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	agentID, err := spiffeid.FromPath(cfg.TrustDomain, AgentPath)
	if err != nil {
		return err
	}

	srv, err := server.New(ctx, server.Config{
		TrustDomain: cfg.TrustDomain,
		DataDir:     filepath.Join(dir, "server"),
		Listen:      "127.0.0.1:0",
		AdminSocket: cfg.AdminSocket,
		Datastore:   "sqlite://" + filepath.Join(dir, "server", "signet.db"),
		SVIDTTL:     cfg.SVIDTTL,
		JWTTTL:      server.DefaultJWTTTL,
		AgentTTL:    cfg.SVIDTTL,
	}, logger.With("role", "server"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	// fail stops the server (socket removed, store closed) before returning.
	fail := func(err error) error {
		cancel()
		_ = g.Wait()
		return err
	}

	admin := srv.Admin()
	agentDir := filepath.Join(dir, "agent")
	token, err := devJoinToken(ctx, admin, agentID, agentDir)
	if err != nil {
		return fail(err)
	}
	userID, uid, err := registerCaller(ctx, admin, cfg.TrustDomain, agentID)
	if err != nil {
		return fail(err)
	}

	g.Go(func() error {
		return agent.Run(ctx, agent.Config{
			ServerAddress:  srv.Addr(),
			TrustDomain:    cfg.TrustDomain.Name(),
			DataDir:        agentDir,
			JoinToken:      token,
			TrustBundlePEM: srv.BundlePEM(),
			SocketPath:     cfg.SocketPath,
			HealthListen:   cfg.HealthListen,
			OnReady: func(agent.ReadyInfo) {
				fmt.Fprintf(cfg.Out, "# signet dev: server (trust domain %s) and agent %s are running.\n", cfg.TrustDomain.Name(), agentID)
				fmt.Fprintf(cfg.Out, "# %s is registered for unix:uid:%d.\n", userID, uid)
				fmt.Fprintf(cfg.Out, "# Register more workloads with:\n#   signet server entry create --admin-socket %s --parent-id %s --spiffe-id spiffe://%s/... --selector unix:...\n",
					cfg.AdminSocket, agentID, cfg.TrustDomain.Name())
				fmt.Fprintf(cfg.Out, "SPIFFE_ENDPOINT_SOCKET=unix://%s\n", cfg.SocketPath)
			},
		}, logger.With("role", "agent"))
	})
	return g.Wait()
}

var unsafeChars = regexp.MustCompile(`[^a-zA-Z0-9._-]`)

// registerCaller registers spiffe://<td>/dev/<user> for the calling uid; an
// existing identical entry (a restart on the same data dir) is fine.
func registerCaller(ctx context.Context, admin api.AdminServiceServer, td spiffeid.TrustDomain, agentID spiffeid.ID) (spiffeid.ID, int, error) {
	uid := os.Getuid()
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil && u.Username != "" {
		name = unsafeChars.ReplaceAllString(u.Username, "_")
	}
	id, err := spiffeid.FromSegments(td, "dev", name)
	if err != nil {
		return spiffeid.ID{}, 0, fmt.Errorf("dev identity for user %q: %w", name, err)
	}
	_, err = admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: &api.Entry{
		SpiffeId:  id.String(),
		ParentId:  agentID.String(),
		Selectors: []*api.Selector{{Type: "unix", Value: "uid:" + strconv.Itoa(uid)}},
	}})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return spiffeid.ID{}, 0, fmt.Errorf("register %s: %w", id, errors.New(status.Convert(err).Message()))
	}
	return id, uid, nil
}
