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
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
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
	// chain is what an SVID this CA issues carries after its leaf: the
	// intermediates up to, not including, the root.
	chain []*x509.Certificate
}

func newTestCA(t testing.TB, td string) *testCA {
	t.Helper()
	return newTestCAUntil(t, td, time.Now().Add(24*time.Hour))
}

// newTestCAUntil is a root CA valid until notAfter (which may be past).
func newTestCAUntil(t testing.TB, td string, notAfter time.Time) *testCA {
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
		NotBefore:             notAfter.Add(-48 * time.Hour),
		NotAfter:              notAfter,
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

// intermediate returns an intermediate CA signed by ca, valid until
// notAfter (which may be past: an expired intermediate still signs).
func (ca *testCA) intermediate(t testing.TB, notAfter time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"test"}, CommonName: "test intermediate " + ca.td.Name()},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             notAfter.Add(-48 * time.Hour),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: ca.td, cert: cert, key: key, jwtKey: ca.jwtKey, chain: append([]*x509.Certificate{cert}, ca.chain...)}
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
	return &x509svid.SVID{ID: sid, Certificates: append([]*x509.Certificate{cert}, ca.chain...), PrivateKey: key}
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

	// issuer signs rotated SVIDs (default ca; an intermediate of ca gives
	// SVIDs a chain).
	issuer *testCA
	// extraRoots are added to the own trust domain's bundle; federated
	// CAs' roots are sent as federated bundles.
	extraRoots []*x509.Certificate
	federated  []*testCA
	// jwtTTL is the lifetime of issued JWT-SVIDs (default 5 min).
	jwtTTL time.Duration
	// jwtReuse makes the agent answer with the token it issued before for
	// the same ID and audience until that expires, as an agent caching
	// longer than the helper waits would.
	jwtReuse bool

	mu      sync.Mutex
	svid    *x509svid.SVID
	others  []*x509svid.SVID // sent after svid, each with its Hint
	deny    bool             // answer PermissionDenied (no entry yet)
	changed chan struct{}
	jwts    int // JWT-SVIDs issued
	// jwtCalls counts FetchJWTSVID calls answered; issued holds the tokens
	// kept for jwtReuse, by ID and audience.
	jwtCalls  int
	jwtReused int
	issued    map[string]*jwtsvid.SVID
}

func newFakeAgent(t testing.TB, ca *testCA, id string) *fakeAgent {
	dir, err := os.MkdirTemp("", "wl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return &fakeAgent{t: t, ca: ca, issuer: ca, id: id, socket: filepath.Join(dir, "agent.sock"), changed: make(chan struct{}), jwtTTL: 5 * time.Minute}
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
	s := a.issuer.svid(a.t, a.id, ttl)
	a.setSVIDs(s)
	return s
}

// setSVIDs serves svids (the first is the default) and pushes them.
func (a *fakeAgent) setSVIDs(svids ...*x509svid.SVID) {
	a.mu.Lock()
	a.svid, a.others = svids[0], svids[1:]
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

// jwtsIssued is how many JWT-SVIDs the agent has issued so far.
func (a *fakeAgent) jwtsIssued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.jwts
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
	bundle := a.ca.cert.Raw
	for _, c := range a.extraRoots {
		bundle = append(slices.Clip(bundle), c.Raw...)
	}
	federated := map[string][]byte{}
	for _, f := range a.federated {
		federated["spiffe://"+f.td.Name()] = f.cert.Raw
	}
	for {
		a.mu.Lock()
		s, others, deny, changed := a.svid, a.others, a.deny, a.changed
		a.mu.Unlock()
		if deny || s == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		resp := &workload.X509SVIDResponse{FederatedBundles: federated}
		for _, s := range append([]*x509svid.SVID{s}, others...) {
			key, _ := x509.MarshalPKCS8PrivateKey(s.PrivateKey)
			var chain []byte
			for _, c := range s.Certificates {
				chain = append(chain, c.Raw...)
			}
			resp.Svids = append(resp.Svids, &workload.X509SVID{
				SpiffeId: s.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: bundle, Hint: s.Hint,
			})
		}
		if err := stream.Send(resp); err != nil {
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
	svids := append([]*x509svid.SVID{a.svid}, a.others...)
	if !deny {
		a.jwts += len(svids)
	}
	a.mu.Unlock()
	if deny {
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	resp := &workload.JWTSVIDResponse{}
	for _, s := range svids {
		id := s.ID.String()
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: id, Svid: a.jwtFor(id, req.Audience), Hint: s.Hint})
	}
	a.mu.Lock()
	a.jwtCalls++
	a.mu.Unlock()
	return resp, nil
}

func (a *fakeAgent) jwtFor(id string, aud []string) string {
	if !a.jwtReuse {
		return a.ca.jwt(a.t, id, aud, a.jwtTTL)
	}
	key := id + "\x00" + strings.Join(aud, "\x00")
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.issued[key]; s != nil && time.Now().Before(s.Expiry) {
		a.jwtReused++
		return s.Marshal()
	}
	tok := a.ca.jwt(a.t, id, aud, a.jwtTTL)
	s, err := jwtsvid.ParseInsecure(tok, aud)
	if err != nil {
		a.t.Error(err)
		return tok
	}
	if a.issued == nil {
		a.issued = map[string]*jwtsvid.SVID{}
	}
	a.issued[key] = s
	return tok
}

// jwtFetches is how many FetchJWTSVID calls the agent has answered, and
// how many tokens it served again (jwtReuse).
func (a *fakeAgent) jwtFetches() (calls, reused int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.jwtCalls, a.jwtReused
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
