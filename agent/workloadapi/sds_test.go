package workloadapi_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"slices"
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
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/agent/workloadapi/workloadapitest"
	"github.com/signetid/signet/internal/selector"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sds returns an SDS client on the env's socket. Like Envoy, it sends no
// Workload API security header.
func (e *env) sds(t testing.TB) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

// envoyNode is the node an Envoy of the given version sends.
func envoyNode(major, minor uint32, metadata map[string]any) *corev3.Node {
	n := &corev3.Node{Id: "sidecar-1", Cluster: "web", UserAgentName: "envoy"}
	if major > 0 {
		n.UserAgentVersionType = &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
			Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor},
		}}
	}
	if metadata != nil {
		md, err := structpb.NewStruct(metadata)
		if err != nil {
			panic(err)
		}
		n.Metadata = md
	}
	return n
}

// secrets unpacks a response, checking each secret against Envoy's own
// proto constraints (protoc-gen-validate) and that names are unique.
func secrets(t testing.TB, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	if resp.TypeUrl != secretType {
		t.Errorf("type_url %q, want %q", resp.TypeUrl, secretType)
	}
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.Resources {
		if a.TypeUrl != secretType {
			t.Fatalf("resource type %q", a.TypeUrl)
		}
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		if err := s.ValidateAll(); err != nil {
			t.Errorf("secret %q breaks Envoy's constraints: %v", s.Name, err)
		}
		if _, dup := out[s.Name]; dup {
			t.Errorf("secret %q sent twice", s.Name)
		}
		out[s.Name] = &s
	}
	return out
}

func names(m map[string]*tlsv3.Secret) []string { return slices.Sorted(maps.Keys(m)) }

// svidOf parses a tls_certificate secret with go-spiffe, which enforces the
// X509-SVID rules and that the key matches the leaf.
func svidOf(t testing.TB, s *tlsv3.Secret) *x509svid.SVID {
	t.Helper()
	tc := s.GetTlsCertificate()
	if tc == nil {
		t.Fatalf("secret %q is not a tls_certificate: %v", s.Name, s)
	}
	svid, err := x509svid.Parse(tc.CertificateChain.GetInlineBytes(), tc.PrivateKey.GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: %v", s.Name, err)
	}
	if blk, _ := pem.Decode(tc.PrivateKey.GetInlineBytes()); blk == nil || blk.Type != "PRIVATE KEY" {
		t.Errorf("secret %q: key is not a PKCS#8 PEM block", s.Name)
	}
	return svid
}

// trustedCA returns the roots of a trusted_ca validation context.
func trustedCA(t *testing.T, td spiffeid.TrustDomain, s *tlsv3.Secret) *x509bundle.Bundle {
	t.Helper()
	vc := s.GetValidationContext()
	if vc == nil || vc.CustomValidatorConfig != nil {
		t.Fatalf("secret %q is not a trusted_ca validation context: %v", s.Name, s)
	}
	b, err := x509bundle.Parse(td, vc.TrustedCa.GetInlineBytes())
	if err != nil {
		t.Fatalf("secret %q: %v", s.Name, err)
	}
	return b
}

// spiffeValidator returns the trust domains of a SPIFFE validator context,
// in order, with their roots.
func spiffeValidator(t *testing.T, s *tlsv3.Secret) ([]string, map[string]*x509bundle.Bundle) {
	t.Helper()
	vc := s.GetValidationContext()
	if vc == nil || vc.CustomValidatorConfig == nil || vc.TrustedCa != nil {
		t.Fatalf("secret %q is not a SPIFFE validator context: %v", s.Name, s)
	}
	if vc.CustomValidatorConfig.Name != "envoy.tls.cert_validator.spiffe" {
		t.Errorf("validator %q", vc.CustomValidatorConfig.Name)
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	if err := vc.CustomValidatorConfig.TypedConfig.UnmarshalTo(&cfg); err != nil {
		t.Fatal(err)
	}
	var order []string
	out := map[string]*x509bundle.Bundle{}
	for _, td := range cfg.TrustDomains {
		b, err := x509bundle.Parse(spiffeid.RequireTrustDomainFromString(td.Name), td.TrustBundle.GetInlineBytes())
		if err != nil {
			t.Fatalf("trust domain %q: %v", td.Name, err)
		}
		order = append(order, td.Name)
		out[td.Name] = b
	}
	return order, out
}

func sameRoots(a, b *x509bundle.Bundle) bool {
	x, y := a.X509Authorities(), b.X509Authorities()
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if !bytes.Equal(x[i].Raw, y[i].Raw) {
			return false
		}
	}
	return true
}

