package attestor_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

// fakeKubelet stands in for a kubelet, which cannot run here: it serves a
// real v1 PodList as JSON on GET /pods over HTTPS (or plain HTTP, like the
// read-only port), checks the bearer token, and counts requests.
type fakeKubelet struct {
	srv *httptest.Server
	URL string
	// CAPath holds the PEM CA that signed its serving certificate.
	CAPath string

	mu    sync.Mutex
	token string // the bearer token it accepts; "" accepts no header at all
	pods  []corev1.Pod
	// before runs on each request, with its number (from 1), before the
	// answer is made.
	before func(n int, k *fakeKubelet)
	calls  int
	auths  []string // Authorization headers received
	answer func(w http.ResponseWriter) bool
}

type kubeletOpts struct {
	plainHTTP bool
	// names the serving certificate carries (DNS); default "node-1", as a
	// kubelet's names its node and not 127.0.0.1.
	names []string
}

func newFakeKubelet(t testing.TB, token string, o kubeletOpts) *fakeKubelet {
	t.Helper()
	k := &fakeKubelet{token: token}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serve))
	k.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	if o.plainHTTP {
		k.srv.Start()
	} else {
		names := o.names
		if names == nil {
			names = []string{"node-1"}
		}
		caPEM, cert := newServingCert(t, names...)
		k.CAPath = writeFile(t, "kubelet-ca.pem", caPEM)
		k.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		k.srv.StartTLS()
	}
	t.Cleanup(k.srv.Close)
	k.URL = k.srv.URL
	return k
}

func (k *fakeKubelet) serve(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	k.calls++
	k.auths = append(k.auths, r.Header.Get("Authorization"))
	if k.before != nil {
		k.before(k.calls, k)
	}
	token, pods, answer := k.token, append([]corev1.Pod(nil), k.pods...), k.answer
	k.mu.Unlock()
	if answer != nil && answer(w) {
		return
	}
	want := ""
	if token != "" {
		want = "Bearer " + token
	}
	if r.Header.Get("Authorization") != want {
		writeObject(w, http.StatusUnauthorized, &metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusFailure, Reason: metav1.StatusReasonUnauthorized, Message: "Unauthorized", Code: http.StatusUnauthorized,
		})
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/pods" {
		http.NotFound(w, r)
		return
	}
	writeObject(w, http.StatusOK, &corev1.PodList{Items: pods})
}

// writeObject encodes obj as the API machinery does (apiVersion and kind
// set).
func writeObject(w http.ResponseWriter, code int, obj runtime.Object) {
	body, err := runtime.Encode(scheme.Codecs.LegacyCodec(corev1.SchemeGroupVersion), obj)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(body)
}

func (k *fakeKubelet) SetPods(pods ...corev1.Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pods = pods
}

func (k *fakeKubelet) SetToken(token string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.token = token
}

func (k *fakeKubelet) Calls() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.calls
}

func (k *fakeKubelet) Auths() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.auths...)
}

// newServingCert makes a CA and a serving certificate it signs for names.
func newServingCert(t testing.TB, names ...string) (caPEM []byte, cert tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test kubelet CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// replaceFile swaps path's content atomically, as the kubelet does for
// projected volumes.
func replaceFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// testPod is a running pod on node-1 with one container.
func testPod(uid, name, containerID string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "payments", UID: types.UID(uid),
			Labels: map[string]string{"app": name, "tier": "backend"},
		},
		Spec: corev1.PodSpec{
			NodeName:           "node-1",
			ServiceAccountName: "checkout",
			Containers:         []corev1.Container{{Name: "app", Image: "registry.example/" + name + ":1.0"}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			ContainerStatuses: []corev1.ContainerStatus{{
				Name:        "app",
				ContainerID: "containerd://" + containerID,
				Image:       "registry.example/" + name + ":1.0",
				ImageID:     "registry.example/" + name + "@sha256:" + strings.Repeat("ab", 32),
				Ready:       true,
			}},
		},
	}
}
