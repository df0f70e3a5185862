package workloadapi_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/agent/workloadapi/workloadapitest"
	"github.com/signetid/signet/internal/selector"
)

func spiffeBundle(ca *workloadapitest.CA) *spiffebundle.Bundle {
	b := spiffebundle.New(ca.TrustDomain)
	b.SetX509Authorities(ca.X509Bundle().X509Authorities())
	b.SetJWTAuthorities(ca.JWTBundle().JWTAuthorities())
	return b
}

// ValidateJWTSVID trusts the caller's bundles only (own trust domain plus
// those its matching entries federate with), as FetchJWTBundles gives them;
// the agent also holds partner.test's bundle for other workloads. Real
// cache, real server, go-spiffe client.
func TestValidateJWTSVIDUsesTheCallersBundles(t *testing.T) {
	own := workloadapitest.NewCA(t, "example.org")
	partner := workloadapitest.NewCA(t, "partner.test")
	me := mySelector(t)
	other := selector.Selector{Type: "unix", Value: "uid:4242424"}
	for _, tc := range []struct {
		name    string
		entries func(app, peer *x509svid.SVID) []cache.Entry
		// identity: the caller has an SVID (FetchJWTBundles answers).
		identity, partnerValid bool
	}{{
		name: "caller federates with partner",
		entries: func(app, _ *x509svid.SVID) []cache.Entry {
			return []cache.Entry{{ID: "app", SPIFFEID: app.ID, Selectors: []selector.Selector{me}, FederatesWith: []spiffeid.TrustDomain{partner.TrustDomain}}}
		},
		identity: true, partnerValid: true,
	}, {
		name: "only another workload federates with partner",
		entries: func(app, peer *x509svid.SVID) []cache.Entry {
			return []cache.Entry{
				{ID: "app", SPIFFEID: app.ID, Selectors: []selector.Selector{me}},
				{ID: "peer", SPIFFEID: peer.ID, Selectors: []selector.Selector{other}, FederatesWith: []spiffeid.TrustDomain{partner.TrustDomain}},
			}
		},
		identity: true,
	}, {
		name: "caller has no identity",
		entries: func(_, peer *x509svid.SVID) []cache.Entry {
			return []cache.Entry{{ID: "peer", SPIFFEID: peer.ID, Selectors: []selector.Selector{other}, FederatesWith: []spiffeid.TrustDomain{partner.TrustDomain}}}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cache.New(cache.Options{TrustDomain: own.TrustDomain})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetBundles(spiffeBundle(own), []*spiffebundle.Bundle{spiffeBundle(partner)})
			app, peer := own.X509SVID(t, "/app", ""), own.X509SVID(t, "/peer", "")
			c.SetEntries(tc.entries(app, peer))
			c.PutSVIDs(map[string]*x509svid.SVID{"app": app, "peer": peer})
			cl := serveCache(t, c)

			if tc.identity {
				jb, err := cl.FetchJWTBundles(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := jb.Get(partner.TrustDomain); ok != tc.partnerValid {
					t.Fatalf("FetchJWTBundles has partner.test: %v, want %v", ok, tc.partnerValid)
				}
			}
			ownTok, err := own.JWTSVID(spiffeid.RequireFromString("spiffe://example.org/db"), []string{"aud"}, "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cl.ValidateJWTSVID(t.Context(), ownTok.Marshal(), "aud"); err != nil {
				t.Errorf("own trust domain's token refused: %v", err)
			}
			tok, err := partner.JWTSVID(spiffeid.RequireFromString("spiffe://partner.test/api"), []string{"aud"}, "")
			if err != nil {
				t.Fatal(err)
			}
			got, err := cl.ValidateJWTSVID(t.Context(), tok.Marshal(), "aud")
			switch {
			case tc.partnerValid && err != nil:
				t.Errorf("partner.test's token refused: %v", err)
			case !tc.partnerValid && err == nil:
				t.Errorf("accepted %s, signed by partner.test, a trust domain the caller does not federate with", got.ID)
			}
		})
	}
}

// serveCache serves c on a fresh socket and returns a go-spiffe client of it.
func serveCache(t *testing.T, c *cache.Cache) *spiffewl.Client {
	t.Helper()
	srv, err := workloadapi.New(workloadapi.Options{Provider: c, Attestor: attestor.NewUnix(attestor.UnixOptions{}), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := workloadapi.Listen(filepath.Join(socketDir(t), "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	cl, err := spiffewl.New(t.Context(), spiffewl.WithAddr("unix://"+lis.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}