func TestSDSFetchAll(t *testing.T) {
	e := start(t)
	resp, err := e.sds(t).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: secretType, Node: envoyNode(1, 30, nil)})
	if err != nil {
		t.Fatal(err)
	}
	got := secrets(t, resp)
	want := []string{"spiffe://example.org", "spiffe://example.org/app", "spiffe://example.org/app-ext", "spiffe://example.org/dup", "spiffe://partner.test"}
	if g := names(got); strings.Join(g, " ") != strings.Join(want, " ") {
		t.Fatalf("names %v, want %v (no ROOTCA/ALL/default aliases when all are asked for)", g, want)
	}
	for _, id := range want[1:4] {
		if svid := svidOf(t, got[id]); svid.ID.String() != id {
			t.Errorf("secret %q holds %s", id, svid.ID)
		}
	}
	tds, roots := spiffeValidator(t, got["spiffe://partner.test"])
	if len(tds) != 1 || tds[0] != "partner.test" || !sameRoots(roots["partner.test"], e.fed.X509Bundle()) {
		t.Errorf("federated bundle secret: %v", tds)
	}
}

// Two entries may give a caller the same SPIFFE ID; the first (the one the
// Workload API serves first) is the secret.
func TestSDSDuplicateID(t *testing.T) {
	e := start(t)
	first, second := e.ca.X509SVID(t, "/app", "a"), e.ca.X509SVID(t, "/app", "b")
	e.provider.SetState(state(t, e.ca, e.fed, first, second))
	resp, err := e.sds(t).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org/app"}})
	if err != nil {
		t.Fatal(err)
	}
	got := secrets(t, resp) // fails on a name sent twice
	if svidOf(t, got["spiffe://example.org/app"]).Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
		t.Error("the secret holds the second SVID")
	}
	if len(resp.Resources) != 1 {
		t.Errorf("%d resources", len(resp.Resources))
	}
	resp, err = e.sds(t).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if svidOf(t, secrets(t, resp)["spiffe://example.org/app"]).Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
		t.Error("asked for everything, the secret holds the second SVID")
	}
}

func TestSDSNamedSecrets(t *testing.T) {
	e := start(t)
	c := e.sds(t)
	own := spiffeid.RequireTrustDomainFromString("example.org")
	fetch := func(node *corev3.Node, names ...string) (map[string]*tlsv3.Secret, error) {
		resp, err := c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: secretType, Node: node, ResourceNames: names})
		if err != nil {
			return nil, err
		}
		got := secrets(t, resp)
		if len(got) != len(names) {
			t.Errorf("asked for %v, got %v", names, got)
		}
		return got, nil
	}

	t.Run("default is the first SVID", func(t *testing.T) {
		got, err := fetch(nil, "default", "spiffe://example.org/app-ext")
		if err != nil {
			t.Fatal(err)
		}
		if id := svidOf(t, got["default"]).ID.String(); id != "spiffe://example.org/app" {
			t.Errorf("default holds %s", id)
		}
		if id := svidOf(t, got["spiffe://example.org/app-ext"]).ID.String(); id != "spiffe://example.org/app-ext" {
			t.Errorf("app-ext holds %s", id)
		}
	})
	t.Run("default and its own ID together", func(t *testing.T) {
		got, err := fetch(nil, "spiffe://example.org/app", "default")
		if err != nil {
			t.Fatal(err)
		}
		if svidOf(t, got["default"]).ID != svidOf(t, got["spiffe://example.org/app"]).ID {
			t.Error("default and spiffe://example.org/app differ")
		}
	})
	t.Run("ROOTCA as trusted_ca for a client without a build version", func(t *testing.T) {
		got, err := fetch(envoyNode(0, 0, nil), "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		if !sameRoots(trustedCA(t, own, got["ROOTCA"]), e.ca.X509Bundle()) {
			t.Error("ROOTCA does not hold the own roots")
		}
	})
	t.Run("ROOTCA as trusted_ca for Envoy 1.17", func(t *testing.T) {
		got, err := fetch(envoyNode(1, 17, nil), "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		trustedCA(t, own, got["ROOTCA"])
	})
	t.Run("ROOTCA as SPIFFE validator for Envoy 1.18", func(t *testing.T) {
		got, err := fetch(envoyNode(1, 18, nil), "ROOTCA")
		if err != nil {
			t.Fatal(err)
		}
		tds, roots := spiffeValidator(t, got["ROOTCA"])
		if len(tds) != 1 || tds[0] != "example.org" || !sameRoots(roots["example.org"], e.ca.X509Bundle()) {
			t.Errorf("ROOTCA trust domains %v", tds)
		}
	})
	for _, md := range []map[string]any{{"disable_spiffe_cert_validation": true}, {"disable_spiffe_cert_validation": "true"}} {
		t.Run("node metadata turns the SPIFFE validator off", func(t *testing.T) {
			got, err := fetch(envoyNode(2, 0, md), "ROOTCA")
			if err != nil {
				t.Fatal(err)
			}
			trustedCA(t, own, got["ROOTCA"])
		})
	}
	t.Run("ALL holds every trust domain, each with its own roots", func(t *testing.T) {
		got, err := fetch(envoyNode(1, 30, map[string]any{"disable_spiffe_cert_validation": "not-a-bool"}), "ALL")
		if err != nil {
			t.Fatal(err)
		}
		tds, roots := spiffeValidator(t, got["ALL"])
		if strings.Join(tds, ",") != "example.org,partner.test" {
			t.Fatalf("ALL trust domains %v", tds)
		}
		if !sameRoots(roots["example.org"], e.ca.X509Bundle()) || !sameRoots(roots["partner.test"], e.fed.X509Bundle()) {
			t.Error("ALL mixes up the bundles")
		}
	})
	t.Run("ALL without the SPIFFE validator is refused", func(t *testing.T) {
		_, err := fetch(envoyNode(1, 17, nil), "ALL")
		wantCode(t, "ALL for Envoy 1.17", err, codes.FailedPrecondition)
	})
	t.Run("an unknown name is refused and named", func(t *testing.T) {
		_, err := fetch(nil, "default", "spiffe://example.org/db", "spiffe://other.test")
		wantCode(t, "unknown names", err, codes.PermissionDenied)
		if msg := status.Convert(err).Message(); !strings.Contains(msg, `"spiffe://example.org/db" "spiffe://other.test"`) {
			t.Errorf("message %q does not name what is missing", msg)
		}
	})
	t.Run("another resource type is refused", func(t *testing.T) {
		_, err := c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"})
		wantCode(t, "cluster type", err, codes.InvalidArgument)
	})
}

