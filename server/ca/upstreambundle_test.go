package ca_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/server/ca"
)

// nestedRoots are an upstream server's roots, valid for a year from t0.
func nestedRoots(t *testing.T, t0 time.Time, names ...string) []*testCA {
	t.Helper()
	var out []*testCA
	for _, n := range names {
		o := caOf(n)
		o.notBefore, o.notAfter = t0.Add(-time.Hour), t0.Add(365*24*time.Hour)
		out = append(out, issue(t, nil, o))
	}
	return out
}

// upstreamX509 lists roots for an UpstreamBundle, the tainted ones marked.
func upstreamX509(roots []*testCA, tainted ...*testCA) []ca.UpstreamX509 {
	var out []ca.UpstreamX509
	for _, r := range roots {
		out = append(out, ca.UpstreamX509{Cert: r.cert, Tainted: slices.Contains(tainted, r)})
	}
	return out
}

func setBundle(t *testing.T, m *ca.Manager, b ca.UpstreamBundle) {
	t.Helper()
	if err := m.SetUpstreamBundle(b); err != nil {
		t.Fatalf("SetUpstreamBundle: %v", err)
	}
}

// foreignJWT is a JWT key of another server of the trust domain.
func foreignJWT(t *testing.T, kid string, expires time.Time) ca.Authority {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&p256(t).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return ca.Authority{Kind: ca.KindJWT, KeyID: kid, Data: der, ExpiresAt: expires}
}

// withdrawnIDs are the key IDs of kind the server keeps removing from the
// store.
func withdrawnIDs(m *ca.Manager, kind ca.AuthorityKind) []string {
	var out []string
	for _, a := range m.Revoked() {
		if a.Kind == kind {
			out = append(out, a.KeyID)
		}
	}
	return out
}

// sameSet reports whether got holds exactly want, in any order, once each.
func sameSet(got []string, want ...string) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

