package delegatedidentity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/agent/delegatedidentity/types"
	pb "github.com/signetid/signet/agent/delegatedidentity/v1"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/servertest"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	partnerTD = spiffeid.RequireTrustDomainFromString("partner.test")
)

const (
	agentID    = "spiffe://example.org/agent/node1"
	delegateID = "spiffe://example.org/delegate"
)

// node is a real server and a real agent (agent.Run, the Unix attestor)
// serving the Delegated Identity API on its admin socket, and a client of
// that API generated from this package's protobuf: the delegate.
type node struct {
	server *servertest.Server
	client pb.DelegatedIdentityClient
	admin  string
}

func startNode(t *testing.T) *node {
	t.Helper()
	s := servertest.Start(t, td, nil)
	tok, err := s.Admin().CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	// Short: a Unix socket path holds at most 107 bytes.
	dir, err := os.MkdirTemp("", "sgt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &node{server: s, admin: filepath.Join(dir, "admin", "admin.sock")}
	ready := make(chan struct{})
	cfg := agent.Config{
		ServerAddress: s.Addr(), TrustDomain: td.Name(), DataDir: filepath.Join(dir, "data"),
		JoinToken: tok.Token, TrustBundlePEM: s.BundlePEM(),
		SocketPath:          filepath.Join(dir, "sockets", "agent.sock"),
		AdminSocketPath:     n.admin,
		AuthorizedDelegates: []string{delegateID},
		OnReady:             func(agent.ReadyInfo) { close(ready) },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent.Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agent exited before ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("agent not ready within 60s")
	}
	conn, err := grpc.NewClient("unix://"+n.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.client = pb.NewDelegatedIdentityClient(conn)
	return n
}

func (n *node) entry(t *testing.T, e *api.Entry) *api.Entry {
	t.Helper()
	e.ParentId = agentID
	got, err := n.server.Admin().CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: e})
	if err != nil {
		t.Fatalf("create entry %s: %v", e.SpiffeId, err)
	}
	return got
}

func sel(typ, value string) *api.Selector { return &api.Selector{Type: typ, Value: value} }

// eventually retries f until it returns nil (entries reach the agent by
// push, in well under a second) and fails with its last error after 30s.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func wantStatus(err error, code codes.Code, msg string) error {
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		return fmt.Errorf("got %v, want %s containing %q", err, code, msg)
	}
	return nil
}

// recvUntil reads a stream until ok accepts a response.
func recvUntil[T any](t *testing.T, what string, recv func() (*T, error), ok func(*T) bool) *T {
	t.Helper()
	for {
		resp, err := recv()
		if err != nil {
			t.Fatalf("%s: stream ended: %v", what, err)
		}
		if ok(resp) {
			return resp
		}
	}
}

func svidIDs(resp *pb.SubscribeToX509SVIDsResponse) []string {
	var out []string
	for _, s := range resp.X509Svids {
		out = append(out, "spiffe://"+s.X509Svid.Id.TrustDomain+s.X509Svid.Id.Path)
	}
	return out
}

// federatedBundle is a foreign trust domain's bundle with one root and one
// JWT key.
func federatedBundle(t *testing.T) *api.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partner"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{partnerTD.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return &api.Bundle{TrustDomain: partnerTD.Name(), X509Authorities: [][]byte{der}, JwtAuthorities: []*api.JWTKey{{KeyId: "partner-1", PublicKey: pub}}}
}