func TestSDSConfiguredNames(t *testing.T) {
	e := startWithSDS(t, workloadapi.SDSOptions{DefaultSVIDName: "my-svid", DefaultBundleName: "my-roots", DefaultAllBundlesName: "everyone", DisableSPIFFECertValidation: true})
	c := e.sds(t)
	resp, err := c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30, nil), ResourceNames: []string{"my-svid", "my-roots"}})
	if err != nil {
		t.Fatal(err)
	}
	got := secrets(t, resp)
	svidOf(t, got["my-svid"])
	trustedCA(t, spiffeid.RequireTrustDomainFromString("example.org"), got["my-roots"]) // the agent turned the validator off
	_, err = c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}})
	wantCode(t, "the default name once renamed", err, codes.PermissionDenied)
	// An Envoy can turn the validator back on for itself.
	resp, err = c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30, map[string]any{"disable_spiffe_cert_validation": false}), ResourceNames: []string{"everyone"}})
	if err != nil {
		t.Fatal(err)
	}
	if tds, _ := spiffeValidator(t, secrets(t, resp)["everyone"]); len(tds) != 2 {
		t.Errorf("everyone: %v", tds)
	}
}

// As from SPIRE, a caller with no SVID still gets the bundles it names (an
// Envoy that only verifies peers), but no SVID.
func TestSDSNoIdentity(t *testing.T) {
	e := start(t, selector.Selector{Type: "unix", Value: "uid:4294967294"})
	c := e.sds(t)
	resp, err := c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}})
	if err != nil {
		t.Fatal(err)
	}
	if !sameRoots(trustedCA(t, spiffeid.RequireTrustDomainFromString("example.org"), secrets(t, resp)["ROOTCA"]), e.ca.X509Bundle()) {
		t.Error("ROOTCA does not hold the own roots")
	}
	for _, names := range [][]string{{"default"}, {"ROOTCA", "spiffe://example.org/app"}, {"spiffe://partner.test"}} {
		_, err = c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: names})
		wantCode(t, fmt.Sprint("FetchSecrets ", names), err, codes.PermissionDenied)
	}
	resp, err = c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if g := names(secrets(t, resp)); len(g) != 1 || g[0] != "spiffe://example.org" {
		t.Errorf("all secrets of a caller with no SVID: %v, want only the own bundle", g)
	}
	s := e.stream(t, "default")
	select {
	case err := <-s.errs:
		wantCode(t, "StreamSecrets default", err, codes.PermissionDenied)
	case r := <-s.resps:
		t.Fatalf("got %v", names(secrets(t, r)))
	case <-time.After(10 * time.Second):
		t.Fatal("no answer in 10s")
	}
}

