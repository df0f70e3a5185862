package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/server/api"
)

// signalRenewals is a client interceptor that reports each RenewAgent call
// the server answered.
func signalRenewals(renewed chan<- struct{}) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == api.AgentService_RenewAgent_FullMethodName && err == nil {
			renewed <- struct{}{}
		}
		return err
	}
}

// replacementRoot is a self-signed root with root's subject and another
// key, as a CA prepared for a forced rotation.
func replacementRoot(t *testing.T, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	cert := selfSignedRoot(t, root.Subject)
	if !bytes.Equal(cert.RawSubject, root.RawSubject) {
		t.Fatal("test setup: the replacement root's subject differs")
	}
	return cert
}

func selfSignedRoot(tb testing.TB, subject pkix.Name) *x509.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: subject, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// The agent SVID issued under a tainted root is renewed at once, through
// Run's renewal path, and once only; a taint of another root (even one
// with the same subject) leaves it alone.
func TestTaintedIssuerRenewsAgentSVIDOnce(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	renewed := make(chan struct{}, 4)
	c := newClient(t, s, t.TempDir(), static(s.token(t, "spiffe://example.org/agent/node1")), func(cfg *Config) {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithUnaryInterceptor(signalRenewals(renewed)))
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first, _ := c.GetX509SVID()
	xb, err := c.GetX509BundleForTrustDomain(td)
	if err != nil {
		t.Fatal(err)
	}
	if len(xb.X509Authorities()) != 1 {
		t.Fatalf("the server's bundle has %d roots, want 1", len(xb.X509Authorities()))
	}
	root := xb.X509Authorities()[0]
	bundle := spiffebundle.FromX509Authorities(td, xb.X509Authorities())
	renewalRequested := func() bool {
		select {
		case <-c.kick:
			return true
		default:
			return false
		}
	}

	for name, taint := range map[string]Taint{
		"no taint":                         {},
		"replacement root, same subject":   {X509Authorities: []*x509.Certificate{replacementRoot(t, root)}},
		"tainted JWT key, X.509 untainted": {JWTKeyIDs: []string{"k"}},
	} {
		c.UpdateBundle(bundle, taint)
		if renewalRequested() {
			t.Fatalf("%s: renewal requested for an agent SVID whose root is not tainted", name)
		}
	}

	// Tainted: Run renews at once rather than at half the SVID's lifetime.
	taint := Taint{X509Authorities: []*x509.Certificate{root}}
	c.UpdateBundle(bundle, taint)
	if len(c.kick) != 1 {
		t.Fatal("no renewal requested for the agent SVID issued under a tainted root")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	select {
	case <-renewed:
	case <-time.After(20 * time.Second):
		t.Fatal("the agent SVID issued under a tainted root was not renewed")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	second, _ := c.GetX509SVID()
	if second.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) == 0 {
		t.Fatal("renewal kept the same agent SVID")
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync with the renewed SVID: %v", err)
	}

	// This server knows nothing of the taint and signed under the same
	// root again: the next bundles do not ask again.
	for range 2 {
		c.UpdateBundle(bundle, taint)
		if renewalRequested() {
			t.Fatal("renewal requested again for the same tainted root")
		}
	}
}

// FuzzOwnBundleFromProto feeds encoded bundles with taint marks: a bundle
// that converts keeps every tainted root and exactly the tainted kids.
func FuzzOwnBundleFromProto(f *testing.F) {
	root := selfSignedRoot(f, pkix.Name{CommonName: "seed CA"})
	spki, err := x509.MarshalPKIXPublicKey(root.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range []*api.Bundle{
		{TrustDomain: td.Name(), X509Authorities: [][]byte{root.Raw}, TaintedX509Authorities: [][]byte{root.Raw},
			JwtAuthorities: []*api.JWTKey{{KeyId: "old", PublicKey: spki, Tainted: true}, {KeyId: "new", PublicKey: spki}}},
		{TrustDomain: td.Name(), X509Authorities: [][]byte{root.Raw}, TaintedX509Authorities: [][]byte{[]byte("not DER")}},
		{TrustDomain: td.Name()},
	} {
		seed, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var b api.Bundle
		if proto.Unmarshal(in, &b) != nil {
			return
		}
		_, taint, err := OwnBundleFromProto(&b)
		if err != nil {
			return
		}
		if len(taint.X509Authorities) != len(b.TaintedX509Authorities) {
			t.Fatalf("%d tainted roots, want %d", len(taint.X509Authorities), len(b.TaintedX509Authorities))
		}
		for i, c := range taint.X509Authorities {
			if !bytes.Equal(c.Raw, b.TaintedX509Authorities[i]) {
				t.Fatalf("tainted root %d is not the one sent", i)
			}
			taint.IssuerOf([]*x509.Certificate{c}) // must not panic
		}
		var kids []string
		for _, k := range b.JwtAuthorities {
			if k.Tainted && k.KeyId != "" {
				kids = append(kids, k.KeyId)
			}
		}
		if !slices.Equal(taint.JWTKeyIDs, kids) {
			t.Fatalf("tainted kids %q, want %q", taint.JWTKeyIDs, kids)
		}
	})
}
