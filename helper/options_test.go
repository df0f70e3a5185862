package helper

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/internal/logtest"
)

// readCerts parses every CERTIFICATE block of a PEM file.
func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		certs = append(certs, c)
	}
	return certs
}

// names maps each cert to its name in known ("?" for a stranger).
func names(certs []*x509.Certificate, known map[string]*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		n := "?"
		for name, k := range known {
			if k.Equal(c) {
				n = name
			}
		}
		out = append(out, n)
	}
	return out
}

// runOnce runs the helper in init mode against agent and fails the test on
// an error.
func runOnce(t *testing.T, cfg Config) {
	t.Helper()
	cfg.DaemonMode = false
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if err := Run(context.Background(), cfg, WithLogger(quietLog())); err != nil {
		t.Fatal(err)
	}
}

// The chain/bundle layout options, through a real Workload API response:
// add_intermediates_to_bundle moves the intermediate from the SVID file to
// the bundle file; omit_expired leaves expired intermediates and roots
// (own and federated) out of both files, as spiffe-helper does, but never
// the leaf; include_federated_domains adds federated roots to the bundle.
func TestRunChainAndBundleOptions(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name         string
		interExpired bool
		intermed     bool
		fed          bool
		set          func(*Config)
		wantSVID     []string // in order, leaf first
		wantBundle   []string // as a set
	}{
		{name: "leaf only", set: func(*Config) {}, wantSVID: []string{"leaf"}, wantBundle: []string{"root", "oldroot"}},
		{name: "intermediate stays in the SVID file", intermed: true, set: func(*Config) {}, wantSVID: []string{"leaf", "inter"}, wantBundle: []string{"root", "oldroot"}},
		{name: "add_intermediates_to_bundle", intermed: true, set: func(c *Config) { c.AddIntermediatesToBundle = true }, wantSVID: []string{"leaf"}, wantBundle: []string{"root", "oldroot", "inter"}},
		{name: "expired certs kept without omit_expired", intermed: true, interExpired: true, set: func(*Config) {}, wantSVID: []string{"leaf", "inter"}, wantBundle: []string{"root", "oldroot"}},
		{name: "omit_expired drops expired intermediate and root", intermed: true, interExpired: true, set: func(c *Config) { c.OmitExpired = true }, wantSVID: []string{"leaf"}, wantBundle: []string{"root"}},
		{name: "omit_expired keeps valid intermediate", intermed: true, set: func(c *Config) { c.OmitExpired = true }, wantSVID: []string{"leaf", "inter"}, wantBundle: []string{"root"}},
		{name: "omit_expired with add_intermediates_to_bundle", intermed: true, interExpired: true, set: func(c *Config) { c.OmitExpired, c.AddIntermediatesToBundle = true, true }, wantSVID: []string{"leaf"}, wantBundle: []string{"root"}},
		{name: "federated roots left out by default", fed: true, set: func(*Config) {}, wantSVID: []string{"leaf"}, wantBundle: []string{"root", "oldroot"}},
		{name: "include_federated_domains", fed: true, set: func(c *Config) { c.IncludeFederatedDomains = true }, wantSVID: []string{"leaf"}, wantBundle: []string{"root", "oldroot", "fed", "fedold"}},
		{name: "include_federated_domains with omit_expired", fed: true, set: func(c *Config) { c.IncludeFederatedDomains, c.OmitExpired = true, true }, wantSVID: []string{"leaf"}, wantBundle: []string{"root", "fed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newTestCA(t, "example.org")
			oldRoot := newTestCAUntil(t, "example.org", now.Add(-time.Hour))
			agent := newFakeAgent(t, root, "spiffe://example.org/web")
			agent.extraRoots = []*x509.Certificate{oldRoot.cert}
			known := map[string]*x509.Certificate{"root": root.cert, "oldroot": oldRoot.cert}
			if tc.intermed {
				until := now.Add(12 * time.Hour)
				if tc.interExpired {
					until = now.Add(-time.Hour)
				}
				agent.issuer = root.intermediate(t, until)
				known["inter"] = agent.issuer.cert
			}
			if tc.fed {
				fed := newTestCA(t, "partner.test")
				fedOld := newTestCAUntil(t, "old-partner.test", now.Add(-time.Hour))
				agent.federated = []*testCA{fed, fedOld}
				known["fed"], known["fedold"] = fed.cert, fedOld.cert
			}
			agent.start()
			s := agent.rotate(time.Hour)
			known["leaf"] = s.Certificates[0]

			cfg := NewConfig()
			cfg.AgentAddress, cfg.CertDir = agent.addr(), t.TempDir()
			tc.set(&cfg)
			runOnce(t, cfg)

			if got := names(readCerts(t, filepath.Join(cfg.CertDir, "svid.pem")), known); !slices.Equal(got, tc.wantSVID) {
				t.Errorf("svid.pem holds %v, want %v", got, tc.wantSVID)
			}
			got := names(readCerts(t, filepath.Join(cfg.CertDir, "bundle.pem")), known)
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.wantBundle))
			if !slices.Equal(got, want) {
				t.Errorf("bundle.pem holds %v, want %v", got, want)
			}
		})
	}
}

