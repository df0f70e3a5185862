package ca_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     ca.Config
		wantErr string
	}{
		{"CA TTL below 6 x SVID TTL", ca.Config{SVIDTTL: time.Hour, CATTL: 5 * time.Hour}, "less than 6 x SVID TTL"},
		{"CA TTL below 6 x default SVID TTL", ca.Config{CATTL: 2 * time.Hour}, "less than 6 x SVID TTL"},
		{"CA TTL exactly 6 x SVID TTL", ca.Config{SVIDTTL: time.Minute, CATTL: 6 * time.Minute}, ""},
		{"CA TTL above 6 x SVID TTL", ca.Config{SVIDTTL: time.Minute, CATTL: time.Hour}, ""},
		{"derived CA TTL", ca.Config{SVIDTTL: time.Minute}, ""},
		{"negative TTL", ca.Config{SVIDTTL: -time.Minute}, "negative"},
		{"no trust domain", ca.Config{TrustDomain: spiffeid.TrustDomain{}, DataDir: "x"}, "trust domain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.DataDir == "" {
				cfg.DataDir = t.TempDir()
				cfg.TrustDomain = td
			}
			cfg.Logger = quietLogger()
			_, err := ca.New(context.Background(), cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCATTLIsDerivedFromSVIDTTL(t *testing.T) {
	clk := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, tc := range []struct {
		svid, ca, want time.Duration
	}{
		{time.Hour, 0, 6 * time.Hour},
		{10 * time.Second, 0, time.Minute},
		{time.Hour, 24 * time.Hour, 24 * time.Hour},
	} {
		m := newManager(t, ca.Config{SVIDTTL: tc.svid, CATTL: tc.ca, Clock: clk.Now})
		root := roots(t, m)[0]
		if got := root.NotAfter.Sub(clk.Now()); got != tc.want {
			t.Errorf("SVID TTL %v, CA TTL %v: root lives %v, want %v", tc.svid, tc.ca, got, tc.want)
		}
	}
}

func roots(t testing.TB, m *ca.Manager) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, a := range m.Authorities() {
		if a.Kind == ca.KindX509 {
			c, err := x509.ParseCertificate(a.Data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, c)
		}
	}
	return out
}

func TestFirstStartCreatesRootAndJWTKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	m := newManager(t, ca.Config{DataDir: dir})

	rs := roots(t, m)
	if len(rs) != 1 {
		t.Fatalf("got %d roots, want 1", len(rs))
	}
	root := rs[0]
	checks := []struct {
		name string
		ok   bool
	}{
		{"is a CA", root.BasicConstraintsValid && root.IsCA},
		{"keyCertSign|cRLSign", root.KeyUsage == x509.KeyUsageCertSign|x509.KeyUsageCRLSign},
		{"key usage critical", extCritical(root, "2.5.29.15")},
		{"URI SAN is the trust domain", len(root.URIs) == 1 && root.URIs[0].String() == "spiffe://example.org"},
		{"self-signed", root.CheckSignatureFrom(root) == nil},
		{"P-256 key", isP256(root)},
		{"random serial of ~128 bits", root.SerialNumber.BitLen() > 120},
		{"subject", root.Subject.CommonName == "Signet CA" && slices.Equal(root.Subject.Organization, []string{"Signet"})},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("root: %s: failed", c.name)
		}
	}
	if kids := keyIDs(m, ca.KindJWT); len(kids) != 1 || kids[0] == "" {
		t.Errorf("JWT kids = %q, want one", kids)
	}

	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	var keys int
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		info, _ := e.Info()
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, info.Mode().Perm())
		}
		if strings.HasSuffix(p, ".key") {
			keys++
			data, _ := os.ReadFile(p)
			b, _ := pem.Decode(data)
			if b == nil || b.Type != "PRIVATE KEY" {
				t.Errorf("%s is not a PKCS#8 PEM key", p)
				continue
			}
			if _, err := x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
				t.Errorf("%s: %v", p, err)
			}
		}
	}
	if keys != 2 {
		t.Errorf("found %d key files, want 2 (CA and JWT)", keys)
	}
}

func extCritical(c *x509.Certificate, oid string) bool {
	for _, e := range c.Extensions {
		if e.Id.String() == oid {
			return e.Critical
		}
	}
	return false
}

func isP256(c *x509.Certificate) bool {
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}

func TestRestartKeepsCAAndKid(t *testing.T) {
	dir := t.TempDir()
	first := newManager(t, ca.Config{DataDir: dir})
	before := first.Authorities()
	kid := jwtKID(t, first)

	second := newManager(t, ca.Config{DataDir: dir})
	after := second.Authorities()
	if len(after) != len(before) {
		t.Fatalf("after restart %d authorities, want %d", len(after), len(before))
	}
	for i := range before {
		if before[i].KeyID != after[i].KeyID || !bytes.Equal(before[i].Data, after[i].Data) || !before[i].ExpiresAt.Equal(after[i].ExpiresAt) {
			t.Errorf("authority %d changed across restart: %+v -> %+v", i, before[i].KeyID, after[i].KeyID)
		}
	}
	if got := jwtKID(t, second); got != kid {
		t.Errorf("kid after restart = %s, want %s", got, kid)
	}
	// SVIDs the restarted server signs chain to the same root.
	if signerKeyID(t, second) != signerKeyID(t, first) {
		t.Error("signing root changed across restart")
	}
}

func TestCorruptFilesAreRefused(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(t *testing.T, dir string) string // returns the file the error must name
	}{
		{"CA key garbage", func(t *testing.T, dir string) string { return overwrite(t, dir, "ca-*.key", "not a key") }},
		{"CA cert garbage", func(t *testing.T, dir string) string {
			return overwrite(t, dir, "ca-*.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}},
		{"JWT key garbage", func(t *testing.T, dir string) string { return overwrite(t, dir, "jwt-*.key", "") }},
		{"state garbage", func(t *testing.T, dir string) string { return overwrite(t, dir, "ca-state.json", "{") }},
		{"JWT key swapped for CA key", func(t *testing.T, dir string) string {
			ck := glob(t, dir, "ca-*.key")
			data, _ := os.ReadFile(glob(t, dir, "jwt-*.key"))
			return overwrite(t, dir, filepath.Base(ck), string(data))
		}},
		{"state missing, keys present", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "ca-state.json")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			newManager(t, ca.Config{DataDir: dir})
			file := tt.corrupt(t, dir)
			snapshot := dirSnapshot(t, dir)

			_, err := ca.New(context.Background(), ca.Config{TrustDomain: td, DataDir: dir, Logger: quietLogger()})
			if err == nil {
				t.Fatal("New succeeded on corrupt data")
			}
			if !strings.Contains(err.Error(), file) {
				t.Errorf("error %q does not name %s", err, file)
			}
			if after := dirSnapshot(t, dir); !maps.Equal(snapshot, after) {
				t.Error("New changed the data dir after failing to load it")
			}
		})
	}
}

func glob(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) != 1 {
		t.Fatalf("%s: %d matches", pattern, len(m))
	}
	return m[0]
}

func overwrite(t *testing.T, dir, pattern, content string) string {
	t.Helper()
	p := glob(t, dir, pattern)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func dirSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		out[e.Name()] = string(data)
	}
	return out
}
