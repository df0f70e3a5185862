package test

import (
	"context"
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

	"github.com/signetid/signet/internal/kubetest"
)

// realCluster is a real kube-apiserver set up as deploy/base expects: the
// signet-system namespace with the server's RBAC applied from the manifest,
// the agents' service account, and node-1.
type realCluster struct {
	kube *kubetest.RealAPIServer
	node *corev1.Node
}

func startRealCluster(t *testing.T) *realCluster {
	t.Helper()
	kube := kubetest.StartRealAPIServer(t)
	ctx := context.Background()
	rbac, err := os.ReadFile("../deploy/base/server-rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.Apply(ctx, "signet-system", []byte(`
apiVersion: v1
kind: Namespace
metadata: {name: signet-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: signet-agent}
`)); err != nil {
		t.Fatal(err)
	}
	if err := kube.Apply(ctx, "signet-system", rbac); err != nil {
		t.Fatalf("apply deploy/base/server-rbac.yaml: %v", err)
	}
	node, err := kube.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1",
		Labels: map[string]string{"topology.kubernetes.io/zone": "eu-1a"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &realCluster{kube: kube, node: node}
}

// serverKubeconfig is a kubeconfig with the signet-server service account's
// own token, so the server has only what deploy/base's RBAC grants it.
func (c *realCluster) serverKubeconfig(t *testing.T, dir string) string {
	t.Helper()
	tok, err := c.kube.TokenRequest(context.Background(), "signet-system", "signet-server", "", "")
	if err != nil {
		t.Fatal(err)
	}
	return c.kube.KubeconfigFor(t, dir, "signet-server", tok)
}

// createPod stores a pod scheduled on node-1 and returns it with its UID.
func (c *realCluster) createPod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	pod.Spec.NodeName = c.node.Name
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "agent", Image: "ghcr.io/signetid/signet:test"}}
	}
	created, err := c.kube.Client().CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// TestKubernetesRealAPIServer runs the Kubernetes story against a real
// kube-apiserver: the server, holding only deploy/base's RBAC, reviews a
// real bound token of the agent's pod (k8s_psat) and publishes the bundle
// ConfigMap; a process in the workload pod's cgroup gets its SVID from
// k8s selectors (the kubelet is the stand-in: it cannot run here). Tokens
// for the wrong audience or service account are refused, and once the
// agent's pod is deleted its renewal is refused.
func TestKubernetesRealAPIServer(t *testing.T) {
	t.Parallel() // mostly waits: runs beside the other long end-to-end tests
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	ctx := context.Background()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	c := startRealCluster(t)
	kube := c.kube
	if err := kube.Apply(ctx, "payments", []byte(`
apiVersion: v1
kind: Namespace
metadata: {name: payments}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: checkout}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: rogue}
`)); err != nil {
		t.Fatal(err)
	}
	agentPod := c.createPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "signet-agent-q8x2v"},
		Spec: corev1.PodSpec{ServiceAccountName: "signet-agent"}})
	const containerID = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	workloadPod := c.createPod(t, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "checkout-7f9c", Labels: map[string]string{"app": "checkout"}},
		Spec: corev1.PodSpec{ServiceAccountName: "checkout",
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/checkout:1.4"}}},
	})
	workloadPod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "app", Image: "registry.example/checkout:1.4", ContainerID: "containerd://" + containerID,
	}}
	kubelet := kubetest.NewKubelet(t, "agent-sa-token")
	kubelet.AddPod(workloadPod)

	write := func(name, content string) string { return writeTestFile(t, dir, name, content) }
	token := func(ns, sa, pod, audience string) string {
		tok, err := kube.TokenRequest(ctx, ns, sa, pod, audience)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// agent_ttl 10s: the agent renews every ~5 s, so its pod's deletion
	// is noticed within the test.
	srv := startServerProc(t, "--config", write("server.conf", fmt.Sprintf(`
