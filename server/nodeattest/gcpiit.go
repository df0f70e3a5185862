package nodeattest

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/gcpiit"
)

// GCPIITType is the attestation type of GCE instance identity tokens
// (SPIRE's gcp_iit).
const GCPIITType = gcpiit.Type

// DefaultGCPIITPathTemplate renders the agent ID's path under
// spiffe://TD/agent/, as SPIRE's default does under /spire/agent/.
const DefaultGCPIITPathTemplate = "{{ .PluginName }}/{{ .ProjectID }}/{{ .InstanceID }}"

// DefaultGoogleCertsURL is where Google publishes the certificates of the
// keys that sign its tokens (SPIRE's), as a JSON map of key ID to PEM.
const DefaultGoogleCertsURL = "https://www.googleapis.com/oauth2/v1/certs"

const (
	// maxGCPIITPayload bounds a payload (a token is about 1 KiB).
	maxGCPIITPayload = 16 << 10
	// maxGoogleCerts bounds the certificates document (a few KiB).
	maxGoogleCerts = 1 << 20
	// googleCertsMinAge is the least time certificates are kept: a token
	// naming a key not among them refetches them at most this often, so
	// unauthenticated callers cannot make the server hammer Google.
	googleCertsMinAge = 30 * time.Second
	// googleCertsDefaultAge is how long certificates served without an
	// Expires header are kept.
	googleCertsDefaultAge = 5 * time.Minute
	// googleCertsMaxAge bounds an Expires far ahead: a key Google
	// withdraws stops being trusted within a day (Google's own max-age is
	// hours).
	googleCertsMaxAge = 24 * time.Hour
	// googleCertsRetry is the least time between two fetches when the
	// last failed or the certificates expired.
	googleCertsRetry = 5 * time.Second
	// googleCertsTimeout bounds a fetch.
	googleCertsTimeout = 10 * time.Second
	// gcpIITLeeway is the clock skew allowed on exp, nbf and iat
	// (go-jose's default, as SPIRE).
	gcpIITLeeway = time.Minute
)

// googleIssuers are the iss values of Google's tokens.
var googleIssuers = []string{"https://accounts.google.com", "accounts.google.com"}

var (
	// ErrGCPIITRefused: the token is not Google's, has expired, is for
	// another audience, names no instance, or its project is not allowed.
	// The agent API answers PermissionDenied.
	ErrGCPIITRefused = errors.New("gcp_iit attestation refused")
	// ErrGCPIITMalformed: the payload is not an RS256 JWT; InvalidArgument.
	ErrGCPIITMalformed = errors.New("malformed gcp_iit attestation data")
)

// GCPIITConfig is the server's `gcp_iit { ... }` block.
type GCPIITConfig struct {
	// ProjectIDs are the projects whose instances may attest (SPIRE's
	// projectid_allow_list). Required.
	ProjectIDs []string
	// CertsURL is where Google's certificates are fetched (https, or http
	// to a loopback host for tests); default DefaultGoogleCertsURL.
	CertsURL string
	// AgentPathTemplate renders the agent ID's path under
	// spiffe://TD/agent/ (text/template over GCPIITTemplateData); default
	// DefaultGCPIITPathTemplate.
	AgentPathTemplate string
}

// GCPIITTemplateData is what AgentPathTemplate sees: the token's Compute
// Engine claims (.ProjectID, .ProjectNumber, .Zone, .InstanceID,
// .InstanceName, .InstanceCreationTimestamp) and SPIRE's .PluginName.
type GCPIITTemplateData struct {
	gcpiit.ComputeEngine
	PluginName  string
	TrustDomain string
}

// GCPIIT attests agents by their GCE instance identity token. Any process
// on the instance can get one, so the server trusts it on first use: an
// instance attests once, and again only for its agent's key or after its
// agent is evicted (Result.TrustOnFirstUse).
type GCPIIT struct {
	td       spiffeid.TrustDomain
	projects map[string]bool
	tmpl     *template.Template
	certs    *googleCerts
}

