package helper

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/signetid/signet/internal/logtest"
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

// writeScript writes a shell script into dir and returns its path.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// spiffe-helper starts cmd, then signals the pid file (which cmd may be
// what writes). The pid file's wait must not hold cmd back.
func TestRunCmdStartsBeforeItsPIDFileExists(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	pidFile, hupped := filepath.Join(dir, "app.pid"), filepath.Join(dir, "hupped")
	// The trap comes before the pid file: the helper signals as soon as the
	// file appears, and an untrapped HUP would end the script.
	script := writeScript(t, dir, "app.sh", `trap 'touch "$2"' HUP; echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; while :; do sleep 0.05; done`)
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			_ = syscall.Kill(pid, syscall.SIGKILL) // cmd outlives the helper, as with spiffe-helper
		}
	})
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.Cmd, cfg.CmdArgs = "sh", script+" "+pidFile+" "+hupped
	cfg.PIDFileName, cfg.RenewSignal = pidFile, "SIGHUP"
	cfg.Debounce = 10 * time.Millisecond
	startDaemon(t, cfg, WithLogger(quietLog()))
	waitUntil(t, "cmd to write its pid file", func() bool { _, err := os.Stat(pidFile); return err == nil })
	waitUntil(t, "the SIGHUP through the pid file", func() bool { _, err := os.Stat(hupped); return err == nil })
}

// A pid file that is absent (its app not up yet, or gone) must not stop the
// supervised child from being signalled after a rotation.
func TestRunChildSignalledWhilePIDFileAbsent(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	hups, ready := filepath.Join(dir, "hups"), filepath.Join(dir, "ready")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.PIDFileName, cfg.RenewSignal = filepath.Join(dir, "absent.pid"), "SIGHUP"
	cfg.Debounce = 10 * time.Millisecond
	cfg.Child = []string{"sh", "-c", `trap 'echo hup >> "$1"' HUP; touch "$2"; while :; do sleep 0.05; done`, "sh", hups, ready}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, WithLogger(quietLog())) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, "the child to start", func() bool { _, err := os.Stat(ready); return err == nil })
	agent.rotate(time.Hour)
	waitUntil(t, "the child's SIGHUP for the rotation", func() bool { b, _ := os.ReadFile(hups); return string(b) == "hup\n" })
}

