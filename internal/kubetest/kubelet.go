package kubetest

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kubelet is a stand-in for a node's kubelet API: GET /pods answers the
// pods it was given as a v1.PodList, to callers with its bearer token.
type Kubelet struct {
	srv   *httptest.Server
	token string

	mu   sync.Mutex
	pods map[string]*corev1.Pod // namespace/name
}

// NewKubelet starts a kubelet stand-in on 127.0.0.1 that accepts token,
// stopped when t ends.
func NewKubelet(t testing.TB, token string) *Kubelet {
	k := &Kubelet{token: token, pods: map[string]*corev1.Pod{}}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.srv.Close)
	return k
}

// URL is the kubelet's base URL.
func (k *Kubelet) URL() string { return k.srv.URL }

// WriteCA writes the PEM certificate that verifies the kubelet into dir and
// returns its path.
func (k *Kubelet) WriteCA(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "kubelet-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// AddPod adds (or replaces) a pod on the node.
func (k *Kubelet) AddPod(p *corev1.Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods[p.Namespace+"/"+p.Name] = p.DeepCopy()
}

func (k *Kubelet) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+k.token {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/pods" {
		http.NotFound(w, r)
		return
	}
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	k.mu.Lock()
	for _, p := range k.pods {
		list.Items = append(list.Items, *p.DeepCopy())
	}
	k.mu.Unlock()
	// The kubelet answers JSON whatever the Accept header says.
	write(w, &http.Request{Header: http.Header{"Accept": {"application/json"}}}, http.StatusOK, list)
}
