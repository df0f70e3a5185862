package attestor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/internal/selector"
)

const (
	podUID  = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
	podUID2 = "0b5e3bb2-3a04-4c4f-9e8c-4d4a2d5ac1f7"
	cid     = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
	cid2    = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
	token   = "kubelet-token-1"
)

// procWithCgroups writes a procfs stand-in in which each pid has the given
// /proc/PID/cgroup; the real kernel's are tested in k8s_root_test.go.
func procWithCgroups(t testing.TB, cgroups map[int]string) string {
	t.Helper()
	root := t.TempDir()
	for pid, content := range cgroups {
		dir := filepath.Join(root, fmt.Sprint(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func cgroupfsLine(uid, id string) string {
	return "0::/kubepods/besteffort/pod" + uid + "/" + id + "\n"
}

// setup returns a kubelet serving pods and an attestor for it (newK8s).
func setup(t testing.TB, opts attestor.K8sOptions, pods ...corev1.Pod) (*fakeKubelet, *attestor.K8s) {
	t.Helper()
	kl := newFakeKubelet(t, token, kubeletOpts{})
	kl.SetPods(pods...)
	return kl, newK8s(t, kl, opts)
}

// newK8s returns an attestor for kl, with its CA and token unless opts say
// otherwise, in which pid 42 is container cid of pod podUID, pid 43
// container cid2 of podUID2 and pid 44 a host process.
func newK8s(t testing.TB, kl *fakeKubelet, opts attestor.K8sOptions) *attestor.K8s {
	t.Helper()
	if opts.KubeletURL == "" {
		opts.KubeletURL = kl.URL
	}
	if opts.TokenPath == "" && strings.HasPrefix(opts.KubeletURL, "https:") {
		opts.TokenPath = writeFile(t, "token", []byte(token+"\n"))
	}
	if opts.KubeletCAPath == "" && !opts.SkipKubeletVerify && strings.HasPrefix(opts.KubeletURL, "https:") {
		opts.KubeletCAPath = kl.CAPath
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = procWithCgroups(t, map[int]string{
			42: cgroupfsLine(podUID, cid),
			43: "0::/kubepods.slice/kubepods-pod" + strings.ReplaceAll(podUID2, "-", "_") + ".slice/cri-containerd-" + cid2 + ".scope\n",
			44: "0::/user.slice/user-1000.slice/session-1.scope\n",
		})
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = time.Millisecond
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = time.Hour // tests that want a new list say so
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	k, err := attestor.NewK8s(opts)
	if err != nil {
		t.Fatalf("NewK8s: %v", err)
	}
	return k
}

func attestStrings(t testing.TB, k *attestor.K8s, pid int32) []string {
	t.Helper()
	sels, err := k.Attest(context.Background(), pid)
	if err != nil {
		t.Fatalf("Attest(%d): %v", pid, err)
	}
	for _, s := range sels {
		if err := s.Validate(); err != nil {
			t.Errorf("invalid selector: %v", err)
		}
	}
	if !slices.IsSortedFunc(sels, selector.Compare) {
		t.Errorf("selectors not sorted: %v", selector.Strings(sels))
	}
	return selector.Strings(sels)
}

func TestK8sSelectors(t *testing.T) {
	pod := testPod(podUID, "web", cid)
	pod.Labels["empty"] = ""
	// The spec names the image by tag; the runtime reports what it
	// resolved; both forms, deduplicated, are selectors.
	pod.Spec.Containers[0].Image = "web:1.0"
	// Pod-wide: its owner, and the images of every container, the sidecar
	// and the init container included.
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d4b9", UID: "rs-uid-1"}}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "proxy", Image: "envoy:1.30"})
	pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{Name: "proxy", ContainerID: "containerd://" + strings.Repeat("c", 64), Image: "docker.io/library/envoy:1.30"})
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "busybox:1.36"}}
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init", Image: "docker.io/library/busybox:1.36", ImageID: "docker.io/library/busybox@sha256:" + strings.Repeat("cd", 32)}}
	other := testPod(podUID2, "db", cid2)
	_, k := setup(t, attestor.K8sOptions{}, other, pod)
	got := attestStrings(t, k, 42)
	want := []string{
		"k8s:container-image:registry.example/web:1.0",
		"k8s:container-image:registry.example/web@sha256:" + strings.Repeat("ab", 32),
		"k8s:container-image:web:1.0",
		"k8s:container-name:app",
		"k8s:node-name:node-1",
		"k8s:ns:payments",
		"k8s:pod-image-count:2",
		"k8s:pod-image:docker.io/library/envoy:1.30",
		"k8s:pod-image:envoy:1.30",
		"k8s:pod-image:registry.example/web:1.0",
		"k8s:pod-image:registry.example/web@sha256:" + strings.Repeat("ab", 32),
		"k8s:pod-image:web:1.0",
		"k8s:pod-init-image-count:1",
		"k8s:pod-init-image:busybox:1.36",
		"k8s:pod-init-image:docker.io/library/busybox:1.36",
		"k8s:pod-init-image:docker.io/library/busybox@sha256:" + strings.Repeat("cd", 32),
		"k8s:pod-label:app:web",
		"k8s:pod-label:empty:",
		"k8s:pod-label:tier:backend",
		"k8s:pod-name:web",
		"k8s:pod-owner-uid:ReplicaSet:rs-uid-1",
		"k8s:pod-owner:ReplicaSet:web-7d4b9",
		"k8s:pod-uid:" + podUID,
		"k8s:sa:checkout",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("selectors:\n got %q\nwant %q", got, want)
	}
}

func TestK8sInitAndEphemeralContainers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		place func(*corev1.Pod, corev1.ContainerStatus)
	}{
		{"init container", func(p *corev1.Pod, st corev1.ContainerStatus) {
			p.Spec.InitContainers = []corev1.Container{{Name: st.Name, Image: "spec/" + st.Name}}
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{st}
		}},
		{"ephemeral container", func(p *corev1.Pod, st corev1.ContainerStatus) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: st.Name, Image: "spec/" + st.Name}}}
			p.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{st}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod(podUID, "web", cid2) // the app container is another
			tc.place(&pod, corev1.ContainerStatus{Name: "helper", ContainerID: "cri-o://" + cid, Image: "status/helper", ImageID: "status/helper@sha256:" + strings.Repeat("cd", 32)})
			_, k := setup(t, attestor.K8sOptions{}, pod)
			got := attestStrings(t, k, 42)
			for _, want := range []string{"k8s:container-name:helper", "k8s:container-image:spec/helper", "k8s:container-image:status/helper", "k8s:pod-uid:" + podUID} {
				if !slices.Contains(got, want) {
					t.Errorf("selectors %q lack %s", got, want)
				}
			}
			if slices.Contains(got, "k8s:container-name:app") {
				t.Errorf("selectors %q name the pod's other container", got)
			}
		})
	}
}

