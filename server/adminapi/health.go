package adminapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// NotReadyReasonKey is the trailer of a health Check answered NOT_SERVING:
// why the server is not ready, for `signet server healthcheck` to print.
// Binary (-bin), as an error message may hold any byte.
const NotReadyReasonKey = "signet-not-ready-reason-bin"

// healthInterval is how often the status is refreshed for Watch streams;
// a Check always asks afresh.
const healthInterval = 5 * time.Second

// readyTimeout bounds one readiness check (a store that does not answer).
const readyTimeout = 5 * time.Second

// health is the standard gRPC health service (the overall service, "")
// on the admin socket: SERVING exactly when Config.Ready says so.
type health struct {
	*grpchealth.Server
	ready  func(context.Context) error
	logger *slog.Logger

	mu      sync.Mutex
	lastErr error // the last check's verdict, to log changes once
	checked bool
}

func newHealth(ready func(context.Context) error, logger *slog.Logger) *health {
	h := &health{Server: grpchealth.NewServer(), ready: ready, logger: logger}
	// Not known to be ready until checked.
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	return h
}

func (h *health) register(g *grpc.Server) { healthpb.RegisterHealthServer(g, h) }

// Check checks readiness now, so the answer is never stale; NOT_SERVING
// carries the reason in the NotReadyReasonKey trailer.
func (h *health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() == "" {
		if err := h.update(ctx); err != nil {
			_ = grpc.SetTrailer(ctx, metadata.Pairs(NotReadyReasonKey, err.Error()))
		}
	}
	return h.Server.Check(ctx, req)
}

// update checks readiness and sets the status (ignored once shut down).
func (h *health) update(ctx context.Context) error {
	checkCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	err := h.ready(checkCtx)
	if ctx.Err() != nil {
		// The asker left, or the server stops: no verdict on the server.
		return err
	}
	st := healthpb.HealthCheckResponse_SERVING
	if err != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.SetServingStatus("", st)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err != nil && (!h.checked || h.lastErr == nil):
		h.logger.Warn("server not ready", "reason", err)
	case err == nil && h.checked && h.lastErr != nil:
		h.logger.Info("server ready again")
	}
	h.lastErr, h.checked = err, true
	return err
}

// RunHealth keeps the health status current for Watch streams until ctx
// ends, then answers NOT_SERVING while the server stops.
func (s *Service) RunHealth(ctx context.Context) error {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		s.health.update(ctx)
		select {
		case <-ctx.Done():
			s.health.Shutdown()
			return nil
		case <-t.C:
		}
	}
}

// CheckHealth asks the server on the admin socket at path whether it is
// ready (SERVING), or with shallow only whether it answers at all. The
// error is one line naming what failed: no socket, no permission, nobody
// listening, or not ready and why.
func CheckHealth(ctx context.Context, path string, shallow bool) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("admin socket %s does not exist: is `signet server run` up, and is --admin-socket right?", path)
	case errors.Is(err, fs.ErrPermission):
		return permissionDenied(path)
	case err != nil:
		return fmt.Errorf("admin socket %s: %w", path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("admin socket %s is not a socket", path)
	}
	conn, err := dial(path)
	if err != nil {
		return err
	}
	defer conn.Close()
	var trailer metadata.MD
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
	if err != nil {
		st := status.Convert(err)
		switch {
		case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "permission denied"):
			return permissionDenied(path)
		case st.Code() == codes.Unavailable && strings.Contains(st.Message(), "connection refused"):
			return fmt.Errorf("nothing listens on admin socket %s: the server is down (the socket is a stopped server's)", path)
		case st.Code() == codes.DeadlineExceeded:
			return fmt.Errorf("the server on admin socket %s did not answer in time", path)
		}
		return fmt.Errorf("health check on admin socket %s: %s (%s)", path, st.Message(), st.Code())
	}
	if shallow || resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
		return nil
	}
	if reason := trailer.Get(NotReadyReasonKey); len(reason) > 0 {
		return fmt.Errorf("server is not ready (%s): %s", resp.GetStatus(), oneLine(reason[0]))
	}
	return fmt.Errorf("server is not ready (%s)", resp.GetStatus())
}

func permissionDenied(path string) error {
	return fmt.Errorf("permission denied on the server's admin socket %s: run this as root, or as the server's user or group", path)
}

// oneLine keeps a reason to one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
