package kubetest

import (
	"context"
	"strings"
	"testing"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The real API server starts, its kubeconfig works with client-go, a bound
// token it issues reviews as the pod's for its audience only, and Apply
// creates RBAC objects that really authorize a service account.
func TestRealAPIServer(t *testing.T) {
	kube := StartRealAPIServer(t)
	ctx := context.Background()
	dir := t.TempDir()

	cfg, err := clientcmd.BuildConfigFromFlags("", kube.Kubeconfig(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := admin.Discovery().ServerVersion(); err != nil || !strings.HasPrefix(v.GitVersion, "v1.") {
		t.Fatalf("server version %v (%v): want a real v1.x", v, err)
	}
	if err := kube.Apply(ctx, "demo", []byte(`
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: demo}
`)); err != nil {
		t.Fatal(err)
	}
	pod, err := admin.CoreV1().Pods("demo").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{ServiceAccountName: "reader", NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	bound, err := kube.TokenRequest(ctx, "demo", "reader", "p", "signet")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		audience string
		want     bool
	}{{"signet", true}, {"other", false}} {
		rev, err := kube.Client().AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{
			Spec: authv1.TokenReviewSpec{Token: bound, Audiences: []string{tt.audience}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rev.Status.Authenticated != tt.want {
			t.Fatalf("review for audience %s: authenticated=%v (%s), want %v", tt.audience, rev.Status.Authenticated, rev.Status.Error, tt.want)
		}
		if tt.want {
			extra := rev.Status.User.Extra
			if rev.Status.User.Username != "system:serviceaccount:demo:reader" ||
				len(extra["authentication.kubernetes.io/pod-uid"]) != 1 || extra["authentication.kubernetes.io/pod-uid"][0] != string(pod.UID) {
				t.Fatalf("review: user %+v, want demo:reader bound to pod uid %s", rev.Status.User, pod.UID)
			}
		}
	}

	// The service account's own token (audience: the API server) gets
	// what its Role grants and nothing more.
	saToken, err := kube.TokenRequest(ctx, "demo", "reader", "", "")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err = clientcmd.BuildConfigFromFlags("", kube.KubeconfigFor(t, dir, "reader", saToken))
	if err != nil {
		t.Fatal(err)
	}
	reader, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.CoreV1().Pods("demo").Get(ctx, "p", metav1.GetOptions{}); err != nil {
		t.Fatalf("reader get pod: %v", err)
	}
	if _, err := reader.CoreV1().Pods("demo").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("reader list pods: %v, want Forbidden", err)
	}
}

// Apply names the document it could not create.
func TestRealAPIServerApplyErrors(t *testing.T) {
	kube := StartRealAPIServer(t)
	ctx := context.Background()
	for _, tt := range []struct{ name, manifest, want string }{
		{"unknown kind", "apiVersion: v1\nkind: Nonsense\nmetadata: {name: x}\n", "manifest document 0 (Nonsense x)"},
		{"missing namespace", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n", "create ConfigMap x"},
		{"not YAML", "apiVersion: [", "manifest document 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := kube.Apply(ctx, "default", []byte(tt.manifest)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
