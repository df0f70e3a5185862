package workloadapi_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/agent/workloadapi/workloadapitest"
	"github.com/signetid/signet/internal/selector"
)

// env is a running server with a test provider, its socket and its counters.
type env struct {
	ca, fed      *workloadapitest.CA
	provider     *workloadapitest.Provider
	addr         string // unix:///path
	socket       string
	attestations *atomic.Int32
	reg          *prometheus.Registry
	stop         func() // cancels Serve and waits for it
}

func mySelector(t testing.TB) selector.Selector {
	return selector.Selector{Type: "unix", Value: "uid:" + strconv.Itoa(os.Getuid())}
}

// socketDir returns a short temp dir: Unix socket paths are limited to ~108 bytes.
func socketDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func state(t testing.TB, ca, fed *workloadapitest.CA, svids ...*x509svid.SVID) *cache.WorkloadState {
	return &cache.WorkloadState{
		SVIDs:            svids,
		Bundle:           ca.X509Bundle(),
		FederatedBundles: []*x509bundle.Bundle{fed.X509Bundle(), ca.X509Bundle()}, // own TD must be dropped
		JWTBundles:       []*jwtbundle.Bundle{ca.JWTBundle(), fed.JWTBundle()},
	}
}

func start(t testing.TB, match ...selector.Selector) *env {
	t.Helper()
	return startWithSDS(t, workloadapi.SDSOptions{}, match...)
}

func startWithSDS(t testing.TB, sds workloadapi.SDSOptions, match ...selector.Selector) *env {
	t.Helper()
	ca := workloadapitest.NewCA(t, "example.org")
	fed := workloadapitest.NewCA(t, "partner.test")
	if match == nil {
		match = []selector.Selector{mySelector(t)}
	}
	st := state(t, ca, fed, ca.X509SVID(t, "/app", "internal"), ca.X509SVID(t, "/app-ext", "external"), ca.X509SVID(t, "/dup", "internal"))
	p := workloadapitest.NewProvider(ca, st, match...)
	var n atomic.Int32
	unix := attestor.NewUnix(attestor.UnixOptions{})
	counting := attestor.Func(func(ctx context.Context, pid int32) ([]selector.Selector, error) {
		n.Add(1)
		return unix.Attest(ctx, pid)
	})
	reg := prometheus.NewRegistry()
	srv, err := workloadapi.New(workloadapi.Options{
		Provider: p,
		Attestor: counting,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Metrics:  reg,
		SDS:      sds,
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(socketDir(t), "sub", "agent.sock")
	lis, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, lis) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	}
	t.Cleanup(stop)
	return &env{ca: ca, fed: fed, provider: p, addr: "unix://" + sock, socket: sock, attestations: &n, reg: reg, stop: stop}
}

