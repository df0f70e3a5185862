package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/agentapi"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/store"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
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
	// An agent of A that will miss the taint: its SVID stays under A's
	// old CA, and its stream stays open across the revocation.
	stale := mustAttest(t, a, a.token(t, "spiffe://example.org/agent/stale", 0))
	staleCtx, cancelStale := context.WithTimeout(ctx, 30*time.Second)
	defer cancelStale()
	staleStream, err := stale.Client.Sync(staleCtx, &api.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := staleStream.Recv(); err != nil {
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

	// The stale agent still holds an SVID of the old CA: revoking needs
	// --force, and the refusal names it.
	_, err = a.admin.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old.AuthorityId})
	wantCode(t, err, codes.FailedPrecondition, "revoke while an agent holds an SVID the CA signed")
	if !strings.Contains(err.Error(), stale.ID.String()) {
		t.Fatalf("the refusal does not name the agent %s: %v", stale.ID, err)
	}
	if _, err := a.admin.RevokeLocalAuthority(ctx, &api.RevokeLocalAuthorityRequest{Kind: "x509", AuthorityId: old.AuthorityId, Force: true}); err != nil {
		t.Fatal(err)
	}
	if hasDER(adminBundle(t, a).X509Authorities, oldRoot) {
		t.Fatal("A's bundle right after revoke still holds the old root")
	}
	waitFor(t, 10*time.Second, "B's bundle loses A's revoked root and keeps the others", func() bool {
		roots := adminBundle(t, b).X509Authorities
		return len(roots) == 2 && hasDER(roots, bRoot) && hasDER(roots, newRoot)
	})

	// The agent still under the revoked CA is cut off: its open stream
	// ends, and a new connection is refused with PermissionDenied (so the
	// agent attests again) rather than failing its TLS handshake.
	for {
		if _, err := staleStream.Recv(); err != nil {
			wantCode(t, err, codes.PermissionDenied, "the open stream of an agent under the revoked CA")
			break
		}
	}
	conn := dialTLS(t, a.Addr(), tlsconfig.MTLSClientConfig(stale.SVID, a.bundle(t), tlsconfig.AuthorizeID(agentapi.ServerID(td))))
	_, err = api.NewAgentServiceClient(conn).RenewAgent(ctx, &api.RenewAgentRequest{Csr: func() []byte { _, csr := newCSR(t); return csr }()})
	wantCode(t, err, codes.PermissionDenied, "a new connection of an agent under the revoked CA")

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

// TestForgedAgentSVIDRefused: the handshake no longer checks the client
// chain, so authenticate must: an SVID from a CA outside the bundle that
// copies an attested agent's ID and serial gets nowhere.
func TestForgedAgentSVIDRefused(t *testing.T) {
	ts := startServer(t, nil)
	real := mustAttest(t, ts, ts.token(t, "spiffe://example.org/agent/real", 0))
	caKey, _ := newCSR(t)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forger"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := newCSR(t)
	victim := real.SVID.Certificates[0]
	leafTmpl := &x509.Certificate{SerialNumber: victim.SerialNumber, URIs: victim.URIs, NotBefore: victim.NotBefore, NotAfter: victim.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	tlsCfg := tlsconfig.TLSClientConfig(ts.bundle(t), tlsconfig.AuthorizeID(agentapi.ServerID(td)))
	tlsCfg.Certificates = []tls.Certificate{cert}
	conn := dialTLS(t, ts.Addr(), tlsCfg)
	client := api.NewAgentServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = client.RenewAgent(ctx, &api.RenewAgentRequest{Csr: func() []byte { _, csr := newCSR(t); return csr }()})
	wantCode(t, err, codes.PermissionDenied, "RenewAgent with a forged SVID")
	stream, err := client.Sync(ctx, &api.SyncRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.PermissionDenied, "Sync with a forged SVID")
}
