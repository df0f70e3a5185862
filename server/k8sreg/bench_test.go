package k8sreg

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/signetid/signet/internal/selector"
)

// BenchmarkDesired renders the desired entries of a cluster of 5000 pods on
// 100 nodes, behind 500 Services, with two ClusterSPIFFEIDs (one adding the
// Services' names): the CPU cost of one reconcile before the store is
// compared, the EndpointSlice index included.
func BenchmarkDesired(b *testing.B) {
	c := &Controller{opts: Options{TrustDomain: td, Cluster: "prod", ClusterDomain: "cluster.local", IgnoreNamespaces: DefaultIgnoreNamespaces, Logger: slog.New(slog.DiscardHandler)}}
	w := world{namespaces: map[string]*corev1.Namespace{}, nodes: map[string]*corev1.Node{}}
	for i := range 100 {
		n := fmt.Sprintf("node-%d", i)
		w.nodes[n] = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, UID: types.UID("uid-" + n)}}
	}
	for i := range 50 {
		ns := fmt.Sprintf("ns-%d", i)
		w.namespaces[ns] = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	}
	for i := range 5000 {
		p := testPod()
		p.Namespace, p.Name, p.UID = fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("pod-%d", i), types.UID(fmt.Sprint("pod-uid-", i))
		p.Spec.NodeName = fmt.Sprintf("node-%d", i%100)
		w.pods = append(w.pods, p)
	}
	// Service i%500 of the pod's namespace routes to pod i (10 pods each).
	var eps []*discoveryv1.EndpointSlice
	for s := range 500 {
		slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", s%50),
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%d", s), discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}}}
		for i := s; i < 5000; i += 500 {
			p := w.pods[i]
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, UID: p.UID}})
		}
		eps = append(eps, slice)
	}
	for i, spec := range []ClusterSPIFFEIDSpec{
		{SPIFFEIDTemplate: "spiffe://example.org/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}", AutoPopulateDNSNames: true},
		{SPIFFEIDTemplate: "spiffe://example.org/pod/{{ .PodMeta.Name }}", WorkloadSelectorTemplates: []string{"k8s:ns:{{ .PodMeta.Namespace }}"}},
	} {
		m, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&spec)
		w.crs = append(w.crs, &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": fmt.Sprint(i)}, "spec": m}})
	}
	b.ReportAllocs()
	var d desiredState
	for b.Loop() {
		w.services = podServices(eps)
		d = c.desired(w)
	}
	if len(d.entries) != 10000 {
		b.Fatalf("%d entries, want 10000", len(d.entries))
	}
	if e := d.entries[entryIDOf(d, "pod-uid-7", "spiffe://example.org/ns/ns-7/sa/checkout")]; len(e.DNSNames) != 4 {
		b.Fatalf("pod 7's entry has DNS names %v, want its Service's 4", e.DNSNames)
	}
}

// BenchmarkFirstReconcile stores the entries of 2000 new pods in SQLite:
// the store side of a cluster's first reconcile.
func BenchmarkFirstReconcile(b *testing.B) {
	w := world{namespaces: map[string]*corev1.Namespace{"ns": {ObjectMeta: metav1.ObjectMeta{Name: "ns"}}},
		nodes: map[string]*corev1.Node{"node-1": {ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-uid"}}}}
	for i := range 2000 {
		p := testPod()
		p.Namespace, p.Name, p.UID, p.Spec.NodeName = "ns", fmt.Sprintf("pod-%d", i), types.UID(fmt.Sprint("pod-uid-", i)), "node-1"
		w.pods = append(w.pods, p)
	}
	m, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/pod/{{ .PodMeta.Name }}"})
	w.crs = []*unstructured.Unstructured{{Object: map[string]any{"metadata": map[string]any{"name": "a"}, "spec": m}}}
	for b.Loop() {
		b.StopTimer()
		c := &Controller{opts: Options{TrustDomain: td, Cluster: "prod", Store: sqliteStore(b), Logger: slog.New(slog.DiscardHandler)}}
		want := c.desired(w).entries
		b.StartTimer()
		if failures, err := c.apply(context.Background(), want, synced{specs: true, statics: true}); err != nil || len(failures) > 0 {
			b.Fatal(err, failures)
		}
	}
}

// entryIDOf finds the ID of the desired entry of SPIFFE ID id for the pod
// of uid.
func entryIDOf(d desiredState, uid, id string) string {
	for k, e := range d.entries {
		if e.SPIFFEID.String() == id && slices.Contains(selector.Strings(e.Selectors), "k8s:pod-uid:"+uid) {
			return k
		}
	}
	return ""
}
