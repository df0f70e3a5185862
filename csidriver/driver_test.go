package csidriver

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestListenRemovesStaleSocket(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "csi.sock")
	// A socket file nobody listens on: what a crashed driver leaves.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if !exists(t, path) {
		t.Fatal("setup: stale socket missing")
	}
	ln2, err := Listen(context.Background(), "unix://"+path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln2.Close()
}

func TestListenRefusesLiveSocketAndNonSocket(t *testing.T) {
	dir := shortDir(t)
	live := filepath.Join(dir, "live.sock")
	serveUnix(t, live, "")
	if _, err := Listen(context.Background(), "unix://"+live); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("listen on a live socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(context.Background(), "unix://"+file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen on a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Fatal("regular file at the endpoint was touched")
	}
}

func TestReady(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	sock := filepath.Join(e.socketDir, DefaultSocketName)

	if err := e.d.Ready(ctx); err == nil {
		t.Fatal("ready with no agent socket")
	}
	// A stale socket file (agent crashed) does not answer.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := e.d.Ready(ctx); err == nil {
		t.Fatal("ready with a stale agent socket")
	}
	os.Remove(sock)
	serveUnix(t, sock, "")
	if err := e.d.Ready(ctx); err != nil {
		t.Fatalf("not ready with a live agent socket: %v", err)
	}
	if err := os.RemoveAll(e.socketDir); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Ready(ctx); err == nil || !strings.Contains(err.Error(), "socket dir") {
		t.Fatalf("socket dir missing: %v", err)
	}
}

func TestIdentityAndNodeOverGRPC(t *testing.T) {
	e := newTestEnv(t)
	conn := serveDriver(t, e.d)
	ctx := context.Background()
	id := csi.NewIdentityClient(conn)
	info, err := id.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != DefaultDriverName {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	caps, err := id.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range caps.GetCapabilities() {
		if c.GetService().GetType() == csi.PluginCapability_Service_CONTROLLER_SERVICE {
			t.Fatal("advertises a controller service")
		}
	}
	probe, err := id.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || probe.GetReady().GetValue() {
		t.Fatalf("Probe without agent = %v, %v; want not ready", probe, err)
	}
	serveUnix(t, filepath.Join(e.socketDir, DefaultSocketName), "")
	probe, err = id.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || !probe.GetReady().GetValue() {
		t.Fatalf("Probe with agent = %v, %v; want ready", probe, err)
	}
	ni, err := csi.NewNodeClient(conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || ni.GetNodeId() != "node-1" {
		t.Fatalf("NodeGetInfo = %v, %v", ni, err)
	}
}

func TestNewDriverRejectsBadConfig(t *testing.T) {
	good := Config{NodeID: "n", SocketDir: "/run/signet/sockets"}
	for name, mutate := range map[string]func(*Config){
		"no node id":        func(c *Config) { c.NodeID = "" },
		"bad driver name":   func(c *Config) { c.DriverName = "csi/signet" },
		"tcp endpoint":      func(c *Config) { c.Endpoint = "tcp://0.0.0.0:1" },
		"relative sock dir": func(c *Config) { c.SocketDir = "run/signet" },
		"relative pods dir": func(c *Config) { c.PodsRoot = "pods" },
		"socket name path":  func(c *Config) { c.SocketName = "../x.sock" },
	} {
		c := good
		mutate(&c)
		if _, err := NewDriver(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewDriver(good); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
}

func TestHealthz(t *testing.T) {
	e := newTestEnv(t)
	endpoint := filepath.Join(filepath.Dir(e.socketDir), "csi.sock")
	h := HealthHandler(e.d, endpoint)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz with no endpoint = %d %s", code, body)
	}
	serveUnix(t, endpoint, "")
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with a live endpoint = %d %s", code, body)
	}
	// The agent being down is readiness, not liveness.
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without agent = %d", code)
	}
}

// TestRunServesAndCleansUp runs the whole data flow: endpoint, gRPC,
// health listener, and socket removal on shutdown.
func TestRunServesAndCleansUp(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "plugin", "csi.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{NodeID: "n", Endpoint: "unix://" + path, SocketDir: dir, PodsRoot: dir, HealthListen: "127.0.0.1:0"})
	}()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// WaitForReady: the server may still be starting.
	info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	if err != nil || info.GetName() != DefaultDriverName {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if exists(t, path) {
		t.Fatal("endpoint socket left behind")
	}
}

// serveDriver serves d's gRPC services on a temp socket and returns a client.
func serveDriver(t testing.TB, d *Driver) *grpc.ClientConn {
	t.Helper()
	path := filepath.Join(shortDir(t), "csi.sock")
	ln, err := Listen(context.Background(), "unix://"+path)
	if err != nil {
		t.Fatal(err)
	}
	srv := d.NewGRPCServer()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