agent_ttl = "10s"
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
`, c.serverKubeconfig(t, dir))))
	addr := fieldValue(srv.proc.waitLine(t, "agent_api=", 10*time.Second), "agent_api")

	var bundle string
	waitUntil(t, 20*time.Second, "the bundle ConfigMap", func() bool {
		cm, err := kube.Client().CoreV1().ConfigMaps("signet-system").Get(ctx, "signet-trust-bundle", metav1.GetOptions{})
		if err == nil {
			bundle = cm.Data["bundle.pem"]
		}
		return bundle != ""
	})
	if shown, err := srv.cli(t, "server", "bundle", "show"); err != nil || strings.TrimSpace(shown) != strings.TrimSpace(bundle) {
		t.Fatalf("ConfigMap bundle differs from `bundle show` (%v)", err)
	}
	workloadID := registerCheckout(t, srv)

	bundlePath := write("bundle.pem", bundle)
	kubeletRoot := cgroupPrefix()
	agentArgs := func(name, tok string) []string {
		return []string{"agent", "run", "--server", addr, "--trust-domain", "example.org",
			"--data-dir", filepath.Join(dir, name), "--socket", filepath.Join(dir, name, "agent.sock"),
			"--trust-bundle", bundlePath, "--k8s-psat-cluster", "prod", "--k8s-psat-token-path", write(name+"-token", tok),
			"--k8s-workload-attestor", "--kubelet-url", kubelet.URL(), "--kubelet-ca", kubelet.WriteCA(t, dir),
			"--kubelet-token-path", write("kubelet-token", "agent-sa-token"), "--node-name", "node-1",
			"--k8s-cgroup-root", kubeletRoot}
	}

	t.Run("refused", func(t *testing.T) {
		rogue := c.createPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "rogue"},
			Spec: corev1.PodSpec{ServiceAccountName: "rogue"}})
		for _, tt := range []struct{ name, token, want string }{
			{"wrong audience", token("signet-system", "signet-agent", agentPod.Name, "vault"), "token audiences"},
			{"service account not allowed", token("payments", "rogue", rogue.Name, "signet-server"),
				"service account payments:rogue is not in service_account_allow_list"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				p := startSignet(t, nil, agentArgs(strings.ReplaceAll(tt.name, " ", "-"), tt.token)...)
				select {
				case <-p.done:
				case <-time.After(30 * time.Second):
					t.Fatalf("agent still running:\n%s", p.Output())
				}
				if out := p.Output(); p.err == nil || !strings.Contains(out, tt.want) {
					t.Fatalf("agent: %v, want a refusal containing %q:\n%s", p.err, tt.want, out)
				}
			})
		}
	})

	agentProc := startSignet(t, nil, agentArgs("agent", token("signet-system", "signet-agent", agentPod.Name, "signet-server"))...)
	agentProc.waitLine(t, "agent ready", 30*time.Second)
	agentID := "spiffe://example.org/agent/k8s_psat/prod/" + string(c.node.UID)
	if out := agentProc.Output(); !strings.Contains(out, agentID) {
		t.Fatalf("agent is not named after its node (%s):\n%s", agentID, out)
	}

	cg := podCgroup(t, kubeletRoot, workloadPod.UID, containerID)
	fetch := func() (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, signetBin(t), "agent", "api", "fetch", "x509", "--socket", filepath.Join(dir, "agent", "agent.sock"))
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	var out string
	var err error
	waitUntil(t, 20*time.Second, "the workload's SVID", func() bool {
		out, err = fetch()
		return err == nil && strings.Contains(out, "SPIFFE ID:    "+workloadID)
	})
	// A renewal goes through while the pod is there.
	agentProc.waitLine(t, "agent SVID renewed", 15*time.Second)

	// The agent's pod is deleted: the next renewal (a re-attestation) is
	// refused at once. Which check refuses it depends on the API server's
	// timing: the TokenReview says the pod-bound token was invalidated, or,
	// while its review cache still authenticates the token, the server's
	// own look-up finds the pod gone. Either way the pod's deletion is why.
	if err := kube.Client().CoreV1().Pods("signet-system").Delete(ctx, agentPod.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	line := agentProc.waitLine(t, "agent SVID cannot be renewed", 15*time.Second)
	t.Logf("renewal refused %s after the pod's deletion: %s", time.Since(deleted).Round(100*time.Millisecond), line)
	podGone := strings.Contains(line, "agent pod signet-system/"+agentPod.Name) && strings.Contains(line, "no longer exists")
	tokenInvalidated := strings.Contains(line, "service account token has been invalidated")
	if !strings.Contains(line, "PermissionDenied") || !podGone && !tokenInvalidated {
		t.Fatalf("renewal refused for another reason: %s", line)
	}
}
