package csidriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// HealthHandler serves GET /healthz (liveness: the CSI endpoint accepts
// connections) and GET /readyz (the agent socket answers, as in Probe).
// Liveness leaves the agent out on purpose: restarting the driver cannot fix
// a missing agent, and existing pod mounts do not need the driver at all.
func HealthHandler(d *Driver, endpointPath string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeCheck(w, dialUnix(r.Context(), endpointPath))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		writeCheck(w, d.Ready(r.Context()))
	})
	return mux
}

func writeCheck(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ok: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ok")
}

func dialUnix(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, agentDialTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("CSI endpoint %s does not answer: %w", path, err)
	}
	return conn.Close()
}

// serveHealth serves h on ln until ctx ends.
func serveHealth(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("health listener started", "addr", ln.Addr().String())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health listener: %w", err)
	}
	return nil
}