// The upstream's roots replace those named when it signed this server's
// CA: a root only the mint named leaves the bundle (and is listed for
// removal from the store), the upstream's taint marks are carried, and a
// root revoked here stays out whatever the upstream lists.
func TestSetUpstreamBundleRoots(t *testing.T) {
	ctx := context.Background()
	t0 := rotationStart()
	clk := newFakeClock(t0)
	r := nestedRoots(t, t0, "Root A", "Root B", "Root C")
	rootA, rootB, rootC := r[0], r[1], r[2]
	idA, idB, idC := certID(rootA.cert), certID(rootB.cert), certID(rootC.cert)
	u := diskUpstream(t, rootA, nil, rootA, rootC) // signs under A, names A and C
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	if got := keyIDs(m, ca.KindX509); !sameSet(got, idA, idC) {
		t.Fatalf("test setup: roots before the upstream's bundle %v, want A and C", got)
	}

	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{rootA, rootB}, rootB)})
	if got := keyIDs(m, ca.KindX509); !sameSet(got, idA, idB) {
		t.Fatalf("roots %v, want exactly the upstream's A and B", got)
	}
	a, _ := published(m, ca.KindX509, idA)
	b, _ := published(m, ca.KindX509, idB)
	if a.Tainted || !b.Tainted {
		t.Errorf("tainted: A %v, B %v; want the upstream's marks (B only)", a.Tainted, b.Tainted)
	}
	if !slices.Equal(b.Data, rootB.cert.Raw) || !b.ExpiresAt.Equal(rootB.cert.NotAfter) {
		t.Errorf("root B published with other data, or expiring %v, not at its NotAfter", b.ExpiresAt)
	}
	if got := withdrawnIDs(m, ca.KindX509); !sameSet(got, idC) {
		t.Errorf("Revoked() X.509 %v, want C (named at the mint, dropped by the upstream)", got)
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(signSVID(t, m)), bundleOf(t, m), x509svid.WithTime(clk.Now())); err != nil {
		t.Errorf("an SVID of the active CA does not verify against the published bundle: %v", err)
	}

	// The upstream lists C again and drops B: C is back, no longer to be
	// removed, and B is to be removed from the store, though no CA here
	// chains to it (this server published it).
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{rootA, rootC})})
	if got := keyIDs(m, ca.KindX509); !sameSet(got, idA, idC) {
		t.Errorf("roots %v after the upstream listed C again, want A and C", got)
	}
	if got := withdrawnIDs(m, ca.KindX509); !sameSet(got, idB) {
		t.Errorf("Revoked() X.509 %v, want B (listed by the upstream before, not now)", got)
	}
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{rootA, rootB, rootC})})
	if got := withdrawnIDs(m, ca.KindX509); len(got) != 0 {
		t.Errorf("Revoked() X.509 %v once the upstream lists every root, want none", got)
	}
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{rootA, rootC})})
	clk.Set(rootB.cert.NotAfter.Add(time.Second))
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{rootA, rootC})})
	if got := withdrawnIDs(m, ca.KindX509); slices.Contains(got, idB) {
		t.Errorf("Revoked() X.509 %v still lists B after it expired", got)
	}
	clk.Set(t0)

	// Root A is replaced here (the upstream now signs under B) and the
	// operator taints, then revokes it: the mark wins over the upstream's.
	writePEM(t, u.CertFile, certBlock(rootB))
	writePEM(t, u.KeyFile, pkcs8Block(t, rootB.key))
	writePEM(t, u.BundleFile, certBlock(rootA), certBlock(rootB))
	p, err := m.Prepare(ctx, ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, ca.KindX509, p.ID); err != nil {
		t.Fatal(err)
	}
	both := ca.UpstreamBundle{X509: upstreamX509([]*testCA{rootA, rootB})}
	setBundle(t, m, both)
	if _, err := m.TaintUpstream(ctx, idA); err != nil {
		t.Fatal(err)
	}
	if a, ok := published(m, ca.KindX509, idA); !ok || !a.Tainted {
		t.Errorf("root A tainted here: published %v, tainted %v; want published, tainted", ok, a.Tainted)
	}
	if _, err := m.RevokeUpstream(ctx, idA, nil); err != nil {
		t.Fatal(err)
	}
	setBundle(t, m, both)
	if got := keyIDs(m, ca.KindX509); !sameSet(got, idB) {
		t.Errorf("roots %v after A was revoked here and the upstream still lists it, want B only", got)
	}
	if !slices.Contains(withdrawnIDs(m, ca.KindX509), idA) {
		t.Errorf("Revoked() %v lacks the revoked root A", m.Revoked())
	}
}

