package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/servertest"
)

// TestFederationAndBundleJSON: federation list|show and bundle list print
// one JSON document with --output json; each bundle is the SPIFFE bundle
// document go-spiffe parses, holding the foreign roots as given.
func TestFederationAndBundleJSON(t *testing.T) {
	other := spiffeid.RequireTrustDomainFromString("other.org")
	main := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), nil)
	foreign := servertest.Start(t, other, func(c *server.Config) {
		c.Federation.Endpoint = &federation.EndpointConfig{Address: "127.0.0.1:0", Profile: federation.ProfileSPIFFE}
	})
	run := func(s *servertest.Server, args ...string) string {
		t.Helper()
		out, err := signet(t, append(append([]string{"server"}, args...), "--admin-socket", s.Config.AdminSocket)...)
		if err != nil {
			t.Fatalf("signet server %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	doc := run(foreign, "bundle", "show", "--format", "spiffe")
	want, err := spiffebundle.Parse(other, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "other.json")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "https://" + foreign.FederationAddr()
	run(main, "federation", "create", "--trust-domain", "other.org", "--bundle-endpoint-url", url,
		"--bundle-endpoint-profile", "https_spiffe", "--endpoint-spiffe-id", "spiffe://other.org/signet/server",
		"--trust-domain-bundle-path", file, "--trust-domain-bundle-format", "spiffe")

	for _, args := range [][]string{{"federation", "list"}, {"federation", "show", "--trust-domain", "other.org"}} {
		var rels struct{ Relationships []adminapi.RelationshipJSON }
		out := run(main, append(args, "--output", "json")...)
		if err := json.Unmarshal([]byte(out), &rels); err != nil || len(rels.Relationships) != 1 {
			t.Fatalf("%v --output json: %v\n%s", args, err, out)
		}
		if r := rels.Relationships[0]; r.TrustDomain != "other.org" || r.BundleEndpointURL != url ||
			r.BundleEndpointProfile != "https_spiffe" || r.EndpointSPIFFEID != "spiffe://other.org/signet/server" || r.Source != "store" || r.Revision == 0 {
			t.Errorf("%v --output json: %+v", args, r)
		}
	}

	var bundles struct {
		Bundles []struct {
			TrustDomain string          `json:"trust_domain"`
			Bundle      json.RawMessage `json:"bundle"`
		}
	}
	out := run(main, "bundle", "list", "--output", "json")
	if err := json.Unmarshal([]byte(out), &bundles); err != nil || len(bundles.Bundles) != 1 || bundles.Bundles[0].TrustDomain != "other.org" {
		t.Fatalf("bundle list --output json: %v\n%s", err, out)
	}
	got, err := spiffebundle.Parse(other, bundles.Bundles[0].Bundle)
	if err != nil {
		t.Fatalf("bundle list's bundle: %v", err)
	}
	if !got.X509Bundle().Equal(want.X509Bundle()) {
		t.Errorf("bundle list gives other roots than those set")
	}

	// federation refresh fetches from the endpoint now; a trust domain
	// with no relationship is refused, naming it.
	if out := run(main, "federation", "refresh", "--trust-domain", "other.org"); !strings.HasPrefix(out, "Refreshed the bundle of other.org\n") {
		t.Fatalf("federation refresh: %s", out)
	}
	refreshed, err := spiffebundle.Parse(other, []byte(run(main, "federation", "refresh", "--trust-domain", "other.org", "--output", "json")))
	if err != nil || !refreshed.X509Bundle().Equal(want.X509Bundle()) {
		t.Fatalf("federation refresh --output json: %v", err)
	}
	if out, err := signet(t, "server", "federation", "refresh", "--trust-domain", "third.org", "--admin-socket", main.Config.AdminSocket); err == nil ||
		!strings.Contains(err.Error(), "third.org") || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("refresh without a relationship: %v\n%s", err, out)
	}
	foreign.Stop()
	if out, err := signet(t, "server", "federation", "refresh", "--trust-domain", "other.org", "--admin-socket", main.Config.AdminSocket); err == nil ||
		!strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "(Unavailable)") || strings.Contains(err.Error(), "admin socket") {
		// The admin socket answered: the endpoint is what is down.
		t.Fatalf("refresh with the endpoint down: %v\n%s", err, out)
	}
	// show tells the last success from the failures since.
	show := run(main, "federation", "show", "--trust-domain", "other.org")
	if !strings.Contains(show, "Last refresh: 20") || !strings.Contains(show, "Refresh failing: ") || !strings.Contains(show, url) {
		t.Fatalf("federation show after the endpoint went down lacks the last refresh or the failure:\n%s", show)
	}
	var listed struct {
		Relationships []adminapi.RelationshipJSON `json:"relationships"`
	}
	if err := json.Unmarshal([]byte(run(main, "federation", "list", "--output", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed.Relationships) != 1 || listed.Relationships[0].Refresh == nil {
		t.Fatalf("federation list --output json: %+v, want other.org with its refresh status", listed)
	}
	if f := listed.Relationships[0].Refresh; f.LastSuccess == 0 || f.ConsecutiveFailures == 0 || f.Failures < f.ConsecutiveFailures || !strings.Contains(f.LastError, url) {
		t.Fatalf("refresh status %+v, want a success, then failures naming %s", f, url)
	}
	main.Stop()
	if out, err := signet(t, "server", "federation", "refresh", "--trust-domain", "other.org", "--admin-socket", main.Config.AdminSocket); err == nil ||
		!strings.Contains(err.Error(), "cannot reach the server's admin socket "+main.Config.AdminSocket) {
		t.Fatalf("refresh with the server down: %v\n%s", err, out)
	}
}
