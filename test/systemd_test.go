package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// serviceCgroups creates the cgroup /<unit without .service>.slice/<unit>
// in every cgroup hierarchy systemd may keep its units in (cgroup v2 at
// /sys/fs/cgroup or its unified/, the v1 name=systemd one at systemd/),
// whichever this host's layout makes the agent read. It returns their
// cgroup.procs files; the cgroups are removed when the test ends, after the
// processes put in them have exited.
func serviceCgroups(t *testing.T, unit string) []string {
	t.Helper()
	var procs []string
	for _, h := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(filepath.Join(h, "cgroup.procs")); err != nil {
			continue // not a cgroup hierarchy (a hybrid host's tmpfs)
		}
		slice := filepath.Join(h, strings.TrimSuffix(unit, ".service")+".slice")
		service := filepath.Join(slice, unit)
		if err := os.MkdirAll(service, 0o755); err != nil {
			t.Skipf("cannot create cgroups in %s: %v", h, err)
		}
		t.Cleanup(func() {
			for _, d := range []string{service, slice} {
				if err := os.Remove(d); err != nil {
					t.Errorf("remove cgroup %s: %v", d, err)
				}
			}
		})
		procs = append(procs, filepath.Join(service, "cgroup.procs"))
	}
	if len(procs) == 0 {
		t.Skip("no cgroup hierarchy under /sys/fs/cgroup")
	}
	return procs
}

// fetchIn runs `signet agent api fetch x509` (a go-spiffe client) as a
// process that first moves itself into the cgroups whose cgroup.procs
// files are given (none: it stays where this test is), and returns what it
// printed.
func fetchIn(t *testing.T, socket string, procs ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	script := `bin=$1 sock=$2; shift 2
for p; do echo $$ > "$p" || exit 97; done
exec "$bin" agent api fetch x509 --socket "$sock"`
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", script, "sh", signetBin(t), socket}, procs...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAgentSystemdWorkloadAttestor registers an entry for a systemd unit
// alone: a process in the unit's cgroup gets its SVID from a real agent, the
// same process outside it does not, and neither does anyone once the
// attestor is turned off. The flag overrides the config file both ways.
func TestAgentSystemdWorkloadAttestor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	b := make([]byte, 6)
	rand.Read(b)
	unit := "signet-test-" + hex.EncodeToString(b) + ".service"
	procs := serviceCgroups(t, unit)
	n := startNode(t)

	for sel, wantErr := range map[string]string{
		"systemd:id:nginx":                     `"nginx" has no type suffix`,
		"systemd:id:system.slice":              "is a slice",
		"systemd:id:getty@.service":            "is a template",
		"systemd:fragment_path:/etc/x.service": `systemd:fragment_path is not provided`,
	} {
		if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
			"--spiffe-id", "spiffe://example.org/refused", "--selector", sel); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("entry create --selector %s: %v, want an error containing %q", sel, err, wantErr)
		}
	}
	id := "spiffe://example.org/systemd/" + strings.TrimSuffix(unit, ".service")
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", id, "--selector", "systemd:id:"+unit); err != nil {
		t.Fatal(err)
	}

	// This host did not boot with systemd, so the attestor is off unless
	// turned on; the flag beats the file's false.
	restart := func(file string, flags ...string) {
		t.Helper()
		n.agent.Stop()
		cfg := filepath.Join(t.TempDir(), "agent.conf")
		if err := os.WriteFile(cfg, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		n.agent = startSignet(t, nil, append(append(n.agentArgs, "--config", cfg), flags...)...)
		n.agent.waitLine(t, "agent ready", 30*time.Second)
	}
	restart("systemd_workload_attestor = false\n", "--systemd-workload-attestor")

	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := fetchIn(t, n.socket, procs...)
		if err == nil && strings.Contains(out, "SPIFFE ID:    "+id+"\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a process in %s got no SVID %s: %v\n%s", unit, id, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := fetchIn(t, n.socket); err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("a process outside %s: %v\n%s\nwant PermissionDenied", unit, err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+n.socket)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("this test process, outside %s: FetchX509SVID = %v, %v; want PermissionDenied", unit, svid, err)
	}

	// Off by flag, whatever the file says: the unit's process keeps only
	// what its uid earns.
	uidID := "spiffe://example.org/systemd/uid-0"
	if _, err := n.server.cli(t, "server", "entry", "create", "--parent-id", nodeAgentID,
		"--spiffe-id", uidID, "--selector", "unix:uid:0"); err != nil {
		t.Fatal(err)
	}
	restart("systemd_workload_attestor = true\n", "--systemd-workload-attestor=false")
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, err := fetchIn(t, n.socket, procs...)
		if err == nil && strings.Contains(out, uidID) {
			if strings.Contains(out, id) {
				t.Fatalf("with the systemd attestor off, a process in %s still got %s:\n%s", unit, id, out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent never served %s: %v\n%s", uidID, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
