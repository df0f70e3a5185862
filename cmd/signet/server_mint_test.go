package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/server/servertest"
)

// TestMint runs `signet server x509 mint` and `jwt mint` (SPIRE's)
// against a real server: the X509-SVID go-spiffe loads with its key
// verifies against the bundle written beside it, with the ID, DNS names
// and TTL asked; the JWT-SVID validates against the server's JWT keys;
// Signet's own IDs, other trust domains and bad flags are refused.
func TestMint(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	s := servertest.Start(t, td, nil)
	run := func(args ...string) (string, error) {
		return signet(t, append(append([]string{"server"}, args...), "--admin-socket", s.Config.AdminSocket)...)
	}
	dir := t.TempDir()
	out, err := run("x509", "mint", "--spiffe-id", "spiffe://example.org/legacy/db", "--dns", "db.internal", "--ttl", "10m", "--write", dir)
	if err != nil || !strings.HasPrefix(out, "Wrote "+filepath.Join(dir, "key.pem")) {
		t.Fatalf("x509 mint --write: %v\n%s", err, out)
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatalf("go-spiffe loads the minted SVID: %v", err)
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := x509svid.Verify(svid.Certificates, bundle)
	if err != nil || id.String() != "spiffe://example.org/legacy/db" {
		t.Fatalf("verify the minted SVID against the bundle: %v, %v", id, err)
	}
	leaf := svid.Certificates[0]
	if life := leaf.NotAfter.Sub(time.Now()); life > 10*time.Minute+time.Second || life < 9*time.Minute || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "db.internal" {
		t.Errorf("minted SVID: expires in %s, DNS %v", life, leaf.DNSNames)
	}
	if fi, err := os.Stat(filepath.Join(dir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode %v, %v; want 0600", fi.Mode(), err)
	}

	// The CA (6h with a 1h SVID TTL) ends before a 24h TTL: said.
	if out, err := run("x509", "mint", "--spiffe-id", "spiffe://example.org/legacy/db", "--ttl", "24h", "--write", dir); err != nil ||
		!strings.HasPrefix(out, "# the CA expires first: the SVID expires at ") {
		t.Fatalf("x509 mint --ttl 24h: %v\n%s", err, out)
	}
	out, err = run("x509", "mint", "--spiffe-id", "spiffe://example.org/legacy/db", "--output", "json")
	var printed struct {
		SVID string `json:"svid_pem"`
		Key  string `json:"key_pem"`
	}
	if err != nil || json.Unmarshal([]byte(out), &printed) != nil {
		t.Fatalf("x509 mint --output json: %v\n%s", err, out)
	}
	if _, err := x509svid.Parse([]byte(printed.SVID), []byte(printed.Key)); err != nil {
		t.Fatalf("x509 mint --output json: the SVID and key do not parse: %v", err)
	}

	token, err := run("jwt", "mint", "--spiffe-id", "spiffe://example.org/legacy/batch", "--audience", "vault", "--ttl", "2m")
	if err != nil {
		t.Fatalf("jwt mint: %v\n%s", err, token)
	}
	doc, err := run("bundle", "show", "--format", "spiffe")
	if err != nil {
		t.Fatal(err)
	}
	sb, err := spiffebundle.Parse(td, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := jwtsvid.ParseAndValidate(strings.TrimSpace(token), jwtbundle.FromJWTAuthorities(td, sb.JWTAuthorities()), []string{"vault"})
	if err != nil || jwt.ID.String() != "spiffe://example.org/legacy/batch" || time.Until(jwt.Expiry) > 2*time.Minute {
		t.Fatalf("jwt mint: the token does not validate as asked: %v, %+v", err, jwt)
	}
	tokenFile := filepath.Join(dir, "token")
	if out, err := run("jwt", "mint", "--spiffe-id", "spiffe://example.org/legacy/batch", "--audience", "vault", "--write", tokenFile); err != nil {
		t.Fatalf("jwt mint --write: %v\n%s", err, out)
	}
	if fi, err := os.Stat(tokenFile); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() < 100 {
		t.Errorf("token file: %v, %v", fi, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"x509", "mint", "--spiffe-id", "spiffe://example.org/signet/server"}, "reserved"},
		{[]string{"jwt", "mint", "--spiffe-id", "spiffe://example.org/signet/server", "--audience", "a"}, "reserved"},
		{[]string{"x509", "mint", "--spiffe-id", "spiffe://other.org/db"}, "not in trust domain"},
		{[]string{"x509", "mint", "--spiffe-id", "spiffe://example.org/db", "--dns", "bad..name"}, "dns name"},
		{[]string{"x509", "mint", "--spiffe-id", "spiffe://example.org/db", "--ttl", "1000h"}, "ttl"},
		{[]string{"x509", "mint"}, "--spiffe-id is required"},
		{[]string{"x509", "mint", "--spiffe-id", "spiffe://example.org/db/"}, "--spiffe-id"},
		{[]string{"jwt", "mint", "--spiffe-id", "spiffe://example.org/db"}, "--audience is required"},
		{[]string{"jwt", "mint", "--spiffe-id", "spiffe://example.org/db", "--audience", "a", "--ttl", "1500ms"}, "--ttl"},
	} {
		if out, err := run(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v\n%s; want an error naming %q", tc.args, err, out, tc.want)
		}
	}
}

// TestMintWriteModes: --write replaces files already there with the modes
// it promises (the key and the token 0600), whatever the old files had,
// and refuses a TTL the request could not carry instead of wrapping it.
func TestMintWriteModes(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	s := servertest.Start(t, td, nil)
	run := func(args ...string) (string, error) {
		return signet(t, append(append([]string{"server"}, args...), "--admin-socket", s.Config.AdminSocket)...)
	}
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	for _, name := range []string{"key.pem", "svid.pem", "bundle.pem", "token"} {
		// World-readable leftovers, e.g. copied in by hand.
		if err := os.WriteFile(filepath.Join(dir, name), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := run("x509", "mint", "--spiffe-id", "spiffe://example.org/legacy/db", "--write", dir); err != nil {
		t.Fatalf("x509 mint --write: %v\n%s", err, out)
	}
	if out, err := run("jwt", "mint", "--spiffe-id", "spiffe://example.org/legacy/db", "--audience", "a", "--write", tokenFile); err != nil {
		t.Fatalf("jwt mint --write: %v\n%s", err, out)
	}
	for name, want := range map[string]os.FileMode{"key.pem": 0o600, "token": 0o600, "svid.pem": 0o644, "bundle.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want || fi.Size() <= 3 {
			t.Errorf("%s after mint over an old 0644 file: %v, %v; want mode %v and new content", name, fi.Mode(), err, want)
		}
	}

	for _, args := range [][]string{
		// 2^32 s + 1h: as int32 seconds it would be 1h.
		{"x509", "mint", "--spiffe-id", "spiffe://example.org/db", "--ttl", "1193047h29m16s"},
		{"jwt", "mint", "--spiffe-id", "spiffe://example.org/db", "--audience", "a", "--ttl", "1193047h29m16s"},
	} {
		if out, err := run(args...); err == nil || !strings.Contains(err.Error(), "--ttl") {
			t.Errorf("%v: %v\n%s; want --ttl refused", args, err, out)
		}
	}

	// --write makes a missing directory (as agent api fetch x509 --write
	// does); a place that cannot be one is refused before anything is
	// minted, naming it (not a temporary file beside it).
	missing := filepath.Join(dir, "new", "spiffe")
	if out, err := run("x509", "mint", "--spiffe-id", "spiffe://example.org/db", "--write", missing); err != nil {
		t.Fatalf("x509 mint --write to a new directory: %v\n%s", err, out)
	}
	if out, err := run("jwt", "mint", "--spiffe-id", "spiffe://example.org/db", "--audience", "a", "--write", filepath.Join(dir, "new", "jwt", "token")); err != nil {
		t.Fatalf("jwt mint --write to a new directory: %v\n%s", err, out)
	}
	for _, name := range []string{"spiffe/key.pem", "spiffe/svid.pem", "spiffe/bundle.pem", "jwt/token"} {
		if fi, err := os.Stat(filepath.Join(dir, "new", name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s after mint --write to a new directory: %v", name, err)
		}
	}
	for _, args := range [][]string{
		{"x509", "mint", "--spiffe-id", "spiffe://example.org/db", "--write", tokenFile},
		{"jwt", "mint", "--spiffe-id", "spiffe://example.org/db", "--audience", "a", "--write", filepath.Join(tokenFile, "token")},
	} {
		if out, err := run(args...); err == nil || !strings.HasPrefix(err.Error(), "--write "+args[len(args)-1]+": ") || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("%v: %v\n%s; want --write refused, naming it", args, err, out)
		}
	}
}
