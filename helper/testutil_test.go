package helper

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testCA is a throwaway CA issuing real X509-SVIDs and JWT-SVIDs.
type testCA struct {
	td     spiffeid.TrustDomain
	cert   *x509.Certificate
	key    crypto.Signer
	jwtKey *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tdID := spiffeid.RequireTrustDomainFromString(td)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"test"}, CommonName: "test CA " + td},
		URIs:                  []*url.URL{tdID.ID().URL()},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	jk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &testCA{td: tdID, cert: cert, key: key, jwtKey: jk}
}

// svid issues an X509-SVID for id valid for ttl.
func (ca *testCA) svid(t testing.TB, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	sid := spiffeid.RequireFromString(id)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Signet test"}},
		URIs:         []*url.URL{sid.URL()},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &x509svid.SVID{ID: sid, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func (ca *testCA) bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

func (ca *testCA) jwtBundle() *jwtbundle.Bundle {
	return jwtbundle.FromJWTAuthorities(ca.td, map[string]crypto.PublicKey{"k1": ca.jwtKey.Public()})
}

func (ca *testCA) jwt(t testing.TB, sub string, aud []string, ttl time.Duration) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: ca.jwtKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Audience: aud, Expiry: jwt.NewNumericDate(now.Add(ttl)), IssuedAt: jwt.NewNumericDate(now)}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// fakeAgent is a real gRPC Workload API server on a Unix socket serving
// material the test sets; it stands in for an agent in helper-package tests.
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	t      testing.TB
	ca     *testCA
	id     string
	socket string
	srv    *grpc.Server

	mu      sync.Mutex
	svid    *x509svid.SVID
	deny    bool // answer PermissionDenied (no entry yet)
	changed chan struct{}
}

func newFakeAgent(t testing.TB, ca *testCA, id string) *fakeAgent {
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &fakeAgent{t: t, ca: ca, id: id, socket: filepath.Join(dir, "agent.sock"), changed: make(chan struct{})}
}

// start listens on the socket (which tests may start late).
func (a *fakeAgent) start() {
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		a.t.Fatal(err)
	}
	a.srv = grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(a.srv, a)
	go a.srv.Serve(ln)
	a.t.Cleanup(a.srv.Stop)
}

func (a *fakeAgent) addr() string { return "unix://" + a.socket }

// rotate issues a fresh SVID and pushes it to open streams.
func (a *fakeAgent) rotate(ttl time.Duration) *x509svid.SVID {
	s := a.ca.svid(a.t, a.id, ttl)
	a.mu.Lock()
	a.svid = s
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
	return s
}

func (a *fakeAgent) setDeny(deny bool) {
	a.mu.Lock()
	a.deny = deny
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "missing security header")
	}
	return nil
}

func (a *fakeAgent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	for {
		a.mu.Lock()
		s, deny, changed := a.svid, a.deny, a.changed
		a.mu.Unlock()
		if deny || s == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		key, _ := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
		var chain []byte
		for _, c := range s.Certificates {
			chain = append(chain, c.Raw...)
		}
		if err := stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId: s.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: a.ca.cert.Raw,
		}}}); err != nil {
			return err
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

func (a *fakeAgent) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	a.mu.Lock()
	deny := a.deny || a.svid == nil
	a.mu.Unlock()
	if deny {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return &workload.JWTSVIDResponse{Svids: []*workload.JWTSVID{{SpiffeId: a.id, Svid: a.ca.jwt(a.t, a.id, req.Audience, 5*time.Minute)}}}, nil
}

func (a *fakeAgent) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	if err := checkHeader(stream.Context()); err != nil {
		return err
	}
	doc, err := a.ca.jwtBundle().Marshal()
	if err != nil {
		return err
	}
	if err := stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{a.ca.td.Name(): doc}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}
