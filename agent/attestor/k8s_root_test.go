package attestor_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/internal/selector"
)

// cgroupMount is a cgroup hierarchy's mount: where, cgroup or cgroup2, and
// its super options (for v1, its controllers or name=...).
type cgroupMount struct {
	dir, fsType string
	options     []string
}

// cgroupMountList lists the cgroup mounts in /proc/self/mountinfo.
func cgroupMountList(t *testing.T) []cgroupMount {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skip(err)
	}
	var mounts []cgroupMount
	for line := range strings.Lines(string(b)) {
		// ID parent major:minor root mount-point options ... - fstype source super-options
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 3 || (after[0] != "cgroup" && after[0] != "cgroup2") {
			continue
		}
		mounts = append(mounts, cgroupMount{dir: fields[4], fsType: after[0], options: strings.Split(after[2], ",")})
	}
	return mounts
}

// cgroupMounts finds a cgroup v1 hierarchy (pids, else any) and the cgroup
// v2 hierarchy in /proc/self/mountinfo; "" where there is none.
func cgroupMounts(t *testing.T) (v1, v2 string) {
	t.Helper()
	for _, m := range cgroupMountList(t) {
		switch m.fsType {
		case "cgroup2":
			v2 = m.dir
		case "cgroup":
			if v1 == "" || slices.Contains(m.options, "pids") {
				v1 = m.dir
			}
		}
	}
	return v1, v2
}

// skipInAPod skips a test that needs its processes to be in no pod (a CI
// runner may itself run in one).
func skipInAPod(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile("/proc/self/cgroup"); err != nil || strings.Contains(string(b), "kubepods") {
		t.Skipf("this test process may be in a Kubernetes pod (%v)", err)
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomUID(t *testing.T) string {
	h := randomHex(t, 16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// cgroupTree returns a function that creates cgroups (with their parents)
// below mount/top; the whole tree is removed, deepest first, when the test
// ends (after the processes in it are gone: call this before starting them).
func cgroupTree(t *testing.T, mount, top string) func(rel string) string {
	t.Helper()
	root := filepath.Join(mount, top)
	t.Cleanup(func() {
		var dirs []string
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	})
	return func(rel string) string {
		t.Helper()
		dir := filepath.Join(root, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Skipf("cannot create cgroups in %s: %v", mount, err)
		}
		return dir
	}
}

func moveTo(t *testing.T, cgroup string, pid int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		t.Fatalf("move pid %d to %s: %v", pid, cgroup, err)
	}
}

// TestK8sAttestsARealProcessInPodCgroups puts a real process into
// kubepods-shaped cgroups (cgroupfs layout in a v1 hierarchy, systemd layout
// in v2, each under a prefix as on a nested node) and attests it from what
// the kernel reports.
func TestK8sAttestsARealProcessInPodCgroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	skipInAPod(t)
	v1, v2 := cgroupMounts(t)
	if v1 == "" || v2 == "" {
		t.Skipf("needs a cgroup v1 and a v2 hierarchy (found %q, %q)", v1, v2)
	}
	tag := "signet-test-" + randomHex(t, 6)
	uid, otherUID := randomUID(t), randomUID(t)
	id, otherID := randomHex(t, 32), randomHex(t, 32)
	systemdPath := func(uid, id string) string {
		u := strings.ReplaceAll(uid, "-", "_")
		return "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice/cri-containerd-" + id + ".scope"
	}
	v1Container := cgroupTree(t, v1, tag)("kubepods/besteffort/pod" + uid + "/" + id)
	v2Tree := cgroupTree(t, v2, tag)
	v2Container := v2Tree(systemdPath(uid, id))
	v2Other := v2Tree(systemdPath(otherUID, otherID))

	cmd := startSleep(t) // killed before the cgroups are removed
	pid := cmd.Process.Pid
	moveTo(t, v1Container, pid)
	moveTo(t, v2Container, pid)
	cgroups, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/proc/%d/cgroup:\n%s", pid, cgroups)

	kl := newFakeKubelet(t, token, kubeletOpts{})
	kl.SetPods(testPod(uid, "web", id), testPod(otherUID, "db", otherID))
	// The kubelet's cgroup root is /<tag>, as on a node whose kubelet runs
	// with --cgroup-root.
	k := newK8s(t, kl, attestor.K8sOptions{ProcRoot: "/proc", MaxPollAttempts: 1, CgroupRoot: "/" + tag})

	got := attestStrings(t, k, int32(pid))
	for _, want := range []string{"k8s:pod-uid:" + uid, "k8s:pod-name:web", "k8s:ns:payments", "k8s:container-name:app"} {
		if !slices.Contains(got, want) {
			t.Errorf("selectors %q lack %s", got, want)
		}
	}

	t.Run("a pod-shaped tree outside the kubelet's cgroup root is no pod", func(t *testing.T) {
		top := newK8s(t, kl, attestor.K8sOptions{ProcRoot: "/proc", MaxPollAttempts: 1})
		sels, err := top.Attest(t.Context(), int32(pid))
		if err != nil || sels != nil {
			t.Fatalf("Attest = %v, %v; want no selectors: anyone owning a cgroup tree can shape it like a pod's", selector.Strings(sels), err)
		}
	})

	t.Run("cgroups of two pods are refused", func(t *testing.T) {
		moveTo(t, v2Other, pid)
		defer moveTo(t, v2Container, pid)
		sels, err := k.Attest(t.Context(), int32(pid))
		if err == nil || !strings.Contains(err.Error(), "ambiguous") {
			t.Fatalf("Attest = %v, %v; want an ambiguity error", selector.Strings(sels), err)
		}
	})

	t.Run("out of the pod's cgroups, no k8s selectors", func(t *testing.T) {
		moveTo(t, v1, pid)
		moveTo(t, v2, pid)
		calls := kl.Calls()
		sels, err := k.Attest(t.Context(), int32(pid))
		if err != nil || sels != nil {
			t.Fatalf("Attest = %v, %v; want no selectors and no error", selector.Strings(sels), err)
		}
		if kl.Calls() != calls {
			t.Fatal("the kubelet was asked about a process in no pod")
		}
	})
}

func TestK8sHostProcessHasNoSelectors(t *testing.T) {
	skipInAPod(t)
	kl := newFakeKubelet(t, token, kubeletOpts{})
	k := newK8s(t, kl, attestor.K8sOptions{ProcRoot: "/proc"})
	pid := startSleep(t).Process.Pid
	sels, err := k.Attest(t.Context(), int32(pid))
	if err != nil || sels != nil {
		t.Fatalf("Attest of a process in no pod = %v, %v; want no selectors and no error", selector.Strings(sels), err)
	}
	if kl.Calls() != 0 {
		t.Fatal("the kubelet was asked about a process in no pod")
	}
}