// Before the agent's first sync the own bundle is empty: nothing is served
// (an empty ROOTCA would make Envoy refuse every peer).
func TestSDSNoBundleYet(t *testing.T) {
	e := start(t)
	e.provider.SetState(&cache.WorkloadState{Bundle: x509bundle.New(spiffeid.RequireTrustDomainFromString("example.org"))})
	_, err := e.sds(t).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: []string{"ROOTCA"}})
	wantCode(t, "FetchSecrets", err, codes.Unavailable)
}

// Envoy's default is state of the world; SPIRE does not serve Delta either.
func TestSDSDeltaUnimplemented(t *testing.T) {
	e := start(t)
	stream, err := e.sds(t).DeltaSecrets(t.Context())
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "DeltaSecrets", err, codes.Unimplemented)
}

// sdsStream is one Envoy-like StreamSecrets conversation.
type sdsStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	resps  chan *discoveryv3.DiscoveryResponse
	errs   chan error
}

func (e *env) stream(t *testing.T, names ...string) *sdsStream {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	st, err := e.sds(t).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := &sdsStream{t: t, stream: st, resps: make(chan *discoveryv3.DiscoveryResponse, 16), errs: make(chan error, 1)}
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				s.errs <- err
				return
			}
			s.resps <- r
		}
	}()
	s.send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, Node: envoyNode(1, 30, nil), ResourceNames: names})
	return s
}

func (s *sdsStream) send(r *discoveryv3.DiscoveryRequest) {
	s.t.Helper()
	if err := s.stream.Send(r); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sdsStream) next() *discoveryv3.DiscoveryResponse {
	s.t.Helper()
	select {
	case r := <-s.resps:
		return r
	case err := <-s.errs:
		s.t.Fatalf("stream ended: %v", err)
	case <-time.After(10 * time.Second):
		s.t.Fatal("no SDS response in 10s")
	}
	return nil
}

// ack acknowledges r as Envoy does: same names, its version and nonce.
func (s *sdsStream) ack(r *discoveryv3.DiscoveryResponse, names ...string) {
	s.send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names})
}

func TestSDSStream(t *testing.T) {
	e := start(t)
	s := e.stream(t, "default", "ROOTCA")
	first := s.next()
	got := secrets(t, first)
	if names(got)[0] != "ROOTCA" || len(got) != 2 || first.Nonce == "" || first.VersionInfo == "" {
		t.Fatalf("first response: version %q nonce %q names %v", first.VersionInfo, first.Nonce, names(got))
	}
	oldSerial := svidOf(t, got["default"]).Certificates[0].SerialNumber
	s.ack(first, "default", "ROOTCA")

	// A change the caller did not ask about (a federated bundle) sends
	// nothing; the rotation after it does, so the next response must be
	// the rotation's.
	unrelated := *e.provider.State()
	unrelated.FederatedBundles = nil
	e.provider.SetState(&unrelated)
	waitDelivered(t, e)
	e.provider.SetState(state(t, e.ca, e.fed, e.ca.X509SVID(t, "/app", "internal"), e.ca.X509SVID(t, "/app-ext", "external")))
	rot := s.next()
	if rot.VersionInfo == first.VersionInfo || rot.Nonce == first.Nonce {
		t.Errorf("rotation reused version %q / nonce %q", rot.VersionInfo, rot.Nonce)
	}
	newSVID := svidOf(t, secrets(t, rot)["default"])
	if newSVID.Certificates[0].SerialNumber.Cmp(oldSerial) == 0 {
		t.Fatal("the response after the rotation still holds the old SVID (an unrelated change was sent?)")
	}
	if rot.VersionInfo != "2" {
		t.Errorf("version %q after one rotation, want 2: an unrelated change was sent", rot.VersionInfo)
	}

	// A NACK of the same names is logged, not answered; a stale request
	// (old nonce) is ignored even though it asks for other names.
	s.send(&discoveryv3.DiscoveryRequest{VersionInfo: first.VersionInfo, ResponseNonce: rot.Nonce, ResourceNames: []string{"ROOTCA", "default"},
		ErrorDetail: status.New(codes.InvalidArgument, "bad key").Proto()})
	s.send(&discoveryv3.DiscoveryRequest{ResponseNonce: first.Nonce, ResourceNames: []string{"spiffe://example.org/dup"}})
	// New names with the current nonce are answered with exactly those.
	s.send(&discoveryv3.DiscoveryRequest{VersionInfo: rot.VersionInfo, ResponseNonce: rot.Nonce, ResourceNames: []string{"spiffe://example.org/app-ext"}})
	third := s.next()
	if g := names(secrets(t, third)); len(g) != 1 || g[0] != "spiffe://example.org/app-ext" {
		t.Fatalf("after the name change: %v (a NACK or stale request was answered?)", g)
	}
	if third.VersionInfo != "3" {
		t.Errorf("version %q, want 3", third.VersionInfo)
	}

	// A request that omits the node (Envoy may send it only once) keeps the
	// first one's: ROOTCA stays a SPIFFE validator config.
	s.send(&discoveryv3.DiscoveryRequest{VersionInfo: third.VersionInfo, ResponseNonce: third.Nonce, ResourceNames: []string{"ROOTCA", "spiffe://example.org/app-ext"}})
	fourth := s.next()
	if tds, _ := spiffeValidator(t, secrets(t, fourth)["ROOTCA"]); len(tds) != 1 {
		t.Errorf("ROOTCA trust domains %v", tds)
	}

	// The entry behind the requested name goes away: the stream ends with
	// PermissionDenied naming it, and Envoy retries.
	e.provider.SetState(state(t, e.ca, e.fed, e.ca.X509SVID(t, "/app", "internal")))
	select {
	case err := <-s.errs:
		wantCode(t, "stream after the entry went", err, codes.PermissionDenied)
	case r := <-s.resps:
		t.Fatalf("got %v after the entry went", names(secrets(t, r)))
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open after its entry went")
	}
}

