package test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/signetid/signet/server/k8sreg"
)

// TestKubernetesControllerRealAPIServer: a real kube-apiserver accepts
// deploy/base's CRDs and validates examples/k8s-controller's resources
// against them (and refuses ones that break the schema); the server's
// controller, holding only deploy/base's RBAC, turns the ClusterSPIFFEID
// into an entry for a selected pod, writes the resource's status, stores
// the ClusterStaticEntries' entries, and the ClusterFederatedTrustDomains'
// relationships (with the example's bootstrap bundle).
func TestKubernetesControllerRealAPIServer(t *testing.T) {
	t.Parallel() // mostly waits: runs beside the other long end-to-end tests
	ctx := context.Background()
	dir := t.TempDir()
	c := startRealCluster(t)
	kube := c.kube
	for _, path := range []string{"../deploy/base/crd-clusterspiffeid.yaml", "../deploy/base/crd-clusterstaticentry.yaml",
		"../deploy/base/crd-clusterfederatedtrustdomain.yaml",
		"../examples/k8s-controller/clusterspiffeid.yaml", "../examples/k8s-controller/clusterstaticentry.yaml",
		"../examples/k8s-controller/clusterfederatedtrustdomain.yaml"} {
		manifest, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := kube.Apply(ctx, "default", manifest); err != nil {
			t.Fatalf("apply %s: %v", path, err)
		}
	}
	// The schema is enforced: a ttl that is not a string, a missing
	// spiffeIDTemplate.
	for _, bad := range []string{
		"spec: {spiffeIDTemplate: 'spiffe://{{ .TrustDomain }}/x', ttl: 5}",
		"spec: {podSelector: {}}",
	} {
		err := kube.Apply(ctx, "default", []byte("apiVersion: signetid.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {name: bad}\n"+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "Invalid value") && !strings.Contains(err.Error(), "Required value") {
			t.Errorf("ClusterSPIFFEID %s: %v, want the API server's validation error", bad, err)
		}
	}
	for _, bad := range []string{
		"spec: {spiffeID: 'spiffe://example.org/x', parentID: 'spiffe://example.org/y'}",
		"spec: {spiffeID: 'spiffe://example.org/x', node: true, selectors: []}",
	} {
		err := kube.Apply(ctx, "default", []byte("apiVersion: signetid.io/v1alpha1\nkind: ClusterStaticEntry\nmetadata: {name: bad}\n"+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "Invalid value") && !strings.Contains(err.Error(), "Required value") {
			t.Errorf("ClusterStaticEntry %s: %v, want the API server's validation error", bad, err)
		}
	}
	for _, bad := range []struct{ spec, want string }{
		{"{trustDomain: Partner.org, bundleEndpointURL: 'https://p.org', bundleEndpointProfile: {type: https_web}}", "spec.trustDomain: Invalid value"},
		{"{trustDomain: partner.org, bundleEndpointURL: 'http://p.org', bundleEndpointProfile: {type: https_web}}", "spec.bundleEndpointURL: Invalid value"},
		{"{trustDomain: partner.org, bundleEndpointURL: 'https://u@p.org', bundleEndpointProfile: {type: https_web}}", "spec.bundleEndpointURL: Invalid value"},
		{"{trustDomain: partner.org, bundleEndpointURL: 'https://p.org', bundleEndpointProfile: {type: https}}", "spec.bundleEndpointProfile.type: Unsupported value"},
		{"{trustDomain: partner.org, bundleEndpointURL: 'https://p.org', bundleEndpointProfile: {type: https_web, endpointSPIFFEID: 'spiffe://partner.org/x'}}",
			"endpointSPIFFEID goes with type https_spiffe only"},
		{"{trustDomain: partner.org, bundleEndpointURL: 'https://p.org', bundleEndpointProfile: {type: https_spiffe, endpointSPIFFEID: 'partner.org/x'}}",
			"spec.bundleEndpointProfile.endpointSPIFFEID: Invalid value"},
		{"{trustDomain: partner.org, bundleEndpointURL: 'https://p.org'}", "spec.bundleEndpointProfile: Required value"},
	} {
		err := kube.Apply(ctx, "default", []byte("apiVersion: signetid.io/v1alpha1\nkind: ClusterFederatedTrustDomain\nmetadata: {name: bad}\nspec: "+bad.spec+"\n"))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ClusterFederatedTrustDomain %s: %v, want the API server's validation error %q", bad.spec, err, bad.want)
		}
	}

	if err := kube.Apply(ctx, "payments", []byte(`
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {signetid.io/identity: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: checkout}
`)); err != nil {
		t.Fatal(err)
	}
	pod := c.createPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "checkout-5d8f", Labels: map[string]string{"app": "checkout"}},
		Spec: corev1.PodSpec{ServiceAccountName: "checkout"}})
	// The EndpointSlice kube-controller-manager (not run here) would write
	// for a Service "checkout-api" selecting the pod.
	if err := kube.Apply(ctx, "payments", []byte(fmt.Sprintf(`
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: checkout-api-7xk2p
  labels: {kubernetes.io/service-name: checkout-api, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
addressType: IPv4
endpoints:
  - addresses: ["10.1.2.3"]
    targetRef: {kind: Pod, namespace: payments, name: %s, uid: %s}
`, pod.Name, pod.UID))); err != nil {
		t.Fatal(err)
	}

	conf := dir + "/server.conf"
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
k8s_psat "prod" {
  service_account_allow_list = ["signet-system:signet-agent"]
  kubeconfig = %q
}
k8s_controller {
  cluster                   = "prod"
  cluster_domain            = "cluster.local"
  leader_election           = true
  leader_election_namespace = "signet-system"
  leader_election_lease     = "signet-controller"
}
`, c.serverKubeconfig(t, dir))), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServerProc(t, "--config", conf)
	const workloadID = "spiffe://example.org/ns/payments/sa/checkout"
	agentID := "spiffe://example.org/agent/k8s_psat/prod/" + string(c.node.UID)
	waitUntil(t, 30*time.Second, "the controller's entry", func() bool {
		out, err := srv.cli(t, "server", "entry", "list")
		return err == nil && regexp.MustCompile(`Entry ID:\s+k8s\.prod\.[0-9a-f]+`).MatchString(out) &&
			strings.Contains(out, workloadID) && strings.Contains(out, agentID) && strings.Contains(out, "checkout.payments.svc") &&
			strings.Contains(out, "checkout-api.payments.svc.cluster.local") &&
			// examples/k8s-controller's ClusterStaticEntries.
			strings.Contains(out, "spiffe://example.org/k8s/kubernetes/nodes") && strings.Contains(out, "spiffe://example.org/ns/monitoring/sa/node-exporter")
	})
	_, dyn, err := k8sreg.Clients(kube.Kubeconfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "the ClusterSPIFFEID's status", func() bool {
		u, err := dyn.Resource(k8sreg.GVR).Get(ctx, "app-workloads", metav1.GetOptions{})
		if err != nil {
			return false
		}
		pods, _, _ := unstructured.NestedInt64(u.Object, "status", "stats", "podsSelected")
		entries, _, _ := unstructured.NestedInt64(u.Object, "status", "stats", "entriesToSet")
		return pods == 1 && entries == 1
	})
	// examples/k8s-controller's ClusterFederatedTrustDomains are in force,
	// and partner.org's bootstrap bundle is held.
	for name, td := range map[string]string{"partner-org": "partner.org", "vendor-example": "vendor.example"} {
		waitUntil(t, 20*time.Second, name+"'s status", func() bool {
			u, err := dyn.Resource(k8sreg.FederatedTrustDomainGVR).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			var cr k8sreg.ClusterFederatedTrustDomain
			if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr) != nil {
				return false
			}
			cond := meta.FindStatusCondition(cr.Status.Conditions, k8sreg.ConditionReady)
			return cond != nil && cond.Status == metav1.ConditionTrue && cond.Message == "federation relationship with "+td+" set"
		})
	}
	if out, err := srv.cli(t, "server", "bundle", "list"); err != nil || !strings.Contains(out, "partner.org") || strings.Contains(out, "vendor.example") {
		t.Errorf("bundle list: %v\n%s\nwant partner.org's bootstrap bundle alone", err, out)
	}
	// It reconciled as the holder of deploy/base's Lease (the Role there
	// grants it), and says so on its metrics.
	lease, err := kube.Client().CoordinationV1().Leases("signet-system").Get(ctx, "signet-controller", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Fatalf("the controller's Lease: %v %+v", err, lease)
	}
	if m := srv.metrics(t); !strings.Contains(m, "signet_server_k8s_controller_leading 1") {
		t.Errorf("metrics do not show the server leading:\n%s", m)
	}
	if out := srv.proc.Output(); strings.Contains(out, "forbidden") {
		t.Fatalf("the controller was refused something by RBAC:\n%s", out)
	}
}
