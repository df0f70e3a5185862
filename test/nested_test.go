package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/nested/svidv1"
)

const (
	downstreamServerID = "spiffe://example.org/server/east"
	westWorkloadID     = "spiffe://example.org/workload/west"
	eastWorkloadID     = "spiffe://example.org/workload/east"
	eastAgentID        = "spiffe://example.org/agent/east1"
	// The downstream server's own SVID rotates several times in the test.
	downstreamSVIDTTL = 6 * time.Second
)

// TestNestedServers runs SPIRE's nested topology with real binaries: an
// upstream server and its agent ("west"), a downstream server that gets
// its SVID from that agent and its CA from the upstream, and the
// downstream's own agent ("east"). Workloads of both sides trust each
// other's X509-SVIDs and JWT-SVIDs, and a root the upstream's operator
// replaces leaves the downstream too.
func TestNestedServers(t *testing.T) {
	t.Parallel() // mostly waits: runs beside the other long end-to-end tests
	west := startNode(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The downstream server is the signet binary; this test is the west
	// workload.
	mustCLI(t, west.server, "server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", downstreamServerID,
		"--selector", "unix:path:"+signetBin(t), "--downstream", "--x509-ttl", downstreamSVIDTTL.String())
	mustCLI(t, west.server, "server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", westWorkloadID,
		"--selector", "unix:path:"+self)
	waitForID(t, west, spiffeid.RequireFromString(westWorkloadID))

	dsDir := t.TempDir()
	conf := filepath.Join(dsDir, "server.conf")
	writeFile(t, conf, fmt.Sprintf(`trust_domain = "example.org"
upstream_authority "signet" {
  server_address = %q
  workload_api_socket = %q
}
`, west.server.addr(t), west.socket))
	east := &node{server: startServerProc(t, "--config", conf)}
	east.server.proc.waitLine(t, "got this server's SVID from the Workload API", time.Second)

	// One trust domain: the downstream publishes the upstream's roots.
	if up, down := bundleCerts(t, west.server), bundleCerts(t, east.server); !sameCerts(up, down) || len(up) == 0 {
		t.Fatalf("downstream bundle differs from the upstream's:\nupstream %v\ndownstream %v", subjects(up), subjects(down))
	}

	joinNode(t, east, eastAgentID)
	mustCLI(t, east.server, "server", "entry", "create", "--parent-id", eastAgentID, "--spiffe-id", eastWorkloadID, "--selector", "unix:uid:0")
	waitForID(t, east, spiffeid.RequireFromString(eastWorkloadID))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	westSrc := x509Source(t, ctx, "unix://"+west.socket)
	eastSrc := x509Source(t, ctx, "unix://"+east.socket)
	eastSVID := mustSVID(t, eastSrc)
	if len(eastSVID.Certificates) != 2 {
		t.Fatalf("east SVID chain has %d certificates; want the leaf and the downstream CA", len(eastSVID.Certificates))
	}
	// The east SVID verifies with the west workload's bundle, and the two
	// workloads hold mutual TLS across the nest.
	if _, _, err := x509svid.Verify(eastSVID.Certificates, westSrc); err != nil {
		t.Fatalf("east SVID against the upstream agent's bundle: %v", err)
	}
	if err := mtls(westSrc, eastSrc); err != nil {
		t.Fatalf("mTLS between a workload of the upstream and one of the downstream: %v", err)
	}

	// JWT-SVIDs of the downstream verify upstream once its key is published.
	tok, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"}, workloadapi.WithAddr("unix://"+east.socket))
	if err != nil {
		t.Fatal(err)
	}
	var verr error
	eventually(t, "the upstream agent validates the downstream's JWT-SVID", func() bool {
		_, verr = workloadapi.ValidateJWTSVID(ctx, tok.Marshal(), "db", workloadapi.WithAddr("unix://"+west.socket))
		return verr == nil
	})
	east.server.proc.waitLine(t, "published a JWT key to the upstream server", time.Second)

	// Only the X509-SVID of a downstream entry may have a CA signed.
	westSVIDs, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+west.socket))
	if err != nil {
		t.Fatal(err)
	}
	if len(westSVIDs) != 1 || westSVIDs[0].ID.String() != westWorkloadID {
		t.Fatalf("the west workload holds %v; want %s alone", ids(westSVIDs), westWorkloadID)
	}
	conn, err := grpc.NewClient(west.server.addr(t), grpc.WithTransportCredentials(grpccredentials.MTLSClientCredentials(
		westSVIDs[0], westSrc, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/signet/server")))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = svidv1.NewSVIDClient(conn).NewDownstreamX509CA(ctx, &svidv1.NewDownstreamX509CARequest{Csr: []byte("not a CSR")})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), westWorkloadID) {
		t.Fatalf("NewDownstreamX509CA by %s, no downstream entry: %v; want PermissionDenied naming it", westSVIDs[0].ID, err)
	}

	// The upstream's operator replaces its root: the downstream has a new
	// CA signed at once, its workload is re-signed under it, and the old
	// root leaves the downstream's bundle at revocation.
	oldRoot := activeAuthority(t, west, "x509")
	next := authorityCLI(t, west, "x509", "prepare")
	authorityCLI(t, west, "x509", "activate", "--authority-id", next.AuthorityID)
	authorityCLI(t, west, "x509", "taint", "--authority-id", oldRoot)
	newRoot := certWithID(t, bundleCerts(t, west.server), next.AuthorityID)
	eventually(t, "the east workload's SVID chains to the new upstream root", func() bool {
		s, err := eastSrc.GetX509SVID()
		return err == nil && string(s.Certificates[1].AuthorityKeyId) == string(newRoot.SubjectKeyId)
	})
	east.server.proc.waitLine(t, "the upstream server tainted the root the active CA chains to", time.Second)
	authorityCLI(t, west, "x509", "revoke", "--authority-id", oldRoot, "--force")
	eventually(t, "the revoked root leaves the downstream's bundle", func() bool {
		certs := bundleCerts(t, east.server)
		return len(certs) == 1 && certs[0].Equal(newRoot)
	})
	if err := mtls(westSrc, eastSrc); err != nil {
		t.Fatalf("mTLS after the root was replaced: %v", err)
	}

	// The downstream's calls present its current SVID, not the one it
	// first connected with, which has expired by now.
	time.Sleep(downstreamSVIDTTL + time.Second)
	authorityCLI(t, east, "x509", "prepare")

	// With the upstream server down for longer than the downstream's own
	// SVID lives (the upstream's agent no longer has one to serve), the
	// downstream restarts on its stored CA and its workloads keep their
	// identity.
	west.server.proc.Kill()
	time.Sleep(downstreamSVIDTTL + time.Second)
	east.server.proc.Stop()
	restarted := startSignet(t, nil, east.server.proc.cmd.Args[1:]...)
	restarted.waitLine(t, "server started", 30*time.Second)
	if bundle := bundleCerts(t, east.server); len(bundle) != 1 || !bundle[0].Equal(newRoot) {
		t.Fatalf("downstream bundle after a restart in an upstream outage: %v", subjects(bundle))
	}
	eastSVIDs, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr("unix://"+east.socket))
	if err != nil || len(eastSVIDs) != 1 || eastSVIDs[0].ID.String() != eastWorkloadID {
		t.Fatalf("east workload during the upstream outage: %v %v", err, eastSVIDs)
	}
}