// The upstream's JWT keys join this server's own, once each; a key the
// upstream stops listing leaves the bundle and is listed for removal from
// the store until it expires, or until the upstream lists it again.
func TestSetUpstreamBundleJWT(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	root := nestedRoots(t, t0, "Root")[0]
	u := diskUpstream(t, root, nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	own := keyIDs(m, ca.KindJWT)
	if len(own) != 1 {
		t.Fatalf("test setup: %d own JWT keys", len(own))
	}
	ownKey, _ := published(m, ca.KindJWT, own[0])
	k1 := foreignJWT(t, "east-1", t0.Add(time.Hour))
	k2 := foreignJWT(t, "east-2", t0.Add(2*time.Hour))
	// The upstream lists this server's key too (it published it there), with
	// an expiry of its own.
	echo := ownKey
	echo.ExpiresAt = ownKey.ExpiresAt.Add(time.Hour)
	x509s := upstreamX509([]*testCA{root})
	set := func(keys ...ca.Authority) { setBundle(t, m, ca.UpstreamBundle{X509: x509s, JWT: keys}) }

	set(echo, k1, k2)
	if got := keyIDs(m, ca.KindJWT); !sameSet(got, own[0], "east-1", "east-2") {
		t.Fatalf("JWT keys %v, want own %s once and east-1, east-2", got, own[0])
	}
	if got, _ := published(m, ca.KindJWT, own[0]); !got.ExpiresAt.Equal(ownKey.ExpiresAt) {
		t.Errorf("own key published with the upstream's expiry %v, want its own %v", got.ExpiresAt, ownKey.ExpiresAt)
	}
	if got, _ := published(m, ca.KindJWT, "east-2"); !slices.Equal(got.Data, k2.Data) {
		t.Error("east-2 published with other key data")
	}
	if got, err := ca.NewBundle(td, m.Authorities(), 1, 0); err != nil || len(got.JWTAuthorities()) != 3 {
		t.Fatalf("bundle of the published set: %v", err)
	}

	// east-2 and this server's key are no longer listed: east-2 leaves;
	// this server's key stays, and is never to be removed.
	set(k1)
	if got := keyIDs(m, ca.KindJWT); !sameSet(got, own[0], "east-1") {
		t.Errorf("JWT keys %v after the upstream dropped east-2, want own and east-1", got)
	}
	if got := withdrawnIDs(m, ca.KindJWT); !sameSet(got, "east-2") {
		t.Errorf("Revoked() JWT %v, want east-2", got)
	}
	set(k1) // still withdrawn on the next poll
	if got := withdrawnIDs(m, ca.KindJWT); !sameSet(got, "east-2") {
		t.Errorf("Revoked() JWT %v on the next poll, want east-2", got)
	}
	// Listed again: back in the bundle, not to be removed.
	set(k1, k2)
	if got := keyIDs(m, ca.KindJWT); !sameSet(got, own[0], "east-1", "east-2") {
		t.Errorf("JWT keys %v after east-2 was listed again", got)
	}
	if got := withdrawnIDs(m, ca.KindJWT); len(got) != 0 {
		t.Errorf("Revoked() JWT %v after east-2 was listed again, want none", got)
	}
	// Withdrawn again, then expired: forgotten.
	set(k1)
	clk.Set(k2.ExpiresAt.Add(time.Second))
	set(k1)
	if got := withdrawnIDs(m, ca.KindJWT); len(got) != 0 {
		t.Errorf("Revoked() JWT %v after east-2 expired, want none", got)
	}
}

// Changed fires when the published set changes, not on every poll.
func TestSetUpstreamBundleChanged(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	r := nestedRoots(t, t0, "Root A", "Root B")
	u := diskUpstream(t, r[0], nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	k1 := foreignJWT(t, "east-1", t0.Add(time.Hour))
	drain(m)
	for _, step := range []struct {
		name   string
		b      ca.UpstreamBundle
		signal bool
	}{
		{"first bundle", ca.UpstreamBundle{X509: upstreamX509(r[:1]), JWT: []ca.Authority{k1}}, true},
		{"same again", ca.UpstreamBundle{X509: upstreamX509(r[:1]), JWT: []ca.Authority{k1}}, false},
		{"a root added", ca.UpstreamBundle{X509: upstreamX509(r), JWT: []ca.Authority{k1}}, true},
		{"a root tainted", ca.UpstreamBundle{X509: upstreamX509(r, r[1]), JWT: []ca.Authority{k1}}, true},
		{"same again", ca.UpstreamBundle{X509: upstreamX509(r, r[1]), JWT: []ca.Authority{k1}}, false},
		{"a JWT key withdrawn", ca.UpstreamBundle{X509: upstreamX509(r, r[1])}, true},
		{"same again", ca.UpstreamBundle{X509: upstreamX509(r, r[1])}, false},
	} {
		setBundle(t, m, step.b)
		if got := drain(m); got != step.signal {
			t.Errorf("%s: Changed fired %v, want %v", step.name, got, step.signal)
		}
	}
}

// ReplaceTaintedCA does nothing until the upstream taints the root the
// active CA chains to.
func TestReplaceTaintedCANoop(t *testing.T) {
	ctx := context.Background()
	t0 := rotationStart()
	clk := newFakeClock(t0)
	r := nestedRoots(t, t0, "Root A", "Root B")
	u := diskUpstream(t, r[0], nil, r...)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	self := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL})
	setBundle(t, self, ca.UpstreamBundle{X509: upstreamX509(r, r...)})
	active := m.ActiveCAID()
	for _, tc := range []struct {
		name string
		m    *ca.Manager
		b    *ca.UpstreamBundle // nil: none set
	}{
		{"no upstream bundle yet", m, nil},
		{"nothing tainted", m, &ca.UpstreamBundle{X509: upstreamX509(r)}},
		{"another root tainted", m, &ca.UpstreamBundle{X509: upstreamX509(r, r[1])}},
		{"a self-signed CA", self, nil},
	} {
		if tc.b != nil {
			setBundle(t, tc.m, *tc.b)
		}
		before := tc.m.ActiveCAID()
		replaced, err := tc.m.ReplaceTaintedCA(ctx)
		if replaced || err != nil || tc.m.ActiveCAID() != before {
			t.Errorf("%s: ReplaceTaintedCA = %v, %v (active %s -> %s); want false, nil, no change", tc.name, replaced, err, before, tc.m.ActiveCAID())
		}
	}
	if m.ActiveCAID() != active {
		t.Error("the active CA changed")
	}
}

