package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

// fetchTimeout bounds one fetch, connection and body included.
const fetchTimeout = 30 * time.Second

// errNotBootstrapped: an https_spiffe endpoint cannot be authenticated
// before an operator has set a first bundle of its trust domain.
var errNotBootstrapped = errors.New("not bootstrapped")

// refresher keeps one foreign trust domain's bundle current.
type refresher struct {
	rel        Relationship
	store      store.Store
	catalog    *catalog.Catalog
	logger     *slog.Logger
	minRefresh time.Duration
	maxRefresh time.Duration
	// statuses records each fetch's outcome (nil: not recorded).
	statuses *refreshStatuses
}

// run fetches at once, then at each bundle's refresh hint (bounded), and
// after a failure with exponential backoff, until ctx ends. While an
// https_spiffe relationship waits for its bootstrap bundle it also retries
// on every store change, so `signet server bundle set` takes effect at once.
func (r *refresher) run(ctx context.Context) {
	retry := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(time.Second, r.minRefresh)),
		backoff.WithMaxInterval(min(5*time.Minute, r.maxRefresh)),
		backoff.WithMaxElapsedTime(0))
	for {
		var storeChanged <-chan struct{}
		wait, err := r.refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errNotBootstrapped):
			wait = retry.NextBackOff()
			_, storeChanged = r.catalog.Current()
			r.logger.Error("federation: cannot authenticate the bundle endpoint yet; retrying", "trust_domain", r.rel.TrustDomain.Name(),
				"error", err, "retry_in", wait.Round(time.Millisecond))
		case err != nil:
			wait = retry.NextBackOff()
			r.logger.Error("federation: bundle refresh failed; keeping the current bundle and retrying", "trust_domain", r.rel.TrustDomain.Name(),
				"url", r.rel.URL, "error", err, "retry_in", wait.Round(time.Millisecond))
		default:
			retry.Reset()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-storeChanged:
		}
		t.Stop()
	}
}

// refresh fetches and stores the bundle once, and returns when to refresh next.
func (r *refresher) refresh(ctx context.Context) (wait time.Duration, err error) {
	defer func() {
		// A fetch cut short by the server stopping is no failure.
		if r.statuses != nil && ctx.Err() == nil {
			r.statuses.record(r.rel.TrustDomain, time.Now(), err)
		}
	}()
	td := r.rel.TrustDomain
	var tlsConf *tls.Config
	switch r.rel.Profile {
	case ProfileSPIFFE:
		// The endpoint's ID may belong to another trust domain (SPIFFE
		// Federation 7.6): its bundle is the one that authenticates.
		epTD := r.rel.EndpointID.TrustDomain()
		held, err := heldX509Bundle(ctx, r.store, epTD)
		if err != nil {
			return 0, err
		}
		if held.Empty() {
			return 0, fmt.Errorf("%w: no X.509 bundle of %s is held to authenticate %s at %s; set one with `signet server bundle set --trust-domain %s --path FILE` (the file from `signet server bundle show --format spiffe` there)",
				errNotBootstrapped, epTD, r.rel.EndpointID, r.rel.URL, epTD)
		}
		tlsConf = tlsconfig.TLSClientConfig(held, tlsconfig.AuthorizeID(r.rel.EndpointID))
	case ProfileWeb:
		roots, err := loadRoots(r.rel.CAFile)
		if err != nil {
			return 0, err
		}
		tlsConf = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	default:
		return 0, fmt.Errorf("unknown bundle endpoint profile %q", r.rel.Profile)
	}
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	b, err := fetchBundle(fctx, td, r.rel.URL, tlsConf)
	if err != nil {
		return 0, err
	}
	auths, err := Authorities(b)
	if err != nil {
		return 0, fmt.Errorf("fetched from %s: %w", r.rel.URL, err)
	}
	changed, err := r.store.SetBundle(ctx, td.Name(), auths)
	if err != nil {
		return 0, err
	}
	next := DefaultRefreshHint
	if hint, ok := b.RefreshHint(); ok {
		next = hint
	}
	next = min(max(next, r.minRefresh), r.maxRefresh)
	seq, _ := b.SequenceNumber()
	if changed {
		r.logger.Info("federation: bundle updated", "trust_domain", td.Name(), "x509_roots", len(b.X509Authorities()),
			"jwt_keys", len(b.JWTAuthorities()), "spiffe_sequence", seq, "next_refresh", next)
	} else {
		r.logger.Debug("federation: bundle unchanged", "trust_domain", td.Name(), "spiffe_sequence", seq, "next_refresh", next)
	}
	return next, nil
}

// maxBundleSize bounds a fetched bundle document: real ones are a few KiB,
// and a peer must not be able to make us read without end.
const maxBundleSize = 4 << 20

// fetchBundle GETs a bundle document over TLS configured by tlsConf. It
// follows no redirect: a redirect could lead to plain http, where neither
// profile authenticates anything. (go-spiffe's federation.FetchBundle
// follows redirects and reads bodies without a limit.)
func fetchBundle(ctx context.Context, td spiffeid.TrustDomain, url string, tlsConf *tls.Config) (*spiffebundle.Bundle, error) {
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("bundle endpoint %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// The *url.Error names the method and URL already.
		return nil, fmt.Errorf("fetch bundle: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch bundle from %s: status %s (redirects are not followed)", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch bundle from %s: %w", url, err)
	}
	if len(body) > maxBundleSize {
		return nil, fmt.Errorf("fetch bundle from %s: the document is larger than %d bytes", url, maxBundleSize)
	}
	b, err := spiffebundle.Parse(td, body)
	if err != nil {
		return nil, fmt.Errorf("bundle from %s: %w", url, err)
	}
	return b, nil
}

// loadRoots reads the PEM roots of an https_web relationship; no file means
// the system's roots (nil). It is read at each fetch, so a replaced file
// takes effect without a restart.
func loadRoots(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("ca_file %s holds no PEM certificate", path)
	}
	return pool, nil
}
