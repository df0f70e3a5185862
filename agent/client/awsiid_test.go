package client

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/awsiid"
	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/servertest"
)

// The evidence is read from the metadata service with IMDSv2 (a token,
// then reads presenting it) and carries the document and its rsa2048
// signature exactly as served.
func TestAWSIIDEvidence(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-1")
	sig := signer.Sign(t, doc)
	imds := awsiidtest.NewIMDS(t, doc, sig)
	ev, err := AWSIID(strings.TrimSuffix(imds.URL, "/")).Evidence(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var p awsiid.Payload
	if err := json.Unmarshal(ev.Payload, &p); err != nil || ev.Type != "aws_iid" || ev.SingleUse || !ev.TrustOnFirstUse || p.Document != string(doc) || p.RSA2048 != sig {
		t.Fatalf("evidence %s %v: %+v, %v", ev.Type, ev.SingleUse, p, err)
	}
	want := []string{"PUT /latest/api/token no-token", "GET /latest/dynamic/instance-identity/document token", "GET /latest/dynamic/instance-identity/rsa2048 token"}
	if got := imds.Requests(); !slices.Equal(got, want) {
		t.Fatalf("requests %q, want %q", got, want)
	}
}

// A token request refused with 403 (IMDSv2 off, a proxy in the way) falls
// back to IMDSv1 reads, as SPIRE's agent does through the AWS SDK; an
// instance that requires tokens refuses those, and the error says what to
// do. Other failures name the URL.
func TestAWSIIDMetadataFailures(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	doc := awsiidtest.Doc("111122223333", "us-test-1", "i-1")
	sig := signer.Sign(t, doc)

	v1 := awsiidtest.NewIMDS(t, doc, sig)
	v1.FailTokens(http.StatusForbidden)
	v1.AllowV1()
	ev, err := AWSIID(v1.URL).Evidence(context.Background(), nil)
	if err != nil || !strings.Contains(string(ev.Payload), `"document"`) {
		t.Fatalf("IMDSv1 fallback: %v", err)
	}
	if got := v1.Requests(); len(got) != 3 || got[1] != "GET /latest/dynamic/instance-identity/document no-token" {
		t.Fatalf("IMDSv1 fallback requests %q", got)
	}

	required := awsiidtest.NewIMDS(t, doc, sig)
	required.FailTokens(http.StatusForbidden)
	badRequest := awsiidtest.NewIMDS(t, doc, sig)
	badRequest.FailTokens(http.StatusBadRequest)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/"
	ln.Close()
	for _, tc := range []struct{ name, endpoint, want string }{
		{"tokens required, token refused", required.URL, "401 Unauthorized: the instance requires IMDSv2 tokens, and the IMDSv2 token request was refused (403 Forbidden); in a container, raise the instance's metadata hop limit to 2"},
		{"token request refused with 400", badRequest.URL, "IMDSv2 token request to " + badRequest.URL + "latest/api/token: 400 Bad Request"},
		{"no metadata service", down, "aws_iid: read " + down + "latest/dynamic/instance-identity/document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := AWSIID(tc.endpoint).Evidence(context.Background(), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Evidence: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// An agent attests with the document against a real server: not
// reattestable, it renews in place. The same document from another data
// dir (its SVID lost, or a copy) is refused until the agent is evicted.
func TestAWSIIDAttestation(t *testing.T) {
	ctx := context.Background()
	s, signer := awsiidServer(t, nil)
	attestor := awsiidAttestor(t, signer, "i-0abc")

	c := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const wantID = "spiffe://example.org/agent/aws_iid/111122223333/us-test-1/i-0abc"
	if got := c.AgentID().String(); got != wantID {
		t.Fatalf("agent ID %s, want %s", got, wantID)
	}
	if err := c.renewOrReattest(ctx); err != nil || c.AgentID().String() != wantID {
		t.Fatalf("renewal in place: %v, ID %s", err, c.AgentID())
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync after renewal: %v", err)
	}

	copyAgent := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := copyAgent.Start(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is already attested") {
		t.Fatalf("second attestation with the document: %v, want PermissionDenied saying it is attested", err)
	}
	if _, err := s.Admin().EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: wantID}); err != nil {
		t.Fatal(err)
	}
	fresh := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := fresh.Start(ctx); err != nil || fresh.AgentID().String() != wantID {
		t.Fatalf("attestation after the eviction: %v, ID %s", err, fresh.AgentID())
	}
}

// An aws_iid agent whose SVID expired comes back by itself with the key of
// that SVID: restarted with its data directory after the instance was
// stopped past the SVID's expiry, and while running after a long server
// outage. Its key stays what it was (the server knows the agent by it).
// The document from another data directory is still refused, and a data
// directory copied to another instance (in a machine image) does not lend
// that instance its key.
func TestAWSIIDAgentBackAfterExpiry(t *testing.T) {
	ctx := context.Background()
	const ttl = 2 * time.Second
	s, signer := awsiidServer(t, func(c *server.Config) { c.AgentTTL = ttl })
	attestor := awsiidAttestor(t, signer, "i-0stopped")
	dir := t.TempDir()

	first := newClient(t, s, dir, nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.renewOrReattest(ctx); err != nil {
		t.Fatalf("renewal in place: %v", err)
	}
	renewed, _ := first.GetX509SVID()
	first.Close()

	// Started again once the persisted SVID has expired.
	time.Sleep(time.Until(renewed.Certificates[0].NotAfter) + 100*time.Millisecond)
	restarted := newClient(t, s, dir, nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := restarted.Start(ctx); err != nil {
		t.Fatalf("restart after the SVID expired: %v", err)
	}
	back, _ := restarted.GetX509SVID()
	if back.ID != renewed.ID || back.Certificates[0].SerialNumber.Cmp(renewed.Certificates[0].SerialNumber) == 0 ||
		!back.PrivateKey.Public().(*ecdsa.PublicKey).Equal(renewed.PrivateKey.Public()) {
		t.Fatalf("after the restart: %s serial %s; want %s with a new SVID for the key it had", back.ID, back.Certificates[0].SerialNumber, renewed.ID)
	}

	// Running, its SVID expires (the server was out of reach): the next
	// renewal attests again with the key of the expired SVID.
	time.Sleep(time.Until(back.Certificates[0].NotAfter) + 100*time.Millisecond)
	if err := restarted.renewOrReattest(ctx); err != nil {
		t.Fatalf("renewal after the SVID expired: %v", err)
	}
	again, _ := restarted.GetX509SVID()
	if again.Certificates[0].SerialNumber.Cmp(back.Certificates[0].SerialNumber) == 0 ||
		!again.PrivateKey.Public().(*ecdsa.PublicKey).Equal(back.PrivateKey.Public()) {
		t.Fatalf("after the renewal: serial %s; want a new SVID for the same key", again.Certificates[0].SerialNumber)
	}

	copyAgent := newClient(t, s, t.TempDir(), nil, func(cfg *Config) { cfg.NodeAttestor = attestor })
	if err := copyAgent.Start(ctx); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "is already attested by another agent key") {
		t.Fatalf("the document from another data directory: %v, want PermissionDenied", err)
	}

	// The data directory copied into an image that another instance starts
	// from: that instance attests its own ID with a key of its own.
	restarted.Close()
	time.Sleep(time.Until(again.Certificates[0].NotAfter) + 100*time.Millisecond)
	image := t.TempDir()
	if err := os.CopyFS(image, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	clone := newClient(t, s, image, nil, func(cfg *Config) { cfg.NodeAttestor = awsiidAttestor(t, signer, "i-0clone") })
	if err := clone.Start(ctx); err != nil {
		t.Fatalf("an instance started from an image holding another agent's data directory: %v", err)
	}
	cloned, _ := clone.GetX509SVID()
	if cloned.ID.String() != "spiffe://example.org/agent/aws_iid/111122223333/us-test-1/i-0clone" ||
		cloned.PrivateKey.Public().(*ecdsa.PublicKey).Equal(again.PrivateKey.Public()) {
		t.Fatalf("the clone attested as %s with the image's key %v; want its own ID and a key of its own", cloned.ID,
			cloned.PrivateKey.Public().(*ecdsa.PublicKey).Equal(again.PrivateKey.Public()))
	}
}

// awsiidServer starts a real server that trusts a test signer's aws_iid
// documents of account 111122223333, and returns it with the signer.
func awsiidServer(t *testing.T, mutate func(*server.Config)) (*realServer, *awsiidtest.Signer) {
	t.Helper()
	signer := awsiidtest.NewSigner(t)
	certs := filepath.Join(t.TempDir(), "aws-certs.pem")
	signer.WriteCert(t, certs)
	s := &realServer{servertest.Start(t, td, func(c *server.Config) {
		c.AWSIID = &nodeattest.AWSIIDConfig{AccountIDs: []string{"111122223333"}, CertificatesPath: certs}
		if mutate != nil {
			mutate(c)
		}
	})}
	return s, signer
}

// awsiidAttestor reads the document of instance, signed by signer, from a
// fake metadata service.
func awsiidAttestor(t *testing.T, signer *awsiidtest.Signer, instance string) NodeAttestor {
	t.Helper()
	doc := awsiidtest.Doc("111122223333", "us-test-1", instance)
	return AWSIID(awsiidtest.NewIMDS(t, doc, signer.Sign(t, doc)).URL)
}
