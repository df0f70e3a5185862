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
	s := New(Config{CA: m, ServingCA: func() string { return serving }, PublishAuthorities: func(context.Context) error { return publishErr }})

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
	if a, err := s.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); err != nil || a.Status != "revoked" {
		t.Fatalf("revoke once the certificate moved: %+v, %v", a, err)
	}
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
	s := New(Config{CA: m, ServingCA: func() string { return serving }, PublishAuthorities: func(context.Context) error { return publishErr }})
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
	u, err := s.RevokeUpstreamAuthority(ctx, &api.RevokeUpstreamAuthorityRequest{AuthorityId: rootA})
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
