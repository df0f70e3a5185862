package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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

// Service is the bundle endpoint (if configured) and one refresher per
// federation relationship: those of the configuration, and those kept in
// the store, which it follows as they are created, changed and deleted.
type Service struct {
	endpoint *endpoint
	opts     Options
	cfg      Config
	statuses refreshStatuses
}

// New binds the bundle endpoint's listener and loads an https_web
// certificate, so that address and file errors surface before Run.
func New(opts Options) (*Service, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{opts: opts, cfg: opts.Config.withDefaults()}
	for _, rel := range s.cfg.Relationships {
		if _, err := loadRoots(rel.CAFile); err != nil {
			return nil, err
		}
	}
	if s.cfg.Endpoint != nil {
		var err error
		if s.endpoint, err = newEndpoint(*s.cfg.Endpoint, opts.TrustDomain, opts.Catalog, opts.ServerCert, opts.Logger); err != nil {
			return nil, err
		}
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
	defer wg.Wait()
	wg.Go(func() { s.runRefreshers(ctx) })
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

// ErrNoRelationship: no relationship is in force with the trust domain.
var ErrNoRelationship = errors.New("no federation relationship is in force with this trust domain")

// Refresh fetches the bundle of td from its relationship in force and
// stores it now (SPIRE's federation refresh), as the refresher would at its
// next turn; the refresher keeps its own schedule.
func (s *Service) Refresh(ctx context.Context, td spiffeid.TrustDomain) error {
	snap, _ := s.opts.Catalog.Current()
	rels, _, _ := s.Relationships(snap)
	i := slices.IndexFunc(rels, func(r Relationship) bool { return r.TrustDomain == td })
	if i < 0 {
		return fmt.Errorf("%s: %w", td.Name(), ErrNoRelationship)
	}
	ref := &refresher{rel: rels[i], store: s.opts.Store, catalog: s.opts.Catalog, logger: s.opts.Logger,
		minRefresh: s.cfg.MinRefresh, maxRefresh: s.cfg.MaxRefresh, statuses: &s.statuses}
	if _, err := ref.refresh(ctx); err != nil {
		// The fetch's errors name the URL.
		return fmt.Errorf("refresh the bundle of %s: %w", td.Name(), err)
	}
	return nil
}

// Relationships are the relationships in force with the snapshot's stored
// ones: the configuration's, then the stored ones for other trust domains
// (the configuration wins), sorted by trust domain. shadowed names the
// stored ones the configuration overrides; invalid, those that do not check
// (written by an older or newer server).
func (s *Service) Relationships(snap *catalog.Snapshot) (rels []Relationship, shadowed, invalid []string) {
	rels = slices.Clone(s.cfg.Relationships)
	configured := make(map[spiffeid.TrustDomain]bool, len(rels))
	for _, r := range rels {
		configured[r.TrustDomain] = true
	}
	for _, st := range snap.Relationships {
		r, err := FromStore(st, s.opts.TrustDomain)
		switch {
		case err != nil:
			invalid = append(invalid, fmt.Sprintf("%s: %v", st.TrustDomain, err))
		case configured[r.TrustDomain]:
			shadowed = append(shadowed, r.TrustDomain.Name())
		default:
			rels = append(rels, r)
		}
	}
	slices.SortFunc(rels, func(a, b Relationship) int { return strings.Compare(a.TrustDomain.Name(), b.TrustDomain.Name()) })
	return rels, shadowed, invalid
}

// runningRefresher is one refresher's goroutine.
type runningRefresher struct {
	rel    Relationship
	cancel context.CancelFunc
	done   chan struct{}
}

// runRefreshers keeps one refresher running per relationship in force,
// restarting one whose relationship changed, until ctx ends.
func (s *Service) runRefreshers(ctx context.Context) {
	running := map[spiffeid.TrustDomain]*runningRefresher{}
	stop := func(td spiffeid.TrustDomain) {
		r := running[td]
		r.cancel()
		<-r.done
		delete(running, td)
		s.statuses.forget(td)
	}
	defer func() {
		for td := range running {
			stop(td)
		}
	}()
	var lastShadowed, lastInvalid []string
	for {
		snap, changed := s.opts.Catalog.Current()
		rels, shadowed, invalid := s.Relationships(snap)
		if !slices.Equal(shadowed, lastShadowed) && len(shadowed) > 0 {
			s.opts.Logger.Warn("federation: the server's configuration overrides stored relationships of the same trust domains", "trust_domains", shadowed)
		}
		if !slices.Equal(invalid, lastInvalid) && len(invalid) > 0 {
			s.opts.Logger.Error("federation: ignoring stored relationships that do not check", "relationships", invalid)
		}
		lastShadowed, lastInvalid = shadowed, invalid
		want := make(map[spiffeid.TrustDomain]Relationship, len(rels))
		for _, r := range rels {
			want[r.TrustDomain] = r
		}
		for td, r := range running {
			if w, ok := want[td]; !ok || w != r.rel {
				stop(td)
				if !ok {
					s.opts.Logger.Info("federation: relationship removed; its bundle is kept", "trust_domain", td.Name())
				}
			}
		}
		for _, rel := range rels {
			if _, ok := running[rel.TrustDomain]; ok {
				continue
			}
			rctx, cancel := context.WithCancel(ctx)
			r := &runningRefresher{rel: rel, cancel: cancel, done: make(chan struct{})}
			running[rel.TrustDomain] = r
			ref := &refresher{rel: rel, store: s.opts.Store, catalog: s.opts.Catalog, logger: s.opts.Logger,
				minRefresh: s.cfg.MinRefresh, maxRefresh: s.cfg.MaxRefresh, statuses: &s.statuses}
			if rel.Stored {
				s.opts.Logger.Info("federation: relationship in force", "trust_domain", rel.TrustDomain.Name(), "url", rel.URL,
					"profile", rel.Profile, "owner", rel.Owner)
			}
			go func() {
				defer close(r.done)
				ref.run(rctx)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
