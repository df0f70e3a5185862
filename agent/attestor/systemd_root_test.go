package attestor_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/internal/selector"
)

// systemdHierarchies finds the cgroup v2 mount and the v1 name=systemd
// mount; "" where there is none.
func systemdHierarchies(t *testing.T) (v1Systemd, v2 string) {
	t.Helper()
	for _, m := range cgroupMountList(t) {
		switch {
		case m.fsType == "cgroup2":
			v2 = m.dir
		case slices.Contains(m.options, "name=systemd"):
			v1Systemd = m.dir
		}
	}
	return v1Systemd, v2
}

func newSystemd(t *testing.T, opts attestor.SystemdOptions) *attestor.Systemd {
	t.Helper()
	s, err := attestor.NewSystemd(opts)
	if err != nil {
		t.Fatalf("NewSystemd: %v", err)
	}
	return s
}

func attestExactly(t *testing.T, a attestor.Attestor, pid int, want ...string) {
	t.Helper()
	sels, err := a.Attest(t.Context(), int32(pid))
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	if got := selector.Strings(sels); !slices.Equal(got, want) {
		t.Fatalf("Attest = %q, want %q", got, want)
	}
}

// TestSystemdAttestsARealProcessInAServiceCgroup puts a real process into a
// cgroup named like a service, in the hierarchy where this host's layout
// has systemd keep its units (cgroup v2 on unified and hybrid hosts), and
// attests it from what the kernel reports.
func TestSystemdAttestsARealProcessInAServiceCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	_, v2 := systemdHierarchies(t)
	// Where systemd's layout rule (cgroup2 at /sys/fs/cgroup, or at
	// unified/ or systemd/ below a tmpfs there) finds its hierarchy.
	if !slices.Contains([]string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"}, v2) {
		t.Skipf("systemd's hierarchy on this host is not cgroup v2 (v2 mounted at %q)", v2)
	}
	tag := "signet-test-" + randomHex(t, 6)
	unit := tag + ".service"
	tree := cgroupTree(t, v2, tag+".slice")
	service := tree(unit)
	s := newSystemd(t, attestor.SystemdOptions{})

	cmd := startSleep(t) // killed before the cgroups are removed
	pid := cmd.Process.Pid
	moveTo(t, service, pid)
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
		t.Logf("/proc/%d/cgroup:\n%s", pid, b)
	}
	attestExactly(t, s, pid, "systemd:id:"+unit)

	for _, tc := range []struct {
		name, cgroup, want string
	}{
		{"a cgroup the unit made below its own changes nothing", unit + "/evil.slice/sshd.service", "systemd:id:" + unit},
		{"a user's own units are their manager's", "user-4242.slice/user@4242.service/app.slice/nginx.service", "systemd:id:user@4242.service"},
		{"a login session", "user-4242.slice/session-7.scope", "systemd:id:session-7.scope"},
		{"a cgroup that is no unit: no selectors", "notaunit/" + unit, ""},
		{"a slice alone: no selectors", "sub.slice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			moveTo(t, tree(tc.cgroup), pid)
			defer moveTo(t, service, pid)
			var want []string
			if tc.want != "" {
				want = []string{tc.want}
			}
			attestExactly(t, s, pid, want...)
		})
	}

	t.Run("with the unix attestor", func(t *testing.T) {
		sels, err := attestor.Multi(attestor.NewUnix(attestor.UnixOptions{}), s).Attest(t.Context(), int32(pid))
		if err != nil {
			t.Fatalf("Attest: %v", err)
		}
		for _, want := range []string{"systemd:id:" + unit, "unix:uid:0"} {
			if !has(sels, want) {
				t.Errorf("selectors %q lack %s", selector.Strings(sels), want)
			}
		}
	})

	t.Run("outside any unit: no selectors, no error", func(t *testing.T) {
		moveTo(t, v2, pid)
		defer moveTo(t, service, pid)
		attestExactly(t, s, pid)
	})

	t.Run("an exited process fails", func(t *testing.T) {
		gone := startSleep(t)
		moveTo(t, service, gone.Process.Pid)
		gone.Process.Kill()
		gone.Wait()
		if sels, err := s.Attest(t.Context(), int32(gone.Process.Pid)); err == nil {
			t.Fatalf("Attest of a reaped process = %q, want an error", selector.Strings(sels))
		}
	})
}

// mount mounts a filesystem at a new directory under dir, unmounted when the
// test ends.
func mount(t *testing.T, fsType, target, data string) {
	t.Helper()
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fsType, target, fsType, 0, data); err != nil {
		t.Skipf("mount %s at %s (%s): %v", fsType, target, data, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, 0); err != nil {
			t.Errorf("unmount %s: %v", target, err)
		}
	})
}

