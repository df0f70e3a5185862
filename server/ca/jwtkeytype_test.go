package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func TestParseJWTKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    ca.JWTKeyType
		wantErr bool
	}{
		{"", ca.JWTKeyECP256, false},
		{"ec-p256", ca.JWTKeyECP256, false},
		{"ec-p384", ca.JWTKeyECP384, false},
		{"rsa-2048", ca.JWTKeyRSA2048, false},
		{"rsa-4096", ca.JWTKeyRSA4096, false},
		{"RSA-2048", "", true},
		{"rsa-1024", "", true},
		{"ec-p521", "", true},
		{"ES256", "", true},
	}
	for _, tt := range tests {
		got, err := ca.ParseJWTKeyType(tt.in)
		if tt.wantErr {
			if err == nil || !strings.Contains(err.Error(), "rsa-2048") || !strings.Contains(err.Error(), tt.in) {
				t.Errorf("ParseJWTKeyType(%q) = %q, %v; want an error naming it and the accepted types", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseJWTKeyType(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// mintAlg mints a JWT-SVID, checks it validates under m's bundle with
// go-spiffe, and returns it with its header's alg and kid.
func mintAlg(t *testing.T, m *ca.Manager) (token, alg, kid string) {
	t.Helper()
	id := spiffeid.RequireFromPath(td, "/w")
	token, _, err := m.MintJWTSVID(context.Background(), id, []string{"sts.amazonaws.com"}, 0)
	if err != nil {
		t.Fatalf("MintJWTSVID: %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(token, bundleOf(t, m), []string{"sts.amazonaws.com"}); err != nil {
		t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
	}
	h := jwtHeader(t, token)
	return token, h["alg"].(string), h["kid"].(string)
}

func TestJWTKeyTypes(t *testing.T) {
	for _, typ := range ca.JWTKeyTypes {
		t.Run(string(typ), func(t *testing.T) {
			dir := t.TempDir()
			cfg := ca.Config{DataDir: dir, JWTKeyType: typ}
			m := newManager(t, cfg)
			_, alg, kid := mintAlg(t, m)
			if alg != string(typ.Algorithm()) {
				t.Errorf("alg %s, want %s", alg, typ.Algorithm())
			}
			if a, ok := statusOf(t, m, ca.KindJWT, kid); !ok || a.KeyType != typ || a.Status != ca.StatusActive {
				t.Errorf("local authority %s: %+v, want active %s", kid, a, typ)
			}
			kp := filepath.Join(dir, "jwt-"+kid+".key")
			if fi, err := os.Stat(kp); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file %s: %v, %v; want mode 0600", kp, fi, err)
			}

			// A restart loads the same key and signs as before.
			m = newManager(t, cfg)
			token, alg2, kid2 := mintAlg(t, m)
			if kid2 != kid || alg2 != alg {
				t.Errorf("after restart kid %s alg %s, want %s %s", kid2, alg2, kid, alg)
			}
			if _, err := jwtsvid.ParseAndValidate(token, bundleOf(t, m), []string{"sts.amazonaws.com"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestJWTKeyTypeChange restarts a server with another jwt_key_type while a
// key is prepared, in time for a replacement: the active key keeps
// signing, the prepared one (never used) is dropped from the bundle, a key
// of the new type is prepared and activated on schedule, and tokens of the
// old key keep validating.
func TestJWTKeyTypeChange(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	cfg := ca.Config{DataDir: t.TempDir(), Clock: clk.Now, SVIDTTL: svidTTL}
	m := newManager(t, cfg)
	k0 := jwtKID(t, m)
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	k1 := other(keyIDs(m, ca.KindJWT), k0)

	cfg.JWTKeyType = ca.JWTKeyRSA2048
	m = newManager(t, cfg)
	// The fake clock is hours behind: go-spiffe (real time) would call
	// these tokens expired, so only their headers are read.
	tok, _, err := m.MintJWTSVID(context.Background(), spiffeid.RequireFromPath(td, "/w"), []string{"a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h := jwtHeader(t, tok); h["kid"] != k0 || h["alg"] != "ES256" {
		t.Fatalf("after the change the signer is %v (%v), want the active key %s (ES256)", h["kid"], h["alg"], k0)
	}
	if a, _ := statusOf(t, m, ca.KindJWT, k1); a.Status != ca.StatusRevoked {
		t.Fatalf("prepared ec-p256 key after the change: %+v, want dropped (revoked)", a)
	}
	if contains(keyIDs(m, ca.KindJWT), k1) || !contains(revokedIDs(m), k1) {
		t.Fatalf("the dropped key %s is still published, or not removed from the store", k1)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "jwt-"+k1+".key")); !os.IsNotExist(err) {
		t.Fatalf("the dropped key's file: %v, want it deleted", err)
	}
	list, err := m.LocalAuthorities(ca.KindJWT)
	if err != nil {
		t.Fatal(err)
	}
	var k2 string
	for _, a := range list {
		if a.Status == ca.StatusPrepared {
			if a.KeyType != ca.JWTKeyRSA2048 {
				t.Fatalf("prepared key %s is %s, want rsa-2048", a.ID, a.KeyType)
			}
			k2 = a.ID
		}
	}
	if k2 == "" {
		t.Fatalf("no key prepared after the change: %+v", list)
	}
	if got := keyIDs(m, ca.KindJWT); len(got) != 2 {
		t.Fatalf("published JWT keys %v, want the active one and the new one", got)
	}

	// A second restart with the same type changes nothing.
	m = newManager(t, cfg)
	if a, _ := statusOf(t, m, ca.KindJWT, k2); a.Status != ca.StatusPrepared {
		t.Fatalf("second restart: %s is %s, want still prepared", k2, a.Status)
	}

	clk.Set(t0.Add(activate - secondOne))
	rotate(t, m)
	es256, _, _ := mintAlg(t, m)
	clk.Set(t0.Add(activate))
	rotate(t, m)
	if _, alg, kid := mintAlg(t, m); kid != k2 || alg != "RS256" {
		t.Fatalf("after activation the signer is %s (%s), want %s (RS256)", kid, alg, k2)
	}
	if _, err := jwtsvid.ParseAndValidate(es256, bundleOf(t, m), []string{"sts.amazonaws.com"}); err != nil {
		t.Fatalf("a token of the old ES256 key no longer validates: %v", err)
	}
}

// TestJWTKeyTypeChangeLate: restarted with another type too close to the
// activation for a new key to get its notice, the server keeps the prepared
// key (relying parties have it) and the type changes with the key after.
func TestJWTKeyTypeChangeLate(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	cfg := ca.Config{DataDir: t.TempDir(), Clock: clk.Now, SVIDTTL: svidTTL}
	m := newManager(t, cfg)
	k0 := jwtKID(t, m)
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	k1 := other(keyIDs(m, ca.KindJWT), k0)

	// Activation is at +5h and a new key needs 30 minutes of notice.
	clk.Set(t0.Add(activate - 29*time.Minute))
	cfg.JWTKeyType = ca.JWTKeyRSA2048
	m = newManager(t, cfg)
	if a, _ := statusOf(t, m, ca.KindJWT, k1); a.Status != ca.StatusPrepared || a.KeyType != ca.JWTKeyECP256 {
		t.Fatalf("prepared key after a late change: %+v, want kept", a)
	}
	clk.Set(t0.Add(activate))
	rotate(t, m)
	if kid := jwtKID(t, m); kid != k1 {
		t.Fatalf("signer %s after activation, want the kept key %s", kid, k1)
	}
	// Its successor, prepared at half its life, is of the new type.
	clk.Set(t0.Add(activate + prepare))
	rotate(t, m)
	list, err := m.LocalAuthorities(ca.KindJWT)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(a ca.LocalAuthority) bool { return a.Status == ca.StatusPrepared }); i < 0 || list[i].KeyType != ca.JWTKeyRSA2048 {
		t.Fatalf("authorities %+v: want an rsa-2048 key prepared after the kept one", list)
	}
}

// A start with another type that fails (here: the upstream authority's
// files are missing) changes nothing: the prepared key of the old type is
// still there for the next start.
func TestJWTKeyTypeChangeFailedStart(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	cfg := ca.Config{DataDir: t.TempDir(), Clock: clk.Now, SVIDTTL: svidTTL}
	m := newManager(t, cfg)
	k0 := jwtKID(t, m)
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	k1 := other(keyIDs(m, ca.KindJWT), k0)

	bad := cfg
	bad.TrustDomain, bad.Logger, bad.JWTKeyType = td, quietLogger(), ca.JWTKeyRSA2048
	bad.Upstream = &ca.DiskUpstream{CertFile: filepath.Join(t.TempDir(), "missing.crt"), KeyFile: filepath.Join(t.TempDir(), "missing.key")}
	if _, err := ca.New(context.Background(), bad); err == nil {
		t.Fatal("New succeeded without the upstream's files")
	}
	m = newManager(t, cfg)
	if a, _ := statusOf(t, m, ca.KindJWT, k1); a.Status != ca.StatusPrepared {
		t.Fatalf("after a failed start with another type: %+v, want the key still prepared", a)
	}
}

// A key file of a type Signet never makes is refused by name at start.
func TestJWTKeyTypeUnsupportedOnDisk(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, ca.Config{DataDir: dir})
	kid := jwtKID(t, m)
	key, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	kp := filepath.Join(dir, "jwt-"+kid+".key")
	if err := os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ca.New(context.Background(), ca.Config{TrustDomain: td, DataDir: dir, Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), kp) || !strings.Contains(err.Error(), "P-521") {
		t.Fatalf("New with a P-521 JWT key: %v, want an error naming %s and the curve", err, kp)
	}
}

// revokedIDs are the key IDs the server keeps removing from the store.
func revokedIDs(m *ca.Manager) []string {
	var out []string
	for _, a := range m.Revoked() {
		out = append(out, a.KeyID)
	}
	return out
}
