package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// signetBin builds the signet binary once per test run and returns its path.
func signetBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "signet-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		// Tests run the binary as other users too (uid checks, helper drops).
		if err := os.Chmod(dir, 0o755); err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "signet")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/signetid/signet/cmd/signet")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a running signet process whose output is captured for failures.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	done chan struct{}
	err  error
}

// Output returns everything the process printed so far.
func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop sends SIGTERM and waits (killing after 10 s).
func (p *proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Kill stops the process with SIGKILL, as a crash would.
func (p *proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// waitLine waits until the process prints a line containing substr and
// returns that line.
func (p *proc) waitLine(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(p.Output(), "\n") {
			if strings.Contains(l, substr) {
				return l
			}
		}
		select {
		case <-p.done:
			t.Fatalf("process exited (%v) before printing %q; output:\n%s", p.err, substr, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no line with %q after %s; output:\n%s", substr, timeout, p.Output())
	return ""
}

// startSignet runs the signet binary with args; the process is stopped when
// the test ends and its output is logged if the test failed.
func startSignet(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(signetBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{cmd: cmd, done: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start signet %v: %v", args, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr) // a line over the buffer: keep the process unblocked
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		// done means the whole output has been read: tests read it then.
		<-scanned
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("signet %s output:\n%s", strings.Join(args, " "), p.Output())
		}
	})
	return p
}

// runSignet runs a short signet command and returns its stdout; it fails the
// test on a non-zero exit unless wantErr.
func runSignet(t testing.TB, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, signetBin(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("signet %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// devEnv is a running `signet dev`: server and agent in one process.
type devEnv struct {
	proc        *proc
	Dir         string
	Socket      string // Workload API socket path
	AdminSocket string
	TrustDomain string
	// AgentID is the dev agent's SPIFFE ID: the parent of entries it serves.
	AgentID string
}

// startDev starts `signet dev` in a fresh directory with extra args (e.g.
// "--svid-ttl", "10s") and waits until it prints its SPIFFE_ENDPOINT_SOCKET line.
func startDev(t testing.TB, extra ...string) *devEnv {
	t.Helper()
	dir := t.TempDir()
	d := &devEnv{
		Dir:         dir,
		Socket:      filepath.Join(dir, "sockets", "agent.sock"),
		AdminSocket: filepath.Join(dir, "admin.sock"),
		TrustDomain: "example.org",
		AgentID:     "spiffe://example.org/agent/dev",
	}
	args := append([]string{"dev", "--data-dir", dir, "--socket", d.Socket, "--admin-socket", d.AdminSocket}, extra...)
	d.proc = startSignet(t, nil, args...)
	d.proc.waitLine(t, "SPIFFE_ENDPOINT_SOCKET=", 60*time.Second)
	return d
}

// Addr is the Workload API address in SPIFFE_ENDPOINT_SOCKET form.
func (d *devEnv) Addr() string { return "unix://" + d.Socket }

// createEntry registers an entry through the CLI and returns its entry ID.
func (d *devEnv) createEntry(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := runSignet(t, ctx, append([]string{"server", "entry", "create", "--admin-socket", d.AdminSocket}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if id, ok := strings.CutPrefix(strings.TrimSpace(l), "Entry ID:"); ok {
			return strings.TrimSpace(id)
		}
	}
	t.Fatalf("entry create printed no Entry ID line:\n%s", out)
	return ""
}
