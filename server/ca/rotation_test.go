package ca_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// With SVID TTL 1h and JWT TTL 5m both the CA and the JWT key live 6h: the
// next one is published at +3h, used from +5h, and the old one dropped at +6h.
const (
	svidTTL   = time.Hour
	prepare   = 3 * time.Hour
	activate  = 5 * time.Hour
	expire    = 6 * time.Hour
	secondOne = time.Second
)

// rotationStart puts activation of the first rotation near the real now, so
// JWT-SVIDs minted around it validate with go-spiffe (which uses time.Now).
func rotationStart() time.Time { return time.Now().Add(-activate).Truncate(time.Second) }

func drain(m *ca.Manager) bool {
	select {
	case <-m.Changed():
		return true
	default:
		return false
	}
}

func rotate(t *testing.T, m *ca.Manager) {
	t.Helper()
	if err := m.Rotate(context.Background()); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
}

func TestRotationWithFakeClock(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL})
	drain(m)

	r0, k0 := signerKeyID(t, m), jwtKID(t, m)
	var r1, k1 string

	// A token and an SVID from the old authorities, minted just before the switch.
	clk.Set(t0.Add(activate - time.Minute))
	oldToken, oldExp, err := m.MintJWTSVID(context.Background(), spiffeid.RequireFromPath(td, "/w"), []string{"a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	oldSVID, err := m.SignX509SVID(context.Background(), makeCSR(t, p256(t)), spiffeid.RequireFromPath(td, "/w"), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(t0)

	steps := []struct {
		at          time.Duration
		wantChanged bool
		check       func(t *testing.T)
	}{
		{prepare - secondOne, false, func(t *testing.T) {
			if got := keyIDs(m, ca.KindX509); !slices.Equal(got, []string{r0}) {
				t.Errorf("roots before half-life = %v, want only the active", got)
			}
		}},
		{prepare, true, func(t *testing.T) {
			roots, kids := keyIDs(m, ca.KindX509), keyIDs(m, ca.KindJWT)
			if len(roots) != 2 || len(kids) != 2 {
				t.Fatalf("at half-life: %d roots, %d kids; want the next of each published", len(roots), len(kids))
			}
			r1, k1 = other(roots, r0), other(kids, k0)
			if s := signerKeyID(t, m); s != r0 {
				t.Error("the next CA signs before its activation time")
			}
			if k := jwtKID(t, m); k != k0 {
				t.Error("the next JWT key signs before its activation time")
			}
		}},
		{activate - secondOne, false, func(t *testing.T) {
			if signerKeyID(t, m) != r0 || jwtKID(t, m) != k0 {
				t.Error("switched before 1/6 of life left")
			}
		}},
		{activate, true, func(t *testing.T) {
			if signerKeyID(t, m) != r1 {
				t.Error("next CA did not become the signer at 1/6 of life left")
			}
			if jwtKID(t, m) != k1 {
				t.Error("next JWT key did not become the signer at 1/6 of life left")
			}
			if got := keyIDs(m, ca.KindX509); !contains(got, r0) || !contains(got, r1) {
				t.Errorf("roots after activation = %v, want old and new", got)
			}
			// The old token still validates against the published authorities.
			if _, err := jwtsvid.ParseAndValidate(oldToken, bundleOf(t, m), []string{"a"}); err != nil {
				t.Errorf("token minted before rotation: %v", err)
			}
			// And an SVID signed before the rotation still verifies later in its life.
			if _, _, err := x509svid.Verify(oldSVID, bundleOf(t, m), x509svid.WithTime(t0.Add(activate+30*time.Minute))); err != nil {
				t.Errorf("SVID signed before rotation: %v", err)
			}
			for _, a := range m.Authorities() {
				if a.KeyID == r0 && a.ExpiresAt.Before(oldSVID[0].NotAfter) {
					t.Error("old root is due to go before an SVID it signed expires")
				}
				if a.KeyID == k0 && a.ExpiresAt.Before(oldExp) {
					t.Error("old JWT key is due to go before a token it signed expires")
				}
			}
		}},
		{expire - secondOne, false, func(t *testing.T) {
			if !contains(keyIDs(m, ca.KindX509), r0) || !contains(keyIDs(m, ca.KindJWT), k0) {
				t.Error("old authorities dropped before their NotAfter")
			}
		}},
		{expire, true, func(t *testing.T) {
			roots, kids := keyIDs(m, ca.KindX509), keyIDs(m, ca.KindJWT)
			if contains(roots, r0) || contains(kids, k0) {
				t.Errorf("old authorities still published at their NotAfter: %v %v", roots, kids)
			}
			if !contains(roots, r1) || !contains(kids, k1) {
				t.Errorf("active authorities missing: %v %v", roots, kids)
			}
			// The new CA reached its own half-life: its successor is out.
			if len(roots) != 2 || len(kids) != 2 {
				t.Errorf("%d roots, %d kids; want active and next", len(roots), len(kids))
			}
			if _, err := jwtsvid.ParseAndValidate(oldToken, bundleOf(t, m), []string{"a"}); err == nil || !strings.Contains(err.Error(), k0) {
				t.Errorf("token of a dropped key: err = %v, want no authority %s", err, k0)
			}
		}},
		{activate + expire - svidTTL, true, func(t *testing.T) {
			if s := signerKeyID(t, m); s == r1 || s == r0 {
				t.Error("second rotation did not happen")
			}
		}},
	}
	for _, st := range steps {
		clk.Set(t0.Add(st.at))
		rotate(t, m)
		if got := drain(m); got != st.wantChanged {
			t.Errorf("at +%v: Changed fired = %v, want %v", st.at, got, st.wantChanged)
		}
		st.check(t)
	}
}

func other(ids []string, not string) string {
	for _, id := range ids {
		if id != not {
			return id
		}
	}
	return ""
}

func TestChangedCoalesces(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL})
	drain(m)
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	clk.Set(t0.Add(activate))
	rotate(t, m)
	if !drain(m) {
		t.Fatal("no signal after two rotation steps")
	}
	if drain(m) {
		t.Error("two pending signals; want them coalesced into one")
	}
}

