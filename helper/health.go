package helper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Health tracks what /ready and /live report: ready once the first file set
// is written; live while the Workload API stream has not been down longer
// than the threshold and the SVID on disk has not expired.
type Health struct {
	threshold time.Duration
	now       func() time.Time

	mu        sync.Mutex
	written   bool
	notAfter  time.Time
	downSince time.Time // zero while the stream is up
}

// NewHealth returns a Health with the given stream-down threshold.
func NewHealth(threshold time.Duration) *Health {
	return &Health{threshold: threshold, now: time.Now}
}

// Written records a file set on disk whose SVID expires at notAfter (zero:
// a set of JWT bundles alone, which does not expire).
func (h *Health) Written(notAfter time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.written, h.notAfter = true, notAfter
}

// StreamUp records a message from the Workload API.
func (h *Health) StreamUp() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.downSince = time.Time{}
}

// StreamDown records a Workload API stream error; the outage starts at the
// first error after the stream was up.
func (h *Health) StreamDown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.downSince.IsZero() {
		h.downSince = h.now()
	}
}

// Ready reports nil once the first set is written.
func (h *Health) Ready(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.written {
		return errors.New("no file set written yet")
	}
	return nil
}

// Live reports nil unless the stream has been down too long or the SVID on
// disk has expired.
func (h *Health) Live(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if !h.downSince.IsZero() && now.Sub(h.downSince) > h.threshold {
		return fmt.Errorf("workload API stream down since %s", h.downSince.UTC().Format(time.RFC3339))
	}
	if h.written && !h.notAfter.IsZero() && now.After(h.notAfter) {
		return fmt.Errorf("SVID on disk expired at %s", h.notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// Handler serves the two checks on the configured paths.
func (h *Health) Handler(cfg HealthConfig) http.Handler {
	mux := http.NewServeMux()
	serve := func(check func(context.Context) error) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if err := check(r.Context()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ok: %v\n", err)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	}
	mux.HandleFunc("GET "+cfg.LivenessPath, serve(h.Live))
	mux.HandleFunc("GET "+cfg.ReadinessPath, serve(h.Ready))
	return mux
}

// Serve listens on addr until ctx ends. It binds before returning, so a bad
// address is reported at start.
func (h *Health) Serve(ctx context.Context, addr string, cfg HealthConfig, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health listener: %w", err)
	}
	srv := &http.Server{Handler: h.Handler(cfg), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health listener stopped", "error", err)
		}
	}()
	log.Info("health listener", "addr", ln.Addr().String())
	return nil
}
