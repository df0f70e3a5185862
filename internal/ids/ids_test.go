package ids

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseWorkloadID(t *testing.T) {
	long := "spiffe://example.org/" + strings.Repeat("a", MaxIDLength-len("spiffe://example.org/"))
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"ok", "spiffe://example.org/web", ""},
		{"ok nested", "spiffe://example.org/ns/payments/sa/checkout", ""},
		{"ok max length", long, ""},
		{"empty", "", "empty"},
		{"empty trust domain", "spiffe:///web", "trust domain"},
		{"upper case trust domain", "spiffe://Example.org/web", "trust domain"},
		{"port", "spiffe://example.org:8080/web", "trust domain characters"},
		{"double slash", "spiffe://example.org//web", "empty"},
		{"dot segment", "spiffe://example.org/./web", "dot"},
		{"dot-dot segment", "spiffe://example.org/a/../web", "dot"},
		{"trailing slash", "spiffe://example.org/web/", "trailing"},
		{"percent", "spiffe://example.org/w%20b", "character"},
		{"too long", long + "a", "2049 bytes"},
		{"trust domain too long", "spiffe://" + strings.Repeat("a", 256) + "/web", "256 bytes"},
		{"bare trust domain", "spiffe://example.org", "path"},
		{"wrong scheme", "https://example.org/web", "scheme"},
		{"query", "spiffe://example.org/web?x=1", "character"},
		{"userinfo", "spiffe://u@example.org/web", "character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseWorkloadID(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseWorkloadID(%q): %v", tt.in, err)
				}
				if id.String() != tt.in {
					t.Fatalf("round trip: got %q, want %q", id, tt.in)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseWorkloadID(%q) = %v, want error containing %q", tt.in, id, tt.wantErr)
			}
			if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.wantErr)) {
				t.Fatalf("ParseWorkloadID(%q) error %q does not mention %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestParseTrustDomain(t *testing.T) {
	for _, in := range []string{"example.org", "a-b_c.d", strings.Repeat("a", 255)} {
		if _, err := ParseTrustDomain(in); err != nil {
			t.Errorf("ParseTrustDomain(%q): %v", in, err)
		}
	}
	for _, in := range []string{"", "Example.org", "example.org:80", strings.Repeat("a", 256), "spiffe://example.org/x", "exa mple"} {
		if _, err := ParseTrustDomain(in); err == nil {
			t.Errorf("ParseTrustDomain(%q) succeeded, want error", in)
		}
	}
}

func TestParseWorkloadIDIn(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	if _, err := ParseWorkloadIDIn("spiffe://example.org/a", td); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseWorkloadIDIn("spiffe://other.org/a", td); err == nil || !strings.Contains(err.Error(), "not in trust domain") {
		t.Fatalf("foreign ID accepted or unclear error: %v", err)
	}
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/web", "spiffe://example.org", "spiffe:///x", "spiffe://a/b/../c", "spiffe://a/%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		// Anything accepted must round-trip, respect the limits and re-parse.
		if id.String() != s {
			t.Fatalf("accepted %q but it prints as %q", s, id.String())
		}
		if len(s) > MaxIDLength || len(id.TrustDomain().Name()) > MaxTrustDomainLength {
			t.Fatalf("accepted %q beyond the length limits", s)
		}
		if _, err := ParseID(id.String()); err != nil {
			t.Fatalf("re-parse of %q: %v", s, err)
		}
	})
}
