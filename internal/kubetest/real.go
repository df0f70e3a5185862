package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	certutil "k8s.io/client-go/util/cert"
)

// Environment variables naming the binaries `make kube-bins` builds.
const (
	EnvKubeAPIServer = "SIGNET_KUBE_APISERVER"
	EnvEtcd          = "SIGNET_ETCD"
)

// RealAPIServer is a real kube-apiserver backed by a real etcd, both on
// 127.0.0.1, for end-to-end tests. Its API audience (and service account
// token issuer) is Issuer.
type RealAPIServer struct {
	url        string
	caPEM      []byte // the apiserver's self-signed serving certificate chain
	adminToken string // a static token in group system:masters
	config     *rest.Config
	client     kubernetes.Interface
}

// Issuer is the real API server's service account issuer, and so the
// audience of tokens requested without one.
const Issuer = "https://kubernetes.default.svc"

// StartRealAPIServer starts etcd and kube-apiserver (from $SIGNET_ETCD and
// $SIGNET_KUBE_APISERVER; the test is skipped when they are unset) with
// RBAC authorization, a static admin token and an EC service account key,
// waits until the API server is ready and stops both when t ends. When the
// test fails, the tail of both logs is printed.
func StartRealAPIServer(t testing.TB) *RealAPIServer {
	t.Helper()
	apiserverBin, etcdBin := os.Getenv(EnvKubeAPIServer), os.Getenv(EnvEtcd)
	if apiserverBin == "" || etcdBin == "" {
		t.Skip("SIGNET_KUBE_APISERVER/SIGNET_ETCD not set: run `make kube-bins` and set them to bin/kube/kube-apiserver and bin/kube/etcd (make test does)")
	}
	dir := t.TempDir()
	var rnd [24]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	r := &RealAPIServer{adminToken: hex.EncodeToString(rnd[:])}
	saKey := filepath.Join(dir, "sa.key")
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, saKey, serviceAccountKey(t), 0o600)
	writeFile(t, tokens, []byte(r.adminToken+",admin,admin-uid,system:masters\n"), 0o600)

	ports := freePorts(t, 3)
	clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	etcd := startLogged(t, filepath.Join(dir, "etcd.log"), etcdBin,
		"--data-dir", filepath.Join(dir, "etcd"), "--log-level", "warn",
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL)
	certDir := filepath.Join(dir, "certs")
	apiserver := startLogged(t, filepath.Join(dir, "apiserver.log"), apiserverBin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[2]), "--cert-dir", certDir,
		"--service-account-issuer", Issuer,
		"--service-account-key-file", saKey, "--service-account-signing-key-file", saKey,
		"--token-auth-file", tokens, "--authorization-mode", "RBAC",
		"--service-cluster-ip-range", "10.96.0.0/24")
	// Cleanups run last-in first-out: on failure the logs are shown
	// (before shutdown noise), then the API server stops before etcd (the
	// other way round it hangs on SIGTERM).
	t.Cleanup(etcd.stop)
	t.Cleanup(apiserver.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("etcd log (tail):\n%s\nkube-apiserver log (tail):\n%s", etcd.tail(), apiserver.tail())
		}
	})

	r.url = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	caPath := filepath.Join(certDir, "apiserver.crt")
	// Generous: on two loaded cores (race tests and fuzzing beside it) the
	// first start has been seen to take longer than 90 s.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var lastErr error
	var probe kubernetes.Interface
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range []*process{etcd, apiserver} {
			if p.exited() {
				return false, fmt.Errorf("%s exited:\n%s", p.name, p.tail())
			}
		}
		if r.client == nil {
			// The serving certificate is written at start-up, in place:
			// a client made from a file read half-written would trust
			// nothing, for good.
			pemBytes, err := os.ReadFile(caPath)
			if err == nil {
				_, err = certutil.ParseCertsPEM(pemBytes)
			}
			if err != nil {
				lastErr = fmt.Errorf("serving certificate %s: %w", caPath, err)
				return false, nil
			}
			r.caPEM = pemBytes
			r.config = r.restConfig(r.adminToken)
			c, err := kubernetes.NewForConfig(r.config)
			if err != nil {
				return false, err
			}
			r.client = c
			// The poll paces itself; client-side throttling would only hide
			// the server's answer behind a rate-limiter error.
			probeCfg := rest.CopyConfig(r.config)
			probeCfg.QPS = -1
			if probe, err = kubernetes.NewForConfig(probeCfg); err != nil {
				return false, err
			}
		}
		// verbose names the checks that fail, for the error below. Each
		// probe has its own deadline: one request the starting server
		// accepted but never answered once held the whole wait.
		reqCtx, cancelReq := context.WithTimeout(ctx, 5*time.Second)
		defer cancelReq()
		body, err := probe.Discovery().RESTClient().Get().AbsPath("/readyz").Param("verbose", "1").DoRaw(reqCtx)
		if err != nil {
			lastErr = fmt.Errorf("%w\n%s", err, body)
			return false, nil
		}
		return strings.HasSuffix(strings.TrimSpace(string(body)), "readyz check passed"), nil
	})
	if err != nil {
		t.Fatalf("kube-apiserver not ready: %v (last: %v)\netcd log:\n%s\nkube-apiserver log:\n%s", err, lastErr, etcd.tail(), apiserver.tail())
	}
	return r
}

