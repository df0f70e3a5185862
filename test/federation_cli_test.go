package test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFederationRelationshipCLI drives `signet server federation` against
// two real `signet server run` processes: A creates a relationship with B
// (bootstrapped from B's `bundle show`) and fetches B's bundle, lists it
// beside the one of its server.conf, refuses what it must, moves it, and
// deletes it, after which `bundle delete` is allowed.
func TestFederationRelationshipCLI(t *testing.T) {
	addrA, addrB, deadD := freeAddr(t), freeAddr(t), freeAddr(t)
	a := startFedServer(t, "a.org", addrA, "d.org", deadD)
	b := startFedServer(t, "b.org", addrB, "a.org", addrA)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// fed runs `signet server federation ...` against A.
	fed := func(args ...string) (string, error) {
		t.Helper()
		return runSignet(t, ctx, append(append([]string{"server", "federation"}, args...), "--admin-socket", a.AdminSocket)...)
	}

	// B's X.509 roots alone: the JWT key A logs arrives only with a fetch.
	pemB, err := b.cli(t, "", "show")
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "b.org.pem")
	if err := os.WriteFile(bundleFile, []byte(pemB), 0o600); err != nil {
		t.Fatal(err)
	}
	urlB := "https://" + addrB
	out, err := fed("create", "--trust-domain", "b.org", "--bundle-endpoint-url", urlB, "--bundle-endpoint-profile", "https_spiffe",
		"--trust-domain-bundle-path", bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Trust domain: b.org\n", "Bundle endpoint URL: " + urlB + "\n", "Bundle endpoint profile: https_spiffe\n",
		"Endpoint SPIFFE ID: spiffe://b.org/signet/server\n", "Source: store\n", "Owner: operator\n", "Bundle of b.org set\n", "X.509 roots: 1\n", "JWT keys: 0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("create printed no %q:\n%s", want, out)
		}
	}
	a.proc.waitLine(t, `msg="federation relationship created" trust_domain=b.org url=`+urlB, 10*time.Second)
	a.proc.waitLine(t, `msg="federation: bundle updated" trust_domain=b.org x509_roots=1 jwt_keys=1`, 30*time.Second)

	list, err := fed("list")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(list, "Found 2 federation relationships\n\n") ||
		!strings.Contains(list, "Trust domain: b.org\nBundle endpoint URL: "+urlB+"\n") ||
		!strings.Contains(list, "Trust domain: d.org\nBundle endpoint URL: https://"+deadD+"\nBundle endpoint profile: https_spiffe\nEndpoint SPIFFE ID: spiffe://d.org/signet/server\nSource: server.conf\n") {
		t.Fatalf("list:\n%s", list)
	}
	// How fetching goes: b.org's bundle was fetched; d.org's endpoint is
	// down, and its bundle was never held.
	if b, d, _ := strings.Cut(list, "Trust domain: d.org"); !strings.Contains(b, "Last refresh: 20") || strings.Contains(b, "Refresh failing") ||
		strings.Contains(d, "Last refresh: 20") {
		t.Fatalf("list's refresh lines:\n%s", list)
	}
	shown, err := fed("show", "--trust-domain", "spiffe://b.org")
	if err != nil || !strings.Contains(shown, "Trust domain: b.org\n") || !strings.Contains(shown, "Source: store\n") {
		t.Fatalf("show: %v\n%s", err, shown)
	}

	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := func(td, url string) []string {
		return []string{"--trust-domain", td, "--bundle-endpoint-url", url, "--bundle-endpoint-profile", "https_spiffe"}
	}
	refused := []struct {
		name string
		args []string
		want string
	}{
		{"create again", append([]string{"create"}, spec("b.org", urlB)...), "a relationship with b.org already exists (fetching from " + urlB + "); change it with `signet server federation update` (AlreadyExists)"},
		{"create a configured one", append([]string{"create"}, spec("d.org", urlB)...), "d.org is configured in server.conf"},
		{"create the own trust domain", append([]string{"create"}, spec("a.org", urlB)...), "a.org is this server's own trust domain (InvalidArgument)"},
		{"http URL", append([]string{"create"}, spec("c.org", "http://"+addrB)...), `--bundle-endpoint-url "http://` + addrB + `": want https://`},
		{"no profile", []string{"create", "--trust-domain", "c.org", "--bundle-endpoint-url", urlB}, `--bundle-endpoint-profile "": want "https_spiffe" or "https_web"`},
		{"no trust domain", []string{"create", "--bundle-endpoint-url", urlB}, "--trust-domain is required"},
		{"garbage bundle", append(append([]string{"create"}, spec("c.org", urlB)...), "--trust-domain-bundle-path", garbage), "--trust-domain-bundle-path " + garbage + ": parse PEM bundle"},
		{"format without path", append(append([]string{"create"}, spec("c.org", urlB)...), "--trust-domain-bundle-format", "spiffe"), "--trust-domain-bundle-format goes with --trust-domain-bundle-path"},
		{"update a missing one", append([]string{"update"}, spec("c.org", urlB)...), "no relationship with c.org is stored; create it with `signet server federation create` (NotFound)"},
		{"delete a missing one", []string{"delete", "--trust-domain", "c.org"}, "no relationship with c.org is stored (see `signet server federation list`) (NotFound)"},
		{"show a missing one", []string{"show", "--trust-domain", "c.org"}, "(NotFound)"},
	}
	for _, tt := range refused {
		if out, err := fed(tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v (stdout %q), want an error containing %q", tt.name, err, out, tt.want)
		}
	}
	if _, err := a.cli(t, "", "delete", "--trust-domain", "b.org"); err == nil ||
		!strings.Contains(err.Error(), "delete the relationship first (`signet server federation delete --trust-domain b.org`)") {
		t.Errorf("bundle delete under the relationship: %v", err)
	}
	if list2, _ := fed("list"); list2 != list {
		t.Fatalf("the refusals changed the list:\n%s", list2)
	}

	// Update: the next fetch goes to the new URL.
	moved := "https://" + freeAddr(t)
	out, err = fed(append([]string{"update"}, spec("b.org", moved)...)...)
	if err != nil || !strings.Contains(out, "Bundle endpoint URL: "+moved+"\n") || strings.Contains(out, "Bundle of") {
		t.Fatalf("update: %v\n%s", err, out)
	}
	a.proc.waitLine(t, `msg="federation relationship updated" trust_domain=b.org url=`+moved, 10*time.Second)
	a.proc.waitLine(t, "bundle refresh failed; keeping the current bundle and retrying\" trust_domain=b.org url="+moved, 30*time.Second)

	out, err = fed("delete", "--trust-domain", "b.org")
	if err != nil || out != "Deleted the federation relationship with b.org\n" {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	a.proc.waitLine(t, `msg="federation relationship deleted; its bundle is kept" trust_domain=b.org`, 10*time.Second)
	if list, err := fed("list"); err != nil || !strings.HasPrefix(list, "Found 1 federation relationships\n") || strings.Contains(list, "b.org") {
		t.Fatalf("list after delete: %v\n%s", err, list)
	}
	if out, err := a.cli(t, "", "delete", "--trust-domain", "b.org"); err != nil || !strings.Contains(out, "Deleted the bundle of b.org") {
		t.Fatalf("bundle delete after the relationship's: %v\n%s", err, out)
	}
}
