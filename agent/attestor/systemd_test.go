package attestor

import (
	"strings"
	"testing"

	"github.com/signetid/signet/internal/selector"
)

// v2 and v1 write a cgroup path as the 0:: line of a unified or hybrid host
// and as the name=systemd line of a legacy one, beside other hierarchies'.
func v2(path string) string { return "0::" + path + "\n" }
func v1(path string) string {
	return "12:pids:/system.slice/other.service\n1:name=systemd:" + path + "\n"
}

// systemdCases are cgroup paths as systemd lays them out, and what
// sd_pid_get_unit makes of them; each runs in both layouts and seeds the
// fuzzer.
var systemdCases = []struct {
	name string
	path string
	root string // the manager's root (PID 1's cgroup less init.scope)
	want string
}{
	{name: "a system service", path: "/system.slice/nginx.service", want: "nginx.service"},
	{name: "below a service: its own tree", path: "/system.slice/docker.service/anything", want: "docker.service"},
	{name: "a delegated service's unit-shaped tree", path: "/system.slice/app.service/payments.slice/sshd.service", want: "app.service"},
	{
		name: "a user's units are their manager's",
		path: "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
		want: "user@1000.service",
	},
	{
		name: "a user naming a unit like a system one gets their manager's",
		path: "/user.slice/user-1000.slice/user@1000.service/system.slice/nginx.service",
		want: "user@1000.service",
	},
	{name: "a login session", path: "/user.slice/user-1000.slice/session-3.scope", want: "session-3.scope"},
	{name: "nested slices", path: "/system.slice/system-getty.slice/getty@tty1.service", want: "getty@tty1.service"},
	{name: "a unit in the root slice", path: "/init.scope", want: "init.scope"},
	{name: "a transient scope", path: "/machine.slice/machine-web.scope/payload", want: "machine-web.scope"},
	{name: "an escaped name", path: "/system.slice/_cpu.service", want: "cpu.service"},
	{name: "an escaped name starting with _", path: "/system.slice/__x.service", want: "_x.service"},
	{name: "an escaped slice", path: "/_cpu.slice/x.service", want: "x.service"},
	{name: "doubled slashes", path: "//system.slice//nginx.service", want: "nginx.service"},
	{name: "colons and escapes", path: `/system.slice/system-systemd\x2dfsck.slice/systemd-fsck@dev-disk-by\x2duuid-0a1b.service`, want: `systemd-fsck@dev-disk-by\x2duuid-0a1b.service`},
	{name: "a removed cgroup (v2)", path: "/system.slice/old.service (deleted)", want: "old.service"},
	{name: "255 bytes", path: "/system.slice/" + strings.Repeat("a", 247) + ".service", want: strings.Repeat("a", 247) + ".service"},
	{
		name: "below the manager's root (systemd in a container)",
		path: "/machine.slice/machine-web.scope/system.slice/nginx.service", root: "/machine.slice/machine-web.scope",
		want: "nginx.service",
	},
	{
		name: "outside the manager's root",
		path: "/system.slice/sshd.service", root: "/machine.slice/machine-web.scope",
		want: "sshd.service",
	},
	{
		name: "the root is a prefix of whole components",
		path: "/a.slice/b.scopex.service", root: "/a.slice/b.scope",
		want: "b.scopex.service",
	},
	{name: "the manager's root itself", path: "/machine.slice/machine-web.scope", root: "/machine.slice/machine-web.scope"},

	{name: "the root cgroup", path: "/"},
	{name: "a slice alone", path: "/system.slice"},
	{name: "the root slice", path: "/-.slice"},
	{name: "a name that is no unit stops the walk", path: "/system.slice/notaunit/nginx.service"},
	{name: "a template", path: "/system.slice/getty@.service"},
	{name: "an instance of a slice", path: "/system.slice/foo@bar.slice/x.service"},
	{name: "an unknown unit type", path: "/system.slice/foo.daemon"},
	{name: "a space", path: "/system.slice/my app.service"},
	{name: "256 bytes", path: "/system.slice/" + strings.Repeat("a", 248) + ".service"},
	{name: "outside the agent's cgroup namespace", path: "/../../system.slice/nginx.service"},
	{name: "a kubernetes pod", path: "/kubepods/besteffort/pod" + tUID + "/" + tCID},
	{name: "a docker container with the cgroupfs driver", path: "/docker/" + tCID},
	{name: "a docker container with the systemd driver", path: "/system.slice/docker-" + tCID + ".scope", want: "docker-" + tCID + ".scope"},
}

