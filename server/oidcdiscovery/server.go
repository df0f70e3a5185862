package oidcdiscovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/signetid/signet/internal/certfile"
	"github.com/signetid/signet/server/catalog"
)

// Options configure a Server.
type Options struct {
	Config Config
	// Bundle returns the trust domain's current bundle (see HandlerOptions).
	Bundle func() catalog.Bundle
	// Logger (slog.Default when nil).
	Logger *slog.Logger
}

// Server is the provider's listener.
type Server struct {
	cfg    Config
	ln     net.Listener
	srv    *http.Server
	logger *slog.Logger
}

// NewServer binds opts.Config.Listen. With a certificate it reads the pair
// now, so that a bad one fails the start rather than every handshake.
func NewServer(opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "oidc_discovery")
	h, err := NewHandler(HandlerOptions{Issuer: opts.Config.Issuer, Bundle: opts.Bundle, SetKeyUse: opts.Config.SetKeyUse, Logger: logger})
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	if opts.Config.CertFile != "" {
		sc, err := certfile.New(opts.Config.CertFile, opts.Config.KeyFile, "OIDC discovery serving certificate", logger)
		if err != nil {
			return nil, fmt.Errorf("oidc_discovery: %w", err)
		}
		warnCertificate(sc, opts.Config.Issuer, logger)
		// TLS 1.2 too: cloud providers' fetchers are not all on 1.3.
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: sc.GetCertificate}
	}
	ln, err := net.Listen("tcp", opts.Config.Listen)
	if err != nil {
		return nil, fmt.Errorf("oidc_discovery listener %s: %w", opts.Config.Listen, err)
	}
	return &Server{cfg: opts.Config, ln: ln, srv: srv, logger: logger}, nil
}

// warnCertificate says at start what relying parties will refuse: a
// certificate that does not name the issuer's host, or one that expired.
// Only a warning: a proxy in front may serve another certificate.
func warnCertificate(sc *certfile.Reloader, issuer string, logger *slog.Logger) {
	cert, err := sc.GetCertificate(nil)
	if err != nil || cert.Leaf == nil {
		return
	}
	u, err := url.Parse(issuer)
	if err != nil {
		return
	}
	if err := cert.Leaf.VerifyHostname(u.Hostname()); err != nil {
		logger.Warn("the serving certificate does not name the issuer's host: relying parties that connect to it will refuse it", "issuer", issuer, "error", err)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		logger.Warn("the serving certificate has expired: relying parties will refuse it", "not_after", cert.Leaf.NotAfter)
	}
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.srv.Shutdown(sctx); err != nil {
			s.srv.Close()
		}
	}()
	tlsOn := s.srv.TLSConfig != nil
	s.logger.Info("OIDC discovery provider listening", "address", s.Addr(), "issuer", s.cfg.Issuer,
		"discovery", s.cfg.Issuer+ConfigurationPath, "https", tlsOn)
	var err error
	if tlsOn {
		err = s.srv.ServeTLS(s.ln, "", "")
	} else {
		err = s.srv.Serve(s.ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("oidc_discovery: %w", err)
	}
	return nil
}

// Close releases the listener of a Server that never served (after Serve
// it is closed already; closing again is harmless).
func (s *Server) Close() { s.ln.Close() }