func (e *env) client(t testing.TB) *spiffewl.Client {
	t.Helper()
	c, err := spiffewl.New(t.Context(), spiffewl.WithAddr(e.addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// raw returns the generated client, for requests go-spiffe would not send.
func (e *env) raw(t testing.TB) workload.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func TestSecurityHeaderRequired(t *testing.T) {
	e := start(t)
	raw := e.raw(t)
	stream, err := raw.FetchX509SVID(t.Context(), &workload.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "FetchX509SVID", err, codes.InvalidArgument)
	_, err = raw.FetchJWTSVID(t.Context(), &workload.JWTSVIDRequest{Audience: []string{"a"}})
	wantCode(t, "FetchJWTSVID", err, codes.InvalidArgument)
	_, err = raw.ValidateJWTSVID(t.Context(), &workload.ValidateJWTSVIDRequest{Audience: "a", Svid: "x"})
	wantCode(t, "ValidateJWTSVID", err, codes.InvalidArgument)
	// A wrong value is as bad as none.
	ctx := metadata.AppendToOutgoingContext(t.Context(), "workload.spiffe.io", "yes")
	_, err = raw.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
	wantCode(t, "FetchJWTSVID with header 'yes'", err, codes.InvalidArgument)
	if n := e.attestations.Load(); n != 0 {
		t.Errorf("%d attestations for requests without the header, want 0", n)
	}
}

func TestNoIdentityIsPermissionDenied(t *testing.T) {
	e := start(t, selector.Selector{Type: "unix", Value: "uid:4294967294"})
	c := e.client(t)
	_, err := c.FetchX509SVID(t.Context())
	wantCode(t, "FetchX509SVID", err, codes.PermissionDenied)
	_, err = c.FetchX509Bundles(t.Context())
	wantCode(t, "FetchX509Bundles", err, codes.PermissionDenied)
	_, err = c.FetchJWTBundles(t.Context())
	wantCode(t, "FetchJWTBundles", err, codes.PermissionDenied)
	_, err = c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "a"})
	wantCode(t, "FetchJWTSVID", err, codes.PermissionDenied)
}

func TestFetchX509SVIDResponse(t *testing.T) {
	e := start(t)
	stream, err := e.raw(t).FetchX509SVID(withHeader(t.Context()), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// The provider never changes: this first message is sent unprompted.
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("first message: %v", err)
	}
	var ids []string
	for _, s := range resp.Svids {
		ids = append(ids, s.SpiffeId)
		certs, err := x509.ParseCertificates(s.X509Svid)
		if err != nil || len(certs) != 1 {
			t.Fatalf("x509_svid of %s: %d certs, %v", s.SpiffeId, len(certs), err)
		}
		if _, err := x509.ParsePKCS8PrivateKey(s.X509SvidKey); err != nil {
			t.Errorf("x509_svid_key of %s is not PKCS#8: %v", s.SpiffeId, err)
		}
		roots, err := x509.ParseCertificates(s.Bundle)
		if err != nil || len(roots) != 1 || !roots[0].IsCA {
			t.Errorf("bundle of %s: %d certs, %v", s.SpiffeId, len(roots), err)
		}
	}
	// Default first, and only the first SVID with hint "internal".
	want := []string{"spiffe://example.org/app", "spiffe://example.org/app-ext"}
	if len(ids) != len(want) || ids[0] != want[0] || ids[1] != want[1] {
		t.Errorf("SVIDs %v, want %v", ids, want)
	}
	if len(resp.FederatedBundles) != 1 || resp.FederatedBundles["spiffe://partner.test"] == nil {
		t.Errorf("federated bundles for %v, want only spiffe://partner.test", keys(resp.FederatedBundles))
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestGoSpiffeClientSeesSVIDsAndFederatedBundles(t *testing.T) {
	e := start(t)
	x509ctx, err := e.client(t).FetchX509Context(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := x509ctx.DefaultSVID().ID.String(); got != "spiffe://example.org/app" {
		t.Errorf("default SVID %s", got)
	}
	for _, td := range []string{"example.org", "partner.test"} {
		if !x509ctx.Bundles.Has(spiffeid.RequireTrustDomainFromString(td)) {
			t.Errorf("X.509 context lacks the %s bundle", td)
		}
	}
	bundles, err := e.client(t).FetchX509Bundles(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if bundles.Len() != 2 {
		t.Errorf("FetchX509Bundles: %d bundles, want 2", bundles.Len())
	}
	jwtBundles, err := e.client(t).FetchJWTBundles(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fb, ok := jwtBundles.Get(spiffeid.RequireTrustDomainFromString("partner.test"))
	if !ok || !fb.HasJWTAuthority("kid-partner.test") {
		t.Errorf("FetchJWTBundles lacks the partner.test key")
	}
}

func TestX509SourceGetsPushedUpdate(t *testing.T) {
	e := start(t)
	src, err := spiffewl.NewX509Source(t.Context(), spiffewl.WithClientOptions(spiffewl.WithAddr(e.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	updated := src.Updated()
	rotated := e.ca.X509SVID(t, "/app", "internal")
	e.provider.SetState(state(t, e.ca, e.fed, rotated))
	select {
	case <-updated:
	case <-time.After(30 * time.Second):
		t.Fatal("X509Source got no update after the provider pushed one")
	}
	got, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got.Certificates[0].SerialNumber.Cmp(rotated.Certificates[0].SerialNumber) != 0 ||
		got.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Errorf("source holds serial %v, want the rotated %v", got.Certificates[0].SerialNumber, rotated.Certificates[0].SerialNumber)
	}
	if n := e.attestations.Load(); n != 1 {
		t.Errorf("%d attestations, want 1: the update must arrive on the open stream", n)
	}
}

func TestStreamEndsWithPermissionDeniedWhenIdentityGoes(t *testing.T) {
	e := start(t)
	stream, err := e.raw(t).FetchX509SVID(withHeader(t.Context()), &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	e.provider.SetState(state(t, e.ca, e.fed))
	_, err = stream.Recv()
	wantCode(t, "Recv after the identity was removed", err, codes.PermissionDenied)
}

func TestShutdownEndsStreamsUnavailableAndRemovesSocket(t *testing.T) {
	e := start(t)
	stream, err := e.raw(t).FetchJWTBundles(withHeader(t.Context()), &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	e.stop()
	_, err = stream.Recv()
	wantCode(t, "Recv after shutdown", err, codes.Unavailable)
	if _, err := os.Lstat(e.socket); !os.IsNotExist(err) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
	if n := e.provider.Subscribers(); n != 0 {
		t.Errorf("%d subscriptions left open", n)
	}
}

func TestJWTSVIDAudience(t *testing.T) {
	e := start(t)
	c := e.client(t)
	svid, err := c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "A"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ValidateJWTSVID(t.Context(), svid.Marshal(), "A")
	if err != nil {
		t.Fatalf("validate for A: %v", err)
	}
	if got.ID.String() != "spiffe://example.org/app" || got.Claims["sub"] != "spiffe://example.org/app" {
		t.Errorf("validated ID %s, claims %v", got.ID, got.Claims)
	}
	_, err = c.ValidateJWTSVID(t.Context(), svid.Marshal(), "B")
	wantCode(t, "validate for B", err, codes.InvalidArgument)

	// An explicit ID picks that SVID; one the caller does not have is refused.
	ext, err := c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "A", Subject: spiffeid.RequireFromString("spiffe://example.org/app-ext")})
	if err != nil || ext.ID.String() != "spiffe://example.org/app-ext" {
		t.Errorf("FetchJWTSVID for app-ext: %v, %v", ext, err)
	}
	_, err = c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "A", Subject: spiffeid.RequireFromString("spiffe://example.org/other")})
	wantCode(t, "FetchJWTSVID for an ID not held", err, codes.PermissionDenied)

	raw := e.raw(t)
	_, err = raw.FetchJWTSVID(withHeader(t.Context()), &workload.JWTSVIDRequest{})
	wantCode(t, "FetchJWTSVID without audience", err, codes.InvalidArgument)
	_, err = raw.ValidateJWTSVID(withHeader(t.Context()), &workload.ValidateJWTSVIDRequest{Audience: "A"})
	wantCode(t, "ValidateJWTSVID without svid", err, codes.InvalidArgument)
}

func TestWITIsUnimplemented(t *testing.T) {
	e := start(t)
	stream, err := e.raw(t).FetchWITSVID(withHeader(t.Context()), &workload.WITSVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "FetchWITSVID", err, codes.Unimplemented)
}

func TestMetrics(t *testing.T) {
	e := start(t)
	if _, err := e.client(t).FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "A"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.raw(t).FetchJWTSVID(t.Context(), &workload.JWTSVIDRequest{Audience: []string{"A"}})
	wantCode(t, "FetchJWTSVID without header", err, codes.InvalidArgument)
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]float64{}
	var attestations uint64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case workloadapi.MetricCalls:
				var method, code string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "method":
						method = l.GetValue()
					case "code":
						code = l.GetValue()
					}
				}
				calls[method+"/"+code] = m.GetCounter().GetValue()
			case workloadapi.MetricAttestation:
				attestations += m.GetHistogram().GetSampleCount()
			}
		}
	}
	if calls["FetchJWTSVID/OK"] != 1 || calls["FetchJWTSVID/InvalidArgument"] != 1 {
		t.Errorf("call counters %v, want one OK and one InvalidArgument FetchJWTSVID", calls)
	}
	if attestations != 1 {
		t.Errorf("attestation histogram holds %d samples, want 1", attestations)
	}
}

func TestListen(t *testing.T) {
	dir := socketDir(t)
	sock := filepath.Join(dir, "new", "agent.sock")
	lis, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("socket mode %v, %v; want 0777", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(sock)); err != nil || di.Mode().Perm() != 0o755&^umask(t) {
		t.Errorf("socket dir mode %v, %v", di.Mode(), err)
	}
	// A live socket is not taken over.
	if _, err := workloadapi.Listen(sock); err == nil {
		t.Error("Listen took over a socket in use")
	}
	// A stale one (no listener) is replaced.
	lis.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	lis.Close()
	lis, err = workloadapi.Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	lis.Close()
	// A file that is not a socket is left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := workloadapi.Listen(file); err == nil {
		t.Error("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(file); !bytes.Equal(b, []byte("keep")) {
		t.Error("regular file was modified")
	}
}
