package test

import (
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `signet helper -- cmd args` through the built binary: the child starts
// only once the first file set is on disk, the exact signal the helper gets
// (TERM or INT) is forwarded, and the helper exits with the child's status.
func TestHelperSupervisedChild(t *testing.T) {
	d := startDev(t)
	// The child exits 9 if the files were not there when it started.
	// It records its PID so a regression that leaves it running cannot
	// outlive the test (it holds the helper's output pipe).
	const prelude = `echo $$ > "$1.child.pid"; test -s "$1/svid.pem" && test -s "$1/svid_key.pem" && test -s "$1/bundle.pem" || exit 9; `
	for _, tc := range []struct {
		name     string
		script   string
		signal   syscall.Signal // sent to the helper once the child runs; 0: none
		wantCode int
	}{
		{"TERM forwarded, child status 7", `trap 'exit 7' TERM; trap 'exit 5' INT; echo child-running; while :; do sleep 0.1; done`, syscall.SIGTERM, 7},
		{"INT forwarded as INT, child status 5", `trap 'exit 7' TERM; trap 'exit 5' INT; echo child-running; while :; do sleep 0.1; done`, syscall.SIGINT, 5},
		{"child exits 3 by itself", `echo child-running; exit 3`, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certDir := filepath.Join(t.TempDir(), "certs")
			h := startSignet(t, nil, "helper", "--socket", d.Addr(), "--cert-dir", certDir, "--", "sh", "-c", prelude+tc.script, "sh", certDir)
			t.Cleanup(func() {
				b, err := os.ReadFile(certDir + ".child.pid")
				if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			if tc.signal != 0 {
				h.waitLine(t, "child-running", 60*time.Second)
				if err := h.cmd.Process.Signal(tc.signal); err != nil {
					t.Fatal(err)
				}
			}
			waitExit(t, h, 60*time.Second)
			// Status 9 would mean the child started before the files existed.
			var ee *exec.ExitError
			if !errors.As(h.err, &ee) || ee.ExitCode() != tc.wantCode {
				t.Fatalf("helper exit = %v, want status %d; output:\n%s", h.err, tc.wantCode, h.Output())
			}
		})
	}
}

// freePort returns a TCP address on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// --health-listen and --live-threshold through the binary against signet
// dev: /ready turns 200 after the first write; /live turns 503 once the
// agent has been gone longer than the threshold.
func TestHelperHealthListen(t *testing.T) {
	d := startDev(t)
	addr := freePort(t)
	certDir := filepath.Join(t.TempDir(), "certs")
	startSignet(t, nil, "helper", "--socket", d.Addr(), "--cert-dir", certDir, "--health-listen", addr, "--live-threshold", "2s")
	get := func(path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitCode := func(path string, want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for get(path) != want {
			if time.Now().After(deadline) {
				t.Fatalf("GET %s did not return %d within %s (last %d)", path, want, within, get(path))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCode("/ready", http.StatusOK, 60*time.Second)
	if _, err := os.Stat(filepath.Join(certDir, "svid.pem")); err != nil {
		t.Errorf("/ready 200 but no svid.pem: %v", err)
	}
	if c := get("/live"); c != http.StatusOK {
		t.Errorf("/live with the agent up = %d, want 200", c)
	}
	d.proc.Stop()
	// Well under the 1 min default, so the flag must have taken effect.
	waitCode("/live", http.StatusServiceUnavailable, 30*time.Second)
	if c := get("/ready"); c != http.StatusOK {
		t.Errorf("/ready after an outage = %d, want 200 (the files are still there)", c)
	}
}

// --config with a key spiffe-helper does not have fails naming the key.
func TestHelperConfigUnknownKey(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "helper.conf")
	if err := os.WriteFile(conf, []byte("agent_address = \"/tmp/a.sock\"\ncert_dir = \"/tmp/c\"\nsvid_fle_name = \"x.pem\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startSignet(t, nil, "helper", "--config", conf)
	waitExit(t, h, 30*time.Second)
	if h.err == nil || !strings.Contains(h.Output(), `unknown key "svid_fle_name"`) {
		t.Errorf("exit %v, output %q; want a failure naming svid_fle_name", h.err, h.Output())
	}
}
