package adminapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

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
