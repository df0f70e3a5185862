package ca_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/signetid/signet/server/ca"
)

// kindCase drives the operator steps for one kind of authority.
type kindCase struct {
	kind   ca.AuthorityKind
	signer func(testing.TB, *ca.Manager) string // ID of the authority that signs now
}

var kindCases = []kindCase{
	{ca.KindX509, signerKeyID},
	{ca.KindJWT, jwtKID},
}

func statusOf(t *testing.T, m *ca.Manager, kind ca.AuthorityKind, id string) (ca.LocalAuthority, bool) {
	t.Helper()
	list, err := m.LocalAuthorities(kind)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if a.ID == id {
			return a, true
		}
	}
	return ca.LocalAuthority{}, false
}

func published(m *ca.Manager, kind ca.AuthorityKind, id string) (ca.Authority, bool) {
	for _, a := range m.Authorities() {
		if a.Kind == kind && a.KeyID == id {
			return a, true
		}
	}
	return ca.Authority{}, false
}

func wantErr(t *testing.T, what string, err, want error, text string) {
	t.Helper()
	if !errors.Is(err, want) || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: error %v, want %v mentioning %q", what, err, want, text)
	}
}

// TestOperatorRotation walks a forced rotation: prepare, activate, taint,
// revoke, with every refusal on the way, for both kinds.
func TestOperatorRotation(t *testing.T) {
	ctx := context.Background()
	for _, kc := range kindCases {
		t.Run(string(kc.kind), func(t *testing.T) {
			dir := t.TempDir()
			cfg := ca.Config{DataDir: dir, SVIDTTL: svidTTL}
			m := newManager(t, cfg)
			old := kc.signer(t, m)
			drain(m)

			_, err := m.Taint(ctx, kc.kind, old)
			wantErr(t, "taint the active one", err, ca.ErrAuthorityState, "is active; prepare and activate")

			p, err := m.Prepare(ctx, kc.kind)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if p.Status != ca.StatusPrepared || p.ID == old || p.PublishedAt.IsZero() {
				t.Fatalf("prepared %+v", p)
			}
			if _, ok := published(m, kc.kind, p.ID); !ok || !drain(m) {
				t.Fatal("the prepared authority is not published, or no change was signalled")
			}
			if got := kc.signer(t, m); got != old {
				t.Fatal("preparing changed the signer")
			}
			_, err = m.Prepare(ctx, kc.kind)
			wantErr(t, "prepare twice", err, ca.ErrAuthorityState, p.ID+" is already prepared")
			_, err = m.Taint(ctx, kc.kind, p.ID)
			wantErr(t, "taint the prepared one", err, ca.ErrAuthorityState, "has signed nothing")
			_, err = m.Activate(ctx, kc.kind, "00112233445566778899")
			wantErr(t, "activate an unknown ID", err, ca.ErrUnknownAuthority, `"00112233445566778899"`)

			if a, err := m.Activate(ctx, kc.kind, p.ID); err != nil || a.Status != ca.StatusActive {
				t.Fatalf("Activate: %+v, %v", a, err)
			}
			if got := kc.signer(t, m); got != p.ID {
				t.Fatalf("signer after activation %s, want %s", got, p.ID)
			}
			drain(m)
			if a, err := m.Activate(ctx, kc.kind, p.ID); err != nil || a.Status != ca.StatusActive || drain(m) {
				t.Fatalf("activating the active one again: %+v, %v; want success and no change", a, err)
			}
			_, err = m.Activate(ctx, kc.kind, old)
			wantErr(t, "activate the old one", err, ca.ErrAuthorityState, "only the prepared one")
			if a, ok := statusOf(t, m, kc.kind, old); !ok || a.Status != ca.StatusOld || a.Tainted {
				t.Fatalf("old authority listed as %+v", a)
			}
			if a, ok := published(m, kc.kind, old); !ok || a.Tainted {
				t.Fatal("the old authority left the bundle at activation, or is tainted")
			}

			_, err = m.Revoke(ctx, kc.kind, old)
			wantErr(t, "revoke before taint", err, ca.ErrAuthorityState, "is not tainted; taint it first")

			if a, err := m.Taint(ctx, kc.kind, old); err != nil || !a.Tainted || a.Status != ca.StatusOld {
				t.Fatalf("Taint: %+v, %v", a, err)
			}
			if a, ok := published(m, kc.kind, old); !ok || !a.Tainted || !drain(m) {
				t.Fatal("tainted authority not published as tainted, or no change signalled")
			}
			if a, ok := published(m, kc.kind, p.ID); !ok || a.Tainted {
				t.Fatal("the active authority is tainted too")
			}
			if _, err := m.Taint(ctx, kc.kind, old); err != nil || drain(m) {
				t.Fatalf("tainting again: %v; want success and no change", err)
			}

			// The taint survives a restart.
			m = newManager(t, cfg)
			if a, ok := published(m, kc.kind, old); !ok || !a.Tainted {
				t.Fatal("restart lost the taint")
			}
			if got := kc.signer(t, m); got != p.ID {
				t.Fatal("restart lost the activation")
			}

			if a, err := m.Revoke(ctx, kc.kind, old); err != nil || a.Status != ca.StatusRevoked {
				t.Fatalf("Revoke: %+v, %v", a, err)
			}
			if _, ok := published(m, kc.kind, old); ok {
				t.Fatal("revoked authority still published")
			}
			if rv := m.Revoked(); len(rv) != 1 || rv[0].KeyID != old || rv[0].Kind != kc.kind {
				t.Fatalf("Revoked() = %+v, want only %s", rv, old)
			}
			files, _ := os.ReadDir(dir)
			for _, f := range files {
				if strings.Contains(f.Name(), old) {
					t.Errorf("file %s of the revoked authority remains", f.Name())
				}
			}
			if _, err := m.Revoke(ctx, kc.kind, old); err != nil {
				t.Fatalf("revoking again: %v", err)
			}
			_, err = m.Taint(ctx, kc.kind, old)
			wantErr(t, "taint a revoked one", err, ca.ErrAuthorityState, "already revoked")

			// The revocation survives a restart, and never comes back; a key
			// file left by a crash before its removal is swept then.
			prefix := map[ca.AuthorityKind]string{ca.KindX509: "ca-", ca.KindJWT: "jwt-"}[kc.kind]
			orphan := filepath.Join(dir, prefix+old+".key")
			if err := os.WriteFile(orphan, []byte("left by a crash"), 0o600); err != nil {
				t.Fatal(err)
			}
			m = newManager(t, cfg)
			if _, err := os.Stat(orphan); !os.IsNotExist(err) {
				t.Fatalf("the revoked key file survived a restart: %v", err)
			}
			if _, ok := published(m, kc.kind, old); ok {
				t.Fatal("restart published the revoked authority again")
			}
			if rv := m.Revoked(); len(rv) != 1 || rv[0].KeyID != old {
				t.Fatalf("after restart Revoked() = %+v", rv)
			}
			if a, ok := statusOf(t, m, kc.kind, old); !ok || a.Status != ca.StatusRevoked {
				t.Fatalf("revoked authority listed as %+v", a)
			}
		})
	}
}