func TestK8sNotInAPod(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{}, testPod(podUID, "web", cid))
	sels, err := k.Attest(t.Context(), 44)
	if err != nil || sels != nil {
		t.Fatalf("Attest of a host process = %v, %v; want no selectors and no error", selector.Strings(sels), err)
	}
	if n := kl.Calls(); n != 0 {
		t.Fatalf("the kubelet was asked %d times about a host process", n)
	}
}

func TestK8sCachedPodListServesAttestations(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{}, testPod(podUID, "web", cid), testPod(podUID2, "db", cid2))
	attestStrings(t, k, 42)
	attestStrings(t, k, 42)
	attestStrings(t, k, 43)
	if n := kl.Calls(); n != 1 {
		t.Fatalf("kubelet asked %d times for 3 attestations of listed containers; want 1", n)
	}
}

func TestK8sConcurrentAttestationsShareOneRequest(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{}, testPod(podUID, "web", cid))
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if _, err := k.Attest(context.Background(), 42); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := kl.Calls(); n != 1 {
		t.Fatalf("kubelet asked %d times by 20 concurrent attestations; want 1", n)
	}
}

// A container missing from a cached list may have started since: the list
// is fetched again at once, without waiting for a poll interval.
func TestK8sMissRefreshesTheCachedList(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{MaxPollAttempts: 1}, testPod(podUID, "web", cid))
	attestStrings(t, k, 42)
	kl.SetPods(testPod(podUID, "web", cid), testPod(podUID2, "db", cid2))
	if got := attestStrings(t, k, 43); !slices.Contains(got, "k8s:pod-name:db") {
		t.Fatalf("selectors %q lack the new pod's name", got)
	}
	if n := kl.Calls(); n != 2 {
		t.Fatalf("kubelet asked %d times; want 2", n)
	}
}

