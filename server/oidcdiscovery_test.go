package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/oidcdiscovery"
	"github.com/signetid/signet/server/oidcdiscovery/oidctest"
)

const (
	oidcIssuer   = "https://oidc.example.org"
	oidcAudience = "sts.amazonaws.com"
)

// relyingParty is what a cloud provider's token service does with the
// issuer URL, with go-oidc: fetch the discovery document and the keys over
// HTTPS, trusting roots, from addr (where the issuer's name resolves).
func relyingParty(t *testing.T, addr string, roots *x509.CertPool) (context.Context, *oidc.Provider) {
	t.Helper()
	ctx := oidc.ClientContext(context.Background(), httpClient(addr, roots))
	p, err := oidc.NewProvider(ctx, oidcIssuer)
	if err != nil {
		t.Fatalf("oidc.NewProvider(%s): %v", oidcIssuer, err)
	}
	return ctx, p
}

// httpClient reaches the issuer's host at addr, trusting roots.
func httpClient(addr string, roots *x509.CertPool) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
}

// publishedKids fetches the provider's jwks_uri, as a relying party that
// caches keys does, and returns the key IDs.
func publishedKids(t *testing.T, client *http.Client, p *oidc.Provider) []string {
	t.Helper()
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		t.Fatal(err)
	}
	resp, err := client.Get(doc.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jwks); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range jwks.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// mintJWT has an attested agent of ts mint a JWT-SVID for a new entry
// spiffe://example.org/<name>, through the agent API.
func mintJWT(t *testing.T, ts *testServer, agentName, name string) string {
	t.Helper()
	a := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/"+agentName, 0))
	e := ts.createEntry(t, "spiffe://example.org/"+name, a.ID.String(), "unix:uid:1000")
	resp, err := a.Client.MintJWTSVID(context.Background(), &api.MintJWTSVIDRequest{EntryId: e.Id, Audience: []string{oidcAudience}})
	if err != nil {
		t.Fatalf("MintJWTSVID: %v", err)
	}
	return resp.Token
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.KeyID
}

func verifyRefused(t *testing.T, ctx context.Context, v *oidc.IDTokenVerifier, token, what, wantErr string) {
	t.Helper()
	if _, err := v.Verify(ctx, token); err == nil || !strings.Contains(err.Error(), wantErr) {
		t.Fatalf("%s: Verify = %v, want an error containing %q", what, err, wantErr)
	}
}

