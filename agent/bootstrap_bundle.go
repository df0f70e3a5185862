package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/agent/client"
)

// Formats of the bootstrap trust bundle (trust_bundle_format), SPIRE's names.
const (
	TrustBundleFormatPEM    = "pem"
	TrustBundleFormatSPIFFE = "spiffe"
)

const (
	// trustBundleFetchTimeout bounds one download, connection and body.
	trustBundleFetchTimeout = 30 * time.Second
	// maxTrustBundleSize bounds a downloaded bundle: real ones are a few
	// KiB, and the host must not be able to make the agent read without end.
	maxTrustBundleSize = 1 << 20
)

// checkTrustBundleURL accepts https://host[:port][/path], and plain http
// only to a loopback host (labs: nothing on the network can answer it). User
// info is refused: it would be sent along and logged with the URL.
func checkTrustBundleURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q: user info in the URL is not allowed", u.Redacted())
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q: want https://host[:port][/path]", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("%q: plain http is allowed only to a loopback host (127.0.0.1, ::1, localhost); use https", raw)
		}
	default:
		return nil, fmt.Errorf("%q: want an https URL", raw)
	}
	return u, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseTrustBundle returns the roots in data: for "pem" its certificates,
// at least one of them a CA; for "spiffe" the X.509 authorities of a SPIFFE
// bundle document. A document carries no trust domain (td only labels it),
// so one of another trust domain is accepted here and refused when the
// server's certificate does not chain to it.
func parseTrustBundle(data []byte, format string, td spiffeid.TrustDomain) ([]*x509.Certificate, error) {
	switch format {
	case TrustBundleFormatPEM:
		certs, err := client.ParsePEMCertificates(data)
		if err != nil {
			return nil, err
		}
		for _, c := range certs {
			if c.IsCA {
				return certs, nil
			}
		}
		return nil, fmt.Errorf("none of its %d certificates is a CA certificate", len(certs))
	case TrustBundleFormatSPIFFE:
		b, err := spiffebundle.Parse(td, data)
		if err != nil {
			return nil, err
		}
		roots := b.X509Authorities()
		if len(roots) == 0 {
			return nil, fmt.Errorf("the SPIFFE bundle document holds no X.509 authority (only %d JWT keys)", len(b.JWTAuthorities()))
		}
		return roots, nil
	}
	return nil, fmt.Errorf("unknown trust bundle format %q", format)
}

// bundleDownload fetches the server's roots from trust_bundle_url.
type bundleDownload struct {
	url    string
	format string
	td     spiffeid.TrustDomain
	client *http.Client
}

// newBundleDownload checks rawURL; roots nil means the system's roots,
// which Go reads from SSL_CERT_FILE and SSL_CERT_DIR when they are set.
func newBundleDownload(rawURL, format string, td spiffeid.TrustDomain, roots *x509.CertPool) (*bundleDownload, error) {
	if _, err := checkTrustBundleURL(rawURL); err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots},
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &bundleDownload{url: rawURL, format: format, td: td, client: &http.Client{
		Transport: tr,
		Timeout:   trustBundleFetchTimeout,
		// A redirect must not lead to plain http elsewhere, nor carry
		// user info: it meets the configured URL's rules.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			if _, err := checkTrustBundleURL(req.URL.String()); err != nil {
				return fmt.Errorf("redirected to %w", err)
			}
			return nil
		},
	}}, nil
}

// fetch downloads and parses the bundle once.
func (d *bundleDownload) fetch(ctx context.Context) ([]*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err // *url.Error: names the method and URL
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", d.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTrustBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: read body: %w", d.url, err)
	}
	if len(body) > maxTrustBundleSize {
		return nil, fmt.Errorf("GET %s: the body is larger than %d bytes", d.url, maxTrustBundleSize)
	}
	roots, err := parseTrustBundle(body, d.format, d.td)
	if err != nil {
		return nil, fmt.Errorf("trust bundle from %s (format %s): %w", d.url, d.format, err)
	}
	return roots, nil
}

// roots returns the URL's roots. An agent with a persisted server bundle
// (it reached the server before) tries once and goes on without them when
// the URL is down: the bundle it holds verifies the server, and waiting
// would keep it from syncing with a server that is up. A first start has
// nothing else to trust, so it retries until the download succeeds.
func (d *bundleDownload) roots(ctx context.Context, dataDir string, logger *slog.Logger) ([]*x509.Certificate, error) {
	if _, err := os.Stat(filepath.Join(dataDir, client.BundleFile)); err != nil {
		return d.retry(ctx, logger)
	}
	roots, err := d.fetch(ctx)
	if err != nil {
		logger.Warn("trust bundle download failed; going on with the server bundle persisted at the last run", "url", d.url, "format", d.format, "error", err)
		return nil, nil
	}
	logger.Info("trust bundle downloaded", "url", d.url, "format", d.format, "roots", len(roots), "sha256", strings.Join(fingerprints(roots), ","))
	return roots, nil
}

// retry fetches until a download succeeds or ctx ends (then ctx's error),
// logging each failure with the URL. Only the roots' count and fingerprints
// are logged.
func (d *bundleDownload) retry(ctx context.Context, logger *slog.Logger) ([]*x509.Certificate, error) {
	roots, err := backoff.RetryNotifyWithData(func() ([]*x509.Certificate, error) {
		return d.fetch(ctx)
	}, backoff.WithContext(startupBackoff(), ctx), func(err error, next time.Duration) {
		logger.Error("trust bundle download failed; retrying", "url", d.url, "format", d.format,
			"error", err, "retry_in", next.Round(time.Millisecond))
	})
	if err != nil {
		return nil, err
	}
	logger.Info("trust bundle downloaded", "url", d.url, "format", d.format, "roots", len(roots), "sha256", strings.Join(fingerprints(roots), ","))
	return roots, nil
}

// fingerprints are the SHA-256 digests of the certificates, in hex.
func fingerprints(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		sum := sha256.Sum256(c.Raw)
		out[i] = hex.EncodeToString(sum[:])
	}
	return out
}