// blockLink makes the link for name impossible to place in a fresh cert
// dir (its temporary name is taken by a non-empty directory): a failure
// after the ..data swap.
func blockLink(t *testing.T, certDir, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(certDir, "."+name+".link", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// A name that cannot be published (its link cannot be placed) leaves the set
// incomplete for readers who open files by name: init mode fails, naming
// the file, rather than starting the app without its key.
func TestRunOnceFailsWhenAFileCannotBePublished(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/init")
	agent.start()
	agent.rotate(time.Hour)
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.DaemonMode = agent.addr(), t.TempDir(), false
	cfg.Timeout = 3 * time.Second
	blockLink(t, cfg.CertDir, "svid_key.pem")
	err := Run(context.Background(), cfg, WithLogger(quietLog()))
	if err == nil || !strings.Contains(err.Error(), "svid_key.pem") {
		t.Fatalf("Run = %v, want a failure naming svid_key.pem", err)
	}
}

// In daemon mode such a set is not reported as written and the app is not
// told; once the obstacle is gone, the next rotation publishes and reloads.
func TestRunDaemonRecoversFromAnUnpublishableName(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	reloaded := filepath.Join(dir, "reloaded")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.ReloadCommand = []string{"touch", reloaded}
	cfg.Debounce = 10 * time.Millisecond
	blockLink(t, cfg.CertDir, "bundle.pem")
	var writes atomic.Int32
	var logs logtest.Buffer
	startDaemon(t, cfg, WithLogger(logs.Logger()), WithOnWrite(func(Event) { writes.Add(1) }))
	waitUntil(t, "the first attempt to fail", func() bool { return strings.Contains(logs.String(), "bundle.pem cannot be opened by name") })
	if writes.Load() != 0 {
		t.Fatal("a set without bundle.pem was reported as written")
	}
	if err := os.RemoveAll(filepath.Join(cfg.CertDir, ".bundle.pem.link")); err != nil {
		t.Fatal(err)
	}
	agent.rotate(time.Hour)
	waitUntil(t, "the reload after the next rotation", func() bool { _, err := os.Stat(reloaded); return err == nil })
	if _, err := os.Stat(filepath.Join(cfg.CertDir, "bundle.pem")); err != nil {
		t.Fatalf("bundle.pem after recovery: %v", err)
	}
}

// A helper.conf that asks only for a JWT-SVID gets no X.509 files, as with
// spiffe-helper: above all no private key on disk.
func TestRunJWTOnlyHelperConf(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	certDir := t.TempDir()
	cfg := NewConfig()
	conf := `agent_address = "` + agent.addr() + `"
cert_dir = "` + certDir + `"
daemon_mode = false
jwt_svids = [{ jwt_audience = "db", jwt_svid_file_name = "db.jwt" }]
`
	if err := ParseConfig([]byte(conf), &cfg); err != nil {
		t.Fatal(err)
	}
	runOnce(t, cfg)
	if tok, err := os.ReadFile(filepath.Join(certDir, "db.jwt")); err != nil || strings.Count(string(tok), ".") != 2 {
		t.Errorf("db.jwt = %q, %v", tok, err)
	}
	err := filepath.WalkDir(certDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if b, _ := os.ReadFile(path); strings.Contains(string(b), "PRIVATE KEY") || strings.Contains(string(b), "CERTIFICATE") {
			t.Errorf("%s holds X.509 material", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// With a child, the first set is not signalled to the child (it starts
// reading it), but the reload command and the pid file still hear of it.
func TestRunFirstSetWithChildRunsReloadCommand(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	ran, ready, hups := filepath.Join(dir, "reload-ran"), filepath.Join(dir, "ready"), filepath.Join(dir, "hups")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.ReloadCommand = []string{"touch", ran}
	cfg.Debounce = 10 * time.Millisecond
	cfg.Child = []string{"sh", "-c", `trap 'echo hup >> "$2"' HUP; touch "$1"; while :; do sleep 0.05; done`, "sh", ready, hups}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, WithLogger(quietLog())) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, "the child to start", func() bool { _, err := os.Stat(ready); return err == nil })
	waitUntil(t, "the reload command for the first set", func() bool { _, err := os.Stat(ran); return err == nil })
	if b, _ := os.ReadFile(hups); len(b) != 0 {
		t.Errorf("the child was signalled for the set it started with: %q", b)
	}
}

// A reload command that leaves a background process holding its output
// (sleep 30 &) must not keep the helper from exiting with its child.
func TestRunReloadCommandWithBackgroundProcessDoesNotHang(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	ready, ran := filepath.Join(dir, "ready"), filepath.Join(dir, "ran")
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.ReloadCommand = []string{"sh", "-c", `touch "$0"; sleep 30 &`, ran}
	cfg.Debounce = 10 * time.Millisecond
	cfg.Child = []string{"sh", "-c", `trap '' HUP; touch "$1"; while [ ! -e "$2" ]; do sleep 0.05; done; exit 5`, "sh", ready, ran}
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), cfg, WithLogger(quietLog())) }()
	select {
	case err := <-done:
		var ce *ChildExitError
		if !errors.As(err, &ce) || ce.Code != 5 {
			t.Fatalf("Run = %v, want the child's status 5", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the helper did not exit after its child did (a reload command's background process held it)")
	}
}

// A renewal that brings the JWT-SVID already written (the agent still
// caches it) rewrites nothing and, with reload_on_jwt, reloads nothing.
func TestUnchangedJWTIsNotRewritten(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/web")
	agent.jwtTTL, agent.jwtReuse = 3*time.Second, true
	agent.start()
	agent.rotate(time.Hour)
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), t.TempDir()
	cfg.JWTSVIDs = []JWTSVIDConfig{{Audience: "db", FileName: "db.jwt"}}
	cfg.ReloadOnJWT = true
	var mu sync.Mutex
	var written []string // db.jwt after each write
	startDaemon(t, cfg, WithLogger(quietLog()), WithOnWrite(func(Event) {
		b, _ := os.ReadFile(filepath.Join(cfg.CertDir, "db.jwt"))
		mu.Lock()
		written = append(written, string(b))
		mu.Unlock()
	}))
	// The helper handles each fetch's answer before it fetches again.
	waitUntil(t, "three JWT-SVID fetches", func() bool { n, _ := agent.jwtFetches(); return n >= 3 })
	if _, reused := agent.jwtFetches(); reused == 0 {
		t.Fatal("setup: the agent never served the same token twice")
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(written); i++ {
		if written[i] == written[i-1] {
			t.Errorf("write %d of %d rewrote (and reloaded for) the JWT-SVID already written", i+1, len(written))
		}
	}
}

func TestNextJWTFetch(t *testing.T) {
	now := time.Now()
	svid := func(ttl time.Duration) *jwtsvid.SVID { return &jwtsvid.SVID{Expiry: now.Add(ttl)} }
	for _, tc := range []struct {
		name  string
		svids map[string]*jwtsvid.SVID
		want  time.Duration
	}{
		{"half the remaining lifetime plus a second", map[string]*jwtsvid.SVID{"a": svid(10 * time.Minute)}, 5*time.Minute + time.Second},
		{"the earliest of several", map[string]*jwtsvid.SVID{"a": svid(10 * time.Minute), "b": svid(4 * time.Second)}, 3 * time.Second},
		{"expired: a second", map[string]*jwtsvid.SVID{"a": svid(-time.Minute)}, time.Second},
		{"long-lived: an hour at most", map[string]*jwtsvid.SVID{"a": svid(24 * time.Hour)}, time.Hour},
	} {
		if got := nextJWTFetch(tc.svids, now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
