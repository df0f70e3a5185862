package test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/signetid/signet/internal/kubetest"
)

// cgroup2Root is where the unified cgroup hierarchy is mounted.
func cgroup2Root(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("mountinfo: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4]
			}
		}
	}
	t.Skip("no cgroup v2 hierarchy mounted")
	return ""
}

// cgroupPrefix is a unique cgroup path for a test's pod cgroups.
func cgroupPrefix() string {
	var rnd [4]byte
	rand.Read(rnd[:])
	return "/signet-e2e-" + hex.EncodeToString(rnd[:])
}

// podCgroup creates a cgroup shaped like a container's under the systemd
// driver, below the cgroup path prefix, and returns an open directory for
// CLONE_INTO_CGROUP; it is removed when the test ends.
func podCgroup(t *testing.T, prefix string, podUID types.UID, containerID string) *os.File {
	t.Helper()
	root := cgroup2Root(t)
	prefix = filepath.Join(root, prefix)
	uid := strings.ReplaceAll(string(podUID), "-", "_")
	dir := filepath.Join(prefix, "kubepods.slice", "kubepods-besteffort.slice",
		"kubepods-besteffort-pod"+uid+".slice", "cri-containerd-"+containerID+".scope")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("cannot create a cgroup (%v)", err)
	}
	t.Cleanup(func() {
		// Leaf first; each is empty once its processes have exited.
		for d := dir; d != root && strings.HasPrefix(d, prefix); d = filepath.Dir(d) {
			os.Remove(d)
		}
	})
	fd, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	return fd
}