// fileSHA256 is the unix:sha256 selector value of an executable.
func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestDelegatedIdentityAPI(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	uid := fmt.Sprint(os.Getuid())
	workload := []*types.Selector{{Type: "unix", Value: "uid:4242"}}
	fetchJWT := func() error {
		_, err := n.client.FetchJWTSVIDs(ctx, &pb.FetchJWTSVIDsRequest{Audience: []string{"db"}, Selectors: workload})
		return err
	}
	subscribe := func(req *pb.SubscribeToX509SVIDsRequest) (*pb.SubscribeToX509SVIDsResponse, error) {
		stream, err := n.client.SubscribeToX509SVIDs(ctx, req)
		if err != nil {
			return nil, err
		}
		return stream.Recv()
	}

	// This process is the caller, attested by its uid. No entry yet: no
	// identity. An entry whose ID is not a delegate: still refused.
	if err := wantStatus(fetchJWT(), codes.PermissionDenied, "no identity issued"); err != nil {
		t.Fatalf("caller with no identity: %v", err)
	}
	if _, err := subscribe(&pb.SubscribeToX509SVIDsRequest{Selectors: workload}); wantStatus(err, codes.PermissionDenied, "no identity issued") != nil {
		t.Fatalf("caller with no identity, X509-SVID stream: %v", err)
	}
	n.entry(t, &api.Entry{SpiffeId: "spiffe://example.org/bystander", Selectors: []*api.Selector{sel("unix", "uid:"+uid)}})
	eventually(t, "caller whose identity is not a delegate", func() error {
		return wantStatus(fetchJWT(), codes.PermissionDenied, "caller not configured as an authorized delegate")
	})
	for name, open := range map[string]func() error{
		"X.509 bundles": func() error {
			s, err := n.client.SubscribeToX509Bundles(ctx, &pb.SubscribeToX509BundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
		"JWT bundles": func() error {
			s, err := n.client.SubscribeToJWTBundles(ctx, &pb.SubscribeToJWTBundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		},
	} {
		if err := wantStatus(open(), codes.PermissionDenied, "authorized delegate"); err != nil {
			t.Fatalf("%s for a caller that is not a delegate: %v", name, err)
		}
	}

	// The caller becomes a delegate. A workload without entries yet: an
	// empty response at once, then its SVIDs when they come.
	delegateEntry := n.entry(t, &api.Entry{SpiffeId: delegateID, Selectors: []*api.Selector{sel("unix", "uid:"+uid)}})
	var svids pb.DelegatedIdentity_SubscribeToX509SVIDsClient
	eventually(t, "delegate's X509-SVID stream", func() error {
		var err error
		if svids, err = n.client.SubscribeToX509SVIDs(ctx, &pb.SubscribeToX509SVIDsRequest{Selectors: workload}); err != nil {
			return err
		}
		first, err := svids.Recv()
		if err == nil && len(first.X509Svids) != 0 {
			err = fmt.Errorf("first response for a workload with no entry: %v, want none", svidIDs(first))
		}
		return err
	})
	if _, err := n.server.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: federatedBundle(t)}); err != nil {
		t.Fatal(err)
	}
	n.entry(t, &api.Entry{SpiffeId: "spiffe://example.org/web", Selectors: []*api.Selector{sel("unix", "uid:4242")},
		X509TtlSeconds: 6, Hint: "internal", FederatesWith: []string{partnerTD.Name()}})
	n.entry(t, &api.Entry{SpiffeId: "spiffe://example.org/web-admin", Selectors: []*api.Selector{sel("unix", "uid:4242")}, Admin: true})
	n.entry(t, &api.Entry{SpiffeId: "spiffe://example.org/other", Selectors: []*api.Selector{sel("unix", "uid:4242"), sel("unix", "gid:7")}})
	got := recvUntil(t, "X509-SVIDs of the workload", svids.Recv, func(r *pb.SubscribeToX509SVIDsResponse) bool {
		return slices.Contains(svidIDs(r), "spiffe://example.org/web")
	})
	web := got.X509Svids[slices.Index(svidIDs(got), "spiffe://example.org/web")]
	svid, err := x509svid.ParseRaw(slices.Concat(web.X509Svid.CertChain...), web.X509SvidKey)
	if err != nil {
		t.Fatalf("the SVID and its key do not parse as an X509-SVID: %v", err)
	}
	if web.X509Svid.Hint != "internal" || web.X509Svid.ExpiresAt != svid.Certificates[0].NotAfter.Unix() {
		t.Fatalf("hint %q, expires_at %d; want internal, %d", web.X509Svid.Hint, web.X509Svid.ExpiresAt, svid.Certificates[0].NotAfter.Unix())
	}
	if !slices.Equal(got.FederatesWith, []string{"spiffe://partner.test"}) {
		t.Fatalf("federates_with %v, want [spiffe://partner.test]", got.FederatesWith)
	}

	// Rotation (6 s TTL) reaches the open stream. By then every entry is
	// signed: the workload gets /web alone, not the admin entry's SVID nor
	// /other's, which needs a selector it was not named with.
	rotated := recvUntil(t, "rotated SVID", svids.Recv, func(r *pb.SubscribeToX509SVIDsResponse) bool {
		i := slices.Index(svidIDs(r), "spiffe://example.org/web")
		if i < 0 {
			return false
		}
		cert, err := x509.ParseCertificate(r.X509Svids[i].X509Svid.CertChain[0])
		return err == nil && cert.SerialNumber.Cmp(svid.Certificates[0].SerialNumber) != 0 && cert.NotAfter.After(svid.Certificates[0].NotAfter)
	})
	if ids := svidIDs(rotated); !slices.Equal(ids, []string{"spiffe://example.org/web"}) {
		t.Fatalf("SVIDs %v, want spiffe://example.org/web alone", ids)
	}

	// Bundles: the agent's own and the federated one, which verify the SVID.
	xb, err := n.client.SubscribeToX509Bundles(ctx, &pb.SubscribeToX509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundles := recvUntil(t, "X.509 bundles", xb.Recv, func(r *pb.SubscribeToX509BundlesResponse) bool { return len(r.CaCertificates) == 2 })
	own, err := x509.ParseCertificates(bundles.CaCertificates[td.IDString()])
	if err != nil || len(own) == 0 {
		t.Fatalf("own X.509 bundle under %s: %v", td.IDString(), err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, x509bundle.FromX509Authorities(td, own)); err != nil {
		t.Fatalf("the SVID does not verify against the streamed bundle: %v", err)
	}
	if _, err := x509.ParseCertificates(bundles.CaCertificates[partnerTD.IDString()]); err != nil {
		t.Fatalf("federated X.509 bundle: %v", err)
	}

	// JWT-SVIDs, validated by go-spiffe with the streamed JWT bundles.
	jb, err := n.client.SubscribeToJWTBundles(ctx, &pb.SubscribeToJWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	jwtBundles := recvUntil(t, "JWT bundles", jb.Recv, func(r *pb.SubscribeToJWTBundlesResponse) bool { return len(r.Bundles) == 2 })
	set := jwtbundle.NewSet()
	for _, d := range []spiffeid.TrustDomain{td, partnerTD} {
		b, err := jwtbundle.Parse(d, jwtBundles.Bundles[d.IDString()])
		if err != nil {
			t.Fatalf("JWT bundle of %s: %v", d, err)
		}
		set.Add(b)
	}
	if !set.Has(partnerTD) || !mustBundle(t, set, partnerTD).HasJWTAuthority("partner-1") {
		t.Fatal("the federated JWT key is missing from the JWT bundles")
	}
	jwts, err := n.client.FetchJWTSVIDs(ctx, &pb.FetchJWTSVIDsRequest{Audience: []string{"db"}, Selectors: workload})
	if err != nil {
		t.Fatal(err)
	}
	var jwtIDs []string
	for _, j := range jwts.Svids {
		parsed, err := jwtsvid.ParseAndValidate(j.Token, set, []string{"db"})
		if err != nil {
			t.Fatalf("JWT-SVID does not validate: %v", err)
		}
		if id := "spiffe://" + j.Id.TrustDomain + j.Id.Path; parsed.ID.String() != id || j.ExpiresAt != parsed.Expiry.Unix() ||
			j.IssuedAt == 0 || j.IssuedAt > j.ExpiresAt {
			t.Fatalf("JWT-SVID fields %v do not describe its token (%s, exp %s)", j, parsed.ID, parsed.Expiry)
		}
		jwtIDs = append(jwtIDs, parsed.ID.String())
	}
	if !slices.Contains(jwtIDs, "spiffe://example.org/web") {
		t.Fatalf("JWT-SVIDs for %v, want spiffe://example.org/web among them", jwtIDs)
	}

	// A bundle change reaches both open bundle streams.
	renewed := federatedBundle(t)
	renewed.JwtAuthorities[0].KeyId = "partner-2"
	if _, err := n.server.Admin().SetFederatedBundle(ctx, &api.SetFederatedBundleRequest{Bundle: renewed}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, "renewed X.509 bundle", xb.Recv, func(r *pb.SubscribeToX509BundlesResponse) bool {
		return bytes.Equal(r.CaCertificates[partnerTD.IDString()], renewed.X509Authorities[0])
	})
	recvUntil(t, "renewed JWT bundle", jb.Recv, func(r *pb.SubscribeToJWTBundlesResponse) bool {
		b, err := jwtbundle.Parse(partnerTD, r.Bundles[partnerTD.IDString()])
		return err == nil && b.HasJWTAuthority("partner-2")
	})

	t.Run("by PID", func(t *testing.T) {
		sleepPath, err := exec.LookPath("sleep")
		if err != nil {
			t.Skip("no sleep binary")
		}
		sleepPath, _ = filepath.EvalSymlinks(sleepPath)
		n.entry(t, &api.Entry{SpiffeId: "spiffe://example.org/sleeper", Selectors: []*api.Selector{sel("unix", "sha256:"+fileSHA256(t, sleepPath))}})
		child := exec.Command(sleepPath, "60")
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { child.Process.Kill(); child.Wait() })
		pid := int32(child.Process.Pid)
		stream, err := n.client.SubscribeToX509SVIDs(ctx, &pb.SubscribeToX509SVIDsRequest{Pid: pid})
		if err != nil {
			t.Fatal(err)
		}
		recvUntil(t, "X509-SVIDs of the child by PID", stream.Recv, func(r *pb.SubscribeToX509SVIDsResponse) bool {
			return slices.Contains(svidIDs(r), "spiffe://example.org/sleeper")
		})
		jwts, err := n.client.FetchJWTSVIDs(ctx, &pb.FetchJWTSVIDsRequest{Audience: []string{"db"}, Pid: pid})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(jwts.Svids, func(j *types.JWTSVID) bool { return j.Id.Path == "/sleeper" }) {
			t.Fatalf("JWT-SVIDs by PID: %v, want /sleeper among them", jwts.Svids)
		}
		// The process exits: the stream ends, so a later process with the
		// same PID never receives the sleeper's SVIDs.
		child.Process.Kill()
		child.Wait()
		for {
			if _, err := stream.Recv(); err != nil {
				if err := wantStatus(err, codes.NotFound, "workload process exited"); err != nil {
					t.Fatalf("the stream by PID after the process exited: %v", err)
				}
				break
			}
		}

		// A process that has exited (and been reaped).
		gone := exec.Command("true")
		if err := gone.Run(); err != nil {
			t.Fatal(err)
		}
		_, err = subscribe(&pb.SubscribeToX509SVIDsRequest{Pid: int32(gone.Process.Pid)})
		if err := wantStatus(err, codes.NotFound, fmt.Sprintf("pid %d: no such process", gone.Process.Pid)); err != nil {
			t.Fatalf("subscribing by the PID of an exited process: %v", err)
		}
		_, err = n.client.FetchJWTSVIDs(ctx, &pb.FetchJWTSVIDsRequest{Audience: []string{"db"}, Pid: int32(gone.Process.Pid)})
		if err := wantStatus(err, codes.NotFound, "no such process"); err != nil {
			t.Fatalf("JWT-SVIDs by the PID of an exited process: %v", err)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  *pb.SubscribeToX509SVIDsRequest
			msg  string
		}{
			{"unknown selector type", &pb.SubscribeToX509SVIDsRequest{Selectors: []*types.Selector{{Type: "unixx", Value: "uid:1"}}}, `could not parse provided selectors: invalid selector "unixx:uid:1"`},
			{"empty selector value", &pb.SubscribeToX509SVIDsRequest{Selectors: []*types.Selector{{Type: "unix"}}}, "value is empty"},
			{"selectors and a pid", &pb.SubscribeToX509SVIDsRequest{Selectors: workload, Pid: 1}, "not both"},
			{"neither", &pb.SubscribeToX509SVIDsRequest{}, "by selectors or by pid"},
			{"negative pid", &pb.SubscribeToX509SVIDsRequest{Pid: -5}, "pid -5"},
		} {
			if _, err := subscribe(tc.req); wantStatus(err, codes.InvalidArgument, tc.msg) != nil {
				t.Errorf("%s: %v, want InvalidArgument containing %q", tc.name, err, tc.msg)
			}
		}
		_, err := n.client.FetchJWTSVIDs(ctx, &pb.FetchJWTSVIDsRequest{Selectors: workload})
		if err := wantStatus(err, codes.InvalidArgument, "audience must be specified"); err != nil {
			t.Errorf("JWT-SVIDs without an audience: %v", err)
		}
		_, err = n.client.FetchJWTSVIDs(ctx, &pb.FetchJWTSVIDsRequest{Audience: []string{"db"}, Selectors: []*types.Selector{{Type: "unix", Value: "uid:999"}}})
		if err := wantStatus(err, codes.PermissionDenied, "no identity issued"); err != nil {
			t.Errorf("JWT-SVIDs of a workload with no identity: %v", err)
		}
	})

	// The delegate's entry goes: its open streams end at once.
	if _, err := n.server.Admin().DeleteEntry(ctx, &api.DeleteEntryRequest{Id: delegateEntry.Id}); err != nil {
		t.Fatal(err)
	}
	if err := wantStatus(streamEnd(svids), codes.PermissionDenied, "caller not configured as an authorized delegate"); err != nil {
		t.Fatalf("X509-SVID stream after the delegate's entry was deleted: %v", err)
	}
	if err := wantStatus(streamEnd(xb), codes.PermissionDenied, "caller not configured as an authorized delegate"); err != nil {
		t.Fatalf("X.509 bundle stream after the delegate's entry was deleted: %v", err)
	}
}

// streamEnd reads a stream to its end and returns the status it ended with.
func streamEnd[T any](s grpc.ServerStreamingClient[T]) error {
	for {
		if _, err := s.Recv(); err != nil {
			return err
		}
	}
}

func mustBundle(t *testing.T, set *jwtbundle.Set, d spiffeid.TrustDomain) *jwtbundle.Bundle {
	t.Helper()
	b, ok := set.Get(d)
	if !ok {
		t.Fatalf("no JWT bundle for %s", d)
	}
	return b
}
