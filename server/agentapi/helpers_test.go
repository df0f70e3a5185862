package agentapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// harness is the agent API over real gRPC and mutual TLS on 127.0.0.1, with
// a real CA and a SQLite store. The catalog is refreshed only when a test
// (or the service itself) calls Refresh, so a test decides which store
// writes one snapshot covers.
type harness struct {
	svc    *Service
	store  store.Store
	cat    *catalog.Catalog
	dbPath string
	addr   string
	bundle *x509bundle.Bundle
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	dbPath := filepath.Join(dir, "signet.db")
	st, err := store.Open(ctx, "sqlite://"+dbPath, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m, err := ca.New(ctx, ca.Config{TrustDomain: td, DataDir: filepath.Join(dir, "ca"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var auths []store.Authority
	for _, a := range m.Authorities() {
		auths = append(auths, store.Authority{TrustDomain: td.Name(), Kind: store.AuthorityKind(a.Kind), KeyID: a.KeyID, Data: a.Data, ExpiresAt: a.ExpiresAt})
	}
	if err := st.PutAuthorities(ctx, auths); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(ctx, st, td, logger)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{TrustDomain: td, Store: st, Catalog: cat, Signer: m, AgentTTL: time.Hour, Logger: logger})
	serverSVID, err := m.SignServerSVID(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{PrivateKey: serverSVID.PrivateKey, Leaf: serverSVID.Certificates[0]}
	for _, c := range serverSVID.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(svc.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }))))
	svc.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	bundle := x509bundle.New(td)
	for _, a := range m.Authorities() {
		if a.Kind == ca.KindX509 {
			root, err := x509.ParseCertificate(a.Data)
			if err != nil {
				t.Fatal(err)
			}
			bundle.AddX509Authority(root)
		}
	}
	return &harness{svc: svc, store: st, cat: cat, dbPath: dbPath, addr: ln.Addr().String(), bundle: bundle}
}

// token stores a new join token for the agent ID agentID ("" for the
// default) and returns it.
func (h *harness) token(t *testing.T, agentID string) string {
	t.Helper()
	token, rec, err := nodeattest.NewJoinToken(td, agentID, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.CreateJoinToken(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return token
}

func (h *harness) dial(t *testing.T, cfg *tls.Config) api.AgentServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+h.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewAgentServiceClient(conn)
}

// attestRequest is a join-token Attest request with a fresh key's CSR.
func attestRequest(t *testing.T, token string) (*ecdsa.PrivateKey, *api.AttestRequest) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, &api.AttestRequest{AttestationType: nodeattest.JoinTokenType, Payload: []byte(token), Csr: csr}
}

// attest attests an agent with a join token over server-authenticated TLS
// and returns a client that presents the agent SVID it got.
func (h *harness) attest(t *testing.T, agentID string) (spiffeid.ID, api.AgentServiceClient) {
	t.Helper()
	anon := h.dial(t, tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(ServerID(td))))
	key, req := attestRequest(t, h.token(t, agentID))
	resp, err := anon.Attest(context.Background(), req)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	var certs []*x509.Certificate
	for _, der := range resp.SvidChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		t.Fatal(err)
	}
	svid := &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	return id, h.dial(t, tlsconfig.MTLSClientConfig(svid, h.bundle, tlsconfig.AuthorizeID(ServerID(td))))
}
