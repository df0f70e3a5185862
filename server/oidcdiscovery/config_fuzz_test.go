package oidcdiscovery

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzCheckIssuer: an accepted issuer has exactly one spelling (it prints
// back as itself), is https or loopback http, and its jwks_uri parses to
// the same host.
func FuzzCheckIssuer(f *testing.F) {
	for _, s := range []string{
		"https://oidc.example.org", "https://oidc.example.org/tenant-1", "http://127.0.0.1:8443",
		"http://[::1]:8080", "HTTPS://oidc.example.org", "https://OIDC.example.org", "https://oidc.example.org:443",
		"https://oidc.example.org/a/../b", "https://oidc.example.org/a b", "https://bücher.example", "https://*.example.org",
		"https://oidc.example.org/%41", "https://oidc.example.org?", "https://u@oidc.example.org",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckIssuer(s) != nil {
			return
		}
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("accepted %q, which does not parse: %v", s, err)
		}
		if u.String() != s {
			t.Fatalf("accepted %q, which prints as %q", s, u.String())
		}
		if u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())) {
			t.Fatalf("accepted %q: scheme %q", s, u.Scheme)
		}
		if u.Hostname() != strings.ToLower(u.Hostname()) {
			t.Fatalf("accepted %q: upper-case host", s)
		}
		k, err := url.Parse(s + "/keys")
		if err != nil || k.Host != u.Host || k.Path != u.Path+"/keys" {
			t.Fatalf("jwks_uri of %q is %v (%v)", s, k, err)
		}
	})
}