// NewGCPIIT checks cfg (Check). Google's certificates are fetched at the
// first attestation, not now: starting needs no network.
func NewGCPIIT(td spiffeid.TrustDomain, cfg GCPIITConfig) (*GCPIIT, error) {
	tmpl, certsURL, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	p := &GCPIIT{td: td, projects: map[string]bool{}, tmpl: tmpl,
		certs: &googleCerts{url: certsURL, client: &http.Client{Timeout: googleCertsTimeout,
			// Google answers directly; a redirect could lead to plain
			// http, or off the loopback host a test URL was allowed for.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}}
	for _, id := range cfg.ProjectIDs {
		p.projects[id] = true
	}
	return p, nil
}

// Check checks the settings: projects given, the URL, the template.
func (cfg GCPIITConfig) Check() error {
	_, _, err := cfg.compile()
	return err
}

func (cfg GCPIITConfig) compile() (*template.Template, string, error) {
	if len(cfg.ProjectIDs) == 0 {
		return nil, "", errors.New(`gcp_iit: projectid_allow_list is required: the GCP projects whose instances may attest, e.g. projectid_allow_list = ["my-project-123"]`)
	}
	for _, id := range cfg.ProjectIDs {
		if id == "" || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == '/' }) {
			return nil, "", fmt.Errorf("gcp_iit: projectid_allow_list: %q is not a project ID", clipText(id))
		}
	}
	certsURL := cfg.CertsURL
	if certsURL == "" {
		certsURL = DefaultGoogleCertsURL
	}
	u, err := url.Parse(certsURL)
	switch {
	case err != nil || u.Host == "":
		return nil, "", fmt.Errorf("gcp_iit: google_certificates_url %q: want an https URL such as %s", clipText(certsURL), DefaultGoogleCertsURL)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return nil, "", fmt.Errorf("gcp_iit: google_certificates_url %q: plain http is allowed only to a loopback host (tests); Google's certificates decide which tokens are trusted", clipText(certsURL))
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, "", fmt.Errorf("gcp_iit: google_certificates_url %q: want an https URL such as %s", clipText(certsURL), DefaultGoogleCertsURL)
	}
	text := cfg.AgentPathTemplate
	if text == "" {
		text = DefaultGCPIITPathTemplate
	}
	tmpl, err := parseAgentPathTemplate(GCPIITType, text)
	if err != nil {
		return nil, "", err
	}
	sample := GCPIITTemplateData{ComputeEngine: gcpiit.ComputeEngine{ProjectID: "p", Zone: "z", InstanceID: "1", InstanceName: "n"},
		PluginName: GCPIITType, TrustDomain: "example.org"}
	other := sample
	other.InstanceID = "2"
	if err := requireInstanceID(GCPIITType, text, tmpl, sample, other); err != nil {
		return nil, "", err
	}
	return tmpl, certsURL, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseGCPIITPayload reads an agent's payload: the token, as the metadata
// server gave it. It checks the shape only: an RS256 JWT naming its key.
func ParseGCPIITPayload(payload []byte) (*josejwt.JSONWebToken, string, error) {
	if len(payload) > maxGCPIITPayload {
		return nil, "", fmt.Errorf("%w: %d bytes; the limit is %d", ErrGCPIITMalformed, len(payload), maxGCPIITPayload)
	}
	tok, err := josejwt.ParseSigned(strings.TrimSpace(string(payload)), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, "", fmt.Errorf("%w: not an RS256 JWT: %v", ErrGCPIITMalformed, err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return nil, "", fmt.Errorf("%w: the token names no signing key (kid)", ErrGCPIITMalformed)
	}
	return tok, tok.Headers[0].KeyID, nil
}

// Attest checks payload at time now and names the agent. The caller
// records the node with store.ClaimNode (TrustOnFirstUse).
func (p *GCPIIT) Attest(ctx context.Context, payload []byte, now time.Time) (Result, error) {
	tok, kid, err := ParseGCPIITPayload(payload)
	if err != nil {
		return Result{}, err
	}
	cert, err := p.certs.key(ctx, kid, now)
	if err != nil {
		return Result{}, err
	}
	if cert == nil {
		return Result{}, fmt.Errorf("%w: the token is signed with key %s, which is not among Google's certificates (%s)", ErrGCPIITRefused, clipText(kid), p.certs.url)
	}
	var claims gcpiit.Claims
	if err := tok.Claims(cert.PublicKey, &claims); err != nil {
		return Result{}, fmt.Errorf("%w: the token's signature does not verify with Google's key %s: %v", ErrGCPIITRefused, clipText(kid), err)
	}
	ce := claims.Google.ComputeEngine
	what := fmt.Sprintf("instance %s (%s) of project %s", clipText(ce.InstanceID), clipText(ce.InstanceName), clipText(ce.ProjectID))
	refuse := func(format string, args ...any) (Result, error) {
		return Result{}, fmt.Errorf("%w: %s: %s", ErrGCPIITRefused, what, fmt.Sprintf(format, args...))
	}
	switch {
	case claims.Expiry == nil:
		return refuse("the token has no expiry")
	case !slices.Contains(googleIssuers, claims.Issuer):
		return refuse("the token's issuer is %q, not Google's", clipText(claims.Issuer))
	}
	if err := claims.ValidateWithLeeway(josejwt.Expected{AnyAudience: josejwt.Audience{gcpiit.Audience}, Time: now}, gcpIITLeeway); err != nil {
		return refuse("%v (the audience must be %s)", err, gcpiit.Audience)
	}
	if ce.ProjectID == "" || ce.InstanceID == "" {
		return refuse("the token names no Compute Engine instance (the agent must ask the metadata server with format=full)")
	}
	if !p.projects[ce.ProjectID] {
		return refuse("project %s is not in projectid_allow_list", clipText(ce.ProjectID))
	}
	if !isDecimal(ce.InstanceID) {
		// GCE instance IDs are unsigned 64-bit numbers: anything else
		// (a "/" would shift the agent ID's segments) is not Google's.
		return refuse("the instance ID %q is not a number", clipText(ce.InstanceID))
	}
	data := GCPIITTemplateData{ComputeEngine: ce, PluginName: GCPIITType, TrustDomain: p.td.Name()}
	id, err := renderAgentID(p.tmpl, p.td, GCPIITType, data, ErrGCPIITRefused, what)
	if err != nil {
		return Result{}, err
	}
	return Result{AgentID: id, Type: GCPIITType, Selectors: gcpiitSelectors(ce), TrustOnFirstUse: true}, nil
}

// isDecimal reports whether s is 1 to 20 decimal digits (a uint64).
func isDecimal(s string) bool {
	return len(s) > 0 && len(s) <= 20 && !strings.ContainsFunc(s, func(r rune) bool { return r < '0' || r > '9' })
}

// gcpiitSelectors are the node selectors node-alias entries match, with
// SPIRE's names, from the token's Compute Engine claims.
func gcpiitSelectors(ce gcpiit.ComputeEngine) []selector.Selector {
	var out []selector.Selector
	add := func(key, v string) {
		if v == "" {
			return
		}
		s := selector.Selector{Type: GCPIITType, Value: key + ":" + v}
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	add("project-id", ce.ProjectID)
	add("zone", ce.Zone)
	add("instance-name", ce.InstanceName)
	return selector.Sort(out)
}

// googleCerts caches Google's certificates by key ID, until the answer's
// Expires (at least googleCertsMinAge, at most googleCertsMaxAge), and
// refetches early, at most every googleCertsMinAge, for a token naming a
// key it does not hold (Google rotated). One fetch runs at a time, in the
// background with its own timeout: a caller that gives up does not abort
// it for the others, and a token whose key is held never waits for it.
// After a failed fetch the next is tried googleCertsRetry later at the
// earliest, so that callers cannot make the server hammer an endpoint that
// is down.
type googleCerts struct {
	url    string
	client *http.Client

	mu      sync.Mutex
	certs   map[string]*x509.Certificate
	expires time.Time
	tried   time.Time     // when the last fetch started
	lastErr error         // the last fetch's error, nil after a success
	running chan struct{} // closed when the running fetch ends; nil if none
}

// key returns the certificate of kid, nil if Google has none by that ID;
// an error when the certificates cannot be fetched (the agent retries).
func (g *googleCerts) key(ctx context.Context, kid string, now time.Time) (*x509.Certificate, error) {
	g.mu.Lock()
	if cert, ok := g.certs[kid]; ok && !now.After(g.expires) {
		g.mu.Unlock()
		return cert, nil
	}
	done := g.running
	if done == nil && g.due(now) {
		done = make(chan struct{})
		g.running, g.tried = done, now
		go g.fetch(now, done)
	}
	g.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("gcp_iit: wait for Google's certificates (%s): %w", g.url, ctx.Err())
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.certs == nil {
		// Keep serving what was fetched last; with nothing, the error.
		return nil, g.lastErr
	}
	return g.certs[kid], nil
}

// due reports whether a fetch may start at now: after a failure, or when
// the certificates expired, googleCertsRetry after the last; for a key
// not held, googleCertsMinAge after it. g.mu is held.
func (g *googleCerts) due(now time.Time) bool {
	since := now.Sub(g.tried)
	if g.certs == nil || g.lastErr != nil || now.After(g.expires) {
		return g.tried.IsZero() || since >= googleCertsRetry || since < 0
	}
	return since >= googleCertsMinAge || since < 0
}

// fetch gets the certificates and records them (or the error), then
// closes done.
func (g *googleCerts) fetch(now time.Time, done chan struct{}) {
	certs, expires, err := g.get(now)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastErr = err
	if err == nil {
		g.certs, g.expires = certs, expires
	}
	g.running = nil
	close(done)
}

func (g *googleCerts) get(now time.Time) (map[string]*x509.Certificate, time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), googleCertsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.url, nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("gcp_iit: Google certificates %s: %w", g.url, err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("gcp_iit: fetch Google certificates: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		return nil, time.Time{}, fmt.Errorf("gcp_iit: fetch Google certificates %s: %s redirecting to %q, which is not followed: set google_certificates_url to where the certificates are", g.url, resp.Status, clipText(resp.Header.Get("Location")))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, fmt.Errorf("gcp_iit: fetch Google certificates %s: %s", g.url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxGoogleCerts))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("gcp_iit: fetch Google certificates %s: %w", g.url, err)
	}
	certs, err := parseGoogleCerts(body)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("gcp_iit: Google certificates %s: %w", g.url, err)
	}
	expires := now.Add(googleCertsDefaultAge)
	if t, err := http.ParseTime(resp.Header.Get("Expires")); err == nil {
		expires = t
	}
	if min := now.Add(googleCertsMinAge); expires.Before(min) {
		expires = min
	}
	if max := now.Add(googleCertsMaxAge); expires.After(max) {
		expires = max
	}
	return certs, expires, nil
}

// parseGoogleCerts reads Google's certificates document: a JSON object of
// key ID to PEM certificate, each an RSA key.
func parseGoogleCerts(body []byte) (map[string]*x509.Certificate, error) {
	var doc map[string]string
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JSON object of key IDs to PEM certificates: %w", err)
	}
	out := map[string]*x509.Certificate{}
	for kid, text := range doc {
		block, _ := pem.Decode([]byte(text))
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("key %s: not a PEM certificate", clipText(kid))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", clipText(kid), err)
		}
		if _, ok := cert.PublicKey.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("key %s: not an RSA key", clipText(kid))
		}
		out[kid] = cert
	}
	if len(out) == 0 {
		return nil, errors.New("holds no certificate")
	}
	return out, nil
}
