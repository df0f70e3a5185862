package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/certfile"
	"github.com/signetid/signet/server/catalog"
)

// endpoint serves the own trust domain's bundle document over HTTPS.
type endpoint struct {
	ln     net.Listener
	srv    *http.Server
	logger *slog.Logger
}

// newEndpoint binds cfg.Address. serverCert gives the server's current
// X509-SVID (https_spiffe); https_web reads cfg's files, now (so that a bad
// pair fails the start) and again whenever they change.
func newEndpoint(cfg EndpointConfig, td spiffeid.TrustDomain, cat *catalog.Catalog, serverCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), logger *slog.Logger) (*endpoint, error) {
	getCert := serverCert
	if cfg.Profile == ProfileWeb {
		fc, err := certfile.New(cfg.CertFile, cfg.KeyFile, "bundle endpoint certificate", logger)
		if err != nil {
			return nil, err
		}
		getCert = fc.GetCertificate
	}
	src := &ownBundle{td: td, catalog: cat, refreshHint: cfg.RefreshHint}
	h, err := federation.NewHandler(td, src)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint handler: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint listener %s: %w", cfg.Address, err)
	}
	srv := &http.Server{
		Handler: h,
		// TLS 1.2 too: foreign servers of other implementations may not
		// speak 1.3 yet.
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return &endpoint{ln: ln, srv: srv, logger: logger}, nil
}

// serve serves until ctx ends.
func (e *endpoint) serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := e.srv.Shutdown(sctx); err != nil {
			e.srv.Close()
		}
	}()
	if err := e.srv.ServeTLS(e.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("bundle endpoint: %w", err)
	}
	return nil
}

// ownBundle is the spiffebundle.Source the handler serves: built per
// request from the catalog's current snapshot, so CA and JWT key rotations
// (published to the store) show at once.
type ownBundle struct {
	td          spiffeid.TrustDomain
	catalog     *catalog.Catalog
	refreshHint time.Duration
}

func (o *ownBundle) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td != o.td {
		return nil, fmt.Errorf("no bundle for %s: this server serves %s", td, o.td)
	}
	snap, _ := o.catalog.Current()
	b := snap.OwnBundle(o.td)
	return storedBundle(o.td, b.Authorities, b.Sequence, o.refreshHint)
}