// TestKubernetesEndToEnd runs the Kubernetes story with real binaries: the
// server attests the agent with its projected token (k8s_psat) through the
// cluster's API server and publishes the trust bundle to a ConfigMap; the
// agent, bootstrapped from that ConfigMap, names a workload in a real pod
// cgroup from the kubelet's view of the pod (k8s:ns, k8s:sa, labels), and
// serves it the SVID of an entry under a node alias.
func TestKubernetesEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	// The cluster: an API server with the agent's pod on node-1, and the
	// node's kubelet with a workload pod.
	kube := kubetest.NewAPIServer(t)
	kube.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "7d0c6a52-node-1",
		Labels: map[string]string{"topology.kubernetes.io/zone": "eu-1a"}}})
	kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "signet-agent-q8x2v", UID: "agent-pod-uid"},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "signet-agent"},
	})
	kube.AddToken("eyJhbGciOiJSUzI1NiJ9.projected-agent-token.c2ln", kubetest.Token{Audiences: []string{"signet-server"},
		Namespace: "signet-system", ServiceAccount: "signet-agent", PodName: "signet-agent-q8x2v", PodUID: "agent-pod-uid"})
	kubelet := kubetest.NewKubelet(t, "agent-sa-token")
	const (
		podUID      = types.UID("5f1e4b2a-9c3d-4e8f-a1b2-c3d4e5f60718")
		containerID = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	)
	kubelet.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "checkout-7f9c", UID: podUID, Labels: map[string]string{"app": "checkout"}},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "checkout",
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/checkout:1.4"}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "registry.example/checkout:1.4", ContainerID: "containerd://" + containerID,
		}}},
	})
	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	serverConf := write("server.conf", fmt.Sprintf(`
k8s_psat "prod" {
  service_account_allow_list = ["signet-system:signet-agent"]
  kubeconfig = %q
  allowed_node_label_keys = ["topology.kubernetes.io/zone"]
}
k8s_bundle {
  namespace = "signet-system"
  config_map = "signet-trust-bundle"
  kubeconfig = %[1]q
}
`, kube.Kubeconfig(t, dir)))
	srv := startServerProc(t, "--config", serverConf)
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")

	// The ConfigMap the agents mount holds the bundle `bundle show` prints.
	var bundle string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if cm := kube.ConfigMap("signet-system", "signet-trust-bundle"); cm != nil && cm.Data["bundle.pem"] != "" {
			bundle = cm.Data["bundle.pem"]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not publish its bundle to the ConfigMap")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if shown, err := srv.cli(t, "server", "bundle", "show"); err != nil || strings.TrimSpace(shown) != strings.TrimSpace(bundle) {
		t.Fatalf("ConfigMap bundle differs from `bundle show` (%v)", err)
	}

	// Entries: a node alias for every agent of cluster prod in zone eu-1a,
	// and the checkout service account's identity under it.
	workloadID := registerCheckout(t, srv)

	// The kubelet's pods live under this cgroup path (its --cgroup-root).
	kubeletRoot := cgroupPrefix()
	socket := filepath.Join(dir, "sockets", "agent.sock")
	agentProc := startSignet(t, nil, "agent", "run", "--server", addr, "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "agent"), "--socket", socket,
		"--trust-bundle", write("bundle.pem", bundle),
		"--k8s-psat-cluster", "prod", "--k8s-psat-token-path", write("agent-token", "eyJhbGciOiJSUzI1NiJ9.projected-agent-token.c2ln"),
		"--k8s-workload-attestor", "--kubelet-url", kubelet.URL(), "--kubelet-ca", kubelet.WriteCA(t, dir),
		"--kubelet-token-path", write("kubelet-token", "agent-sa-token"), "--node-name", "node-1",
		"--k8s-cgroup-root", kubeletRoot)
	agentProc.waitLine(t, "agent ready", 30*time.Second)
	if out := agentProc.Output(); !strings.Contains(out, "spiffe://example.org/agent/k8s_psat/prod/7d0c6a52-node-1") {
		t.Fatalf("agent is not named after its node:\n%s", out)
	}

	// The workload: a process started straight into the pod's container
	// cgroup, as the container runtime would.
	cg := podCgroup(t, kubeletRoot, podUID, containerID)
	fetch := func(cgroup *os.File) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, signetBin(t), "agent", "api", "fetch", "x509", "--socket", socket)
		if cgroup != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgroup.Fd())}
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var out string
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, err = fetch(cg); err == nil {
			break
		}
	}
	if err != nil || !strings.Contains(out, "SPIFFE ID:    "+workloadID) {
		t.Fatalf("workload in the pod: %v\n%s", err, out)
	}
	// The same binary outside the pod is not the checkout service account,
	// nor is it in a copy of the pod's cgroup path built elsewhere (what the
	// owner of a delegated cgroup tree could make).
	if out, err := fetch(nil); err == nil || strings.Contains(out, workloadID) {
		t.Fatalf("a host process got the pod's identity:\n%s", out)
	}
	if out, err := fetch(podCgroup(t, cgroupPrefix(), podUID, containerID)); err == nil || strings.Contains(out, workloadID) {
		t.Fatalf("a process in a pod-shaped cgroup outside the kubelet's root got the pod's identity:\n%s", out)
	}
}

// writeTestFile writes content to dir/name, 0600, and returns the path.
func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// registerCheckout creates the entries the Kubernetes end-to-end tests
// share: a node alias for every agent of cluster prod in zone eu-1a, and the
// checkout service account's identity under it, whose ID it returns.
func registerCheckout(t *testing.T, srv *serverEnv) string {
	t.Helper()
	if _, err := srv.cli(t, "server", "entry", "create", "--node", "--spiffe-id", "spiffe://example.org/nodes/prod-eu-1a",
		"--selector", "k8s_psat:cluster:prod", "--selector", "k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a"); err != nil {
		t.Fatal(err)
	}
	const workloadID = "spiffe://example.org/ns/payments/sa/checkout"
	if _, err := srv.cli(t, "server", "entry", "create", "--parent-id", "spiffe://example.org/nodes/prod-eu-1a",
		"--spiffe-id", workloadID, "--selector", "k8s:ns:payments", "--selector", "k8s:sa:checkout",
		"--selector", "k8s:pod-label:app:checkout"); err != nil {
		t.Fatal(err)
	}
	return workloadID
}
