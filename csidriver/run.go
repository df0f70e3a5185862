package csidriver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sync/errgroup"
)

// Run serves the CSI driver until ctx ends: it opens the unix endpoint
// (removing a stale socket), serves Identity and Node over gRPC, serves
// /healthz when cfg.HealthListen is set, and on shutdown stops gracefully
// and removes its socket. Mounts are left in place: pods keep their socket
// dir across driver restarts.
func Run(ctx context.Context, cfg Config) error {
	d, err := NewDriver(cfg)
	if err != nil {
		return err
	}
	cfg = d.Config()
	log := cfg.Logger
	path, _ := ParseEndpoint(cfg.Endpoint) // validated by NewDriver

	ln, err := Listen(ctx, cfg.Endpoint)
	if err != nil {
		return err
	}
	var healthLn net.Listener
	if cfg.HealthListen != "" {
		var lc net.ListenConfig
		if healthLn, err = lc.Listen(ctx, "tcp", cfg.HealthListen); err != nil {
			ln.Close()
			return fmt.Errorf("health listener %s: %w", cfg.HealthListen, err)
		}
	}

	srv := d.NewGRPCServer()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		log.Info("CSI driver serving", "driver", cfg.DriverName, "endpoint", cfg.Endpoint,
			"node_id", cfg.NodeID, "socket_dir", cfg.SocketDir, "pods_root", cfg.PodsRoot)
		if err := srv.Serve(ln); err != nil {
			return fmt.Errorf("CSI gRPC server: %w", err)
		}
		return nil
	})
	if healthLn != nil {
		g.Go(func() error { return serveHealth(gctx, healthLn, HealthHandler(d, path), log) })
	}
	g.Go(func() error {
		<-gctx.Done()
		stopGracefully(srv.GracefulStop, srv.Stop, 5*time.Second)
		return nil
	})
	err = g.Wait()
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		log.Warn("could not remove endpoint socket", "path", path, "err", rerr)
	}
	log.Info("CSI driver stopped")
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

// stopGracefully lets in-flight calls (a mount in progress) finish, but
// not forever.
func stopGracefully(graceful, hard func(), timeout time.Duration) {
	done := make(chan struct{})
	go func() { graceful(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		hard()
		<-done
	}
}
