package helper

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestRunDaemonRotatesWritesAndSignals(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/web")
	agent.start()
	first := agent.rotate(time.Hour)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "app.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.PIDFileName, cfg.RenewSignal = pidFile, "SIGUSR2"
	cfg.JWTSVIDs = []JWTSVIDConfig{{Audience: "db", FileName: "db.jwt"}}
	cfg.JWTBundleFileName = "jwt_bundle.json"
	cfg.Debounce = 10 * time.Millisecond

	var mu sync.Mutex
	var serials []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, WithLogger(quietLog()), WithOnWrite(func(ev Event) {
			mu.Lock()
			serials = append(serials, ev.Serial)
			mu.Unlock()
		}))
	}()
	defer func() { cancel(); <-done }()
	hasSerial := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, x := range serials {
			if x == s {
				return true
			}
		}
		return false
	}
	waitSignal := func(what string) {
		t.Helper()
		select {
		case <-sigs:
		case <-time.After(30 * time.Second):
			t.Fatalf("no SIGUSR2 through the pid file after %s", what)
		}
	}
	waitFor(t, func() bool { return hasSerial(first.Certificates[0].SerialNumber.Text(16)) })
	waitSignal("the first write")
	second := agent.rotate(time.Hour)
	waitFor(t, func() bool { return hasSerial(second.Certificates[0].SerialNumber.Text(16)) })
	waitSignal("the rotation")
	pair, err := tls.LoadX509KeyPair(filepath.Join(cfg.CertDir, "svid.pem"), filepath.Join(cfg.CertDir, "svid_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if got := pair.Leaf.SerialNumber; got.Cmp(second.Certificates[0].SerialNumber) != 0 {
		t.Errorf("svid.pem serial %x, want the rotated %x", got, second.Certificates[0].SerialNumber)
	}
	tok, err := os.ReadFile(filepath.Join(cfg.CertDir, "db.jwt"))
	if err != nil || strings.Count(string(tok), ".") != 2 {
		t.Errorf("db.jwt = %q, %v", tok, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.CertDir, "jwt_bundle.example.org.json")); err != nil {
		t.Error(err)
	}
}

func TestRunOnceWaitsForSocketAndEntry(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/init")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.DaemonMode = agent.addr(), t.TempDir(), false
	cfg.Timeout = time.Minute
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), cfg, WithLogger(quietLog())) }()

	// No socket yet, then a socket that answers PermissionDenied (no entry).
	time.Sleep(200 * time.Millisecond)
	agent.setDeny(true)
	agent.start()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned before an identity existed: %v", err)
	default:
	}
	agent.setDeny(false)
	s := agent.rotate(time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(cfg.CertDir, "svid.pem"), filepath.Join(cfg.CertDir, "svid_key.pem"))
	if err != nil || pair.Leaf.SerialNumber.Cmp(s.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("written SVID: %v", err)
	}
}

func TestRunOnceTimesOut(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/init")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.DaemonMode = agent.addr(), t.TempDir(), false
	cfg.Timeout = 300 * time.Millisecond
	err := Run(context.Background(), cfg, WithLogger(quietLog()))
	if err == nil || !strings.Contains(err.Error(), "waiting for the Workload API socket "+agent.socket) || strings.Contains(err.Error(), "\n") {
		t.Errorf("no socket: err = %v", err)
	}
	agent.setDeny(true)
	agent.start()
	err = Run(context.Background(), cfg, WithLogger(quietLog()))
	if err == nil || !strings.Contains(err.Error(), "waiting for an X509-SVID") || !strings.Contains(err.Error(), "PermissionDenied") || strings.Contains(err.Error(), "\n") {
		t.Errorf("no entry: err = %v", err)
	}
	if _, serr := os.Stat(filepath.Join(cfg.CertDir, "svid.pem")); serr == nil {
		t.Error("files written on timeout")
	}
}

func TestRunSupervisedChild(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), t.TempDir()
	// Exit 4 if the files were there when the child started, 9 if not.
	cfg.Child = []string{"sh", "-c", `test -s "$1/svid.pem" && test -s "$1/svid_key.pem" && exit 4; exit 9`, "sh", cfg.CertDir}
	err := Run(context.Background(), cfg, WithLogger(quietLog()))
	var ce *ChildExitError
	if !errors.As(err, &ce) || ce.Code != 4 {
		t.Fatalf("err = %v, want child exit status 4", err)
	}
}

func TestHealth(t *testing.T) {
	h := NewHealth(time.Minute)
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	ctx := context.Background()
	if h.Ready(ctx) == nil {
		t.Error("ready before first write")
	}
	h.Written(now.Add(time.Hour))
	if h.Ready(ctx) != nil || h.Live(ctx) != nil {
		t.Error("not ready/live after a write")
	}
	h.StreamDown()
	now = now.Add(30 * time.Second)
	if h.Live(ctx) != nil {
		t.Error("not live within the threshold")
	}
	now = now.Add(31 * time.Second)
	if h.Live(ctx) == nil {
		t.Error("live after the stream was down past the threshold")
	}
	h.StreamUp()
	if h.Live(ctx) != nil {
		t.Error("not live after the stream came back")
	}
	now = now.Add(2 * time.Hour)
	if err := h.Live(ctx); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("live with an expired SVID on disk: %v", err)
	}
	rec := httptest.NewRecorder()
	h.Handler(HealthConfig{LivenessPath: "/live", ReadinessPath: "/ready"}).ServeHTTP(rec, httptest.NewRequest("GET", "/live", nil))
	if rec.Code != 503 {
		t.Errorf("/live = %d", rec.Code)
	}
}