// hintedAgent serves two identities: the default one hinted "external" and
// a second one hinted "internal".
func hintedAgent(t *testing.T) (*fakeAgent, *x509svid.SVID, *x509svid.SVID) {
	t.Helper()
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/web")
	agent.start()
	web := ca.svid(t, "spiffe://example.org/web", time.Hour)
	web.Hint = "external"
	db := ca.svid(t, "spiffe://example.org/db", time.Hour)
	db.Hint = "internal"
	agent.setSVIDs(web, db)
	return agent, web, db
}

// With two SVIDs, hint picks the one (X.509 and JWT) whose hint matches;
// no hint takes the default (the first).
func TestRunHintPicksSVID(t *testing.T) {
	for _, tc := range []struct{ hint, wantID string }{
		{"internal", "spiffe://example.org/db"},
		{"external", "spiffe://example.org/web"},
		{"", "spiffe://example.org/web"},
	} {
		t.Run("hint="+tc.hint, func(t *testing.T) {
			agent, _, _ := hintedAgent(t)
			cfg := NewConfig()
			cfg.AgentAddress, cfg.CertDir, cfg.Hint = agent.addr(), t.TempDir(), tc.hint
			cfg.JWTSVIDs = []JWTSVIDConfig{{Audience: "api", FileName: "api.jwt"}}
			runOnce(t, cfg)

			leaf := readCerts(t, filepath.Join(cfg.CertDir, "svid.pem"))[0]
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tc.wantID {
				t.Errorf("svid.pem is %v, want %s", leaf.URIs, tc.wantID)
			}
			tok, err := os.ReadFile(filepath.Join(cfg.CertDir, "api.jwt"))
			if err != nil {
				t.Fatal(err)
			}
			js, err := jwtsvid.ParseInsecure(string(tok), []string{"api"})
			if err != nil {
				t.Fatalf("api.jwt: %v", err)
			}
			if js.ID.String() != tc.wantID {
				t.Errorf("api.jwt is for %s, want %s", js.ID, tc.wantID)
			}
		})
	}
}

// A hint that matches nothing: init mode times out naming the hint; a daemon
// writes nothing and logs why.
func TestRunHintMatchingNothing(t *testing.T) {
	t.Run("init", func(t *testing.T) {
		agent, _, _ := hintedAgent(t)
		cfg := NewConfig()
		cfg.AgentAddress, cfg.CertDir, cfg.Hint, cfg.DaemonMode = agent.addr(), t.TempDir(), "nope", false
		cfg.Timeout = 500 * time.Millisecond
		err := Run(context.Background(), cfg, WithLogger(quietLog()))
		if err == nil || !strings.Contains(err.Error(), `hint "nope"`) || strings.Contains(err.Error(), "\n") {
			t.Errorf("err = %v, want a one-line timeout naming hint \"nope\"", err)
		}
		if _, err := os.Stat(filepath.Join(cfg.CertDir, "svid.pem")); err == nil {
			t.Error("svid.pem written without a matching SVID")
		}
	})
	t.Run("daemon", func(t *testing.T) {
		agent, _, _ := hintedAgent(t)
		cfg := NewConfig()
		cfg.AgentAddress, cfg.CertDir, cfg.Hint = agent.addr(), t.TempDir(), "nope"
		var logs logtest.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg, WithLogger(logs.Logger())) }()
		t.Cleanup(func() { cancel(); <-done })
		waitFor(t, func() bool { return strings.Contains(logs.String(), `no X509-SVID with hint \"nope\"`) })
		if _, err := os.Stat(filepath.Join(cfg.CertDir, "svid.pem")); err == nil {
			t.Error("svid.pem written without a matching SVID")
		}
	})
}

// SPIFFE_ENDPOINT_SOCKET names the socket as unix:///path or a bare path.
func TestRunSocketFromEnv(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/web")
	agent.start()
	agent.rotate(time.Hour)
	for _, v := range []string{agent.addr(), agent.socket} {
		t.Run(v, func(t *testing.T) {
			cfg := NewConfig()
			cfg.CertDir, cfg.DaemonMode, cfg.Timeout = t.TempDir(), false, 30*time.Second
			env := func(k string) string {
				if k == "SPIFFE_ENDPOINT_SOCKET" {
					return v
				}
				return ""
			}
			if err := Run(context.Background(), cfg, WithLogger(quietLog()), WithEnv(env)); err != nil {
				t.Fatal(err)
			}
			if len(readCerts(t, filepath.Join(cfg.CertDir, "svid.pem"))) == 0 {
				t.Error("no SVID written")
			}
		})
	}
}

// An embedding caller that cancels ctx (no signal) stops the supervised
// child with SIGTERM and gets the child's status.
func TestRunSupervisedChildStoppedByContext(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.Child = []string{"sh", "-c", `trap 'exit 6' TERM; touch "$1"; while :; do sleep 0.1; done`, "sh", started}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, WithLogger(quietLog())) }()
	waitUntil(t, "the child to start", func() bool { _, err := os.Stat(started); return err == nil })
	cancel()
	var ce *ChildExitError
	select {
	case err := <-done:
		if !errors.As(err, &ce) || ce.Code != 6 {
			t.Fatalf("err = %v, want child exit status 6 (SIGTERM trapped)", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel with the child trapping SIGTERM")
	}
}