// TestOIDCRelyingParty runs the real server with jwt_issuer and
// oidc_discovery, serving HTTPS itself or plain HTTP behind a
// TLS-terminating proxy, and verifies its JWT-SVIDs as an OIDC relying
// party does (go-oidc), across a forced JWT key rotation.
func TestOIDCRelyingParty(t *testing.T) {
	for _, proxied := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTPS", true: "HTTP behind a TLS proxy"}[proxied], func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			roots := x509.NewCertPool()
			roots.AddCert(oidctest.WriteCert(t, certFile, keyFile, "oidc.example.org"))
			ts := startServer(t, func(c *server.Config) {
				c.JWTIssuer = oidcIssuer
				c.OIDCDiscovery = &oidcdiscovery.Config{Listen: "127.0.0.1:0", Issuer: oidcIssuer}
				if !proxied {
					c.OIDCDiscovery.CertFile, c.OIDCDiscovery.KeyFile = certFile, keyFile
				}
			})
			addr := ts.OIDCDiscoveryAddr()
			if proxied {
				proxy := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr}))
				cert, err := tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					t.Fatal(err)
				}
				proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
				proxy.StartTLS()
				t.Cleanup(proxy.Close)
				addr = proxy.Listener.Addr().String()
			}

			token := mintJWT(t, ts, "a", "web")
			ctx, provider := relyingParty(t, addr, roots)
			verifier := provider.Verifier(&oidc.Config{ClientID: oidcAudience})
			idt, err := verifier.Verify(ctx, token)
			if err != nil {
				t.Fatalf("go-oidc refuses the JWT-SVID: %v", err)
			}
			if idt.Subject != "spiffe://example.org/web" || idt.Issuer != oidcIssuer {
				t.Fatalf("sub %q iss %q", idt.Subject, idt.Issuer)
			}
			verifyRefused(t, ctx, provider.Verifier(&oidc.Config{ClientID: "vault"}), token, "another audience", "audience")

			// Another trust domain's key, same issuer and audience: refused.
			other, err := ca.New(context.Background(), ca.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("other.org"),
				DataDir: t.TempDir(), JWTIssuer: oidcIssuer, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			foreign, _, err := other.MintJWTSVID(context.Background(), spiffeid.RequireFromString("spiffe://other.org/web"), []string{oidcAudience}, 0)
			if err != nil {
				t.Fatal(err)
			}
			verifyRefused(t, ctx, verifier, foreign, "a token signed by other.org's key", "signature")

			// Forced rotation: the new key is in the JWKS as soon as it is
			// prepared, so its tokens verify at once (go-oidc fetches the
			// keys again for an unknown kid).
			admin := context.Background()
			p, err := ts.admin.PrepareLocalAuthority(admin, &api.PrepareLocalAuthorityRequest{Kind: "jwt"})
			if err != nil {
				t.Fatal(err)
			}
			oldKid := kidOf(t, token)
			if kids := publishedKids(t, httpClient(addr, roots), provider); !slices.Contains(kids, p.AuthorityId) {
				t.Fatalf("prepared key %s not in /keys %v: a relying party that caches keys would refuse its tokens after activation", p.AuthorityId, kids)
			}
			if _, err := ts.admin.ActivateLocalAuthority(admin, &api.ActivateLocalAuthorityRequest{Kind: "jwt", AuthorityId: p.AuthorityId}); err != nil {
				t.Fatal(err)
			}
			rotated := mintJWT(t, ts, "b", "api")
			if kid := kidOf(t, rotated); kid == oldKid {
				t.Fatalf("the token after the rotation has the old kid %s", kid)
			}
			if _, err := verifier.Verify(ctx, rotated); err != nil {
				t.Fatalf("go-oidc refuses a JWT-SVID of the rotated key: %v", err)
			}
			// The old key revoked: a relying party that fetches the keys now
			// refuses its tokens.
			for _, step := range []func() error{
				func() error {
					_, err := ts.admin.TaintLocalAuthority(admin, &api.TaintLocalAuthorityRequest{Kind: "jwt", AuthorityId: oldKid})
					return err
				},
				func() error {
					_, err := ts.admin.RevokeLocalAuthority(admin, &api.RevokeLocalAuthorityRequest{Kind: "jwt", AuthorityId: oldKid})
					return err
				},
			} {
				if err := step(); err != nil {
					t.Fatal(err)
				}
			}
			ctx, provider = relyingParty(t, addr, roots)
			fresh := provider.Verifier(&oidc.Config{ClientID: oidcAudience})
			verifyRefused(t, ctx, fresh, token, "a token of the revoked key", "signature")
			if _, err := fresh.Verify(ctx, rotated); err != nil {
				t.Fatalf("the rotated key's token after the revocation: %v", err)
			}
		})
	}
}

// TestOIDCTwoServers: with two servers on one PostgreSQL store, the provider
// of one serves the other's JWT keys too, so a token either mints verifies.
func TestOIDCTwoServers(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	roots := x509.NewCertPool()
	roots.AddCert(oidctest.WriteCert(t, certFile, keyFile, "oidc.example.org"))
	db := pgtest.NewDatabase(t)
	a := startServer(t, func(c *server.Config) {
		c.Datastore, c.JWTIssuer = db, oidcIssuer
		c.OIDCDiscovery = &oidcdiscovery.Config{Listen: "127.0.0.1:0", Issuer: oidcIssuer, CertFile: certFile, KeyFile: keyFile}
	})
	b := startServer(t, func(c *server.Config) { c.Datastore, c.JWTIssuer = db, oidcIssuer })

	token := mintJWT(t, b, "b", "web")
	ctx, provider := relyingParty(t, a.OIDCDiscoveryAddr(), roots)
	verifier := provider.Verifier(&oidc.Config{ClientID: oidcAudience})
	// A hears of B's key through the store's change signal, soon.
	waitFor(t, 10*time.Second, "A's provider to serve B's key", func() bool {
		_, err := verifier.Verify(ctx, token)
		return err == nil
	})
}

// TestOIDCIssuerMismatchRefused: a Config built in code (not from a file)
// whose provider issuer is not the tokens' iss is refused at New.
func TestOIDCIssuerMismatchRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := server.Config{TrustDomain: td, DataDir: dir, Listen: "127.0.0.1:0", AdminSocket: filepath.Join(dir, "admin.sock"),
		Datastore: "sqlite://" + filepath.Join(dir, "signet.db"), SVIDTTL: time.Hour, JWTTTL: 5 * time.Minute, AgentTTL: time.Hour,
		JWTIssuer: oidcIssuer, OIDCDiscovery: &oidcdiscovery.Config{Listen: "127.0.0.1:0", Issuer: oidcIssuer + "/other"}}
	s, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		t.Fatal("server.New accepted an OIDC issuer other than jwt_issuer")
	}
	if s != nil || !strings.Contains(err.Error(), "differs from jwt_issuer") {
		t.Fatalf("server.New: %v", err)
	}
}
