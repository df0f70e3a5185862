package attestor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"

	"github.com/signetid/signet/internal/selector"
)

const (
	defaultKubeletURL = "https://127.0.0.1:10250"
	// The agent's own service account, as mounted in its pod.
	defaultTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token" //nolint:gosec // a path, not a secret
	defaultCAPath    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// K8sOptions configure the Kubernetes attestor. The zero value suits an
// agent in a hostPID DaemonSet pod on the node it attests.
type K8sOptions struct {
	// KubeletURL is the kubelet's API: https (port 10250, with a token) or
	// plain http (the read-only port 10255, no token). Default
	// "https://127.0.0.1:10250".
	KubeletURL string
	// TokenPath holds the bearer token sent to an https kubelet; it is read
	// for every request, as the kubelet rotates it. Default the pod's
	// service account token,
	// /var/run/secrets/kubernetes.io/serviceaccount/token. Must be empty
	// for an http URL.
	TokenPath string
	// KubeletCAPath holds the PEM CA certificates that sign the kubelet's
	// serving certificate (read at each connection). Default the service
	// account's ca.crt next to the default token, when it exists. Over
	// loopback only the CA's signature is checked: kubelet certificates
	// name their node, not 127.0.0.1.
	KubeletCAPath string
	// SkipKubeletVerify accepts any kubelet certificate. An explicit
	// opt-in: whoever can answer on the kubelet's address then chooses the
	// workloads' selectors.
	SkipKubeletVerify bool
	// NodeName, when set, is this agent's node: a pod the kubelet reports
	// on another node is refused (a KubeletURL pointing at the wrong
	// kubelet), and it names the node in logs.
	NodeName string
	// ProcRoot is where procfs is mounted. Default "/proc".
	ProcRoot string
	// CgroupRoot is the cgroup path above the kubelet's kubepods root, "/"
	// when that root is at the top of the hierarchy. A pod-shaped path
	// anywhere else is not a pod: an owner of a delegated cgroup tree could
	// build one. Default: judged from the agent's own cgroup when the agent
	// runs in a pod, else "/".
	CgroupRoot string
	// PollInterval is the wait between two looks at the kubelet's pods
	// when a container is not listed yet (it has just started). Default
	// 500ms.
	PollInterval time.Duration
	// MaxPollAttempts is how many pod lists are looked at before the
	// attestation fails. Default 60.
	MaxPollAttempts int
	// CacheTTL is how long a pod list serves attestations before it is
	// fetched again; a container not in it triggers a fetch at once. It
	// bounds how stale labels may be. Default 1s.
	CacheTTL time.Duration
	// Logger receives debug messages. Default slog.Default().
	Logger *slog.Logger
}

// K8s attests a process in a Kubernetes pod: it reads the pod UID and
// container ID from the kernel's /proc/PID/cgroup and asks the node's
// kubelet about them. Selectors: k8s:ns, k8s:sa, k8s:pod-uid, k8s:pod-name,
// k8s:node-name, k8s:pod-label:<key>:<value> (each), k8s:container-name and
// k8s:container-image (the status image, the image ID and the spec image);
// for the whole pod k8s:pod-owner:<kind>:<name>, k8s:pod-owner-uid:<kind>:<uid>,
// k8s:pod-image / k8s:pod-init-image (every container's images, the three
// forms) and k8s:pod-image-count / k8s:pod-init-image-count.
// A process in no pod gets no selectors.
type K8s struct {
	procRoot     string
	cgroupRoot   string
	nodeName     string
	kubeletURL   string
	kubelet      *kubeletClient
	pollInterval time.Duration
	maxPolls     int
	cacheTTL     time.Duration
	log          *slog.Logger

	fetches singleflight.Group
	mu      sync.Mutex
	pods    *podIndex // the newest pod list, nil before the first
}

// podIndex is one pod list from the kubelet, by container ID. It is not
// changed once built.
type podIndex struct {
	gen        uint64    // increases with each list
	fetched    time.Time // when it was asked for: the list is no older
	containers map[string][]containerRef
}

type containerRef struct {
	pod       *corev1.Pod
	status    *corev1.ContainerStatus
	specImage string
}

// NewK8s checks opts and returns a Kubernetes attestor.
func NewK8s(opts K8sOptions) (*K8s, error) {
	if opts.KubeletURL == "" {
		opts.KubeletURL = defaultKubeletURL
	}
	u, err := url.Parse(opts.KubeletURL)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: kubelet URL: %w", err)
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("k8s attestor: kubelet URL %q: scheme must be https (port 10250) or http (read-only port 10255)", u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("k8s attestor: kubelet URL %q has no host", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("k8s attestor: kubelet URL %q must not hold credentials (use TokenPath)", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("k8s attestor: kubelet URL %q must not have a query or fragment", u.Redacted())
	}
	if opts.PollInterval < 0 || opts.MaxPollAttempts < 0 || opts.CacheTTL < 0 {
		return nil, fmt.Errorf("k8s attestor: PollInterval (%v), MaxPollAttempts (%d) and CacheTTL (%v) must not be negative", opts.PollInterval, opts.MaxPollAttempts, opts.CacheTTL)
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.MaxPollAttempts == 0 {
		opts.MaxPollAttempts = 60
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = time.Second
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}

	var tokenPath, caPath string
	if u.Scheme == "http" {
		switch {
		case opts.TokenPath != "":
			return nil, fmt.Errorf("k8s attestor: kubelet URL %q is plain http, which would show the token to the network: use https, or no TokenPath", u)
		case opts.KubeletCAPath != "" || opts.SkipKubeletVerify:
			return nil, fmt.Errorf("k8s attestor: kubelet URL %q is plain http: KubeletCAPath and SkipKubeletVerify apply to https only", u)
		}
	} else {
		tokenPath = cmp.Or(opts.TokenPath, defaultTokenPath)
		switch {
		case opts.SkipKubeletVerify && opts.KubeletCAPath != "":
			return nil, errors.New("k8s attestor: KubeletCAPath and SkipKubeletVerify are both set: verify with the CA, or not at all")
		case opts.SkipKubeletVerify:
		case opts.KubeletCAPath != "":
			caPath = opts.KubeletCAPath
		default:
			if _, err := os.Stat(defaultCAPath); err != nil {
				return nil, fmt.Errorf("k8s attestor: no CA to verify the kubelet's certificate (%w): set KubeletCAPath, or SkipKubeletVerify to not verify it", err)
			}
			caPath = defaultCAPath
		}
	}
	if opts.CgroupRoot == "" {
		opts.CgroupRoot = "/"
		if self, err := os.ReadFile(filepath.Join(opts.ProcRoot, "self", "cgroup")); err == nil {
			if root, inPod := cgroupRoot(self); inPod {
				opts.CgroupRoot = root
			}
		}
	} else if !strings.HasPrefix(opts.CgroupRoot, "/") {
		return nil, fmt.Errorf("k8s attestor: cgroup root %q must be an absolute cgroup path (\"/\" for the top)", opts.CgroupRoot)
	}
	kubelet, err := newKubeletClient(u, tokenPath, caPath, opts.SkipKubeletVerify)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: %w", err)
	}
	log := opts.Logger
	if opts.NodeName != "" {
		log = log.With("node", opts.NodeName)
	}
	if opts.SkipKubeletVerify {
		log.Warn("k8s attestor: the kubelet's certificate is not verified (SkipKubeletVerify)", "kubelet", u.String())
	}
	return &K8s{
		procRoot:     opts.ProcRoot,
		cgroupRoot:   opts.CgroupRoot,
		nodeName:     opts.NodeName,
		kubeletURL:   u.String(),
		kubelet:      kubelet,
		pollInterval: opts.PollInterval,
		maxPolls:     opts.MaxPollAttempts,
		cacheTTL:     opts.CacheTTL,
		log:          log,
	}, nil
}

// errNotListed is a container the kubelet does not list (yet).
var errNotListed = errors.New("not listed by the kubelet")

// Attest implements Attestor.
func (k *K8s) Attest(ctx context.Context, pid int32) ([]selector.Selector, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("k8s attestor: invalid pid %d (is the caller in another PID namespace?)", pid)
	}
	path := filepath.Join(k.procRoot, strconv.Itoa(int(pid)), "cgroup")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: pid %d: %w", pid, err)
	}
	pc, err := parseCgroup(b, k.cgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: pid %d: %s: %w", pid, path, err)
	}
	if pc == (podContainer{}) {
		return nil, nil
	}
	sels, err := k.lookup(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("k8s attestor: pid %d: pod %s container %s: %w", pid, pc.podUID, pc.containerID, err)
	}
	return sels, nil
}

// lookup finds the container in the kubelet's pod list, polling while it is
// not listed: a container that has just started may not be yet.
func (k *K8s) lookup(ctx context.Context, pc podContainer) ([]selector.Selector, error) {
	start := time.Now()
	var seen uint64 // the newest list this lookup has looked at
	op := func() ([]selector.Selector, error) {
		for {
			idx, err := k.podIndex(ctx, seen)
			if err != nil {
				return nil, backoff.Permanent(err)
			}
			seen = idx.gen
			sels, found, err := k.match(ctx, idx, pc)
			if err != nil {
				return nil, backoff.Permanent(err)
			}
			if found {
				return sels, nil
			}
			if !idx.fetched.Before(start) {
				return nil, errNotListed
			}
			// A cached list, older than this call and perhaps than the
			// container: look at a new one at once.
		}
	}
	policy := backoff.WithContext(backoff.WithMaxRetries(backoff.NewConstantBackOff(k.pollInterval), uint64(k.maxPolls-1)), ctx)
	sels, err := backoff.RetryNotifyWithData(op, policy, func(error, time.Duration) {
		k.log.DebugContext(ctx, "container not listed by the kubelet yet; polling", "pod_uid", pc.podUID, "container_id", pc.containerID, "interval", k.pollInterval)
	})
	if errors.Is(err, errNotListed) {
		return nil, fmt.Errorf("the kubelet at %s does not list this container (looked %d times, %v apart)", k.kubeletURL, k.maxPolls, k.pollInterval)
	}
	return sels, err
}

// podIndex returns a pod list newer than generation seen: the cached one
// while it is fresh, else a new one. Concurrent callers share one request.
func (k *K8s) podIndex(ctx context.Context, seen uint64) (*podIndex, error) {
	for {
		if idx := k.cached(seen); idx != nil {
			return idx, nil
		}
		ch := k.fetches.DoChan("pods", func() (any, error) {
			if idx := k.cached(seen); idx != nil {
				return idx, nil
			}
			// Shared by all waiting callers: one leaving must not cancel it.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), kubeletTimeout)
			defer cancel()
			return k.fetch(fctx)
		})
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case r := <-ch:
			if r.Err != nil {
				return nil, fmt.Errorf("kubelet %s: %w", k.kubeletURL, r.Err)
			}
			// A request another caller started may return a list this
			// one has seen; then ask again.
			if idx := r.Val.(*podIndex); idx.gen > seen {
				return idx, nil
			}
		}
	}
}

