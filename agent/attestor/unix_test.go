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

// The digest cache must not outlive the content it describes. The owner of
// an executable can rewrite it in place with other code of the same size and
// put the old mtime back; the digest must still be the new content's.
func TestUnixHashCacheSeesRewriteWithRestoredMtime(t *testing.T) {
	root, exe := fakeProc(t, 777)
	u := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root})
	first := "unix:sha256:" + fileSHA256(t, exe)
	for range 2 { // the second attestation is served from the cache
		if sels, err := u.Attest(t.Context(), 42); err != nil || !has(sels, first) {
			t.Fatalf("Attest = %v, %v; want %s", selector.Strings(sels), err, first)
		}
	}
	fi, err := os.Stat(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, []byte("version-2"), 0o755); err != nil { // same size as version-1
		t.Fatal(err)
	}
	if err := os.Chtimes(exe, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	second := "unix:sha256:" + fileSHA256(t, exe)
	if sels, err := u.Attest(t.Context(), 42); err != nil || !has(sels, second) || has(sels, first) {
		t.Fatalf("after an in-place rewrite with the old mtime: Attest = %v, %v; want %s only", selector.Strings(sels), err, second)
	}
}

// A process in another mount namespace can run any file under any path: here
// tail's code is mounted over /usr/bin/sleep in a private namespace. The
// agent must not believe the link text; the digest still names the code.
func TestUnixPathFromAnotherMountNamespaceIsNotTrusted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a mount namespace")
	}
	sleep, err := filepath.EvalSymlinks("/usr/bin/sleep")
	if err != nil {
		t.Skip(err)
	}
	tail, err := filepath.EvalSymlinks("/usr/bin/tail")
	if err != nil {
		t.Skip(err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" "$2" && exec "$2" -f /dev/null`, "sh", tail, sleep)
	if err := cmd.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Wait for the exec: until then the process is unshare or sh.
	pid := cmd.Process.Pid
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); link == sleep {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the namespaced process never ran its bind-mounted executable")
		}
	}
	sels, err := attestor.NewUnix(attestor.UnixOptions{}).Attest(t.Context(), int32(pid))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if has(sels, "unix:path:"+sleep) {
		t.Errorf("selectors %v claim %s, but the process runs %s", selector.Strings(sels), sleep, tail)
	}
	if want := "unix:sha256:" + fileSHA256(t, tail); !has(sels, want) {
		t.Errorf("selectors %v lack the digest of the code that runs, %s", selector.Strings(sels), want)
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

// attestWhileReused runs a.Attest for pid 42 of the fakeProc tree at root
// and, while the attestor is blocked reading name (made a FIFO), gives the
// PID to a new process (a new start time), then lets the read end with
// content. It returns Attest's error.
func attestWhileReused(t *testing.T, a attestor.Attestor, root, name, content string) error {
	t.Helper()
	dir := filepath.Join(root, "42")
	file := filepath.Join(dir, name)
	os.Remove(file)
	if err := syscall.Mkfifo(file, 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.Attest(context.Background(), 42)
		errc <- err
	}()
	// Opening the FIFO for writing blocks until the attestor opens it to
	// read, i.e. after it has read the first start time.
	w, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	writeStat(t, dir, 778)
	w.WriteString(content)
	w.Close()
	return <-errc
}

// TestUnixDetectsPIDReuse swaps the process while the attestor is blocked
// reading its status.
func TestUnixDetectsPIDReuse(t *testing.T) {
	root, _ := fakeProc(t, 777)
	u := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root})
	if err := attestWhileReused(t, u, root, "status", "Uid:\t1\t1\t1\t1\nGid:\t1\t1\t1\t1\n"); err == nil {
		t.Fatal("Attest succeeded although the process changed during attestation")
	}
}

// An agent in a container of its own (hostPID) judges unix:path against the
// host's root, as PID 1 sees it, not against its image: the path counts when
// the host has that very file there.
func TestUnixPathJudgedAgainstTheHostRoot(t *testing.T) {
	root, exe := fakeProc(t, 777)
	host := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(root, "1", "root")); err != nil {
		t.Fatal(err)
	}
	attest := func() []selector.Selector {
		sels, err := attestor.NewUnix(attestor.UnixOptions{ProcRoot: root}).Attest(t.Context(), 42)
		if err != nil {
			t.Fatal(err)
		}
		return sels
	}
	if has(attest(), "unix:path:"+exe) {
		t.Fatal("unix:path given, but the host root has no file at that path")
	}
	onHost := filepath.Join(host, exe)
	if err := os.MkdirAll(filepath.Dir(onHost), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(exe, onHost); err != nil { // the very same file
		t.Fatal(err)
	}
	if !has(attest(), "unix:path:"+exe) {
		t.Fatal("unix:path missing, though the host root has the very file at that path")
	}
}
