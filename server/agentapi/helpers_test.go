package agentapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/crypto/ssh"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
	"github.com/signetid/signet/server/api/gcpiit/gcpiittest"
	"github.com/signetid/signet/server/api/sshpop"
	"github.com/signetid/signet/server/api/sshpop/sshpoptest"
	"github.com/signetid/signet/server/api/x509pop"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/audit/audittest"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// harness is the agent API over real gRPC and mutual TLS on 127.0.0.1, with
// a real CA and a SQLite store, audited as the server audits it. The
// catalog is refreshed only when a test (or the service itself) calls
// Refresh, so a test decides which store writes one snapshot covers.
type harness struct {
	svc    *Service
	ca     *ca.Manager
	store  store.Store
	cat    *catalog.Catalog
	dbPath string
	addr   string
	bundle *x509bundle.Bundle
	// nodeCA issues x509pop machine certificates; nodeBundle is the file of
	// its root the server trusts, read at every attestation. Agents are
	// named by the certificate's common name.
	nodeCA     *x509poptest.CA
	nodeBundle string
	// sshCA signs sshpop host certificates; sshCAFile is the
	// cert_authorities_path the server reads at every attestation. Agents
	// are named sshpop/<first principal>.
	sshCA     *sshpoptest.CA
	sshCAFile string
	// awsSigner signs aws_iid instance identity documents; the server
	// trusts its certificate and account 111122223333.
	awsSigner *awsiidtest.Signer
	// gcpSigner mints gcp_iit tokens; gcpCerts serves its certificate as
	// Google's; the server trusts project-a.
	gcpSigner *gcpiittest.Signer
	gcpCerts  *gcpiittest.Certs
	// auditLog holds the audit records (JSON).
	auditLog *logtest.Buffer
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
	nodeRoot := x509poptest.NewRoot(t, "Example Node Root")
	nodeBundle := filepath.Join(dir, "node-ca.pem")
	x509poptest.WritePEM(t, nodeBundle, nodeRoot.Cert)
	pop, err := nodeattest.NewX509PoP(td, nodeattest.X509PoPConfig{CABundlePaths: []string{nodeBundle}, AgentPathTemplate: "x509pop/{{ .Subject.CommonName }}"})
	if err != nil {
		t.Fatal(err)
	}
	sshCA := sshpoptest.NewCA(t)
	sshCAFile := filepath.Join(dir, "ssh-ca.pub")
	if err := os.WriteFile(sshCAFile, []byte(sshCA.AuthorizedKey()), 0o644); err != nil {
		t.Fatal(err)
	}
	sshPoP, err := nodeattest.NewSSHPoP(td, nodeattest.SSHPoPConfig{CertAuthoritiesPath: sshCAFile, AgentPathTemplate: "sshpop/{{ .Hostname }}"})
	if err != nil {
		t.Fatal(err)
	}
	awsSigner := awsiidtest.NewSigner(t)
	awsCerts := filepath.Join(dir, "aws-certs.pem")
	awsSigner.WriteCert(t, awsCerts)
	awsIID, err := nodeattest.NewAWSIID(td, nodeattest.AWSIIDConfig{AccountIDs: []string{"111122223333"}, CertificatesPath: awsCerts})
	if err != nil {
		t.Fatal(err)
	}
	gcpSigner := gcpiittest.NewSigner(t)
	gcpCerts := gcpiittest.NewCerts(t, gcpSigner)
	gcpIIT, err := nodeattest.NewGCPIIT(td, nodeattest.GCPIITConfig{ProjectIDs: []string{"project-a"}, CertsURL: gcpCerts.URL})
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Config{TrustDomain: td, Store: st, Catalog: cat, Signer: m, X509PoP: pop, SSHPoP: sshPoP, AWSIID: awsIID, GCPIIT: gcpIIT,
		AgentTTL: time.Hour, Logger: logger})
	serverSVID, err := m.SignServerSVID(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{PrivateKey: serverSVID.PrivateKey, Leaf: serverSVID.Certificates[0]}
	for _, c := range serverSVID.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	auditLog := &logtest.Buffer{}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(svc.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }))),
		grpc.UnaryInterceptor(audit.New(audittest.Logger(auditLog)).UnaryInterceptor(audit.Options{})))
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
	return &harness{svc: svc, ca: m, store: st, cat: cat, dbPath: dbPath, addr: ln.Addr().String(), bundle: bundle,
		nodeCA: nodeRoot.Intermediate(t, "Example Node Issuing"), nodeBundle: nodeBundle, sshCA: sshCA, sshCAFile: sshCAFile, awsSigner: awsSigner, gcpSigner: gcpSigner, gcpCerts: gcpCerts, auditLog: auditLog}
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

