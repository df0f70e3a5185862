package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/store"
)

func adminBundle(t testing.TB, ts *testServer) *api.Bundle {
	t.Helper()
	b, err := ts.admin.GetBundle(context.Background(), &api.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hasDER(list [][]byte, der []byte) bool {
	return slices.ContainsFunc(list, func(d []byte) bool { return bytes.Equal(d, der) })
}

func activeCA(t testing.TB, ts *testServer) *api.LocalAuthority {
	t.Helper()
	resp, err := ts.admin.GetLocalAuthorities(context.Background(), &api.GetLocalAuthoritiesRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.Authorities {
		if a.Status == "active" {
			return a
		}
	}
	t.Fatal("no active X.509 CA")
	return nil
}

// rootDER finds the bundle root whose key ID (hex SHA-256 of its DER) is id.
func rootDER(t testing.TB, b *api.Bundle, id string) []byte {
	t.Helper()
	for _, der := range b.X509Authorities {
		sum := sha256.Sum256(der)
		if hex.EncodeToString(sum[:]) == id {
			return der
		}
	}
	return nil
}

// serverCertIssuer is the subject key ID of the CA that signed the agent
// API's certificate.
func serverCertIssuer(t testing.TB, ts *testServer) string {
	t.Helper()
	conn, err := tls.Dial("tcp", ts.Addr(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) // only reading the certificate
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return string(conn.ConnectionState().PeerCertificates[0].AuthorityKeyId)
}

// TestLocalAuthorityAcrossServers: a forced rotation on server A of two
// sharing PostgreSQL. Each step is in A's bundle when its call returns,
// reaches B's bundle and B's agents, and leaves B's own CA alone; a
// revoked root written back to the store is removed again at A's restart.
func TestLocalAuthorityAcrossServers(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	onPG := func(c *server.Config) { c.Datastore = url }
	a := startServer(t, onPG)
	b := startServer(t, onPG)
	waitFor(t, 10*time.Second, "both roots in both bundles", func() bool {
		return len(adminBundle(t, a).X509Authorities) == 2 && len(adminBundle(t, b).X509Authorities) == 2
	})
	old := activeCA(t, a)
	oldRoot := rootDER(t, adminBundle(t, a), old.AuthorityId)
	bRoot := rootDER(t, adminBundle(t, b), activeCA(t, b).AuthorityId)
	agent := mustAttest(t, b, a.token(t, "spiffe://example.org/agent/b", 0))
	stream, err := agent.Client.Sync(ctx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	// Refusals, with the codes a caller can act on.
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"unknown kind", func() error {
			_, err := a.admin.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: "rsa"})
			return err
		}, codes.InvalidArgument},
		{"no ID", func() error {
			_, err := a.admin.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509"})
			return err
		}, codes.InvalidArgument},
		{"unknown ID", func() error {
			_, err := a.admin.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: "00112233445566778899"})
			return err
		}, codes.NotFound},
		{"another server's CA", func() error {
			_, err := a.admin.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: activeCA(t, b).AuthorityId})
			return err
		}, codes.NotFound},
		{"the active CA", func() error {
			_, err := a.admin.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old.AuthorityId})
			return err
		}, codes.FailedPrecondition},
	} {
		wantCode(t, tc.call(), tc.code, tc.name)
	}

	p, err := a.admin.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: "x509"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(adminBundle(t, a).X509Authorities); got != 3 {
		t.Fatalf("A's bundle right after prepare holds %d roots, want 3", got)
	}
	newRoot := rootDER(t, adminBundle(t, a), p.AuthorityId)
	newCert, err := x509.ParseCertificate(newRoot)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.admin.ActivateLocalAuthority(ctx, &api.ActivateLocalAuthorityRequest{Kind: "x509", AuthorityId: p.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "A's agent API certificate signed by the new CA", func() bool {
		return serverCertIssuer(t, a) == string(newCert.SubjectKeyId)
	})

	if _, err := a.admin.TaintLocalAuthority(ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	if tainted := adminBundle(t, a).TaintedX509Authorities; len(tainted) != 1 || !bytes.Equal(tainted[0], oldRoot) {
		t.Fatalf("A's bundle right after taint marks %d roots tainted, want the old one", len(tainted))
	}
	waitFor(t, 10*time.Second, "B's bundle marks A's old root tainted", func() bool {
		tainted := adminBundle(t, b).TaintedX509Authorities
		return len(tainted) == 1 && bytes.Equal(tainted[0], oldRoot)
	})
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("B's agent stream: %v", err)
		}
		if msg.Bundle != nil && hasDER(msg.Bundle.TaintedX509Authorities, oldRoot) {
			if hasDER(msg.Bundle.TaintedX509Authorities, bRoot) || hasDER(msg.Bundle.TaintedX509Authorities, newRoot) {
				t.Fatal("B's agent was told roots other than A's old one are tainted")
			}
			break
		}
	}

	if _, err := a.admin.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old.AuthorityId}); err != nil {
		t.Fatal(err)
	}
	if hasDER(adminBundle(t, a).X509Authorities, oldRoot) {
		t.Fatal("A's bundle right after revoke still holds the old root")
	}
	waitFor(t, 10*time.Second, "B's bundle loses A's revoked root and keeps the others", func() bool {
		roots := adminBundle(t, b).X509Authorities
		return len(roots) == 2 && hasDER(roots, bRoot) && hasDER(roots, newRoot)
	})

	// The revoked root written back (a restored backup, a lagging writer)
	// is removed again when A starts.
	a.stop(t)
	st, err := store.Open(ctx, url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutAuthorities(ctx, []store.Authority{{TrustDomain: td.Name(), Kind: store.X509Authority, KeyID: old.AuthorityId,
		Data: oldRoot, ExpiresAt: time.Unix(old.ExpiresAt, 0), Tainted: true}}); err != nil {
		t.Fatal(err)
	}
	a = runServer(t, a.cfg)
	if hasDER(adminBundle(t, a).X509Authorities, oldRoot) {
		t.Fatal("the revoked root is back in the bundle after A's restart")
	}
}
