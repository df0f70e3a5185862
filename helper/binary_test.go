package helper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Signals, exit statuses and PID 1 are only real in a process of their
// own: these tests run the signet binary's `helper` subcommand against the
// in-process fake agent.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// TestMain removes the binary the run built (tens of MB per run).
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// signetBinary builds cmd/signet once per test run.
func signetBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "signet-helper-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "signet")
		if out, err := exec.Command("go", "build", "-o", binPath, "github.com/signetid/signet/cmd/signet").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// helperProc is a running signet binary.
type helperProc struct {
	cmd    *exec.Cmd
	stderr string // a file: a pipe would keep Wait waiting for any child left behind
	done   chan struct{}
	err    error
}

// startBinary runs `signet args...` until it exits (killed at the end of
// the test if it has not).
func startBinary(t *testing.T, args ...string) *helperProc {
	t.Helper()
	p := &helperProc{cmd: exec.Command(signetBinary(t), args...), stderr: filepath.Join(t.TempDir(), "stderr"), done: make(chan struct{})}
	f, err := os.Create(p.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.cmd.Stderr = f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("signet %s stderr:\n%s", strings.Join(args, " "), p.stderrText())
		}
	})
	return p
}

func (p *helperProc) stderrText() string {
	b, _ := os.ReadFile(p.stderr)
	return string(b)
}

func (p *helperProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exitCode waits for the process and returns its status (128+n when killed
// by signal n).
func (p *helperProc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("signet still running after 60s; stderr:\n%s", p.stderrText())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

func (p *helperProc) waitStderr(t *testing.T, substr string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%q on stderr", substr), func() bool {
		if !p.running() {
			t.Fatalf("signet exited (%v) before printing %q; stderr:\n%s", p.err, substr, p.stderrText())
		}
		return strings.Contains(p.stderrText(), substr)
	})
}

// A stop signal before the first write: with a child to supervise, the
// helper exits 128+n with one line saying the child never started; without
// one it exits 0, as spiffe-helper does.
func TestBinarySignalBeforeFirstWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sig      syscall.Signal
		child    bool
		wantCode int
		wantLine string
	}{
		{"child, SIGTERM", syscall.SIGTERM, true, 143, "signet: SIGTERM before the first identity was written; child not started\n"},
		{"child, SIGINT", syscall.SIGINT, true, 130, "signet: SIGINT before the first identity was written; child not started\n"},
		{"no child, SIGTERM", syscall.SIGTERM, false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, "example.org")
			agent := newFakeAgent(t, ca, "spiffe://example.org/app")
			agent.setDeny(true)
			agent.start()
			dir := t.TempDir()
			ran := filepath.Join(dir, "ran")
			args := []string{"helper", "--socket", agent.addr(), "--cert-dir", filepath.Join(dir, "certs")}
			if tc.child {
				args = append(args, "--", "touch", ran)
			}
			h := startBinary(t, args...)
			// Logged once the helper handles signals and talks to the agent.
			h.waitStderr(t, "workload API X.509 stream error")
			if err := h.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			if code := h.exitCode(t); code != tc.wantCode {
				t.Errorf("exit status %d, want %d", code, tc.wantCode)
			}
			if tc.wantLine != "" && !strings.HasSuffix(h.stderrText(), tc.wantLine) {
				t.Errorf("stderr does not end with %q:\n%s", tc.wantLine, h.stderrText())
			}
			if _, err := os.Stat(ran); err == nil {
				t.Error("the child ran")
			}
		})
	}
}

// Every signal meant for the app reaches the supervised child (as with
// tini), and the helper keeps running; TERM ends both, with the child's
// status.
func TestBinaryForwardsSignalsToChild(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	got, ready := filepath.Join(dir, "got"), filepath.Join(dir, "ready")
	script := `for s in HUP QUIT USR1 USR2 WINCH ALRM; do trap "echo $s >> \"$1\"" $s; done
trap 'exit 7' TERM
echo $$ > "$2"
while :; do sleep 0.02; done`
	t.Cleanup(func() {
		// A helper killed by a signal it did not handle leaves the child.
		if b, err := os.ReadFile(ready); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	h := startBinary(t, "helper", "--socket", agent.addr(), "--cert-dir", filepath.Join(dir, "certs"), "--", "sh", "-c", script, "sh", got, ready)
	waitUntil(t, "the child to start", func() bool { _, err := os.Stat(ready); return err == nil })
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGALRM} {
		name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
		if err := h.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the child to get "+name, func() bool {
			if !h.running() {
				t.Fatalf("helper exited on %s: %v", name, h.err)
			}
			b, _ := os.ReadFile(got)
			return strings.Contains(string(b), name+"\n")
		})
	}
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := h.exitCode(t); code != 7 {
		t.Errorf("exit status %d, want the child's 7", code)
	}
}

