package adminapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestHealth serves the health service with a readiness that the test
// turns off and on: Check answers from a fresh look, Watch streams follow
// by themselves, and a stopping server answers NOT_SERVING.
func TestHealth(t *testing.T) {
	var notReady atomic.Pointer[error]
	ready := func(context.Context) error {
		if err := notReady.Load(); err != nil {
			return *err
		}
		return nil
	}
	s := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: ready})
	g := s.NewGRPCServer()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	runCtx, stop := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() { stopped <- s.RunHealth(runCtx) }()
	t.Cleanup(stop)

	ctx := context.Background()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	watchCtx, cancelWatch := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWatch()
	w, err := healthpb.NewHealthClient(conn).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for {
			resp, err := w.Recv()
			if err != nil {
				t.Fatalf("watch, waiting for %s: %v", want, err)
			}
			if resp.Status == want {
				return
			}
		}
	}
	waitFor(healthpb.HealthCheckResponse_SERVING)
	if err := CheckHealth(ctx, path, false); err != nil {
		t.Fatalf("ready server: %v", err)
	}

	down := errors.New("datastore unreachable: dial tcp 127.0.0.1:5432: connect: connection refused")
	notReady.Store(&down)
	// No Check in between: RunHealth's refresh reaches the stream.
	waitFor(healthpb.HealthCheckResponse_NOT_SERVING)
	if err := CheckHealth(ctx, path, false); err == nil || err.Error() != "server is not ready (NOT_SERVING): "+down.Error() {
		t.Fatalf("server not ready: %v", err)
	}
	if err := CheckHealth(ctx, path, true); err != nil {
		t.Fatalf("shallow check of a live server that is not ready: %v", err)
	}
	notReady.Store(nil)
	if err := CheckHealth(ctx, path, false); err != nil {
		t.Fatalf("ready again: %v", err)
	}

	stop()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := CheckHealth(ctx, path, false); err == nil || err.Error() != "server is not ready (NOT_SERVING)" {
		t.Fatalf("stopping server: %v", err)
	}
}

// TestCheckHealthRefusals: what CheckHealth says when there is no server
// to ask.
func TestCheckHealthRefusals(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.sock"), "admin socket " + dir + "/missing.sock does not exist: is `signet server run` up, and is --admin-socket right?"},
		{file, "admin socket " + file + " is not a socket"},
		{stale, "nothing listens on admin socket " + stale + ": the server is down (the socket is a stopped server's)"},
	} {
		if err := CheckHealth(context.Background(), tt.path, true); err == nil || err.Error() != tt.want {
			t.Errorf("%s: %v, want %q", tt.path, err, tt.want)
		}
	}
}

// healthAsNobodyEnv names the socket a child run as uid 65534 checks.
const healthAsNobodyEnv = "SIGNET_TEST_HEALTH_SOCKET"

// TestCheckHealthPermissionDenied: a caller the socket's mode keeps out is
// told so, not that the server is down.
func TestCheckHealthPermissionDenied(t *testing.T) {
	if path := os.Getenv(healthAsNobodyEnv); path != "" {
		// The child: report what CheckHealth says.
		if err := CheckHealth(context.Background(), path, true); err != nil {
			t.Fatal(err)
		}
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	// The test binary and the socket's directory, where uid 65534 reaches.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "adminapi.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	s := New(Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g := s.NewGRPCServer()
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(path) // 0770, root's
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	defer g.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestCheckHealthPermissionDenied$")
	cmd.Env = append(os.Environ(), healthAsNobodyEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if want := "permission denied on the server's admin socket " + path + ": run this as root, or as the server's user or group"; err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("check as uid 65534: %v, want %q in:\n%s", err, want, out)
	}
}
