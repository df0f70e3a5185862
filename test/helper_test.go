package test

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the uid the helper runs as when a test needs a workload that
// `signet dev` has not registered (dev registers the caller, root).
const nobody = 65534

// startHelperAs runs `signet helper args...` as uid/gid nobody and returns
// a channel with its exit error and a function returning its output.
func startHelperAs(t *testing.T, args ...string) (<-chan error, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(signetBin(t), append([]string{"helper"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	return done, out
}

// openUp lets nobody traverse and write dirs created by t.TempDir (0700).
func openUp(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			if err := os.Chmod(p, 0o777); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// waitExit waits for p to exit and returns its output.
func waitExit(t *testing.T, p *proc, within time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("helper still running after %s; output:\n%s", within, p.Output())
	}
}

// Init mode started before the agent exists and before the entry exists:
// it succeeds once both appear.
func TestHelperOnceBeforeAgentAndEntry(t *testing.T) {
	dir := t.TempDir()
	certDir := filepath.Join(dir, "certs")
	sockDir := filepath.Join(dir, "sock") // becomes a link to dev's socket dir
	openUp(t, dir)
	done, out := startHelperAs(t, "--once", "--timeout", "90s", "--socket", "unix://"+filepath.Join(sockDir, "agent.sock"), "--cert-dir", certDir)
	time.Sleep(time.Second)
	d := startDev(t)
	openUp(t, filepath.Dir(d.Socket))
	if err := os.Symlink(filepath.Dir(d.Socket), sockDir); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the helper now gets PermissionDenied: no entry
	select {
	case err := <-done:
		t.Fatalf("helper exited before an entry existed (%v):\n%s", err, out)
	default:
	}
	d.createEntry(t, "--parent-id", d.AgentID, "--spiffe-id", "spiffe://example.org/init", "--selector", "unix:uid:65534")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("helper --once: %v\n%s", err, out)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("helper --once did not finish after the entry appeared:\n%s", out)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(certDir, "svid.pem"), filepath.Join(certDir, "svid_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Leaf.URIs) != 1 || pair.Leaf.URIs[0].String() != "spiffe://example.org/init" {
		t.Errorf("written SVID is %v", pair.Leaf.URIs)
	}
}

// Init mode with no agent ever: exits non-zero with one line naming what it
// waited for.
func TestHelperOnceTimesOut(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "never", "agent.sock")
	h := startSignet(t, nil, "helper", "--once", "--timeout", "2s", "--socket", sock, "--cert-dir", t.TempDir())
	waitExit(t, h, 60*time.Second)
	if h.err == nil {
		t.Fatalf("exit 0 without an agent:\n%s", h.Output())
	}
	out := strings.TrimSpace(h.Output())
	if strings.Count(out, "\n") != 0 || !strings.Contains(out, "waiting for the Workload API socket "+sock) {
		t.Errorf("want one line naming the socket, got:\n%s", out)
	}
}

// Init mode with an agent but no entry for the caller: times out naming
// the identity it waited for.
func TestHelperOnceTimesOutWithoutEntry(t *testing.T) {
	d := startDev(t)
	certDir := t.TempDir()
	openUp(t, filepath.Dir(d.Socket), certDir)
	done, out := startHelperAs(t, "--once", "--timeout", "3s", "--socket", d.Addr(), "--cert-dir", certDir)
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("exit 0 without an entry:\n%s", out)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("helper did not time out")
	}
	if o := out.String(); !strings.Contains(o, "waiting for an X509-SVID") || !strings.Contains(o, "PermissionDenied") {
		t.Errorf("output does not say what it waited for:\n%s", o)
	}
}