// The cache serves for CacheTTL only: labels change, and a label removed to
// revoke an identity must stop counting.
func TestK8sCacheExpires(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{CacheTTL: time.Nanosecond}, testPod(podUID, "web", cid))
	attestStrings(t, k, 42)
	relabelled := testPod(podUID, "web", cid)
	delete(relabelled.Labels, "tier")
	kl.SetPods(relabelled)
	if got := attestStrings(t, k, 42); slices.Contains(got, "k8s:pod-label:tier:backend") {
		t.Fatalf("selectors %q keep a label the pod lost", got)
	}
}

func TestK8sPollsUntilTheContainerIsListed(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{MaxPollAttempts: 10})
	kl.mu.Lock()
	kl.before = func(n int, kl *fakeKubelet) {
		if n == 4 { // the container appears in the fourth list
			kl.pods = []corev1.Pod{testPod(podUID, "web", cid)}
		}
	}
	kl.mu.Unlock()
	if got := attestStrings(t, k, 42); !slices.Contains(got, "k8s:pod-uid:"+podUID) {
		t.Fatalf("selectors %q lack the pod UID", got)
	}
	if n := kl.Calls(); n != 4 {
		t.Fatalf("kubelet asked %d times; want 4", n)
	}
}

func TestK8sGivesUpAfterMaxPollAttempts(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{MaxPollAttempts: 3}, testPod(podUID2, "db", cid2))
	sels, err := k.Attest(t.Context(), 42)
	if err == nil {
		t.Fatalf("Attest of an unlisted container = %v; want an error", selector.Strings(sels))
	}
	for _, want := range []string{podUID, cid, "does not list"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if n := kl.Calls(); n != 3 {
		t.Fatalf("kubelet asked %d times; want MaxPollAttempts = 3", n)
	}
}

func TestK8sPollingStopsWithTheContext(t *testing.T) {
	_, k := setup(t, attestor.K8sOptions{PollInterval: time.Hour, MaxPollAttempts: 5})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := k.Attest(ctx, 42); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Attest = %v; want the context's deadline error", err)
	}
}