// A stream asking only for bundles stays open when the caller's SVIDs go,
// and gets the new roots.
func TestSDSBundleStreamOutlivesSVIDs(t *testing.T) {
	e := start(t)
	s := e.stream(t, "ROOTCA")
	s.ack(s.next(), "ROOTCA")
	other := workloadapitest.NewCA(t, "example.org")
	e.provider.SetState(&cache.WorkloadState{Bundle: other.X509Bundle()})
	_, roots := spiffeValidator(t, secrets(t, s.next())["ROOTCA"])
	if !sameRoots(roots["example.org"], other.X509Bundle()) {
		t.Error("ROOTCA does not hold the new roots")
	}
}

// waitDelivered waits until every subscriber has taken the last state
// pushed to it, so that the next push cannot coalesce with it.
func waitDelivered(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.provider.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("state not taken by the server in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSDSSecretsMakeMTLS builds two TLS endpoints from SDS secrets alone,
// as two Envoys would, and checks they authenticate each other by SPIFFE
// ID under the SPIFFE validator's roots.
func TestSDSSecretsMakeMTLS(t *testing.T) {
	e := start(t)
	resp, err := e.sds(t).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{
		Node: envoyNode(1, 30, nil), ResourceNames: []string{"spiffe://example.org/app", "spiffe://example.org/app-ext", "ROOTCA", "spiffe://partner.test"}})
	if err != nil {
		t.Fatal(err)
	}
	got := secrets(t, resp)
	_, roots := spiffeValidator(t, got["ROOTCA"])
	bundle := roots["example.org"]
	server, client := svidOf(t, got["spiffe://example.org/app"]), svidOf(t, got["spiffe://example.org/app-ext"])

	lis, err := tls.Listen("tcp", "127.0.0.1:0", tlsconfig.MTLSServerConfig(server, bundle, tlsconfig.AuthorizeID(client.ID)))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		accepted <- err
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), tlsconfig.MTLSClientConfig(client, bundle, tlsconfig.AuthorizeID(server.ID)))
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	conn.Close()
	if err := <-accepted; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	// The federated trust domain's secret must not verify our SVIDs.
	_, fedRoots := spiffeValidator(t, got["spiffe://partner.test"])
	wrong := tlsconfig.MTLSClientConfig(client, fedRoots["partner.test"], tlsconfig.AuthorizeAny())
	go func() {
		if c, err := lis.Accept(); err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", lis.Addr().String(), wrong); err == nil {
		c.Close()
		t.Fatal("handshake verified under another trust domain's bundle")
	}
}
