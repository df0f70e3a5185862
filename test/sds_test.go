package test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestEnvoySDS runs the built server and an agent whose config file renames
// the bundle secret, then talks to the agent's socket as Envoy 1.30 does
// (StreamSecrets, ACKs): the SVID arrives once its entry reaches the agent,
// verifies under the bundle secret, and its rotation is pushed on the same
// stream.
func TestEnvoySDS(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the entry selects uid 0 (CI runs as root)")
	}
	srv := startServerProc(t, "--svid-ttl", "10s")
	dir := t.TempDir()
	bundle, tok, addr := agentJoin(t, srv, dir)
	socket := filepath.Join(dir, "sockets", "agent.sock")
	conf := filepath.Join(dir, "agent.conf")
	if err := os.WriteFile(conf, []byte(`agent {
  sds {
    default_bundle_name = "trust-anchors"
  }
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := startSignet(t, nil, "agent", "run", "--config", conf, "--server", addr, "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "agent"), "--trust-bundle", bundle, "--socket", socket, "--join-token", strings.TrimSpace(tok))
	agent.waitLine(t, "agent ready", 30*time.Second)

	const id = "spiffe://example.org/envoy/web"
	if _, err := srv.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID, "--spiffe-id", id, "--selector", "unix:uid:"+strconv.Itoa(os.Getuid())); err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sds := secretv3.NewSecretDiscoveryServiceClient(conn)
	node := &corev3.Node{Id: "web-sidecar", Cluster: "web", UserAgentName: "envoy",
		UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 30}}}}
	names := []string{id, "trust-anchors"}

	// Like Envoy, retry the stream until the entry has reached the agent
	// (until then the caller has no identity: PermissionDenied).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
		first  *discoveryv3.DiscoveryResponse
	)
	for first == nil {
		stream, err = sds.StreamSecrets(ctx)
		if err == nil {
			err = stream.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names,
				TypeUrl: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"})
		}
		if err == nil {
			first, err = stream.Recv()
		}
		if err != nil {
			if status.Code(err) != codes.PermissionDenied || ctx.Err() != nil {
				t.Fatalf("StreamSecrets: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	svid, roots := sdsPair(t, first, id)
	if _, _, err := x509svid.Verify(svid.Certificates, roots); err != nil {
		t.Fatalf("the SVID does not verify under the trust-anchors secret: %v", err)
	}

	// ACK, then wait for the rotation (10 s TTL: due at about 5 s).
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce}); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatalf("waiting for the rotation: %v", err)
	}
	if next.VersionInfo == first.VersionInfo {
		t.Fatalf("second response has the first's version %q", next.VersionInfo)
	}
	rotated, _ := sdsPair(t, next, id)
	if rotated.Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0 {
		t.Fatal("second response holds the same SVID")
	}
	if !rotated.Certificates[0].NotAfter.After(svid.Certificates[0].NotAfter) {
		t.Fatal("rotated SVID does not outlive the first")
	}
}

// sdsPair returns the SVID named id and the roots in the "trust-anchors"
// secret of an SDS response (SPIFFE validator form, for Envoy 1.30).
func sdsPair(t *testing.T, resp *discoveryv3.DiscoveryResponse, id string) (*x509svid.SVID, *x509bundle.Bundle) {
	t.Helper()
	var (
		svid  *x509svid.SVID
		roots *x509bundle.Bundle
	)
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		switch s.Name {
		case id:
			tc := s.GetTlsCertificate()
			var err error
			if svid, err = x509svid.Parse(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()); err != nil {
				t.Fatalf("SVID secret: %v", err)
			}
		case "trust-anchors":
			var cfg tlsv3.SPIFFECertValidatorConfig
			if err := s.GetValidationContext().GetCustomValidatorConfig().GetTypedConfig().UnmarshalTo(&cfg); err != nil {
				t.Fatalf("trust-anchors is not a SPIFFE validator config: %v", err)
			}
			if len(cfg.TrustDomains) != 1 || cfg.TrustDomains[0].Name != "example.org" {
				t.Fatalf("trust-anchors trust domains: %v", cfg.TrustDomains)
			}
			var err error
			if roots, err = x509bundle.Parse(spiffeid.RequireTrustDomainFromString("example.org"), cfg.TrustDomains[0].TrustBundle.GetInlineBytes()); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected secret %q", s.Name)
		}
	}
	if svid == nil || roots == nil {
		t.Fatalf("response lacks %s or trust-anchors (%d resources)", id, len(resp.Resources))
	}
	return svid, roots
}