// x509popRequest is an x509pop Attest request with a fresh key's CSR,
// proven with the machine certificate leaf (issued by h.nodeCA) and its key.
func (h *harness) x509popRequest(t *testing.T, leaf *x509.Certificate, leafKey crypto.Signer) (*ecdsa.PrivateKey, *api.AttestRequest) {
	t.Helper()
	key, req := attestRequest(t, "")
	csr, err := x509.ParseCertificateRequest(req.Csr)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := x509pop.Sign(leafKey, x509pop.Message(td, csr.RawSubjectPublicKeyInfo))
	if err != nil {
		t.Fatal(err)
	}
	payload := x509pop.Payload{Chain: [][]byte{leaf.Raw}, Signature: sig}
	for _, c := range h.nodeCA.Chain {
		payload.Chain = append(payload.Chain, c.Raw)
	}
	if req.Payload, err = json.Marshal(payload); err != nil {
		t.Fatal(err)
	}
	req.AttestationType = nodeattest.X509PoPType
	return key, req
}

// sshpopRequest is an sshpop Attest request with a fresh key's CSR,
// proven with the host certificate cert (issued by h.sshCA) and its key.
func (h *harness) sshpopRequest(t *testing.T, cert *ssh.Certificate, hostKey ssh.Signer) (*ecdsa.PrivateKey, *api.AttestRequest) {
	t.Helper()
	key, req := attestRequest(t, "")
	csr, err := x509.ParseCertificateRequest(req.Csr)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := sshpop.Sign(hostKey, sshpop.Message(td, csr.RawSubjectPublicKeyInfo))
	if err != nil {
		t.Fatal(err)
	}
	if req.Payload, err = json.Marshal(sshpop.Payload{Certificate: cert.Marshal(), Signature: sshpop.MarshalSignature(sig)}); err != nil {
		t.Fatal(err)
	}
	req.AttestationType = nodeattest.SSHPoPType
	return key, req
}

// awsiidRequest is an aws_iid Attest request with a fresh key's CSR,
// presenting doc signed by h.awsSigner.
func (h *harness) awsiidRequest(t *testing.T, doc []byte) (*ecdsa.PrivateKey, *api.AttestRequest) {
	t.Helper()
	key, req := attestRequest(t, "")
	req.AttestationType, req.Payload = nodeattest.AWSIIDType, h.awsSigner.Payload(t, doc)
	return key, req
}

// anon is a client that authenticates the server only, as for Attest.
func (h *harness) anon(t *testing.T) api.AgentServiceClient {
	t.Helper()
	return h.dial(t, tlsconfig.TLSClientConfig(h.bundle, tlsconfig.AuthorizeID(ServerID(td))))
}

// attest attests an agent with a join token over server-authenticated TLS
// and returns a client that presents the agent SVID it got.
func (h *harness) attest(t *testing.T, agentID string) (spiffeid.ID, api.AgentServiceClient) {
	t.Helper()
	key, req := attestRequest(t, h.token(t, agentID))
	id, client, _ := h.attestWith(t, key, req)
	return id, client
}

// attestWith sends req (for key's CSR) and returns the agent's ID, a
// client that presents the SVID it got, and the response.
func (h *harness) attestWith(t *testing.T, key *ecdsa.PrivateKey, req *api.AttestRequest) (spiffeid.ID, api.AgentServiceClient, *api.AttestResponse) {
	t.Helper()
	resp, err := h.anon(t).Attest(context.Background(), req)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	id, client := h.clientFor(t, key, resp)
	return id, client, resp
}

// clientFor returns the agent ID of the SVID an attestation or renewal
// answered (for key) and a client that presents it.
func (h *harness) clientFor(t *testing.T, key *ecdsa.PrivateKey, resp *api.AttestResponse) (spiffeid.ID, api.AgentServiceClient) {
	t.Helper()
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

// staleNodeReads answers GetNode with node (nil: not found), as the store
// was when Attest read it before signing; the writes go to the store,
// changed since by another server (an attestation, an eviction).
type staleNodeReads struct {
	store.Store
	node *store.Node
}

func (s staleNodeReads) GetNode(context.Context, string) (store.Node, error) {
	if s.node == nil {
		return store.Node{}, store.ErrNotFound
	}
	return *s.node, nil
}
