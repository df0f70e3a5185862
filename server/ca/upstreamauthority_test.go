package ca_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/server/ca"
)

func upstreamRoot(t *testing.T, m *ca.Manager, id string) (ca.UpstreamRoot, bool) {
	t.Helper()
	for _, u := range m.UpstreamRoots() {
		if u.ID == id {
			return u, true
		}
	}
	return ca.UpstreamRoot{}, false
}

func certID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// TestUpstreamRootReplaced walks the replacement of a compromised upstream
// root: new upstream files, prepare and activate a CA under the new root,
// taint the old root, revoke it; with every refusal on the way, the marks
// surviving a restart and forgotten once the root expires.
func TestUpstreamRootReplaced(t *testing.T) {
	ctx := context.Background()
	t0 := rotationStart()
	clk := newFakeClock(t0)
	opts := caOf("Root A")
	opts.notBefore, opts.notAfter = t0.Add(-time.Hour), t0.Add(30*24*time.Hour)
	rootA := issue(t, nil, opts)
	opts.name, opts.notAfter = "Root B", t0.Add(90*24*time.Hour)
	rootB := issue(t, nil, opts)
	idA, idB := certID(rootA.cert), certID(rootB.cert)
	u := diskUpstream(t, rootA, nil, rootA, rootB)
	u.Clock = clk.Now
	dir := t.TempDir()
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u, DataDir: dir})
	oldCA := m.ActiveCAID()
	underA := signSVID(t, m)

	if _, err := m.TaintUpstream(ctx, "00112233445566778899aabb"); err == nil || !strings.Contains(err.Error(), "no upstream root") {
		t.Fatalf("taint an unknown root: %v", err)
	}
	_, err := m.TaintUpstream(ctx, idA)
	wantErr(t, "taint the root the active CA chains to", err, ca.ErrAuthorityState, "active X.509 CA "+oldCA+" chains to upstream root")
	_, err = m.RevokeUpstream(ctx, idA, nil)
	wantErr(t, "revoke an untainted root", err, ca.ErrAuthorityState, "is not tainted; taint it first")

	// Root B, distributed in advance, is in the bundle with no CA under it:
	// a taint (the operator naming the wrong root) is refused, since it
	// would refuse every CA under B.
	_, err = m.TaintUpstream(ctx, idB)
	wantErr(t, "taint a root no CA chains to", err, ca.ErrAuthorityState, "none of this server's X.509 CAs chains to upstream root "+idB)

	// The organisation moves to root B; a CA under it is prepared.
	writePEM(t, u.CertFile, certBlock(rootB))
	writePEM(t, u.KeyFile, pkcs8Block(t, rootB.key))
	p, err := m.Prepare(ctx, ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	if p.UpstreamRootID != idB {
		t.Fatalf("prepared CA's upstream root = %q, want root B %q", p.UpstreamRootID, idB)
	}
	_, err = m.TaintUpstream(ctx, idA)
	wantErr(t, "taint while the CA under it is still active", err, ca.ErrAuthorityState, "active X.509 CA")
	if _, err := m.Activate(ctx, ca.KindX509, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = m.TaintUpstream(ctx, idB)
	wantErr(t, "taint the root the new active CA chains to", err, ca.ErrAuthorityState, "chains to upstream root "+idB)

	// SPIRE names upstream authorities by subject key ID: accepted too, in
	// openssl's colon-separated upper-case spelling.
	skid := strings.ToUpper(hex.EncodeToString(rootA.cert.SubjectKeyId))
	var colons []string
	for i := 0; i < len(skid); i += 2 {
		colons = append(colons, skid[i:i+2])
	}
	got, err := m.TaintUpstream(ctx, strings.Join(colons, ":"))
	if err != nil {
		t.Fatalf("taint root A by subject key ID: %v", err)
	}
	if got.ID != idA || !got.Tainted || got.Revoked || len(got.CAs) != 1 || got.CAs[0].ID != oldCA {
		t.Fatalf("tainted root A = %+v, want tainted, not revoked, with the old CA", got)
	}
	check := func(when string, wantA, taintA bool) {
		t.Helper()
		a, okA := published(m, ca.KindX509, idA)
		b, okB := published(m, ca.KindX509, idB)
		if okA != wantA || okA && a.Tainted != taintA || !okB || b.Tainted {
			t.Fatalf("%s: root A published %v (tainted %v), root B published %v (tainted %v); want A %v (tainted %v), B untainted",
				when, okA, a.Tainted, okB, b.Tainted, wantA, taintA)
		}
	}
	check("after the taint", true, true)
	if _, _, err := x509svid.ParseAndVerify(rawChain(underA), bundleOf(t, m), x509svid.WithTime(clk.Now())); err != nil {
		t.Errorf("an SVID issued under the tainted root no longer verifies: %v", err)
	}
	if again, err := m.TaintUpstream(ctx, idA); err != nil || !again.Tainted {
		t.Fatalf("taint again: %+v, %v; want no change", again, err)
	}

	// The mark is state: a restarted server keeps it.
	m = newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u, DataDir: dir})
	check("after a restart", true, true)

	// An upstream put back on the tainted root is refused before it signs.
	writePEM(t, u.CertFile, certBlock(rootA))
	writePEM(t, u.KeyFile, pkcs8Block(t, rootA.key))
	_, err = m.Prepare(ctx, ca.KindX509)
	wantErr(t, "prepare under the tainted root", err, ca.ErrAuthorityState, "which an operator tainted")
	if _, err := ca.New(ctx, ca.Config{TrustDomain: td, Clock: clk.Now, SVIDTTL: svidTTL, Upstream: u, DataDir: dir, Logger: quietLogger()}); err == nil {
		t.Fatal("a server starts with its upstream signing under a tainted root")
	}
	// The upstream's bundle still lists root A next to B.
	writePEM(t, u.CertFile, certBlock(rootB))
	writePEM(t, u.KeyFile, pkcs8Block(t, rootB.key))

	if _, err := os.Stat(filepath.Join(dir, "ca-"+oldCA+".key")); err != nil {
		t.Fatalf("the old CA's key before the revocation: %v", err)
	}
	got, err = m.RevokeUpstream(ctx, idA, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Revoked || len(got.CAs) != 0 {
		t.Fatalf("revoked root A = %+v, want revoked, with no CA left", got)
	}
	check("after the revocation", false, false)
	if !slices.ContainsFunc(m.Revoked(), func(a ca.Authority) bool { return a.Kind == ca.KindX509 && a.KeyID == idA }) {
		t.Errorf("Revoked() = %+v, want root A (the store must drop it)", m.Revoked())
	}
	if a, _ := statusOf(t, m, ca.KindX509, oldCA); a.Status != ca.StatusRevoked {
		t.Errorf("the old CA under root A is %q, want revoked", a.Status)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca-"+oldCA+".key")); !os.IsNotExist(err) {
		t.Errorf("the old CA's key after the revocation: %v, want it deleted", err)
	}
	at := x509svid.WithTime(clk.Now())
	if _, _, err := x509svid.ParseAndVerify(rawChain(underA), bundleOf(t, m), at); err == nil {
		t.Error("an SVID issued under the revoked root still verifies against the bundle")
	}
	if _, _, err := x509svid.ParseAndVerify(rawChain(signSVID(t, m)), bundleOf(t, m), at); err != nil {
		t.Errorf("an SVID of the CA under root B: %v", err)
	}
	// A CA under B whose upstream bundle still lists A does not bring A back.
	if _, err := m.Prepare(ctx, ca.KindX509); err != nil {
		t.Fatalf("prepare under root B with A still in the upstream's bundle: %v", err)
	}
	check("after a CA listing root A was prepared", false, false)
	if again, err := m.RevokeUpstream(ctx, idA, nil); err != nil || !again.Revoked {
		t.Fatalf("revoke again: %+v, %v; want no change", again, err)
	}
	_, err = m.TaintUpstream(ctx, idA)
	wantErr(t, "taint a revoked root", err, ca.ErrAuthorityState, "already revoked")

	// Once root A has expired, nothing under it verifies and the mark goes.
	clk.Set(rootA.cert.NotAfter.Add(time.Second))
	rotate(t, m)
	if _, ok := upstreamRoot(t, m, idA); ok {
		t.Error("root A is still listed after it expired")
	}
	if slices.ContainsFunc(m.Revoked(), func(a ca.Authority) bool { return a.KeyID == idA }) {
		t.Error("root A is still in Revoked() after it expired")
	}
	if b, ok := upstreamRoot(t, m, idB); !ok || b.Tainted || !bytes.Equal(rootB.cert.SubjectKeyId, mustHex(t, b.SubjectKeyID)) {
		t.Errorf("root B after A expired: %+v", b)
	}
}