func TestRestartMidRotation(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	dir := t.TempDir()
	cfg := ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL}
	m := newManager(t, cfg)
	r0, k0 := signerKeyID(t, m), jwtKID(t, m)

	// Restart with the next authorities published but not yet used.
	clk.Set(t0.Add(prepare))
	rotate(t, m)
	published := m.Authorities()
	m = newManager(t, cfg)
	if !sameKeyIDs(m.Authorities(), published) {
		t.Fatalf("restart lost a slot: %v, want %v", ids(m.Authorities()), ids(published))
	}
	if signerKeyID(t, m) != r0 || jwtKID(t, m) != k0 {
		t.Fatal("restart switched signers early")
	}
	r1, k1 := other(keyIDs(m, ca.KindX509), r0), other(keyIDs(m, ca.KindJWT), k0)

	// The restarted server activates the very authorities published before.
	clk.Set(t0.Add(activate))
	rotate(t, m)
	if signerKeyID(t, m) != r1 || jwtKID(t, m) != k1 {
		t.Fatal("restarted server did not activate the published next authorities")
	}

	// Restart with the old authorities retired: they stay until they expire.
	m = newManager(t, cfg)
	if !contains(keyIDs(m, ca.KindX509), r0) || !contains(keyIDs(m, ca.KindJWT), k0) {
		t.Fatal("restart dropped retired authorities early")
	}
	if signerKeyID(t, m) != r1 || jwtKID(t, m) != k1 {
		t.Fatal("restart lost the active authorities")
	}
	clk.Set(t0.Add(expire))
	rotate(t, m)
	if contains(keyIDs(m, ca.KindX509), r0) {
		t.Fatal("old root not dropped at its NotAfter")
	}
	// Its key files go too.
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		if strings.Contains(f.Name(), r0) || strings.Contains(f.Name(), k0) {
			t.Errorf("file %s of a dropped authority remains", f.Name())
		}
	}
}

