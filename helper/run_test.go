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

// childrenWith lists the live (not zombie) children of this process whose
// command line contains token.
func childrenWith(t *testing.T, token string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ")".
		_, rest, _ := strings.Cut(string(stat), ") ")
		f := strings.Fields(rest)
		if len(f) < 2 || f[0] == "Z" || f[1] != strconv.Itoa(os.Getpid()) {
			continue
		}
		if cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); strings.Contains(string(cmdline), token) {
			pids = append(pids, pid)
		}
	}
	return pids
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

// The supervised child is signalled on reloads, never started again: a
// reload in flight when it exits (here one waiting for an absent pid file,
// released by the shutdown) must not relaunch it behind the helper's back.
func TestRunChildNeverRelaunched(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	state := filepath.Join(dir, "child")
	// A second run would stay up, to be found below.
	script := writeScript(t, dir, "child.sh", `if [ -e "$1.ran" ]; then while :; do sleep 0.1; done; fi
touch "$1.ran"
trap '' HUP
while [ ! -e "$1.exit" ]; do sleep 0.02; done
exit 3
`)
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir = agent.addr(), filepath.Join(dir, "certs")
	cfg.PIDFileName, cfg.RenewSignal = filepath.Join(dir, "absent.pid"), "SIGHUP"
	cfg.Debounce = 10 * time.Millisecond
	cfg.Child = []string{"sh", script, state}
	second := make(chan struct{})
	var rotated atomic.Value
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), cfg, WithLogger(quietLog()), WithOnWrite(func(ev Event) {
			if want, _ := rotated.Load().(string); want != "" && ev.Serial == want {
				close(second)
			}
		}))
	}()
	t.Cleanup(func() {
		for _, pid := range childrenWith(t, state) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	waitUntil(t, "the child to start", func() bool { _, err := os.Stat(state + ".ran"); return err == nil })
	s := agent.issuer.svid(t, agent.id, time.Hour)
	rotated.Store(s.Certificates[0].SerialNumber.Text(16))
	agent.setSVIDs(s)
	<-second
	// Let the rotation's reloads start (debounce 10ms) before the child exits.
	time.Sleep(200 * time.Millisecond)
	if err := os.WriteFile(state+".exit", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var ce *ChildExitError
	if err := <-done; !errors.As(err, &ce) || ce.Code != 3 {
		t.Fatalf("Run = %v, want the child's status 3", err)
	}
	// Everything the helper started was started before Run returned.
	if pids := childrenWith(t, state); len(pids) > 0 {
		t.Errorf("child relaunched after it exited: pids %v still running", pids)
	}
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

// A problem after the swap committed is a warning, not a failure: the new
// set is live, so init mode succeeds.
func TestRunOnceProblemAfterCommitIsAWarning(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/init")
	agent.start()
	agent.rotate(time.Hour)
	cfg := NewConfig()
	cfg.AgentAddress, cfg.CertDir, cfg.DaemonMode = agent.addr(), t.TempDir(), false
	blockLink(t, cfg.CertDir, "svid_key.pem")
	var logs logBuffer
	if err := Run(context.Background(), cfg, WithLogger(logs.logger())); err != nil {
		t.Fatalf("Run = %v, want success: the set was published", err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "svid_key.pem") {
		t.Errorf("no warning naming svid_key.pem; log:\n%s", logs.String())
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(cfg.CertDir, dataLink, "svid.pem"), filepath.Join(cfg.CertDir, dataLink, "svid_key.pem")); err != nil {
		t.Errorf("published set: %v", err)
	}
}

// After a problem past the swap, the daemon reloads the app and reports
// the set as written (health, onWrite), as the new set is what it reads.
func TestRunDaemonReloadsAfterProblemAfterCommit(t *testing.T) {
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
	startDaemon(t, cfg, WithLogger(quietLog()), WithOnWrite(func(Event) { writes.Add(1) }))
	waitUntil(t, "the reload after the published set", func() bool { _, err := os.Stat(reloaded); return err == nil })
	if writes.Load() == 0 {
		t.Error("the published set was not reported as written")
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