// TestUpstreamRootRefusesOwnCA: a self-signed CA is tainted with
// localauthority, and the refusal says so.
func TestUpstreamRootRefusesOwnCA(t *testing.T) {
	m := newManager(t, ca.Config{})
	_, err := m.TaintUpstream(context.Background(), signerKeyID(t, m))
	wantErr(t, "taint a self-signed CA as upstream", err, ca.ErrAuthorityState, "localauthority x509")
	if roots := m.UpstreamRoots(); len(roots) != 0 {
		t.Errorf("UpstreamRoots() of a self-signed CA = %+v, want none", roots)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUpstreamRootSameKey: a root re-issued with the same key is the same
// root to agents (they match key identifiers), so while a CA under the
// re-issued one signs, the old one cannot be tainted; and a subject key ID
// both share names neither.
func TestUpstreamRootSameKey(t *testing.T) {
	ctx := context.Background()
	opts := caOf("Root A")
	rootA := issue(t, nil, opts)
	opts.key = rootA.key
	reissued := issue(t, nil, opts)
	if !bytes.Equal(rootA.cert.SubjectKeyId, reissued.cert.SubjectKeyId) {
		t.Fatal("test setup: the re-issued root has another subject key ID")
	}
	u := diskUpstream(t, rootA, nil)
	m := newManager(t, ca.Config{Upstream: u})
	writePEM(t, u.CertFile, certBlock(reissued))
	p, err := m.Prepare(ctx, ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, ca.KindX509, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = m.TaintUpstream(ctx, certID(rootA.cert))
	wantErr(t, "taint a root whose key the active CA's root shares", err, ca.ErrAuthorityState, "or a certificate of the same key")
	_, err = m.TaintUpstream(ctx, hex.EncodeToString(rootA.cert.SubjectKeyId))
	wantErr(t, "taint by a subject key ID two roots share", err, ca.ErrAuthorityState, "2 upstream roots have subject key ID")
}