// nestedSetup is a downstream server under root A, whose upstream also
// publishes root B, with files the test rewrites to move the upstream.
type nestedSetup struct {
	t            *testing.T
	clk          *fakeClock
	dir          string
	u            *ca.DiskUpstream
	rootA, rootB *testCA
	m            *ca.Manager
}

func newNestedSetup(t *testing.T) *nestedSetup {
	t0 := rotationStart()
	s := &nestedSetup{t: t, clk: newFakeClock(t0), dir: t.TempDir()}
	r := nestedRoots(t, t0, "Root A", "Root B")
	s.rootA, s.rootB = r[0], r[1]
	s.u = diskUpstream(t, s.rootA, nil, s.rootA, s.rootB)
	s.u.Clock = s.clk.Now
	s.m = s.start()
	return s
}

func (s *nestedSetup) start() *ca.Manager {
	return newManager(s.t, ca.Config{Clock: s.clk.Now, SVIDTTL: svidTTL, Upstream: s.u, DataDir: s.dir})
}

// signUnder has the upstream sign new CAs under root.
func (s *nestedSetup) signUnder(root *testCA) {
	writePEM(s.t, s.u.CertFile, certBlock(root))
	writePEM(s.t, s.u.KeyFile, pkcs8Block(s.t, root.key))
}

// taintA is the upstream's bundle with root A tainted.
func (s *nestedSetup) taintA() {
	setBundle(s.t, s.m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{s.rootA, s.rootB}, s.rootA)})
}

func (s *nestedSetup) status(id string) ca.Status {
	a, _ := statusOf(s.t, s.m, ca.KindX509, id)
	return a.Status
}

