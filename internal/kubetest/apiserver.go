// Package kubetest runs Kubernetes API servers for tests. The end-to-end
// tests use a real etcd and kube-apiserver (real.go), which `make test`
// builds from the Go module proxy. Unit tests that need to inject faults
// (an API server that is down, write conflicts, calls to count) use the
// stand-in in this file, which serves the real wire format (k8s.io/api
// protobuf or JSON over HTTPS, bearer-token auth) for the resources Signet
// uses: TokenReviews; pods, nodes, namespaces, ConfigMaps, service accounts
// and ClusterSPIFFEIDs with get, list, watch (client-go's informers,
// watch-list included), create, update (optimistic concurrency, status
// subresource) and delete. client-go talks to either unchanged, through a
// kubeconfig file like any cluster's.
package kubetest

import (
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

// Token is a service account token the API server knows.
type Token struct {
	// Audiences the token was issued for.
	Audiences []string
	// Namespace and ServiceAccount name the token's user.
	Namespace, ServiceAccount string
	// PodName and PodUID bind the token to a pod (projected tokens); empty
	// for a legacy secret token.
	PodName string
	PodUID  types.UID
}

// APIServer is a running stand-in API server.
type APIServer struct {
	srv       *httptest.Server
	token     string // what clients must present
	done      chan struct{}
	closeOnce sync.Once

	mu              sync.Mutex
	ignoreAudiences bool
	tokens          map[string]Token
	objects         map[*resource]map[string]map[string]any // by namespace/name
	rv              int64                                   // last resourceVersion given out
	events          []event                                 // every change, for watches
	changed         chan struct{}                           // closed and replaced on each event
	calls           map[string]int                          // by "METHOD path"
}

// NewAPIServer starts a server on 127.0.0.1, stopped when t ends.
func NewAPIServer(t testing.TB) *APIServer {
	a := &APIServer{
		token:   "kubetest-admin-token",
		done:    make(chan struct{}),
		tokens:  map[string]Token{},
		objects: map[*resource]map[string]map[string]any{},
		changed: make(chan struct{}),
		calls:   map[string]int{},
	}
	for _, r := range resources {
		a.objects[r] = map[string]map[string]any{}
	}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

// Close stops the server, ending open watches first (httptest waits for
// every running request).
func (a *APIServer) Close() {
	a.closeOnce.Do(func() { close(a.done) })
	a.srv.Close()
}

// IgnoreAudiences makes TokenReview behave like an authenticator that does
// not support audiences: it authenticates any known token and answers with
// the token's own audiences, whatever the request asked for.
func (a *APIServer) IgnoreAudiences() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ignoreAudiences = true
}

// AddToken makes token valid.
func (a *APIServer) AddToken(token string, tok Token) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[token] = tok
}

// AddPod stores (or replaces) a pod.
func (a *APIServer) AddPod(p *corev1.Pod) { a.put(podsResource, p.DeepCopy()) }

// DeletePod removes a pod.
func (a *APIServer) DeletePod(namespace, name string) { a.remove(podsResource, namespace+"/"+name) }

// AddNode stores (or replaces) a node.
func (a *APIServer) AddNode(n *corev1.Node) { a.put(nodesResource, n.DeepCopy()) }

// AddNamespace stores (or replaces) a namespace.
func (a *APIServer) AddNamespace(ns *corev1.Namespace) { a.put(namespacesResource, ns.DeepCopy()) }

// ConfigMap returns a copy of a stored ConfigMap, nil when there is none.
func (a *APIServer) ConfigMap(namespace, name string) *corev1.ConfigMap {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.objects[configMapsResource][namespace+"/"+name]
	if !ok {
		return nil
	}
	obj, err := typed(configMapsResource, u)
	if err != nil {
		panic(fmt.Sprintf("kubetest: stored ConfigMap: %v", err))
	}
	return obj.(*corev1.ConfigMap)
}

// PutConfigMap stores a ConfigMap as another writer would (a new
// resourceVersion).
func (a *APIServer) PutConfigMap(cm *corev1.ConfigMap) { a.put(configMapsResource, cm.DeepCopy()) }

// Calls reports how often "METHOD path" was requested.
func (a *APIServer) Calls(methodPath string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[methodPath]
}

// Kubeconfig writes a kubeconfig file for the server into dir and returns
// its path.
func (a *APIServer) Kubeconfig(t testing.TB, dir string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw})
	caPath := filepath.Join(dir, "kube-ca.pem")
	if err := os.WriteFile(caPath, ca, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: signet
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: signet}
current-context: test
`, a.srv.URL, caPath, a.token)
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (a *APIServer) serve(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.calls[r.Method+" "+r.URL.Path]++
	a.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+a.token {
		writeStatus(w, r, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized")
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/apis/authentication.k8s.io/v1/tokenreviews" {
		a.tokenReview(w, r)
		return
	}
	req, ok := parsePath(r.URL.Path)
	if !ok {
		writeStatus(w, r, http.StatusNotFound, metav1.StatusReasonNotFound, "the server could not find the requested resource")
		return
	}
	a.serveResource(w, r, req)
}

// tokenReview answers as the real API server does: a token is authenticated
// only for audiences it was issued for, and the answer names them.
func (a *APIServer) tokenReview(w http.ResponseWriter, r *http.Request) {
	var review authv1.TokenReview
	body, err := io.ReadAll(r.Body)
	if err == nil {
		_, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, &review)
	}
	if err != nil {
		writeStatus(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	a.mu.Lock()
	tok, ok := a.tokens[review.Spec.Token]
	ignoreAudiences := a.ignoreAudiences
	a.mu.Unlock()
	review.TypeMeta = metav1.TypeMeta{Kind: "TokenReview", APIVersion: "authentication.k8s.io/v1"}
	review.Status = authv1.TokenReviewStatus{}
	switch {
	case !ok:
		review.Status.Error = "invalid bearer token"
	default:
		want := review.Spec.Audiences
		var match []string
		for _, aud := range want {
			if slices.Contains(tok.Audiences, aud) {
				match = append(match, aud)
			}
		}
		if len(want) > 0 && len(match) == 0 && !ignoreAudiences {
			review.Status.Error = "token audiences are invalid for the target audiences"
			break
		}
		if len(want) == 0 || ignoreAudiences {
			match = tok.Audiences
		}
		review.Status.Authenticated = true
		review.Status.Audiences = match
		review.Status.User = authv1.UserInfo{
			Username: "system:serviceaccount:" + tok.Namespace + ":" + tok.ServiceAccount,
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + tok.Namespace, "system:authenticated"},
		}
		if tok.PodName != "" {
			review.Status.User.Extra = map[string]authv1.ExtraValue{
				"authentication.kubernetes.io/pod-name": {tok.PodName},
				"authentication.kubernetes.io/pod-uid":  {string(tok.PodUID)},
			}
		}
	}
	write(w, r, http.StatusCreated, &review)
}

// write encodes obj as the client asked (Accept): protobuf, which client-go
// prefers for built-in types, or JSON.
func write(w http.ResponseWriter, r *http.Request, code int, obj runtime.Object) {
	info, ok := negotiate(r)
	if !ok {
		http.Error(w, "no serializer", http.StatusNotAcceptable)
		return
	}
	gv := obj.GetObjectKind().GroupVersionKind().GroupVersion()
	body, err := runtime.Encode(scheme.Codecs.EncoderForVersion(info.Serializer, gv), obj)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", info.MediaType)
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func writeStatus(w http.ResponseWriter, r *http.Request, code int, reason metav1.StatusReason, msg string) {
	write(w, r, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Code:     int32(code),
	})
}
