package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
)

// upstreamServer is a DiskUpstream standing for another server (nested):
// down makes it refuse to sign, as an unreachable server does.
type upstreamServer struct {
	*ca.DiskUpstream
	down bool
}

func (u *upstreamServer) ServerAddress() string { return "upstream.test:8081" }

func (u *upstreamServer) Ready(context.Context) error {
	if u.down {
		return errors.New("upstream server unreachable")
	}
	return nil
}

func (u *upstreamServer) MintX509CA(ctx context.Context, tmpl *x509.Certificate, key crypto.Signer) (chain, roots []*x509.Certificate, err error) {
	if u.down {
		return nil, nil, errors.New("upstream server unreachable")
	}
	return u.DiskUpstream.MintX509CA(ctx, tmpl, key)
}

// A downstream server restarting while its upstream server is down starts
// on its stored CA and publishes the upstream's bundle as last seen (not
// the roots its CAs were signed with: the upstream dropped one since),
// with what the upstream withdrew still withdrawn.
func TestUpstreamBundleKeptAcrossRestart(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	r := nestedRoots(t, t0, "Root A", "Root B")
	u := &upstreamServer{DiskUpstream: diskUpstream(t, r[0], nil, r...)}
	u.Clock = clk.Now
	dir := t.TempDir()
	start := func() (*ca.Manager, error) {
		return ca.New(context.Background(), ca.Config{TrustDomain: td, Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u, DataDir: dir, Logger: quietLogger()})
	}
	m, err := start()
	if err != nil {
		t.Fatal(err)
	}
	gone := foreignJWT(t, "west-1", t0.Add(time.Hour))
	kept := foreignJWT(t, "west-2", t0.Add(time.Hour))
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509(r), JWT: []ca.Authority{gone, kept}})
	// The upstream revokes nothing under A yet but drops B and west-1.
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509(r[:1]), JWT: []ca.Authority{kept}})
	want := keyIDs(m, ca.KindX509)
	wantJWT := keyIDs(m, ca.KindJWT)
	wantWithdrawn := withdrawnIDs(m, ca.KindX509)

	u.down = true
	m2, err := start()
	if err != nil {
		t.Fatalf("restart with the upstream server down and a valid stored CA: %v", err)
	}
	if m2.ActiveCAID() != m.ActiveCAID() {
		t.Error("the restarted server does not sign with its stored CA")
	}
	if got := keyIDs(m2, ca.KindX509); !slices.Equal(got, want) || !slices.Contains(withdrawnIDs(m2, ca.KindX509), certID(r[1].cert)) {
		t.Errorf("X.509 roots after the restart %v (withdrawn %v); want %v (withdrawn %v)", got, withdrawnIDs(m2, ca.KindX509), want, wantWithdrawn)
	}
	if got := keyIDs(m2, ca.KindJWT); !sameSet(got, wantJWT...) || !slices.Contains(withdrawnIDs(m2, ca.KindJWT), "west-1") {
		t.Errorf("JWT keys after the restart %v (withdrawn %v); want %v and west-1 withdrawn", got, withdrawnIDs(m2, ca.KindJWT), wantJWT)
	}
	if fi, err := os.Stat(filepath.Join(dir, "upstream-bundle.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("upstream bundle file: %v %v", fi, err)
	}

	// Without a stored CA, or with one that expired, an unreachable
	// upstream server still stops the start.
	clk.Set(t0.Add(7 * svidTTL))
	if _, err := start(); err == nil {
		t.Error("started on an expired CA with the upstream server down")
	}
	if _, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u, DataDir: t.TempDir(), Logger: quietLogger()}); err == nil {
		t.Error("a first start succeeded with the upstream server down")
	}

	// No longer nested: the file is stale and goes.
	clk.Set(t0)
	u.down = false
	if _, err := ca.New(context.Background(), ca.Config{TrustDomain: td, Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u.DiskUpstream, DataDir: dir, Logger: quietLogger()}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "upstream-bundle.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("upstream bundle file of a server that is no longer nested: %v", err)
	}
}

// JWT keys need no upstream: with the upstream server down, they still
// rotate on schedule while the CA step fails and is reported.
func TestJWTKeysRotateWhileUpstreamDown(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	r := nestedRoots(t, t0, "Root A")
	u := &upstreamServer{DiskUpstream: diskUpstream(t, r[0], nil, r...)}
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	first := jwtKID(t, m)
	u.down = true
	for _, at := range []time.Duration{prepare, activate} {
		clk.Set(t0.Add(at))
		if err := m.Rotate(context.Background()); err == nil {
			t.Fatalf("at +%v: the CA step needs the upstream server, which is down, yet Rotate reported nothing", at)
		}
	}
	if got := jwtKID(t, m); got == first {
		t.Errorf("the JWT key %s still signs at +%v: its successor was not activated while the upstream was down", got, activate)
	}
}