func TestSystemdUnit(t *testing.T) {
	for _, tc := range systemdCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := systemdUnit([]byte(v2(tc.path)), false, tc.root); got != tc.want {
				t.Errorf("unified or hybrid layout: systemdUnit(%q) = %q, want %q", v2(tc.path), got, tc.want)
			}
			if got := systemdUnit([]byte(v1(tc.path)), true, tc.root); got != tc.want {
				t.Errorf("legacy layout: systemdUnit(%q) = %q, want %q", v1(tc.path), got, tc.want)
			}
		})
	}
}

// TestSystemdUnitPicksTheLayoutsLine reads whole /proc/PID/cgroup files: a
// hybrid host's shows both systemd lines, and only the layout's counts.
func TestSystemdUnitPicksTheLayoutsLine(t *testing.T) {
	hybrid := "12:pids:/system.slice/pids.service\n" +
		"2:cpu,cpuacct:/system.slice/cpu.service\n" +
		"1:name=systemd:/system.slice/v1.service\n" +
		"0::/system.slice/v2.service\n"
	for _, tc := range []struct {
		name   string
		in     string
		legacy bool
		want   string
	}{
		{"hybrid host, unified layout", hybrid, false, "v2.service"},
		{"hybrid host, legacy layout", hybrid, true, "v1.service"},
		{"v2 line first", "0::/system.slice/v2.service\n1:name=systemd:/system.slice/v1.service\n", true, "v1.service"},
		{"no v2 line", "1:name=systemd:/system.slice/v1.service\n", false, ""},
		{"no name=systemd line", "0::/system.slice/v2.service\n4:memory:/system.slice/m.service\n", true, ""},
		{"a named hierarchy that is not systemd's", "1:name=systemd2:/system.slice/x.service\n", true, ""},
		{"name=systemd among other controllers", "1:cpu,name=systemd:/system.slice/x.service\n", true, "x.service"},
		{"malformed lines are skipped", "garbage\n1:name=systemd\n0::relative.service\n0::/system.slice/x.service\n", false, "x.service"},
		{"the first line counts", "0::/\n0::/system.slice/x.service\n", false, ""},
		{"empty file", "", false, ""},
		{"no trailing newline", "0::/system.slice/x.service", false, "x.service"},
	} {
		if got := systemdUnit([]byte(tc.in), tc.legacy, ""); got != tc.want {
			t.Errorf("%s: systemdUnit(%q, legacy %v) = %q, want %q", tc.name, tc.in, tc.legacy, got, tc.want)
		}
	}
}

func TestManagerRoot(t *testing.T) {
	for _, tc := range []struct {
		pid1   string
		legacy bool
		want   string
	}{
		{v2("/init.scope"), false, ""},
		{v2("/"), false, "/"},
		{v1("/init.scope"), true, ""},
		{v2("/machine.slice/machine-web.scope/init.scope"), false, "/machine.slice/machine-web.scope"},
		{v2("/system.slice"), false, ""},
		{v1("/lxc/web/system"), true, "/lxc/web"},
		{v2("/docker/" + tCID), false, "/docker/" + tCID},
		{"1:name=systemd:/init.scope\n", false, ""},
	} {
		if got := managerRoot([]byte(tc.pid1), tc.legacy); got != tc.want {
			t.Errorf("managerRoot(%q, legacy %v) = %q, want %q", tc.pid1, tc.legacy, got, tc.want)
		}
	}
}

func FuzzSystemdUnit(f *testing.F) {
	for _, tc := range systemdCases {
		f.Add([]byte(v2(tc.path)), false)
		f.Add([]byte(v1(tc.path)), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, legacy bool) {
		unit := systemdUnit(in, legacy, "")
		if unit == "" {
			return
		}
		sel := selector.Selector{Type: "systemd", Value: "id:" + unit}
		if err := sel.Validate(); err != nil {
			t.Fatalf("systemdUnit(%q) = %q, a selector no entry can hold: %v", in, unit, err)
		}
		// The other layout's line and other hierarchies' change nothing.
		noise := "1:name=systemd:/system.slice/noise.service\n"
		if legacy {
			noise = "0::/system.slice/noise.service\n"
		}
		noise += "4:memory:/system.slice/memory.service\n"
		if again := systemdUnit(append([]byte(noise), in...), legacy, ""); again != unit {
			t.Fatalf("with %q first: systemdUnit = %q, want %q", noise, again, unit)
		}
		// Nothing created below a unit's cgroup (which its owner may
		// delegate) changes which unit it is.
		path, _ := systemdPath(in, legacy)
		hierarchy := "0::"
		if legacy {
			hierarchy = "1:name=systemd:"
		}
		for _, below := range []string{"/sshd.service", "/evil.slice/sshd.service", "/_init.scope", "/../x.service"} {
			deeper := hierarchy + path + below + "\n"
			if again := systemdUnit([]byte(deeper), legacy, ""); again != unit {
				t.Fatalf("systemdUnit(%q) = %q, but %q below it gives %q", in, unit, below, again)
			}
		}
	})
}
