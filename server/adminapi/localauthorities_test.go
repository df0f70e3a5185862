package adminapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/store"
)

// TestLocalAuthoritySteps drives the RPCs over a real CA: the codes a
// caller acts on, a revoke refused while the CA still signs the agent
// API's certificate, and a step whose publication failed, then retried.
func TestLocalAuthoritySteps(t *testing.T) {
	ctx := context.Background()
	m, err := ca.New(ctx, ca.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := m.LocalAuthorities(ca.KindX509)
	old := list[0].ID
	serving := old
	var publishErr error
	st := openStore(t)
	s := New(Config{CA: m, Store: st, ServingCA: func() string { return serving }, PublishAuthorities: func(context.Context) error { return publishErr }})
	// One agent under the first CA; a banned one and one whose SVID
	// expired do not count.
	putAgents(t, st, list[0].SubjectKeyID, "spiffe://example.org/agent/a")

	code := func(err error) codes.Code { return status.Code(err) }
	for kind, want := range map[string]string{"x509": "", "jwt": "ec-p256"} {
		got, err := s.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: kind})
		if err != nil || len(got.Authorities) != 1 || got.Authorities[0].KeyType != want {
			t.Errorf("%s authorities %v, %v: want one with key type %q", kind, got, err, want)
		}
	}
	if _, err := s.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: "rsa"}); code(err) != codes.InvalidArgument {
		t.Errorf("unknown kind: %v", err)
	}
	if _, err := s.ActivateLocalAuthority(ctx, &api.ActivateLocalAuthorityRequest{Kind: "x509"}); code(err) != codes.InvalidArgument {
		t.Errorf("no ID: %v", err)
	}
	if _, err := s.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: "00112233445566778899"}); code(err) != codes.NotFound {
		t.Errorf("unknown ID: %v", err)
	}
	if _, err := s.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); code(err) != codes.FailedPrecondition {
		t.Errorf("taint the active CA: %v", err)
	}
	// The active CA also signs the agent API's certificate; the refusal
	// names what is wrong first: it is active.
	if _, err := s.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "only an old, tainted one can be revoked") {
		t.Errorf("revoke the active CA: %v", err)
	}

	p, err := s.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ActivateLocalAuthority(ctx, &api.ActivateLocalAuthorityRequest{Kind: "x509", AuthorityId: p.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	publishErr = errors.New("store down")
	if _, err := s.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); code(err) != codes.Aborted {
		t.Fatalf("taint with the store down: %v, want Aborted", err)
	}
	publishErr = nil
	if a, err := s.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); err != nil || !a.Tainted {
		t.Fatalf("taint retried: %+v, %v", a, err)
	}
	_, err = s.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old})
	if code(err) != codes.FailedPrecondition {
		t.Fatalf("revoke of the CA that signs the agent API's certificate: %v, want FailedPrecondition", err)
	}
	if list, _ := m.LocalAuthorities(ca.KindX509); len(list) != 2 {
		t.Fatal("a refused revoke changed the CA")
	}
	serving = p.AuthorityId
	if n := agentsOf(t, s, old); n != 1 {
		t.Fatalf("show counts %d agents under the old CA, want 1", n)
	}
	_, err = s.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old})
	if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "spiffe://example.org/agent/a") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("revoke while an agent holds an SVID the CA signed: %v, want FailedPrecondition naming it and --force", err)
	}
	if a, err := s.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old, Force: true}); err != nil || a.Status != "revoked" {
		t.Fatalf("revoke --force once the certificate moved: %+v, %v", a, err)
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "signet.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// putAgents records agent id with an SVID the CA with subject key ID skid
// signed, and beside it a banned agent and one whose SVID expired, both
// under that CA too: only id counts as depending on it.
func putAgents(t *testing.T, st store.Store, skid, id string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	for _, n := range []store.Node{
		{SPIFFEID: id, AttestationType: "join_token", SerialNumber: "01", ExpiresAt: now.Add(time.Hour), SVIDIssuer: skid},
		{SPIFFEID: id + "-banned", AttestationType: "join_token", SerialNumber: "02", ExpiresAt: now.Add(time.Hour), SVIDIssuer: skid},
		{SPIFFEID: id + "-expired", AttestationType: "join_token", SerialNumber: "03", ExpiresAt: now.Add(-time.Minute), SVIDIssuer: skid},
	} {
		if err := st.UpsertNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.BanNode(ctx, id+"-banned"); err != nil {
		t.Fatal(err)
	}
}

// agentsOf is the count GetLocalAuthorities gives the X.509 CA id.
func agentsOf(t *testing.T, s *Service, id string) int64 {
	t.Helper()
	resp, err := s.GetLocalAuthorities(context.Background(), &api.GetLocalAuthoritiesRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.Authorities {
		if a.AuthorityId == id {
			return a.Agents
		}
	}
	t.Fatalf("no X.509 CA %s", id)
	return 0
}

// TestUpstreamAuthoritySteps drives the upstream-root RPCs over a real CA
// whose upstream is a disk CA: the codes a caller acts on, the revoke held
// back while an old CA under the root signs the agent API's certificate,
// and a step whose publication failed, then retried.
func TestUpstreamAuthoritySteps(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	up := &ca.DiskUpstream{CertFile: filepath.Join(dir, "up.crt"), KeyFile: filepath.Join(dir, "up.key")}
	rootA := writeUpstreamRoot(t, up, "Root A")
	m, err := ca.New(ctx, ca.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), DataDir: t.TempDir(), Upstream: up,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	oldCA := m.ActiveCAID()
	serving := oldCA
	var publishErr error
	st := openStore(t)
	s := New(Config{CA: m, Store: st, ServingCA: func() string { return serving }, PublishAuthorities: func(context.Context) error { return publishErr }})
	cas, _ := m.LocalAuthorities(ca.KindX509)
	putAgents(t, st, cas[0].SubjectKeyID, "spiffe://example.org/agent/under-root-a")
	code := func(err error) codes.Code { return status.Code(err) }

	list, err := s.GetUpstreamAuthorities(ctx, &api.GetUpstreamAuthoritiesRequest{})
	if err != nil || len(list.Authorities) != 1 || list.Authorities[0].AuthorityId != rootA ||
		len(list.Authorities[0].LocalAuthorities) != 1 || list.Authorities[0].LocalAuthorities[0].UpstreamAuthorityId != rootA {
		t.Fatalf("GetUpstreamAuthorities: %v, %v; want root A with the active CA", list, err)
	}
	if _, err := s.TaintUpstreamAuthority(ctx, &api.TaintUpstreamAuthorityRequest{}); code(err) != codes.InvalidArgument {
		t.Errorf("no ID: %v", err)
	}
	if _, err := s.RevokeUpstreamAuthority(ctx, &api.RevokeUpstreamAuthorityRequest{}); code(err) != codes.InvalidArgument {
		t.Errorf("revoke, no ID: %v", err)
	}
	if _, err := s.TaintUpstreamAuthority(ctx, &api.TaintUpstreamAuthorityRequest{AuthorityId: "00112233445566778899"}); code(err) != codes.NotFound {
		t.Errorf("unknown ID: %v", err)
	}
	if _, err := s.TaintUpstreamAuthority(ctx, &api.TaintUpstreamAuthorityRequest{AuthorityId: rootA}); code(err) != codes.FailedPrecondition {
		t.Errorf("taint the active CA's root: %v", err)
	}

	writeUpstreamRoot(t, up, "Root B")
	p, err := s.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ActivateLocalAuthority(ctx, &api.ActivateLocalAuthorityRequest{Kind: "x509", AuthorityId: p.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	publishErr = errors.New("store down")
	if _, err := s.TaintUpstreamAuthority(ctx, &api.TaintUpstreamAuthorityRequest{AuthorityId: rootA}); code(err) != codes.Aborted {
		t.Fatalf("taint with the store down: %v, want Aborted", err)
	}
	publishErr = nil
	if u, err := s.TaintUpstreamAuthority(ctx, &api.TaintUpstreamAuthorityRequest{AuthorityId: rootA}); err != nil || !u.Tainted {
		t.Fatalf("taint retried: %+v, %v", u, err)
	}
	_, err = s.RevokeUpstreamAuthority(ctx, &api.RevokeUpstreamAuthorityRequest{AuthorityId: rootA})
	if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "agent API's certificate") {
		t.Fatalf("revoke while an old CA under the root signs the agent API's certificate: %v, want FailedPrecondition", err)
	}
	if u, _ := m.FindUpstreamRoot(rootA); u.Revoked {
		t.Fatal("a refused revoke changed the CA")
	}
	serving = p.AuthorityId
	_, err = s.RevokeUpstreamAuthority(ctx, &api.RevokeUpstreamAuthorityRequest{AuthorityId: rootA})
	if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "spiffe://example.org/agent/under-root-a") {
		t.Fatalf("revoke while an agent holds an SVID of a CA under the root: %v, want FailedPrecondition naming it", err)
	}
	if u, _ := m.FindUpstreamRoot(rootA); u.Revoked {
		t.Fatal("a revoke refused for the agents changed the CA")
	}
	u, err := s.RevokeUpstreamAuthority(ctx, &api.RevokeUpstreamAuthorityRequest{AuthorityId: rootA, Force: true})
	if err != nil || !u.Revoked || len(u.LocalAuthorities) != 0 {
		t.Fatalf("revoke once the certificate moved: %+v, %v", u, err)
	}
	if a, err := s.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: "x509"}); err != nil ||
		!slices.ContainsFunc(a.Authorities, func(l *api.LocalAuthority) bool { return l.AuthorityId == oldCA && l.Status == "revoked" }) {
		t.Fatalf("the old CA under the revoked root: %v, %v; want it revoked", a, err)
	}
}

// writeUpstreamRoot makes a self-signed root CA named name the disk
// upstream's certificate and key, and returns its ID (hex SHA-256).
func writeUpstreamRoot(t *testing.T, up *ca.DiskUpstream, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(up.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(up.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
