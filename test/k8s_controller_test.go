package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/server/k8sreg"
)

// TestKubernetesControllerEndToEnd: with the real binaries and a real pod
// cgroup, applying examples/k8s-controller's ClusterSPIFFEID is all it takes
// for a pod's process to get its SVID through the Workload API (no `entry
// create`); the entry cannot be changed by hand, and goes with the pod.
func TestKubernetesControllerEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	ctx := context.Background()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	const (
		podUID      = types.UID("8a2c4e6f-1b3d-4f5a-9c7e-0d1f2a3b4c5d")
		containerID = "1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a"
		workloadID  = "spiffe://example.org/ns/payments/sa/checkout"
	)
	kube := kubetest.NewAPIServer(t)
	kube.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "9e1d7b3c-node-1"}})
	kube.AddNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "payments", Labels: map[string]string{"signetid.io/identity": "enabled"}}})
	kube.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "signet-agent-x1", UID: "agent-pod-uid"},
		Spec:       corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "signet-agent"},
	})
	const agentToken = "eyJhbGciOiJSUzI1NiJ9.projected-agent-token.c2ln"
	kube.AddToken(agentToken, kubetest.Token{Audiences: []string{"signet-server"},
		Namespace: "signet-system", ServiceAccount: "signet-agent", PodName: "signet-agent-x1", PodUID: "agent-pod-uid"})
	workloadPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "checkout-5d8f", UID: podUID, Labels: map[string]string{"app": "checkout"}},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "checkout",
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/checkout:2.0"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "registry.example/checkout:2.0", ContainerID: "containerd://" + containerID,
		}}},
	}
	kube.AddPod(workloadPod)
	kubelet := kubetest.NewKubelet(t, "agent-sa-token")
	kubelet.AddPod(workloadPod)

	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	kubeconfig := kube.Kubeconfig(t, dir)
	srv := startServerProc(t, "--config", write("server.conf", fmt.Sprintf(`
k8s_psat "prod" {
  service_account_allow_list = ["signet-system:signet-agent"]
  kubeconfig = %q
}
k8s_controller {
  cluster = "prod"
}
`, kubeconfig)))
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")

	// kubectl apply -f examples/k8s-controller/clusterspiffeid.yaml
	_, dyn, err := k8sreg.Clients(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := os.ReadFile("../examples/k8s-controller/clusterspiffeid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cr unstructured.Unstructured
	if err := yaml.Unmarshal(manifest, &cr.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(k8sreg.GVR).Create(ctx, &cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The entry appears, owned by the controller, and the admin API will
	// not change it.
	var entryID string
	waitUntil(t, 20*time.Second, "the controller's entry", func() bool {
		out, err := srv.cli(t, "server", "entry", "list")
		if m := regexp.MustCompile(`Entry ID:\s+(k8s\.prod\.[0-9a-f]+)`).FindStringSubmatch(out); err == nil && m != nil && strings.Contains(out, workloadID) {
			entryID = m[1]
			return true
		}
		return false
	})
	if out, err := srv.cli(t, "server", "entry", "delete", "--id", entryID); err == nil || !strings.Contains(err.Error(), "managed by the Kubernetes controller; change the ClusterSPIFFEID or ClusterStaticEntry") {
		t.Fatalf("deleting the controller's entry by hand: %v\n%s", err, out)
	}
	waitUntil(t, 10*time.Second, "the ClusterSPIFFEID's status", func() bool {
		u, err := dyn.Resource(k8sreg.GVR).Get(ctx, cr.GetName(), metav1.GetOptions{})
		if err != nil {
			return false
		}
		pods, _, _ := unstructured.NestedInt64(u.Object, "status", "stats", "podsSelected")
		entries, _, _ := unstructured.NestedInt64(u.Object, "status", "stats", "entriesToSet")
		return pods == 1 && entries == 1
	})

	// The agent on node-1 serves the pod's process.
	kubeletRoot := cgroupPrefix()
	socket := filepath.Join(dir, "sockets", "agent.sock")
	agentProc := startSignet(t, nil, "agent", "run", "--server", addr, "--trust-domain", "example.org",
		"--data-dir", filepath.Join(dir, "agent"), "--socket", socket, "--trust-bundle", srv.writeBundle(t, dir),
		"--k8s-psat-cluster", "prod", "--k8s-psat-token-path", write("agent-token", agentToken),
		"--k8s-workload-attestor", "--kubelet-url", kubelet.URL(), "--kubelet-ca", kubelet.WriteCA(t, dir),
		"--kubelet-token-path", write("kubelet-token", "agent-sa-token"), "--node-name", "node-1",
		"--k8s-cgroup-root", kubeletRoot)
	agentProc.waitLine(t, "agent ready", 30*time.Second)
	cg := podCgroup(t, kubeletRoot, podUID, containerID)
	fetch := func() (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, signetBin(t), "agent", "api", "fetch", "x509", "--socket", socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var out string
	waitUntil(t, 20*time.Second, "the pod's SVID", func() bool {
		out, err = fetch()
		return err == nil && strings.Contains(out, "SPIFFE ID:    "+workloadID)
	})

	// The pod is deleted: its entry goes, and the process gets nothing.
	if err := kubeDelete(ctx, kubeconfig, "payments", workloadPod.Name); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the entry removed", func() bool {
		list, err := srv.cli(t, "server", "entry", "list")
		return err == nil && !strings.Contains(list, workloadID)
	})
	waitUntil(t, 20*time.Second, "the pod's process refused", func() bool {
		out, err = fetch()
		return err != nil && !strings.Contains(out, workloadID)
	})
}

// kubeDelete deletes a pod through the API, as the kubelet's final delete
// would.
func kubeDelete(ctx context.Context, kubeconfig, ns, name string) error {
	client, _, err := k8sreg.Clients(kubeconfig)
	if err != nil {
		return err
	}
	return client.CoreV1().Pods(ns).Delete(ctx, name, *metav1.NewDeleteOptions(0))
}

// waitUntil polls cond until it holds or the timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
