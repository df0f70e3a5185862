package apicli_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/agent/apicli"
	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/agent/workloadapi/workloadapitest"
	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/internal/selector"
)

type env struct {
	ca, fed  *workloadapitest.CA
	provider *workloadapitest.Provider
	addr     string
}

func st(ca, fed *workloadapitest.CA, svids ...*x509svid.SVID) *cache.WorkloadState {
	return &cache.WorkloadState{
		SVIDs:            svids,
		Bundle:           ca.X509Bundle(),
		FederatedBundles: []*x509bundle.Bundle{fed.X509Bundle()},
		JWTBundles:       []*jwtbundle.Bundle{ca.JWTBundle(), fed.JWTBundle()},
	}
}

// start serves a Workload API that gives the test process (by uid) the
// SVID spiffe://example.org/app, or nothing when match is another uid.
func start(t *testing.T, uid string) *env {
	t.Helper()
	ca := workloadapitest.NewCA(t, "example.org")
	fed := workloadapitest.NewCA(t, "partner.test")
	p := workloadapitest.NewProvider(ca, st(ca, fed, ca.X509SVID(t, "/app", "")), selector.Selector{Type: "unix", Value: "uid:" + uid})
	srv, err := workloadapi.New(workloadapi.Options{
		Provider: p,
		Attestor: attestor.NewUnix(attestor.UnixOptions{}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cli")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	lis, err := workloadapi.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.ServeListener(ctx, lis); close(done) }()
	t.Cleanup(func() { cancel(); <-done; os.RemoveAll(dir) })
	return &env{ca: ca, fed: fed, provider: p, addr: "unix://" + sock}
}

func me() string { return strconv.Itoa(os.Getuid()) }

func TestResolveAddr(t *testing.T) {
	wd, _ := os.Getwd()
	for _, tc := range []struct{ flag, env, want string }{
		{"/a.sock", "unix:///b.sock", "unix:///a.sock"},
		{"", "unix:///b.sock", "unix:///b.sock"},
		{"", "/b.sock", "unix:///b.sock"},
		{"rel.sock", "", "unix://" + filepath.Join(wd, "rel.sock")},
		{"", "", "unix:///run/signet/sockets/agent.sock"},
	} {
		got, err := apicli.ResolveAddr(tc.flag, tc.env)
		if err != nil || got != tc.want {
			t.Errorf("ResolveAddr(%q, %q) = %q, %v; want %q", tc.flag, tc.env, got, err, tc.want)
		}
	}
}

func TestFetchX509Writes(t *testing.T) {
	e := start(t, me())
	dir := filepath.Join(t.TempDir(), "out")
	var out bytes.Buffer
	if err := apicli.FetchX509(t.Context(), apicli.Options{Addr: e.addr, Out: &out}, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "SPIFFE ID:    spiffe://example.org/app") || !strings.Contains(out.String(), "Serial:") {
		t.Errorf("output lacks the SVID summary:\n%s", out.String())
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.0.pem"), filepath.Join(dir, "svid.0.key"))
	if err != nil {
		t.Fatalf("written SVID does not load: %v", err)
	}
	if svid.ID.String() != "spiffe://example.org/app" {
		t.Errorf("written SVID is %s", svid.ID)
	}
	if fi, err := os.Stat(filepath.Join(dir, "svid.0.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, %v; want 0600", fi.Mode(), err)
	}
	for name, td := range map[string]string{"bundle.0.pem": "example.org", "federated_bundle.0.0.pem": "partner.test"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		if block == nil {
			t.Fatalf("%s holds no PEM", name)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || cert.Subject.CommonName != td {
			t.Errorf("%s: root %q, %v; want %s", name, cert.Subject.CommonName, err, td)
		}
	}
}

func TestFetchJWTPrintsValidToken(t *testing.T) {
	e := start(t, me())
	var out bytes.Buffer
	if err := apicli.FetchJWT(t.Context(), apicli.Options{Addr: e.addr, Out: &out}, []string{"A"}, ""); err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out.String())
	svid, err := jwtsvid.ParseAndValidate(token, jwtbundle.NewSet(e.ca.JWTBundle()), []string{"A"})
	if err != nil {
		t.Fatalf("printed token %q does not validate: %v", token, err)
	}
	if svid.ID.String() != "spiffe://example.org/app" {
		t.Errorf("token for %s", svid.ID)
	}
	if err := apicli.FetchJWT(t.Context(), apicli.Options{Addr: e.addr, Out: io.Discard}, nil, ""); err == nil {
		t.Error("FetchJWT without audience succeeded")
	}
}

func TestHealthcheck(t *testing.T) {
	if err := apicli.Healthcheck(t.Context(), apicli.Options{Addr: start(t, me()).addr, Out: io.Discard}); err != nil {
		t.Errorf("agent with an identity: %v", err)
	}
	if err := apicli.Healthcheck(t.Context(), apicli.Options{Addr: start(t, "4294967294").addr, Out: io.Discard}); err != nil {
		t.Errorf("agent without an identity for the caller (PermissionDenied) must count as healthy: %v", err)
	}
	missing := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	err := apicli.Healthcheck(t.Context(), apicli.Options{Addr: missing, Out: io.Discard, Timeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "no socket there: is the agent running") || strings.Contains(err.Error(), "rpc error") {
		t.Errorf("healthcheck of a missing socket: %v, want a plain hint", err)
	}
}

// A caller without an identity is told what to do about it.
func TestFetchWithoutIdentityExplains(t *testing.T) {
	err := apicli.FetchX509(t.Context(), apicli.Options{Addr: start(t, "4294967294").addr, Out: io.Discard, Timeout: 5 * time.Second}, "")
	if err == nil || !strings.Contains(err.Error(), "register an entry whose selectors match this process") || strings.Contains(err.Error(), "rpc error") {
		t.Errorf("fetch without an identity: %v", err)
	}
}

func TestWatchPrintsEachUpdate(t *testing.T) {
	e := start(t, me())
	out := &logtest.Buffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- apicli.Watch(ctx, apicli.Options{Addr: e.addr, Out: out}) }()
	out.WaitFor(t, "spiffe://example.org/app\n", 30*time.Second)
	e.provider.SetState(st(e.ca, e.fed, e.ca.X509SVID(t, "/app", ""), e.ca.X509SVID(t, "/second", "h2")))
	out.WaitFor(t, "spiffe://example.org/second", 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch after cancel: %v", err)
	}
}
