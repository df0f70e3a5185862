package federation

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

// Options is what the federation service needs from the server.
type Options struct {
	Config      Config
	TrustDomain spiffeid.TrustDomain
	Store       store.Store
	Catalog     *catalog.Catalog
	// ServerCert returns the server's current X509-SVID, presented by an
	// https_spiffe bundle endpoint.
	ServerCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Logger     *slog.Logger
}

// Service is the bundle endpoint (if configured) and the refreshers.
type Service struct {
	endpoint   *endpoint
	refreshers []*refresher
}

// New binds the bundle endpoint's listener and loads an https_web
// certificate, so that address and file errors surface before Run.
func New(opts Options) (*Service, error) {
	cfg := opts.Config.withDefaults()
	s := &Service{}
	if cfg.Endpoint != nil {
		var err error
		if s.endpoint, err = newEndpoint(*cfg.Endpoint, opts.TrustDomain, opts.Catalog, opts.ServerCert, opts.Logger); err != nil {
			return nil, err
		}
	}
	for _, rel := range cfg.Relationships {
		if _, err := loadRoots(rel.CAFile); err != nil {
			s.Close()
			return nil, err
		}
		s.refreshers = append(s.refreshers, &refresher{
			rel: rel, store: opts.Store, catalog: opts.Catalog, logger: opts.Logger,
			minRefresh: cfg.MinRefresh, maxRefresh: cfg.MaxRefresh,
		})
	}
	return s, nil
}

// Addr is the bundle endpoint's bound address ("" if none).
func (s *Service) Addr() string {
	if s.endpoint == nil {
		return ""
	}
	return s.endpoint.ln.Addr().String()
}

// Run serves the endpoint and runs the refreshers until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, r := range s.refreshers {
		wg.Go(func() { r.run(ctx) })
	}
	defer wg.Wait()
	if s.endpoint == nil {
		<-ctx.Done()
		return nil
	}
	s.endpoint.logger.Info("bundle endpoint listening", "address", s.Addr())
	return s.endpoint.serve(ctx)
}

// Close releases the listener of a service that will not Run.
func (s *Service) Close() {
	if s.endpoint != nil {
		s.endpoint.ln.Close()
	}
}