// As PID 1 (a container's entrypoint), the helper reaps the processes the
// app orphans, and still gets the status of what it started itself: the
// reload command's and the app's own.
func TestBinaryReapsOrphansAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare")
	}
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	dir := t.TempDir()
	certDir, state := filepath.Join(dir, "certs"), filepath.Join(dir, "app")
	// The app leaves three orphans that exit at once and waits until each
	// is gone from /proc (a zombie stays there): 1 if they stay. Then it
	// waits for the reload command of a rotation and exits 7.
	script := `trap '' HUP
for i in 1 2 3; do (sh -c 'echo $$ > "$1"' sh "$1.$i" &); done
for i in 1 2 3; do while [ ! -s "$1.$i" ]; do sleep 0.01; done; done
n=0
while :; do
  n=$((n+1)) left=0
  for i in 1 2 3; do [ -e "/proc/$(cat "$1.$i")" ] && left=1; done
  [ $left = 0 ] && break
  if [ $n -gt 500 ]; then for i in 1 2 3; do cat "/proc/$(cat "$1.$i")/status" >&2; done; exit 1; fi
  sleep 0.02
done
touch "$1.reaped"
while [ ! -e "$1.reloaded" ]; do sleep 0.02; done
exit 7`
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", signetBinary(t), "helper",
		"--socket", agent.addr(), "--cert-dir", certDir, "--reload-cmd", "touch "+state+".reloaded",
		"--", "sh", "-c", script, "sh", state)
	var out syncWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	waitUntil(t, "the app to see its orphans reaped", func() bool {
		select {
		case <-exited:
			t.Fatalf("exit = %v before the orphans were reaped (1: they stayed zombies); output:\n%s", exitErr, out.String())
		default:
		}
		_, err := os.Stat(state + ".reaped")
		return err == nil
	})
	agent.rotate(time.Hour)
	select {
	case <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit 60s after the rotation; output:\n%s", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(exitErr, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit = %v, want the app's status 7; output:\n%s", exitErr, out.String())
	}
	if o := out.String(); !strings.Contains(o, `msg="reloaded application" via="reload command touch"`) || strings.Contains(o, "reload failed") {
		t.Errorf("the reload command's status did not come through the reaper; output:\n%s", o)
	}
}

// syncWriter collects output written while the test reads it.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// SIGTERM while init mode waits is reported as the signal, with 128+n,
// not as a timeout.
func TestBinaryOnceReportsSignal(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "absent.sock")
	h := startBinary(t, "--log-level", "debug", "helper", "--once", "--timeout", "2m", "--socket", sock, "--cert-dir", filepath.Join(dir, "certs"))
	h.waitStderr(t, "waiting for the Workload API socket")
	if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := h.exitCode(t); code != 143 {
		t.Errorf("exit status %d, want 143", code)
	}
	want := "signet: SIGTERM while waiting for the Workload API socket " + sock + " to appear\n"
	if !strings.HasSuffix(h.stderrText(), want) {
		t.Errorf("stderr does not end with %q:\n%s", want, h.stderrText())
	}
}

// log_level in a helper.conf sets the level, unless --log-level is given.
func TestBinaryLogLevelFromHelperConf(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	for _, tc := range []struct {
		name     string
		flags    []string
		wantInfo bool
	}{
		{"log_level warn", nil, false},
		{"--log-level overrides it", []string{"--log-level", "info"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, "helper.conf")
			body := fmt.Sprintf("agent_address = %q\ncert_dir = %q\ndaemon_mode = false\nlog_level = \"warn\"\n", agent.addr(), filepath.Join(dir, "certs"))
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			h := startBinary(t, append(tc.flags, "helper", "--config", conf)...)
			if code := h.exitCode(t); code != 0 {
				t.Fatalf("exit status %d", code)
			}
			if got := strings.Contains(h.stderrText(), "identity written"); got != tc.wantInfo {
				t.Errorf("info line logged: %v, want %v; stderr:\n%s", got, tc.wantInfo, h.stderrText())
			}
		})
	}
}

// With flags alone each file name is its own flag: renaming the certificate
// keeps the default names of the key and the bundle.
func TestBinaryOneFileNameFlag(t *testing.T) {
	ca := newTestCA(t, "example.org")
	agent := newFakeAgent(t, ca, "spiffe://example.org/app")
	agent.start()
	agent.rotate(time.Hour)
	certs := filepath.Join(t.TempDir(), "certs")
	h := startBinary(t, "helper", "--once", "--socket", agent.addr(), "--cert-dir", certs, "--svid-file", "tls.crt")
	if code := h.exitCode(t); code != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", code, h.stderrText())
	}
	for _, name := range []string{"tls.crt", DefaultSVIDKeyFileName, DefaultSVIDBundleFileName} {
		if _, err := os.Stat(filepath.Join(certs, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