func TestRestartAfterLongDowntime(t *testing.T) {
	tests := []struct {
		name      string
		downUntil time.Duration
		check     func(t *testing.T, m *ca.Manager, clk *fakeClock, t0 time.Time, r0 string)
	}{
		{"active CA expired: a new one signs at once", expire + time.Hour, func(t *testing.T, m *ca.Manager, _ *fakeClock, _ time.Time, r0 string) {
			if contains(keyIDs(m, ca.KindX509), r0) {
				t.Error("expired root still published")
			}
			if s := signerKeyID(t, m); s == r0 || s == "" {
				t.Error("no new signing CA")
			}
		}},
		{"next prepared late: published for a while before use", activate - 10*time.Minute, func(t *testing.T, m *ca.Manager, clk *fakeClock, t0 time.Time, r0 string) {
			if len(keyIDs(m, ca.KindX509)) != 2 {
				t.Fatal("next CA not published on restart")
			}
			// Activation waits 1/12 of the life (30m) after publication.
			clk.Set(t0.Add(activate))
			rotate(t, m)
			if signerKeyID(t, m) != r0 {
				t.Error("late next CA used without notice")
			}
			clk.Set(t0.Add(activate + 20*time.Minute))
			rotate(t, m)
			if signerKeyID(t, m) == r0 {
				t.Error("late next CA never activated")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := rotationStart()
			clk := newFakeClock(t0)
			cfg := ca.Config{DataDir: t.TempDir(), Clock: clk.Now, SVIDTTL: svidTTL}
			r0 := signerKeyID(t, newManager(t, cfg))
			clk.Set(t0.Add(tt.downUntil))
			tt.check(t, newManager(t, cfg), clk, t0, r0)
		})
	}
}

func ids(auths []ca.Authority) []string {
	var out []string
	for _, a := range auths {
		out = append(out, string(a.Kind)+":"+a.KeyID)
	}
	slices.Sort(out)
	return out
}

func sameKeyIDs(a, b []ca.Authority) bool { return slices.Equal(ids(a), ids(b)) }

// TestRealTimeRotation watches Run rotate a CA with a 2 s SVID TTL (12 s CA
// life): every SVID and token issued along the way verifies against the
// authorities published at that moment, and the phases come in order.
func TestRealTimeRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~12 s")
	}
	m := newManager(t, ca.Config{SVIDTTL: 2 * time.Second, JWTTTL: 2 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	r0, k0 := signerKeyID(t, m), jwtKID(t, m)
	id := spiffeid.RequireFromPath(td, "/w")
	var phases []string
	note := func(p string) {
		if !contains(phases, p) {
			phases = append(phases, p)
		}
	}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !contains(phases, "old root dropped") || !contains(phases, "old kid dropped") {
		select {
		case <-deadline:
			t.Fatalf("rotation incomplete after 30 s; phases seen: %v", phases)
		case <-m.Changed():
			note("changed")
		case <-tick.C:
		}
		roots, kids := keyIDs(m, ca.KindX509), keyIDs(m, ca.KindJWT)
		bundle := bundleOf(t, m)
		certs, err := m.SignX509SVID(ctx, makeCSR(t, p256(t)), id, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := x509svid.Verify(certs, bundle); err != nil {
			t.Fatalf("fresh SVID does not verify against the published roots: %v", err)
		}
		token, _, err := m.MintJWTSVID(ctx, id, []string{"a"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jwtsvid.ParseAndValidate(token, bundle, []string{"a"}); err != nil {
			t.Fatalf("fresh token does not validate against the published keys: %v", err)
		}
		signer := rootSKIDs(t, m)[string(certs[0].AuthorityKeyId)]
		kid := jwtHeader(t, token)["kid"].(string)
		switch {
		case signer == r0 && len(roots) == 2:
			note("next root published")
		case signer != r0 && contains(roots, r0):
			note("new root signs, old kept")
		case !contains(roots, r0):
			note("old root dropped")
		}
		switch {
		case kid == k0 && len(kids) == 2:
			note("next kid published")
		case kid != k0 && contains(kids, k0):
			note("new kid signs, old kept")
		case !contains(kids, k0):
			note("old kid dropped")
		}
	}
	for _, order := range [][]string{
		{"next root published", "new root signs, old kept", "old root dropped"},
		{"next kid published", "new kid signs, old kept", "old kid dropped"},
	} {
		var at []int
		for _, p := range order {
			at = append(at, slices.Index(phases, p))
		}
		if slices.Contains(at, -1) || !slices.IsSorted(at) {
			t.Errorf("phases %v, want %v in this order", phases, order)
		}
	}
	if !contains(phases, "changed") {
		t.Error("Changed never fired")
	}
}