func (s *nestedSetup) caFiles(id string) []string {
	m, err := filepath.Glob(filepath.Join(s.dir, "ca-"+id+".*"))
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

// The upstream tainted root A, which the active CA chains to: a CA under B
// becomes active at once, the old one is retired, and the change is state.
func TestReplaceTaintedCA(t *testing.T) {
	ctx := context.Background()
	s := newNestedSetup(t)
	old := s.m.ActiveCAID()
	underA := signSVID(t, s.m)
	s.taintA()
	drain(s.m)

	// The upstream still signs under A: refused, nothing changed.
	snapshot := readDir(t, s.dir)
	replaced, err := s.m.ReplaceTaintedCA(ctx)
	if replaced || !errors.Is(err, ca.ErrAuthorityState) {
		t.Fatalf("ReplaceTaintedCA with the upstream under the tainted root = %v, %v; want ErrAuthorityState", replaced, err)
	}
	if s.m.ActiveCAID() != old || drain(s.m) {
		t.Error("a refused replacement changed the active CA or signalled a change")
	}
	if list, _ := s.m.LocalAuthorities(ca.KindX509); len(list) != 1 {
		t.Errorf("a refused replacement left %d X.509 CAs, want 1", len(list))
	}
	if after := readDir(t, s.dir); len(after) != len(snapshot) || after["ca-state.json"] != snapshot["ca-state.json"] {
		t.Error("a refused replacement changed the data dir")
	}

	s.signUnder(s.rootB)
	replaced, err = s.m.ReplaceTaintedCA(ctx)
	if !replaced || err != nil {
		t.Fatalf("ReplaceTaintedCA = %v, %v; want a replacement", replaced, err)
	}
	if !drain(s.m) {
		t.Error("no change signalled")
	}
	active := s.m.ActiveCAID()
	a, _ := statusOf(t, s.m, ca.KindX509, active)
	if active == old || a.UpstreamRootID != certID(s.rootB.cert) {
		t.Fatalf("active CA %s under root %s, want a new one under root B", active, a.UpstreamRootID)
	}
	if st := s.status(old); st != ca.StatusOld {
		t.Errorf("the replaced CA is %q, want old", st)
	}
	chain := signSVID(t, s.m)
	at := x509svid.WithTime(s.clk.Now())
	if _, _, err := x509svid.ParseAndVerify(rawChain(chain), bundleOf(t, s.m), at); err != nil {
		t.Errorf("an SVID of the new CA: %v", err)
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(underA), bundleOf(t, s.m), at); err != nil {
		t.Errorf("an SVID issued under the tainted root no longer verifies (it must, until revoked): %v", err)
	}
	// Done: again changes nothing.
	if replaced, err := s.m.ReplaceTaintedCA(ctx); replaced || err != nil {
		t.Errorf("ReplaceTaintedCA again = %v, %v; want false, nil", replaced, err)
	}

	// A restart keeps the replacement.
	s.m = s.start()
	if s.m.ActiveCAID() != active || s.status(old) != ca.StatusOld {
		t.Errorf("after a restart the active CA is %s and the replaced one %q; want %s and old", s.m.ActiveCAID(), s.status(old), active)
	}
}

// A CA prepared under the tainted root has signed nothing: it is dropped
// (its files too) and a new one is signed.
func TestReplaceTaintedCADropsPrepared(t *testing.T) {
	ctx := context.Background()
	s := newNestedSetup(t)
	old := s.m.ActiveCAID()
	s.clk.Set(s.clk.Now().Add(prepare))
	rotate(t, s.m)
	next := preparedID(t, s.m)
	if len(s.caFiles(next)) == 0 {
		t.Fatal("test setup: the prepared CA has no files")
	}
	s.signUnder(s.rootB)
	s.taintA()
	if replaced, err := s.m.ReplaceTaintedCA(ctx); !replaced || err != nil {
		t.Fatalf("ReplaceTaintedCA = %v, %v", replaced, err)
	}
	active := s.m.ActiveCAID()
	if active == old || active == next {
		t.Fatalf("active CA %s; want a new one (old %s, prepared under A %s)", active, old, next)
	}
	if a, _ := statusOf(t, s.m, ca.KindX509, active); a.UpstreamRootID != certID(s.rootB.cert) {
		t.Errorf("the new CA chains to %s, want root B", a.UpstreamRootID)
	}
	if _, ok := statusOf(t, s.m, ca.KindX509, next); ok {
		t.Error("the CA prepared under the tainted root is still listed")
	}
	if files := s.caFiles(next); len(files) != 0 {
		t.Errorf("the dropped CA's files remain: %v", files)
	}
	if s.status(old) != ca.StatusOld {
		t.Errorf("the replaced CA is %q, want old", s.status(old))
	}
}

// A CA prepared under another root is activated, not a new one signed.
func TestReplaceTaintedCAActivatesPrepared(t *testing.T) {
	ctx := context.Background()
	s := newNestedSetup(t)
	old := s.m.ActiveCAID()
	s.signUnder(s.rootB)
	s.clk.Set(s.clk.Now().Add(prepare))
	rotate(t, s.m)
	next := preparedID(t, s.m)
	// The upstream could not sign now: the prepared CA must be used.
	if err := os.Remove(s.u.KeyFile); err != nil {
		t.Fatal(err)
	}
	s.taintA()
	if replaced, err := s.m.ReplaceTaintedCA(ctx); !replaced || err != nil {
		t.Fatalf("ReplaceTaintedCA = %v, %v", replaced, err)
	}
	if got := s.m.ActiveCAID(); got != next {
		t.Errorf("active CA %s, want the prepared %s", got, next)
	}
	if s.status(old) != ca.StatusOld {
		t.Errorf("the replaced CA is %q, want old", s.status(old))
	}
}

func preparedID(t *testing.T, m *ca.Manager) string {
	t.Helper()
	list, err := m.LocalAuthorities(ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if a.Status == ca.StatusPrepared {
			return a.ID
		}
	}
	t.Fatal("no prepared X.509 CA")
	return ""
}

// A self-signed server made downstream later keeps its own root published
// (and in the store) while its CA signs, next to the upstream's, until it
// expires; then the upstream's roots alone remain.
func TestSetUpstreamBundleAdoptedLater(t *testing.T) {
	t0 := rotationStart()
	clk := newFakeClock(t0)
	dir := t.TempDir()
	selfRoots := keyIDs(newManager(t, ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL}), ca.KindX509)
	root := nestedRoots(t, t0, "Upstream Root")[0]
	u := diskUpstream(t, root, nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{DataDir: dir, Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	b := ca.UpstreamBundle{X509: upstreamX509([]*testCA{root})}
	setBundle(t, m, b)
	if got := keyIDs(m, ca.KindX509); !sameSet(got, append(selfRoots, certID(root.cert))...) {
		t.Fatalf("roots %v, want the self-signed %v and the upstream's", got, selfRoots)
	}
	if got := withdrawnIDs(m, ca.KindX509); len(got) != 0 {
		t.Errorf("Revoked() X.509 %v: the store would lose the root the active CA signs under", got)
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(signSVID(t, m)), bundleOf(t, m), x509svid.WithTime(clk.Now())); err != nil {
		t.Errorf("an SVID of the active self-signed CA: %v", err)
	}
	clk.Set(t0.Add(expire))
	rotate(t, m)
	setBundle(t, m, b)
	if got := keyIDs(m, ca.KindX509); !sameSet(got, certID(root.cert)) {
		t.Errorf("roots %v after the self-signed CA expired, want the upstream's alone", got)
	}
}

// A JWT key this server revoked stays out of its bundle and out of what it
// publishes upstream, though the upstream (which got it earlier) still
// lists it.
func TestSetUpstreamBundleOwnRevokedKeyStaysOut(t *testing.T) {
	ctx := context.Background()
	t0 := rotationStart()
	clk := newFakeClock(t0)
	root := nestedRoots(t, t0, "Root")[0]
	u := diskUpstream(t, root, nil)
	u.Clock = clk.Now
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u})
	old := keyIDs(m, ca.KindJWT)[0]
	oldKey, _ := published(m, ca.KindJWT, old)
	next, err := m.Prepare(ctx, ca.KindJWT)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { _, err := m.Activate(ctx, ca.KindJWT, next.ID); return err },
		func() error { _, err := m.Taint(ctx, ca.KindJWT, old); return err },
		func() error { _, err := m.Revoke(ctx, ca.KindJWT, old); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	setBundle(t, m, ca.UpstreamBundle{X509: upstreamX509([]*testCA{root}), JWT: []ca.Authority{oldKey}})
	if slices.Contains(keyIDs(m, ca.KindJWT), old) {
		t.Errorf("the revoked key %s is back in the bundle from the upstream's list", old)
	}
	for _, a := range m.OwnJWTAuthorities() {
		if a.KeyID == old {
			t.Errorf("the revoked key %s is among the keys to publish upstream", old)
		}
	}
	if !slices.Contains(withdrawnIDs(m, ca.KindJWT), old) {
		t.Errorf("the revoked key %s is not removed from the store", old)
	}
}
