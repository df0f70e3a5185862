package apicli_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
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
	return &env{ca: ca, fed: fed, provider: p, addr: serve(t, p, attestor.NewUnix(attestor.UnixOptions{}))}
}

// serve serves the Workload API from p, its callers attested by att, and
// returns its address.
func serve(t *testing.T, p *workloadapitest.Provider, att attestor.Attestor) string {
	t.Helper()
	srv, err := workloadapi.New(workloadapi.Options{
		Provider: p,
		Attestor: att,
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
	return "unix://" + sock
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

// fetchToken fetches a JWT-SVID for audience with `fetch jwt`.
func fetchToken(t *testing.T, addr, audience string) string {
	t.Helper()
	var out bytes.Buffer
	if err := apicli.FetchJWT(t.Context(), apicli.Options{Addr: addr, Out: &out}, []string{audience}, ""); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out.String())
}

func TestValidateJWT(t *testing.T) {
	e := start(t, me())
	token := fetchToken(t, e.addr, "A")
	stranger, err := workloadapitest.NewCA(t, "example.org").JWTSVID(spiffeid.RequireFromString("spiffe://example.org/app"), []string{"A"}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, audience, token, stdin string
		// wantErr is part of the one-line reason; empty: valid.
		wantErr string
	}{
		{name: "valid", audience: "A", token: token},
		{name: "valid, from stdin", audience: "A", token: "-", stdin: token + "\n"},
		{name: "valid, from stdin without a newline", audience: "A", token: "-", stdin: token},
		{name: "wrong audience", audience: "B", token: token, wantErr: `expected audience in ["B"]`},
		{name: "wrong audience, from stdin", audience: "B", token: "-", stdin: token + "\n", wantErr: `expected audience in ["B"]`},
		{name: "garbage", audience: "A", token: "not-a-jwt", wantErr: "unable to parse JWT token"},
		{name: "signed by another key", audience: "A", token: stranger.Marshal(), wantErr: "invalid JWT-SVID: jwtsvid: unable to get claims from token"},
		{name: "tampered signature", audience: "A", token: token[:len(token)-4] + "AAAA", wantErr: "invalid JWT-SVID: jwtsvid: unable to get claims from token"},
		{name: "no audience", token: token, wantErr: "an audience is required"},
		{name: "no token", audience: "A", wantErr: "a token is required"},
		{name: "empty stdin", audience: "A", token: "-", stdin: "\n", wantErr: "no token on stdin"},
		{name: "two tokens on stdin", audience: "A", token: "-", stdin: token + "\n" + token + "\n", wantErr: "give one token"},
		{name: "too much on stdin", audience: "A", token: "-", stdin: strings.Repeat("x", 65<<10), wantErr: "more than 64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			o := apicli.Options{Addr: e.addr, Out: &out, In: strings.NewReader(tc.stdin)}
			err := apicli.ValidateJWT(t.Context(), o, tc.audience, tc.token)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "rpc error") {
					t.Errorf("the reason is not one plain line without the token: %q", err)
				}
				if out.Len() != 0 {
					t.Errorf("printed %q for a refused token", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkValidOutput(t, out.String(), "spiffe://example.org/app", "A")
		})
	}
}

// checkValidOutput checks what ValidateJWT prints for a valid token: the
// SPIFFE ID, and the claims as JSON with sorted keys.
func checkValidOutput(t *testing.T, out, id, audience string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || lines[0] != "SVID is valid." || lines[1] != "SPIFFE ID : "+id {
		t.Fatalf("output:\n%s", out)
	}
	raw, ok := strings.CutPrefix(lines[2], "Claims    : ")
	if !ok {
		t.Fatalf("no claims line:\n%s", out)
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(raw), &claims); err != nil {
		t.Fatalf("claims %s: %v", raw, err)
	}
	// aud is a string or a list of them (RFC 7519 4.1.3).
	if aud := claims["aud"]; claims["sub"] != id || (aud != audience && !reflect.DeepEqual(aud, []any{audience})) || claims["exp"] == nil || claims["iat"] == nil {
		t.Errorf("claims %s: want sub %s, aud %s, exp and iat", raw, id, audience)
	}
	if sorted, _ := json.Marshal(claims); string(sorted) != raw {
		t.Errorf("claims %s: keys not sorted (want %s)", raw, sorted)
	}
}

// A caller the agent gives no SVID may still validate: a verifier only
// needs the bundles (the own trust domain's).
func TestValidateJWTWithoutIdentity(t *testing.T) {
	e := start(t, me())
	token := fetchToken(t, e.addr, "A")
	other := workloadapitest.NewProvider(e.ca, e.provider.State(), selector.Selector{Type: "unix", Value: "uid:4294967294"})
	var out bytes.Buffer
	if err := apicli.ValidateJWT(t.Context(), apicli.Options{Addr: serve(t, other, attestor.NewUnix(attestor.UnixOptions{})), Out: &out}, "A", token); err != nil {
		t.Fatalf("caller without an SVID: %v", err)
	}
	checkValidOutput(t, out.String(), "spiffe://example.org/app", "A")
}

// A caller the agent cannot attest gets PermissionDenied, told plainly.
func TestValidateJWTUnattestedCaller(t *testing.T) {
	e := start(t, me())
	token := fetchToken(t, e.addr, "A")
	refuse := attestor.Func(func(context.Context, int32) ([]selector.Selector, error) { return nil, errors.New("no such process") })
	err := apicli.ValidateJWT(t.Context(), apicli.Options{Addr: serve(t, e.provider, refuse), Out: io.Discard}, "A", token)
	if err == nil || !strings.Contains(err.Error(), "could not attest the caller (PermissionDenied") || strings.Contains(err.Error(), token) {
		t.Errorf("unattested caller: %v", err)
	}
}

// TestFetchJSON: with JSON, fetch prints one document: the X509-SVIDs'
// IDs, serials and validity (never a key) and the bundles, or the tokens
// with their IDs, audiences and expiry.
func TestFetchJSON(t *testing.T) {
	e := start(t, me())
	var out bytes.Buffer
	if err := apicli.FetchX509(t.Context(), apicli.Options{Addr: e.addr, Out: &out, JSON: true}, ""); err != nil {
		t.Fatal(err)
	}
	var x struct {
		SVIDs []struct {
			SPIFFEID string `json:"spiffe_id"`
			Serial   string `json:"serial"`
			NotAfter int64  `json:"not_after"`
		}
		Bundles []struct {
			TrustDomain     string `json:"trust_domain"`
			X509Authorities int    `json:"x509_authorities"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &x); err != nil || len(x.SVIDs) != 1 || x.SVIDs[0].SPIFFEID != "spiffe://example.org/app" ||
		x.SVIDs[0].Serial == "" || x.SVIDs[0].NotAfter <= time.Now().Unix() || len(x.Bundles) != 2 {
		t.Fatalf("fetch x509 JSON %+v, %v:\n%s", x, err, out.String())
	}
	if strings.Contains(out.String(), "PRIVATE KEY") || strings.Contains(out.String(), "key") {
		t.Fatalf("fetch x509 JSON holds a key:\n%s", out.String())
	}
	out.Reset()
	if err := apicli.FetchJWT(t.Context(), apicli.Options{Addr: e.addr, Out: &out, JSON: true}, []string{"A", "B"}, ""); err != nil {
		t.Fatal(err)
	}
	var j struct {
		SVIDs []struct {
			SPIFFEID string   `json:"spiffe_id"`
			Audience []string `json:"audience"`
			Token    string   `json:"token"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &j); err != nil || len(j.SVIDs) != 1 || len(j.SVIDs[0].Audience) != 2 {
		t.Fatalf("fetch jwt JSON %+v, %v:\n%s", j, err, out.String())
	}
	if _, err := jwtsvid.ParseAndValidate(j.SVIDs[0].Token, jwtbundle.NewSet(e.ca.JWTBundle()), []string{"B"}); err != nil {
		t.Fatalf("the JSON's token does not validate: %v", err)
	}
}
