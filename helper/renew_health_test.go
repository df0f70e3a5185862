package helper

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signetid/signet/internal/logtest"
)

// waitUntil polls cond for up to 30 s and fails naming what it waited for.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDaemon runs the helper as a daemon until the test ends.
func startDaemon(t *testing.T, cfg Config, opts ...Option) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, opts...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// JWT-SVIDs are renewed before they expire (at half their lifetime) with no
// X.509 change: the file changes, and the app is reloaded for it only with
// ReloadOnJWT. Reloads run a command that records the files it saw.
func TestRunJWTRenewal(t *testing.T) {
	for _, reloadOnJWT := range []bool{true, false} {
		t.Run(fmt.Sprintf("reload_on_jwt=%v", reloadOnJWT), func(t *testing.T) {
			ca := newTestCA(t, "example.org")
			agent := newFakeAgent(t, ca, "spiffe://example.org/web")
			agent.jwtTTL = 2 * time.Second
			agent.start()
			first := agent.rotate(time.Hour)

			dir := t.TempDir()
			reloads := filepath.Join(dir, "reloads.log")
			cfg := NewConfig()
			cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
			cfg.JWTSVIDs = []JWTSVIDConfig{{Audience: "db", FileName: "db.jwt"}}
			cfg.ReloadOnJWT = reloadOnJWT
			cfg.Debounce = 10 * time.Millisecond
			cfg.ReloadCommand = []string{"sh", "-c", `{ cat "$1/svid.pem" "$1/db.jwt"; echo; echo @@reload@@; } >> "$2"`, "sh", cfg.CertDir, reloads}
			var mu sync.Mutex
			jwtWrites := 0
			startDaemon(t, cfg, WithLogger(quietLog()), WithOnWrite(func(ev Event) {
				mu.Lock()
				defer mu.Unlock()
				if ev.JWTOnly {
					jwtWrites++
				}
			}))
			// Each reload entry: the svid.pem and db.jwt the app would load.
			entries := func() []string {
				b, _ := os.ReadFile(reloads)
				e := strings.Split(string(b), "@@reload@@\n")
				return e[:len(e)-1]
			}
			readJWT := func() string {
				b, _ := os.ReadFile(filepath.Join(cfg.CertDir, "db.jwt"))
				return string(b)
			}
			waitUntil(t, "the first reload", func() bool { return len(entries()) >= 1 })
			firstJWT := readJWT()
			if firstJWT == "" || !strings.Contains(entries()[0], firstJWT) {
				t.Fatalf("first reload saw %q, want db.jwt %q", entries()[0], firstJWT)
			}
			waitUntil(t, "two JWT renewals", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return jwtWrites >= 2
			})
			if renewed := readJWT(); renewed == firstJWT || renewed == "" {
				t.Fatalf("db.jwt did not change after renewals: %q", renewed)
			}
			if reloadOnJWT {
				waitUntil(t, "a reload with a renewed JWT", func() bool {
					for _, e := range entries()[1:] {
						if !strings.Contains(e, firstJWT) {
							return true
						}
					}
					return false
				})
				return
			}
			// Without ReloadOnJWT, an X.509 rotation is the next reload.
			second := agent.rotate(time.Hour)
			secondPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: second.Certificates[0].Raw}))
			waitUntil(t, "the reload for the X.509 rotation", func() bool {
				e := entries()
				return strings.Contains(e[len(e)-1], secondPEM)
			})
			firstPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: first.Certificates[0].Raw}))
			if e := entries(); len(e) != 2 || !strings.Contains(e[0], firstPEM) {
				t.Errorf("%d reloads, want 2 (first write, rotation); JWT renewals must not reload without ReloadOnJWT", len(e))
			}
		})
	}
}

var healthAddrRE = regexp.MustCompile(`msg="health listener" addr=(\S+)`)

// The health listener on a real port: /ready is 503 until the first set is
// written, then 200; /live turns 503 when the Workload API has been
// unreachable longer than the threshold, or when the SVID on disk expired.
func TestRunHealthListener(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ttl       time.Duration
		threshold time.Duration
		breakIt   func(*fakeAgent)
		wantLive  string
	}{
		{"stream down past threshold", time.Hour, 500 * time.Millisecond, func(a *fakeAgent) { a.srv.Stop() }, "workload API stream down"},
		{"SVID on disk expired", 4 * time.Second, time.Hour, func(*fakeAgent) {}, "SVID on disk expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, "example.org")
			agent := newFakeAgent(t, ca, "spiffe://example.org/web")
			agent.setDeny(true) // no identity yet
			agent.start()
			cfg := NewConfig()
			cfg.AgentAddress, cfg.CertDir = agent.addr(), t.TempDir()
			cfg.HealthChecks.Listen, cfg.LiveThreshold = "127.0.0.1:0", tc.threshold
			var logs logtest.Buffer
			startDaemon(t, cfg, WithLogger(logs.Logger()))
			var base string
			waitUntil(t, "the health listener address in the log", func() bool {
				m := healthAddrRE.FindStringSubmatch(logs.String())
				if m != nil {
					base = "http://" + m[1]
				}
				return m != nil
			})
			get := func(path string) (int, string) {
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			if code, body := get("/ready"); code != http.StatusServiceUnavailable {
				t.Errorf("/ready before the first write = %d %q, want 503", code, body)
			}
			agent.setDeny(false)
			agent.rotate(tc.ttl)
			waitUntil(t, "/ready 200 after the first write", func() bool { code, _ := get("/ready"); return code == http.StatusOK })
			if code, body := get("/live"); code != http.StatusOK {
				t.Errorf("/live after the first write = %d %q, want 200", code, body)
			}
			tc.breakIt(agent)
			waitUntil(t, "/live 503 saying "+tc.wantLive, func() bool {
				code, body := get("/live")
				return code == http.StatusServiceUnavailable && strings.Contains(body, tc.wantLive)
			})
		})
	}
}
