package kubetest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func clients(t *testing.T, a *APIServer) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", a.Kubeconfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kc, dc
}

// eventually polls cond until it holds (a watch is asynchronous).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestInformers runs client-go's informers (watch-list, protobuf for pods,
// JSON for the custom resource) against the stand-in and checks they see
// objects that existed before, and every later create, update and delete.
func TestInformers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := NewAPIServer(t)
	kc, dc := clients(t, a)
	a.AddPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "before"}})

	factory := informers.NewSharedInformerFactory(kc, 0)
	pods := factory.Core().V1().Pods().Informer()
	gvr := schema.GroupVersionResource{Group: "signetid.io", Version: "v1alpha1", Resource: "clusterspiffeids"}
	dfactory := dynamicinformer.NewDynamicSharedInformerFactory(dc, 0)
	crs := dfactory.ForResource(gvr).Informer()
	factory.Start(ctx.Done())
	dfactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, crs.HasSynced) {
		t.Fatal("caches did not sync")
	}
	if _, ok, _ := pods.GetStore().GetByKey("ns1/before"); !ok {
		t.Fatal("informer misses a pod that existed before it started")
	}

	// Built-in kinds through the API.
	p, err := kc.CoreV1().Pods("ns1").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.UID == "" || p.ResourceVersion == "" || p.Namespace != "ns1" {
		t.Fatalf("created pod lacks server fields: %+v", p.ObjectMeta)
	}
	eventually(t, "pod create", func() bool { _, ok, _ := pods.GetStore().GetByKey("ns1/web"); return ok })
	p.Status.Phase = corev1.PodSucceeded
	if _, err := kc.CoreV1().Pods("ns1").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := kc.CoreV1().Pods("ns1").Get(ctx, "web", metav1.GetOptions{}); got.Status.Phase != "" {
		t.Fatal("an update of the main resource changed the status")
	}
	if _, err := kc.CoreV1().Pods("ns1").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod status", func() bool {
		o, _, _ := pods.GetStore().GetByKey("ns1/web")
		return o != nil && o.(*corev1.Pod).Status.Phase == corev1.PodSucceeded
	})
	if _, err := kc.CoreV1().Pods("ns1").Update(ctx, p, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("update with a stale resourceVersion: %v, want Conflict", err)
	}
	if err := kc.CoreV1().Pods("ns1").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod delete", func() bool { _, ok, _ := pods.GetStore().GetByKey("ns1/web"); return !ok })

	// The custom resource: JSON, generation, status subresource.
	cr := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "signetid.io/v1alpha1", "kind": "ClusterSPIFFEID",
		"metadata": map[string]any{"name": "web"},
		"spec":     map[string]any{"spiffeIDTemplate": "spiffe://example.org/a"},
	}}
	created, err := dc.Resource(gvr).Create(ctx, cr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "CR create", func() bool { _, ok, _ := crs.GetStore().GetByKey("web"); return ok })
	_ = unstructured.SetNestedField(created.Object, "spiffe://example.org/b", "spec", "spiffeIDTemplate")
	updated, err := dc.Resource(gvr).Update(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if updated.GetGeneration() != 2 {
		t.Fatalf("generation %d after a spec change, want 2", updated.GetGeneration())
	}
	_ = unstructured.SetNestedField(updated.Object, int64(3), "status", "stats", "podsSelected")
	if _, err := dc.Resource(gvr).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "CR status", func() bool {
		o, _, _ := crs.GetStore().GetByKey("web")
		n, _, _ := unstructured.NestedInt64(o.(*unstructured.Unstructured).Object, "status", "stats", "podsSelected")
		return n == 3
	})
	if err := dc.Resource(gvr).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "CR delete", func() bool { _, ok, _ := crs.GetStore().GetByKey("web"); return !ok })
}
