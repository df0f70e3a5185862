package attestor_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/internal/selector"
)

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func has(sels []selector.Selector, s string) bool {
	return slices.Contains(selector.Strings(sels), s)
}

func startSleep(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestUnixAttestsRealProcess(t *testing.T) {
	cmd := startSleep(t)
	exe, err := filepath.EvalSymlinks(cmd.Path)
	if err != nil {
		t.Fatal(err)
	}
	u := attestor.NewUnix(attestor.UnixOptions{})
	sels, err := u.Attest(t.Context(), int32(cmd.Process.Pid))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	for _, want := range []string{
		"unix:uid:" + strconv.Itoa(os.Getuid()),
		"unix:gid:" + strconv.Itoa(os.Getgid()),
		"unix:path:" + exe,
		"unix:sha256:" + fileSHA256(t, exe),
	} {
		if !has(sels, want) {
			t.Errorf("selectors %v lack %s", selector.Strings(sels), want)
		}
	}
	for _, s := range sels {
		if err := s.Validate(); err != nil {
			t.Errorf("attestor produced an invalid selector: %v", err)
		}
	}
	if !slices.IsSortedFunc(sels, selector.Compare) {
		t.Errorf("selectors not sorted: %v", selector.Strings(sels))
	}
}

func TestUnixAttestsSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	exe, err = filepath.EvalSymlinks(exe)
	if err != nil {
		t.Fatal(err)
	}
	sels, err := attestor.NewUnix(attestor.UnixOptions{}).Attest(t.Context(), int32(os.Getpid()))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if !has(sels, "unix:path:"+exe) || !has(sels, "unix:uid:"+strconv.Itoa(os.Getuid())) {
		t.Errorf("selectors %v lack path %s or uid %d", selector.Strings(sels), exe, os.Getuid())
	}
	groups, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if want := "unix:supplementary_gid:" + strconv.Itoa(g); !has(sels, want) {
			t.Errorf("selectors %v lack %s", selector.Strings(sels), want)
		}
	}
}

func TestUnixFailsForExitedProcess(t *testing.T) {
	cmd := startSleep(t)
	pid := cmd.Process.Pid
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := attestor.NewUnix(attestor.UnixOptions{}).Attest(t.Context(), int32(pid)); err == nil {
		t.Fatal("Attest of a reaped process succeeded")
	}
}

func TestUnixRefusesPIDZero(t *testing.T) {
	if _, err := attestor.NewUnix(attestor.UnixOptions{}).Attest(t.Context(), 0); err == nil {
		t.Fatal("Attest(0) succeeded")
	}
}

// fakeProc builds a procfs-like tree for pid 42 whose exe links to a file the
// test controls.
func fakeProc(t *testing.T, startTime int) (root, exe string) {
	t.Helper()
	root = t.TempDir()
	dir := filepath.Join(root, "42")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeStat(t, dir, startTime)
	status := "Name:\tapp\nUid:\t1234\t0\t0\t0\nGid:\t5678\t0\t0\t0\nGroups:\t10 20 \n"
	if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(root, "app")
	if err := os.WriteFile(exe, []byte("version-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(exe, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	return root, exe
}

func writeStat(t *testing.T, dir string, startTime int) {
	t.Helper()
	// The command name holds ") (" to check parsing from the last ')'.
	stat := fmt.Sprintf("42 (a) (b) S 1 42 42 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 %d 1000 100\n", startTime)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUnixFakeProcSelectors(t *testing.T) {
	root, exe := fakeProc(t, 777)
	sels, err := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root}).Attest(t.Context(), 42)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	for _, want := range []string{
		"unix:uid:1234", "unix:gid:5678", "unix:supplementary_gid:10", "unix:supplementary_gid:20",
		"unix:path:" + exe, "unix:sha256:" + fileSHA256(t, exe),
	} {
		if !has(sels, want) {
			t.Errorf("selectors %v lack %s", selector.Strings(sels), want)
		}
	}
}

func TestUnixHashCache(t *testing.T) {
	root, exe := fakeProc(t, 777)
	u := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root})
	first := "unix:sha256:" + fileSHA256(t, exe)
	if sels, err := u.Attest(t.Context(), 42); err != nil || !has(sels, first) {
		t.Fatalf("Attest = %v, %v; want %s", selector.Strings(sels), err, first)
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}

	// Same inode, size and mtime: the cached digest is served, proving the
	// file was not read again.
	if err := os.WriteFile(exe, []byte("version-2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(exe, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if sels, err := u.Attest(t.Context(), 42); err != nil || !has(sels, first) {
		t.Fatalf("with unchanged stat: Attest = %v, %v; want cached %s", selector.Strings(sels), err, first)
	}

	// A new mtime means a new version: it is hashed again.
	if err := os.Chtimes(exe, fi.ModTime().Add(time.Second), fi.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	second := "unix:sha256:" + fileSHA256(t, exe)
	if sels, err := u.Attest(t.Context(), 42); err != nil || !has(sels, second) {
		t.Fatalf("after mtime change: Attest = %v, %v; want %s", selector.Strings(sels), err, second)
	}
}

func TestUnixMaxHashSizeOmitsSHA256(t *testing.T) {
	root, _ := fakeProc(t, 777)
	sels, err := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root, MaxHashSize: 3}).Attest(t.Context(), 42)
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	for _, s := range selector.Strings(sels) {
		if len(s) > len("unix:sha256:") && s[:len("unix:sha256:")] == "unix:sha256:" {
			t.Errorf("got %s for an executable above MaxHashSize", s)
		}
	}
}

// TestUnixDetectsPIDReuse swaps the process (a new start time) while the
// attestor is blocked reading its status, through a FIFO.
func TestUnixDetectsPIDReuse(t *testing.T) {
	root, _ := fakeProc(t, 777)
	dir := filepath.Join(root, "42")
	status := filepath.Join(dir, "status")
	os.Remove(status)
	if err := syscall.Mkfifo(status, 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root}).Attest(context.Background(), 42)
		errc <- err
	}()
	// Opening the FIFO for writing blocks until the attestor opens it to
	// read, i.e. after it has read the first start time.
	w, err := os.OpenFile(status, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	writeStat(t, dir, 778)
	w.WriteString("Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n")
	w.Close()
	if err := <-errc; err == nil {
		t.Fatal("Attest succeeded although the process changed during attestation")
	}
}
