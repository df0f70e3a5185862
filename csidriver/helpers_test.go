package csidriver

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testEnv is a driver over temp dirs: a pods root and an agent socket dir.
type testEnv struct {
	d         *Driver
	podsRoot  string
	socketDir string
}

func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	// Short base: unix socket paths (dialled through the target in tests)
	// must fit in 108 bytes, and t.TempDir embeds the test name.
	base, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &testEnv{podsRoot: filepath.Join(base, "pods"), socketDir: filepath.Join(base, "sockets")}
	for _, dir := range []string{e.podsRoot, e.socketDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d, err := NewDriver(Config{
		NodeID:    "node-1",
		SocketDir: e.socketDir,
		PodsRoot:  e.podsRoot,
		Endpoint:  "unix://" + filepath.Join(base, "csi.sock"),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	// Runs before TempDir's removal (cleanups are LIFO): never leave a
	// mount behind, or RemoveAll would walk into the socket dir.
	t.Cleanup(func() { unmountUnder(t, base) })
	return e
}

// target returns a kubelet-style target path for a pod.
func (e *testEnv) target(pod string) string {
	return filepath.Join(e.podsRoot, pod, "volumes", "kubernetes.io~csi", "spiffe-workload-api", "mount")
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes real bind mounts (CI runs as root)")
	}
}

// mountsAt counts the entries of /proc/self/mountinfo mounted exactly at path.
func mountsAt(t testing.TB, path string) int {
	t.Helper()
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (bool, bool) { return m.Mountpoint != path, false })
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// mountsUnder counts mounts at or below dir.
func mountsUnder(t testing.TB, dir string) int {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

func totalMounts(t testing.TB) int {
	t.Helper()
	ms, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

func unmountUnder(t testing.TB, dir string) {
	for range 100 {
		ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		if err != nil || len(ms) == 0 {
			return
		}
		for _, m := range ms {
			_ = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
	}
	t.Errorf("mounts left under %s", dir)
}

func wantCode(t testing.TB, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v (code %v), want code %v", err, status.Code(err), want)
	}
}

func exists(t testing.TB, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// serveUnix listens on path and answers each connection with msg.
func serveUnix(t testing.TB, path, msg string) net.Listener {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(msg))
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

func readUnix(t testing.TB, path string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	var b strings.Builder
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