// TestSystemdLayouts mounts the host's cgroup hierarchies as each of
// systemd's layouts lays them out, puts a real process into one service in
// the v2 hierarchy and another in the v1 name=systemd one, and checks that
// each layout reads the line systemd does: the v2 one on unified and hybrid
// hosts, name=systemd on legacy ones.
func TestSystemdLayouts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups and mount")
	}
	v1, v2 := systemdHierarchies(t)
	if v1 == "" || v2 == "" {
		t.Skipf("needs a cgroup v2 and a v1 name=systemd hierarchy (found %q, %q)", v2, v1)
	}
	tag := "signet-test-" + randomHex(t, 6)
	v1Unit, v2Unit := tag+"-v1.service", tag+"-v2.service"
	v1Service := cgroupTree(t, v1, tag+".slice")(v1Unit)
	v2Service := cgroupTree(t, v2, tag+".slice")(v2Unit)
	dir := t.TempDir()

	unified := filepath.Join(dir, "unified-host")
	mount(t, "cgroup2", unified, "")
	hybrid := filepath.Join(dir, "hybrid-host")
	mount(t, "tmpfs", hybrid, "mode=755")
	mount(t, "cgroup2", filepath.Join(hybrid, "unified"), "")
	mount(t, "cgroup", filepath.Join(hybrid, "systemd"), "none,name=systemd")
	legacy := filepath.Join(dir, "legacy-host")
	mount(t, "tmpfs", legacy, "mode=755")
	mount(t, "cgroup", filepath.Join(legacy, "systemd"), "none,name=systemd")
	bare := filepath.Join(dir, "bare-tmpfs")
	mount(t, "tmpfs", bare, "mode=755")

	cmd := startSleep(t)
	pid := cmd.Process.Pid
	moveTo(t, v1Service, pid)
	moveTo(t, v2Service, pid)

	for _, tc := range []struct{ layout, cgroupFS, want string }{
		{"unified", unified, v2Unit},
		{"hybrid", hybrid, v2Unit},
		{"legacy", legacy, v1Unit},
	} {
		t.Run(tc.layout, func(t *testing.T) {
			attestExactly(t, newSystemd(t, attestor.SystemdOptions{CgroupFS: tc.cgroupFS}), pid, "systemd:id:"+tc.want)
		})
	}
	for _, tc := range []struct{ name, cgroupFS, wantErr string }{
		{"a tmpfs without systemd's hierarchy", bare, "has no systemd hierarchy"},
		{"no cgroups at all", dir, "neither cgroup2 nor a tmpfs"},
		{"nothing there", filepath.Join(dir, "missing"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := attestor.NewSystemd(attestor.SystemdOptions{CgroupFS: tc.cgroupFS}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewSystemd(%s) = %v, want an error containing %q", tc.cgroupFS, err, tc.wantErr)
			}
		})
	}
}

// fakeSystemdProc adds cgroup files to a fakeProc tree: pid 42's and PID
// 1's, each with a v2 and a name=systemd line, so that the host's layout
// does not matter.
func fakeSystemdProc(t *testing.T, pid1, pid42 string) string {
	t.Helper()
	if _, err := attestor.NewSystemd(attestor.SystemdOptions{}); err != nil {
		t.Skipf("no cgroup layout here: %v", err)
	}
	root, _ := fakeProc(t, 777)
	for pid, path := range map[string]string{"1": pid1, "42": pid42} {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		lines := "1:name=systemd:" + path + "\n0::" + path + "\n"
		if err := os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(lines), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// A systemd in a container without a cgroup namespace runs its units below
// its own cgroup: they are read relative to PID 1's, as systemd does.
func TestSystemdReadsUnitsBelowPID1sCgroup(t *testing.T) {
	scope := "/machine.slice/machine-web.scope"
	root := fakeSystemdProc(t, scope+"/init.scope", scope+"/system.slice/nginx.service")
	attestExactly(t, newSystemd(t, attestor.SystemdOptions{ProcRoot: root}), 42, "systemd:id:nginx.service")

	root = fakeSystemdProc(t, "/init.scope", scope+"/system.slice/nginx.service")
	attestExactly(t, newSystemd(t, attestor.SystemdOptions{ProcRoot: root}), 42, "systemd:id:machine-web.scope")
}

// An agent in a cgroup namespace of its own would misread its callers'
// units; one that cannot read PID 1's cgroup would misplace them: both are
// refused, naming why.
func TestNewSystemdRefuses(t *testing.T) {
	root := fakeSystemdProc(t, "/init.scope", "/system.slice/nginx.service")
	for pid, target := range map[string]string{"self": "cgroup:[4026531835]", "1": "cgroup:[4026532999]"} {
		if err := os.MkdirAll(filepath.Join(root, pid, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, pid, "ns", "cgroup")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := attestor.NewSystemd(attestor.SystemdOptions{ProcRoot: root}); err == nil || !strings.Contains(err.Error(), "cgroup namespace of its own") {
		t.Fatalf("NewSystemd in its own cgroup namespace: %v, want a refusal naming it", err)
	}
	// The same namespace: accepted.
	if err := os.Remove(filepath.Join(root, "1", "ns", "cgroup")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("cgroup:[4026531835]", filepath.Join(root, "1", "ns", "cgroup")); err != nil {
		t.Fatal(err)
	}
	newSystemd(t, attestor.SystemdOptions{ProcRoot: root})

	if err := os.Remove(filepath.Join(root, "1", "cgroup")); err != nil {
		t.Fatal(err)
	}
	if _, err := attestor.NewSystemd(attestor.SystemdOptions{ProcRoot: root}); err == nil || !strings.Contains(err.Error(), "PID 1's cgroup") {
		t.Fatalf("NewSystemd without PID 1's cgroup: %v, want a refusal naming it", err)
	}
}

// TestSystemdDetectsPIDReuse swaps the process while the attestor is
// blocked reading its cgroup.
func TestSystemdDetectsPIDReuse(t *testing.T) {
	root := fakeSystemdProc(t, "/init.scope", "/system.slice/nginx.service")
	s := newSystemd(t, attestor.SystemdOptions{ProcRoot: root})
	attestExactly(t, s, 42, "systemd:id:nginx.service")
	err := attestWhileReused(t, s, root, "cgroup", "0::/system.slice/other.service\n1:name=systemd:/system.slice/other.service\n")
	if err == nil || !strings.Contains(err.Error(), "reused") {
		t.Fatalf("Attest = %v, want a PID reuse error", err)
	}
}