func (k *K8s) cached(seen uint64) *podIndex {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pods != nil && k.pods.gen > seen && time.Since(k.pods.fetched) < k.cacheTTL {
		return k.pods
	}
	return nil
}

func (k *K8s) fetch(ctx context.Context) (*podIndex, error) {
	sent := time.Now()
	list, err := k.kubelet.pods(ctx)
	if err != nil {
		return nil, err
	}
	idx := &podIndex{fetched: sent, containers: map[string][]containerRef{}}
	for i := range list.Items {
		pod := &list.Items[i]
		images := specImages(&pod.Spec)
		for _, statuses := range [][]corev1.ContainerStatus{
			pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses,
		} {
			for j := range statuses {
				st := &statuses[j]
				// "containerd://<id>"; empty until the container is created.
				_, id, ok := strings.Cut(st.ContainerID, "://")
				if !ok || id == "" {
					continue
				}
				idx.containers[id] = append(idx.containers[id], containerRef{pod: pod, status: st, specImage: images[st.Name]})
			}
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pods != nil {
		idx.gen = k.pods.gen
	}
	idx.gen++
	k.pods = idx
	return idx, nil
}

// specImages maps each container name of spec to its image. Names are
// unique across a pod's containers, init and ephemeral containers.
func specImages(spec *corev1.PodSpec) map[string]string {
	images := map[string]string{}
	for _, c := range spec.Containers {
		images[c.Name] = c.Image
	}
	for _, c := range spec.InitContainers {
		images[c.Name] = c.Image
	}
	for _, c := range spec.EphemeralContainers {
		images[c.Name] = c.Image
	}
	return images
}

// match returns the selectors of container pc if idx lists it, or an error
// if the kubelet contradicts the kernel.
func (k *K8s) match(ctx context.Context, idx *podIndex, pc podContainer) (sels []selector.Selector, found bool, err error) {
	refs := idx.containers[pc.containerID]
	switch {
	case len(refs) == 0:
		return nil, false, nil
	case len(refs) > 1:
		var pods []string
		for _, r := range refs {
			pods = append(pods, r.pod.Namespace+"/"+r.pod.Name+" ("+string(r.pod.UID)+")")
		}
		return nil, false, fmt.Errorf("the kubelet lists the container in %d pods: %s", len(refs), strings.Join(pods, ", "))
	}
	ref := refs[0]
	pod := ref.pod
	if string(pod.UID) != pc.podUID {
		return nil, false, fmt.Errorf("the kubelet lists the container in pod %s/%s (uid %s), not in the pod its cgroup names", pod.Namespace, pod.Name, pod.UID)
	}
	if k.nodeName != "" && pod.Spec.NodeName != k.nodeName {
		return nil, false, fmt.Errorf("the kubelet at %s lists pod %s/%s on node %q, not on this agent's node %q", k.kubeletURL, pod.Namespace, pod.Name, pod.Spec.NodeName, k.nodeName)
	}

	add := func(key, value string) {
		if value != "" {
			sels = append(sels, selector.Selector{Type: "k8s", Value: key + ":" + value})
		}
	}
	add("ns", pod.Namespace)
	add("sa", pod.Spec.ServiceAccountName)
	add("pod-uid", string(pod.UID))
	add("pod-name", pod.Name)
	add("node-name", pod.Spec.NodeName)
	for key, value := range pod.Labels {
		sels = append(sels, selector.Selector{Type: "k8s", Value: "pod-label:" + key + ":" + value})
	}
	add("container-name", ref.status.Name)
	// Both forms of the running image (a tag and a digest) and the spec's
	// reference, so an entry can name the image either way.
	add("container-image", ref.status.Image)
	add("container-image", ref.status.ImageID)
	add("container-image", ref.specImage)
	// Pod-wide selectors (SPIRE's): who owns the pod, and every image it
	// runs, so an entry can say "the pods of this Deployment's ReplicaSet"
	// or "a pod running exactly these images".
	for _, o := range pod.OwnerReferences {
		add("pod-owner", o.Kind+":"+o.Name)
		add("pod-owner-uid", o.Kind+":"+string(o.UID))
	}
	addImages := func(key string, specs []corev1.Container, statuses []corev1.ContainerStatus) {
		for _, st := range statuses {
			add(key, st.Image)
			add(key, st.ImageID)
		}
		for _, c := range specs {
			add(key, c.Image)
		}
		add(key+"-count", strconv.Itoa(len(specs)))
	}
	addImages("pod-image", pod.Spec.Containers, pod.Status.ContainerStatuses)
	addImages("pod-init-image", pod.Spec.InitContainers, pod.Status.InitContainerStatuses)

	valid := sels[:0]
	for _, s := range sels {
		// No entry can hold an invalid selector (too long, say), so
		// dropping one loses no match.
		if err := s.Validate(); err != nil {
			k.log.WarnContext(ctx, "k8s attestor: dropping a selector no entry can hold", "error", err)
			continue
		}
		valid = append(valid, s)
	}
	k.log.DebugContext(ctx, "k8s workload found", "pod", pod.Namespace+"/"+pod.Name, "pod_uid", pod.UID, "container", ref.status.Name, "container_id", pc.containerID)
	return selector.Sort(valid), true, nil
}