func mustCLI(t *testing.T, s *serverEnv, args ...string) string {
	t.Helper()
	out, err := s.cli(t, args...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// addr is the server's agent API address, from its start line.
func (s *serverEnv) addr(t testing.TB) string {
	return fieldValue(s.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")
}

// joinNode starts an agent of n.server that attests with a join token for
// agentID.
func joinNode(t *testing.T, n *node, agentID string) {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	bundle := n.server.writeBundle(t, dir)
	tok := strings.TrimSpace(mustCLI(t, n.server, "server", "token", "generate", "--spiffe-id", agentID))
	n.socket = filepath.Join(dir, "sockets", "agent.sock")
	n.agentArgs = []string{"agent", "run", "--server", n.server.addr(t), "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "agent"), "--trust-bundle", bundle, "--socket", n.socket}
	n.agent = startSignet(t, nil, append(n.agentArgs, "--join-token", tok)...)
	n.agent.waitLine(t, "agent ready", 30*time.Second)
}

func bundleCerts(t *testing.T, s *serverEnv) []*x509.Certificate {
	t.Helper()
	rest := []byte(mustCLI(t, s, "server", "bundle", "show"))
	var out []*x509.Certificate
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(c *x509.Certificate) bool {
		return !slices.ContainsFunc(b, c.Equal)
	})
}

func subjects(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, fmt.Sprintf("%s (%x)", c.Subject, c.SubjectKeyId))
	}
	return out
}

// certWithID is the root in certs whose authority ID (SHA-256 of the DER,
// as localauthority prints it) is id.
func certWithID(t *testing.T, certs []*x509.Certificate, id string) *x509.Certificate {
	t.Helper()
	for _, c := range certs {
		if hex.EncodeToString(sha256Sum(c.Raw)) == id {
			return c
		}
	}
	t.Fatalf("no root %s in %v", id, subjects(certs))
	return nil
}

func mustSVID(t *testing.T, src *workloadapi.X509Source) *x509svid.SVID {
	t.Helper()
	s, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mtls has a TLS server holding server's SVID and a client holding
// client's shake hands, each authorizing any ID of the trust domain with
// its own agent's bundle.
func mtls(server, client *workloadapi.X509Source) error {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, tlsconfig.MTLSServerConfig(server, server, tlsconfig.AuthorizeMemberOf(td)))
	cli := tls.Client(b, tlsconfig.MTLSClientConfig(client, client, tlsconfig.AuthorizeMemberOf(td)))
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cli.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := <-errc; err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}