// URL is the API server's address.
func (r *RealAPIServer) URL() string { return r.url }

// Client is a clientset with cluster-admin rights.
func (r *RealAPIServer) Client() kubernetes.Interface { return r.client }

// Kubeconfig writes an admin kubeconfig for the server into dir and
// returns its path, like APIServer.Kubeconfig.
func (r *RealAPIServer) Kubeconfig(t testing.TB, dir string) string {
	t.Helper()
	return r.KubeconfigFor(t, dir, "admin", r.adminToken)
}

// KubeconfigFor writes a kubeconfig that authenticates with token (a
// service account's, say) into dir as kubeconfig-<user> and returns its
// path.
func (r *RealAPIServer) KubeconfigFor(t testing.TB, dir, user, token string) string {
	t.Helper()
	caPath := filepath.Join(dir, "kube-ca.pem")
	writeFile(t, caPath, r.caPEM, 0o644)
	path := filepath.Join(dir, "kubeconfig")
	if user != "admin" {
		path += "-" + user
	}
	writeFile(t, path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: %[3]s}
current-context: test
`, r.url, caPath, user, token)), 0o600)
	return path
}

// TokenRequest asks the API server for a token of service account ns/sa.
// With podName set the token is bound to that pod (as a projected volume's
// is), and with audience set it is issued for that audience only; empty,
// it is issued for the API server itself (Issuer).
func (r *RealAPIServer) TokenRequest(ctx context.Context, ns, sa, podName, audience string) (string, error) {
	req := &authv1.TokenRequest{}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	if podName != "" {
		pod, err := r.client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("token request for %s/%s: %w", ns, sa, err)
		}
		req.Spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	resp, err := r.client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for %s/%s: %w", ns, sa, err)
	}
	return resp.Status.Token, nil
}

// Apply creates every object of a YAML stream (documents separated by
// ---), as `kubectl create -f` would; namespaced objects without a
// namespace go into ns. After a CustomResourceDefinition it waits until the
// definition is established, so later documents may use it.
func (r *RealAPIServer) Apply(ctx context.Context, ns string, manifest []byte) error {
	dyn, err := dynamic.NewForConfig(r.config)
	if err != nil {
		return err
	}
	var mapper meta.RESTMapper
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for i := 0; ; i++ {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("manifest document %d: %w", i, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		if mapper == nil {
			// Discovery afresh: an earlier document may have added a CRD.
			groups, err := restmapper.GetAPIGroupResources(r.client.Discovery())
			if err != nil {
				return fmt.Errorf("discover API resources: %w", err)
			}
			mapper = restmapper.NewDiscoveryRESTMapper(groups)
		}
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("manifest document %d (%s %s): %w", i, gvk.Kind, obj.GetName(), err)
		}
		res := dyn.Resource(m.Resource)
		var ri dynamic.ResourceInterface = res
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(ns)
			}
			ri = res.Namespace(obj.GetNamespace())
		}
		if _, err := ri.Create(ctx, &obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		if gvk.Kind == "CustomResourceDefinition" {
			if err := r.waitEstablished(ctx, dyn, m, obj.GetName()); err != nil {
				return err
			}
			mapper = nil
		}
	}
}

// waitEstablished waits until the CRD name is served.
func (r *RealAPIServer) waitEstablished(ctx context.Context, dyn dynamic.Interface, m *meta.RESTMapping, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		u, err := dyn.Resource(m.Resource).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &crd); err != nil {
			return false, err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CustomResourceDefinition %s not established: %w", name, err)
	}
	return nil
}

func (r *RealAPIServer) restConfig(token string) *rest.Config {
	return &rest.Config{Host: r.url, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: r.caPEM}, QPS: 50, Burst: 100}
}

// serviceAccountKey is a P-256 key in SEC1 form: the API server's key
// flags refuse PKCS#8.
func serviceAccountKey(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// freePorts finds n free TCP ports on 127.0.0.1, holding all of them open
// until each is known so none is handed out twice.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// process is a child whose output goes to a log file.
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

func startLogged(t testing.TB, logPath, bin string, args ...string) *process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := &process{name: filepath.Base(bin), log: logPath, cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and, if the process has not exited within 20 s,
// SIGKILL.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the end of the process's log.
func (p *process) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