// Where the kubelet contradicts the kernel, nothing is guessed.
func TestK8sContradictionsFail(t *testing.T) {
	inOtherPod := testPod(podUID2, "db", cid)
	elsewhere := testPod(podUID, "web", cid)
	elsewhere.Spec.NodeName = "node-2"
	for _, tc := range []struct {
		name string
		pods []corev1.Pod
		want string
	}{
		{"container in another pod than its cgroup says", []corev1.Pod{inOtherPod}, "payments/db"},
		{"container in two pods", []corev1.Pod{testPod(podUID, "web", cid), inOtherPod}, "in 2 pods"},
		{"pod on another node", []corev1.Pod{elsewhere}, `on node "node-2", not on this agent's node "node-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, k := setup(t, attestor.K8sOptions{NodeName: "node-1", MaxPollAttempts: 1}, tc.pods...)
			sels, err := k.Attest(t.Context(), 42)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest = %v, %v; want an error containing %q", selector.Strings(sels), err, tc.want)
			}
		})
	}
}

func TestK8sReadsTheRotatedToken(t *testing.T) {
	tokenPath := writeFile(t, "token", []byte("token-1\n"))
	kl, k := setup(t, attestor.K8sOptions{TokenPath: tokenPath, CacheTTL: time.Nanosecond}, testPod(podUID, "web", cid))
	kl.SetToken("token-1")
	attestStrings(t, k, 42)
	replaceFile(t, tokenPath, []byte("token-2\n"))
	kl.SetToken("token-2")
	attestStrings(t, k, 42)
	if got, want := kl.Auths(), []string{"Bearer token-1", "Bearer token-2"}; !slices.Equal(got, want) {
		t.Fatalf("kubelet received %q; want %q", got, want)
	}
}

func TestK8sRefusedTokenFailsClearly(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{MaxPollAttempts: 1}, testPod(podUID, "web", cid))
	kl.SetToken("another-token")
	_, err := k.Attest(t.Context(), 42)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "nodes/proxy") {
		t.Fatalf("Attest with a refused token = %v; want an error naming the 401 and the permission needed", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("error %q shows the token", err)
	}
}

func TestK8sKubeletCertificate(t *testing.T) {
	wrongCA, _ := newServingCert(t, "node-1")
	for _, tc := range []struct {
		name    string
		names   []string // the kubelet certificate's
		host    string   // in the URL
		wrongCA bool
		skip    bool
		wantErr string
	}{
		// A kubelet's certificate names its node, not 127.0.0.1: over
		// loopback the CA's signature identifies it.
		{name: "loopback, right CA", host: "127.0.0.1"},
		{name: "loopback, wrong CA", host: "127.0.0.1", wrongCA: true, wantErr: "not trusted"},
		{name: "wrong CA, verification skipped", host: "127.0.0.1", wrongCA: true, skip: true},
		{name: "by name, certificate for it", names: []string{"localhost"}, host: "localhost"},
		{name: "by name, certificate for another", names: []string{"node-2"}, host: "localhost", wantErr: "not localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kl := newFakeKubelet(t, token, kubeletOpts{names: tc.names})
			kl.SetPods(testPod(podUID, "web", cid))
			opts := attestor.K8sOptions{
				KubeletURL:        strings.Replace(kl.URL, "127.0.0.1", tc.host, 1),
				KubeletCAPath:     kl.CAPath,
				SkipKubeletVerify: tc.skip,
				MaxPollAttempts:   1,
			}
			if tc.wrongCA {
				opts.KubeletCAPath = writeFile(t, "wrong-ca.pem", wrongCA)
			}
			if tc.skip {
				opts.KubeletCAPath = ""
			}
			k := newK8s(t, kl, opts)
			sels, err := k.Attest(t.Context(), 42)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Attest: %v", err)
			case tc.wantErr == "" && len(sels) == 0:
				t.Fatal("Attest gave no selectors")
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Attest = %v, %v; want an error containing %q", selector.Strings(sels), err, tc.wantErr)
			}
		})
	}
}

// The CA file is read at each connection: a rotated cluster CA is used
// without a restart.
func TestK8sReadsTheRotatedCA(t *testing.T) {
	kl := newFakeKubelet(t, token, kubeletOpts{})
	kl.SetPods(testPod(podUID, "web", cid))
	caPath := writeFile(t, "ca.pem", mustCA(t))
	k := newK8s(t, kl, attestor.K8sOptions{KubeletCAPath: caPath, MaxPollAttempts: 1})
	if _, err := k.Attest(t.Context(), 42); err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("Attest against a kubelet whose CA is not (yet) in the file = %v; want not trusted", err)
	}
	replaceFile(t, caPath, mustRead(t, kl.CAPath))
	attestStrings(t, k, 42)
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestK8sKubeletDown(t *testing.T) {
	kl, k := setup(t, attestor.K8sOptions{}, testPod(podUID, "web", cid))
	kl.srv.Close()
	_, err := k.Attest(t.Context(), 42)
	if err == nil || !strings.Contains(err.Error(), kl.URL) {
		t.Fatalf("Attest with the kubelet down = %v; want an error naming %s", err, kl.URL)
	}
}

func TestK8sRefusesAnswersThatAreNotAPodList(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"a Status", `{"kind":"Status","apiVersion":"v1","status":"Failure"}`, "not a v1 PodList"},
		{"no kind", `{"items":[]}`, "decode v1 PodList"},
		{"not JSON", `<html>`, "decode v1 PodList"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kl, k := setup(t, attestor.K8sOptions{MaxPollAttempts: 1})
			kl.mu.Lock()
			kl.answer = func(w http.ResponseWriter) bool {
				w.Write([]byte(tc.body))
				return true
			}
			kl.mu.Unlock()
			if _, err := k.Attest(t.Context(), 42); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// The read-only port is plain http: no token is sent over it.
func TestK8sPlainHTTPKubelet(t *testing.T) {
	kl := newFakeKubelet(t, "", kubeletOpts{plainHTTP: true})
	kl.SetPods(testPod(podUID, "web", cid))
	k := newK8s(t, kl, attestor.K8sOptions{})
	attestStrings(t, k, 42)
	if got := kl.Auths(); len(got) != 1 || got[0] != "" {
		t.Fatalf("plain http kubelet received Authorization %q; want none", got)
	}
}

func TestNewK8sRefusesBadOptions(t *testing.T) {
	tokenPath := writeFile(t, "token", []byte("tok"))
	caPath := writeFile(t, "ca.pem", mustCA(t))
	notPEM := writeFile(t, "notpem", []byte("hello"))
	empty := writeFile(t, "empty", []byte(" \n"))
	missing := filepath.Join(t.TempDir(), "missing")
	ok := attestor.K8sOptions{KubeletURL: "https://127.0.0.1:10250", TokenPath: tokenPath, KubeletCAPath: caPath}
	with := func(f func(*attestor.K8sOptions)) attestor.K8sOptions { o := ok; f(&o); return o }
	if _, err := attestor.NewK8s(ok); err != nil {
		t.Fatalf("NewK8s(valid options): %v", err)
	}
	for _, tc := range []struct {
		name string
		opts attestor.K8sOptions
		want string
	}{
		{"bad scheme", with(func(o *attestor.K8sOptions) { o.KubeletURL = "ftp://127.0.0.1:10250" }), "scheme must be https"},
		{"no scheme", with(func(o *attestor.K8sOptions) { o.KubeletURL = "127.0.0.1:10250" }), "kubelet URL"},
		{"no host", with(func(o *attestor.K8sOptions) { o.KubeletURL = "https:///pods" }), "has no host"},
		{"credentials in the URL", with(func(o *attestor.K8sOptions) { o.KubeletURL = "https://u:secret@127.0.0.1:10250" }), "must not hold credentials"},
		{"query", with(func(o *attestor.K8sOptions) { o.KubeletURL = "https://127.0.0.1:10250?x=1" }), "query"},
		{"unreadable CA", with(func(o *attestor.K8sOptions) { o.KubeletCAPath = missing }), "read kubelet CA"},
		{"CA without a certificate", with(func(o *attestor.K8sOptions) { o.KubeletCAPath = notPEM }), "holds no PEM certificate"},
		{"CA and skip", with(func(o *attestor.K8sOptions) { o.SkipKubeletVerify = true }), "both set"},
		{"unreadable token", with(func(o *attestor.K8sOptions) { o.TokenPath = missing }), "read kubelet token"},
		{"empty token", with(func(o *attestor.K8sOptions) { o.TokenPath = empty }), "is empty"},
		{"token over http", with(func(o *attestor.K8sOptions) { o.KubeletURL = "http://127.0.0.1:10255"; o.KubeletCAPath = "" }), "plain http"},
		{"CA over http", with(func(o *attestor.K8sOptions) { o.KubeletURL = "http://127.0.0.1:10255"; o.TokenPath = "" }), "https only"},
		{"negative poll interval", with(func(o *attestor.K8sOptions) { o.PollInterval = -time.Second }), "must not be negative"},
		{"negative attempts", with(func(o *attestor.K8sOptions) { o.MaxPollAttempts = -1 }), "must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := attestor.NewK8s(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewK8s = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewK8sWithoutACAFails(t *testing.T) {
	if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"); err == nil {
		t.Skip("this machine has a service account CA")
	}
	_, err := attestor.NewK8s(attestor.K8sOptions{TokenPath: writeFile(t, "token", []byte("tok"))})
	if err == nil || !strings.Contains(err.Error(), "no CA to verify") {
		t.Fatalf("NewK8s without a CA = %v; want an error saying so", err)
	}
}

func mustCA(t testing.TB) []byte {
	t.Helper()
	ca, _ := newServingCert(t, "node-1")
	return ca
}

func BenchmarkK8sAttestCached(b *testing.B) {
	_, k := setup(b, attestor.K8sOptions{}, testPod(podUID, "web", cid), testPod(podUID2, "db", cid2))
	ctx := context.Background()
	if _, err := k.Attest(ctx, 42); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := k.Attest(ctx, 42); err != nil {
			b.Fatal(err)
		}
	}
}