func TestOperatorStepRefusesBadKind(t *testing.T) {
	m := newManager(t, ca.Config{})
	if _, err := m.Prepare(context.Background(), "rsa"); err == nil || !strings.Contains(err.Error(), `unknown authority kind "rsa"`) {
		t.Fatalf("Prepare of kind rsa: %v", err)
	}
	if _, err := m.LocalAuthorities("x"); err == nil {
		t.Fatal("LocalAuthorities of kind x: no error")
	}
}

// TestOperatorStepPersistFails: a step whose state cannot be written
// changes nothing, in memory or on disk.
func TestOperatorStepPersistFails(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := newManager(t, ca.Config{DataDir: dir})
	before := m.Authorities()
	signer := signerKeyID(t, m)
	state := filepath.Join(dir, "ca-state.json")
	saved, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the state file goes makes its replacement fail.
	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, "block"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Prepare(ctx, ca.KindX509); err == nil {
		t.Fatal("Prepare succeeded with an unwritable state file")
	}
	if !sameKeyIDs(m.Authorities(), before) || signerKeyID(t, m) != signer {
		t.Fatal("a failed Prepare changed the published set or the signer")
	}
	if list, _ := m.LocalAuthorities(ca.KindX509); len(list) != 1 {
		t.Fatalf("a failed Prepare left %d X.509 authorities, want 1", len(list))
	}
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Prepare(ctx, ca.KindX509); err != nil {
		t.Fatalf("Prepare once the state file is writable: %v", err)
	}
}

// TestTaintRefusedUnderUpstream: the bundle holds the upstream's roots, so
// a CA it signed can be rotated by hand but not tainted.
func TestTaintRefusedUnderUpstream(t *testing.T) {
	ctx := context.Background()
	root := issue(t, nil, caOf("Example Root"))
	m := newManager(t, ca.Config{Upstream: diskUpstream(t, root, nil)})
	list, err := m.LocalAuthorities(ca.KindX509)
	if err != nil || len(list) != 1 || list[0].UpstreamIssuer == "" {
		t.Fatalf("LocalAuthorities: %+v, %v; want one CA naming its upstream issuer", list, err)
	}
	old := list[0].ID
	p, err := m.Prepare(ctx, ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, ca.KindX509, p.ID); err != nil {
		t.Fatal(err)
	}
	_, err = m.Taint(ctx, ca.KindX509, old)
	wantErr(t, "taint an upstream-signed CA", err, ca.ErrAuthorityState, "cannot be taken out of the bundle")
	// JWT keys are this server's own whatever signs its CA.
	j, err := m.LocalAuthorities(ca.KindJWT)
	if err != nil {
		t.Fatal(err)
	}
	pj, err := m.Prepare(ctx, ca.KindJWT)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Activate(ctx, ca.KindJWT, pj.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Taint(ctx, ca.KindJWT, j[0].ID); err != nil {
		t.Fatalf("taint an old JWT key under an upstream: %v", err)
	}
}

// TestRevokedForgottenAfterExpiry: a tombstone lives only as long as the
// authority would have.
func TestRevokedForgottenAfterExpiry(t *testing.T) {
	ctx := context.Background()
	t0 := rotationStart()
	clk := newFakeClock(t0)
	m := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL})
	old := signerKeyID(t, m)
	p, err := m.Prepare(ctx, ca.KindX509)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() (ca.LocalAuthority, error){
		func() (ca.LocalAuthority, error) { return m.Activate(ctx, ca.KindX509, p.ID) },
		func() (ca.LocalAuthority, error) { return m.Taint(ctx, ca.KindX509, old) },
		func() (ca.LocalAuthority, error) { return m.Revoke(ctx, ca.KindX509, old) },
	} {
		if _, err := step(); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := statusOf(t, m, ca.KindX509, old)
	clk.Set(a.ExpiresAt.Add(1))
	rotate(t, m)
	if rv := m.Revoked(); len(rv) != 0 {
		t.Fatalf("Revoked() after expiry = %+v, want none", rv)
	}
}
