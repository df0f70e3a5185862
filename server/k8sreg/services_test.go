package k8sreg

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

func TestPodServices(t *testing.T) {
	slice := func(ns, svc, manager string, refs ...*corev1.ObjectReference) *discoveryv1.EndpointSlice {
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: manager}}}
		for _, r := range refs {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{TargetRef: r})
		}
		return s
	}
	pod := func(ns, uid string) *corev1.ObjectReference {
		return &corev1.ObjectReference{Kind: "Pod", Namespace: ns, UID: k8stypes.UID("uid-" + uid)}
	}
	const ctrl = "endpointslice-controller.k8s.io"
	got := podServices([]*discoveryv1.EndpointSlice{
		slice("shop", "web", ctrl, pod("shop", "a"), pod("shop", "b")),
		slice("shop", "web", ctrl, pod("shop", "a")), // a second slice of the same Service
		slice("shop", "api", "endpointslicemirroring-controller.k8s.io", pod("", "a")),
		slice("shop", "forged", "my-operator", pod("shop", "a")),
		slice("shop", "", ctrl, pod("shop", "a")),                                        // no Service
		slice("shop", "cross", ctrl, pod("bank", "c")),                                   // a pod of another namespace
		slice("shop", "node", ctrl, &corev1.ObjectReference{Kind: "Node", UID: "uid-a"}), // not a pod
		slice("shop", "none", ctrl, nil),
	})
	for _, tc := range []struct {
		ns, uid string
		want    []string
	}{
		{"shop", "a", []string{"api", "web"}},
		{"shop", "b", []string{"web"}},
		{"bank", "c", nil},
		{"shop", "c", nil},
		{"bank", "a", nil},
	} {
		if s := got[podKey{tc.ns, k8stypes.UID("uid-" + tc.uid)}]; !slices.Equal(s, tc.want) {
			t.Errorf("pod %s/%s: services %v, want %v", tc.ns, tc.uid, s, tc.want)
		}
	}
}
