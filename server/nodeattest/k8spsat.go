package nodeattest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/signetid/signet/internal/selector"
)

// K8sPSATType is the attestation type of Kubernetes projected service
// account tokens.
const K8sPSATType = "k8s_psat"

// DefaultPSATAudience is the audience agents' projected tokens must carry
// when a cluster names none: a token meant for another service (the API
// server's own audience, say) cannot be replayed to Signet.
const DefaultPSATAudience = "signet-server"

// Bound service account tokens carry the pod they were issued for in the
// TokenReview's extra fields.
const (
	extraPodName = "authentication.kubernetes.io/pod-name"
	extraPodUID  = "authentication.kubernetes.io/pod-uid"
)

// ErrNotAttested is returned when the evidence does not prove an agent:
// the token is not valid, was not issued for Signet, or belongs to a
// service account or pod that may not run an agent. The agent API answers
// PermissionDenied.
var ErrNotAttested = errors.New("k8s_psat attestation refused")

// ErrMalformed is returned for evidence that cannot be read at all; the
// agent API answers InvalidArgument.
var ErrMalformed = errors.New("malformed k8s_psat attestation data")

// PSATPayload is what an agent sends: the cluster it runs in, as the server
// names it, and its projected service account token.
type PSATPayload struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
}

// PSATCluster is one Kubernetes cluster whose agents may attest.
type PSATCluster struct {
	// Name is the cluster's name in agent IDs and selectors; a SPIFFE path
	// segment.
	Name string
	// ServiceAccountAllowList lists "namespace:name" of the service accounts
	// agents run as. Required: any pod of the cluster can get a token.
	ServiceAccountAllowList []string
	// Audience the tokens must be issued for; default DefaultPSATAudience.
	Audience string
	// AllowedNodeLabelKeys and AllowedPodLabelKeys name the labels that
	// become agent_node_label / agent_pod_label selectors. Labels are opt-in:
	// whoever can label a node or pod could otherwise grant it entries.
	AllowedNodeLabelKeys []string
	AllowedPodLabelKeys  []string
	// Client reaches the cluster's API server (TokenReview, pods, nodes).
	Client kubernetes.Interface
}

// PSAT attests agents with projected service account tokens, validated by
// the API server of the cluster they name (TokenReview). The agent is named
// after its node, spiffe://TD/agent/k8s_psat/<cluster>/<node-uid>, so a
// restarted agent pod on the same node takes the same ID.
type PSAT struct {
	td       spiffeid.TrustDomain
	clusters map[string]PSATCluster
}

// NewPSAT checks the clusters' settings and returns an attestor.
func NewPSAT(td spiffeid.TrustDomain, clusters []PSATCluster) (*PSAT, error) {
	p := &PSAT{td: td, clusters: map[string]PSATCluster{}}
	for _, c := range clusters {
		if err := CheckPSATCluster(&c); err != nil {
			return nil, err
		}
		if _, dup := p.clusters[c.Name]; dup {
			return nil, fmt.Errorf("k8s_psat cluster %q is configured twice", c.Name)
		}
		if c.Client == nil {
			return nil, fmt.Errorf("k8s_psat cluster %q: no Kubernetes client", c.Name)
		}
		p.clusters[c.Name] = c
	}
	return p, nil
}

// KubeClient connects to a cluster's API server with the kubeconfig file at
// path, or, when path is empty, as the pod the server runs in.
func KubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster Kubernetes config (set kubeconfig when the server runs outside the cluster): %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "signet-server"
	// client-go's default (5/s, burst 10) would make a rollout of a
	// thousand agents wait minutes for their TokenReviews.
	cfg.QPS, cfg.Burst = 50, 100
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("Kubernetes client: %w", err)
	}
	return client, nil
}

// CheckPSATCluster validates a cluster's settings (not its client) and
// fills defaults.
func CheckPSATCluster(c *PSATCluster) error {
	if c.Name == "" {
		return errors.New("k8s_psat cluster name is empty")
	}
	if _, err := spiffeid.FromSegments(spiffeid.RequireTrustDomainFromString("x"), c.Name); err != nil {
		return fmt.Errorf("k8s_psat cluster name %q: must be one SPIFFE path segment ([a-zA-Z0-9._-], not . or ..)", c.Name)
	}
	if len(c.ServiceAccountAllowList) == 0 {
		return fmt.Errorf("k8s_psat cluster %q: service_account_allow_list is required (e.g. [\"signet-system:signet-agent\"])", c.Name)
	}
	for _, sa := range c.ServiceAccountAllowList {
		ns, name, ok := strings.Cut(sa, ":")
		if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
			return fmt.Errorf("k8s_psat cluster %q: service account %q: want namespace:name", c.Name, sa)
		}
	}
	if c.Audience == "" {
		c.Audience = DefaultPSATAudience
	}
	return nil
}

// Attest validates payload (a JSON PSATPayload) and names the agent.
func (p *PSAT) Attest(ctx context.Context, payload []byte) (Result, error) {
	var in PSATPayload
	if err := json.Unmarshal(payload, &in); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if in.Cluster == "" || in.Token == "" {
		return Result{}, fmt.Errorf("%w: cluster and token are required", ErrMalformed)
	}
	// Service account tokens are JWTs: refuse anything else before it
	// costs the API server a TokenReview (Attest needs no authentication).
	if strings.Count(in.Token, ".") != 2 || len(in.Token) > 16<<10 {
		return Result{}, fmt.Errorf("%w: token is not a JWT", ErrMalformed)
	}
	c, ok := p.clusters[in.Cluster]
	if !ok {
		return Result{}, fmt.Errorf("%w: cluster %q is not configured on this server", ErrNotAttested, in.Cluster)
	}
	review, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authv1.TokenReview{
		Spec: authv1.TokenReviewSpec{Token: in.Token, Audiences: []string{c.Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Result{}, fmt.Errorf("cluster %q: token review: %w", c.Name, err)
	}
	st := review.Status
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Result{}, fmt.Errorf("%w: cluster %q: token: %s", ErrNotAttested, c.Name, reason)
	}
	// An API server that ignores audiences answers with its own: refuse
	// rather than accept a token that was never meant for Signet.
	if !slices.Contains(st.Audiences, c.Audience) {
		return Result{}, fmt.Errorf("%w: cluster %q: token is not issued for audience %q (has %q)", ErrNotAttested, c.Name, c.Audience, st.Audiences)
	}
	ns, sa, ok := serviceAccount(st.User.Username)
	if !ok {
		return Result{}, fmt.Errorf("%w: cluster %q: token user %q is not a service account", ErrNotAttested, c.Name, st.User.Username)
	}
	if !slices.Contains(c.ServiceAccountAllowList, ns+":"+sa) {
		return Result{}, fmt.Errorf("%w: cluster %q: service account %s:%s is not in service_account_allow_list", ErrNotAttested, c.Name, ns, sa)
	}
	podName, podUID := extra(st.User, extraPodName), extra(st.User, extraPodUID)
	if podName == "" || podUID == "" {
		return Result{}, fmt.Errorf("%w: cluster %q: token is not bound to a pod (use a projected service account token, not a secret)", ErrNotAttested, c.Name)
	}
	pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Result{}, fmt.Errorf("%w: cluster %q: agent pod %s/%s no longer exists", ErrNotAttested, c.Name, ns, podName)
	}
	if err != nil {
		return Result{}, fmt.Errorf("cluster %q: get pod %s/%s: %w", c.Name, ns, podName, err)
	}
	if string(pod.UID) != podUID {
		return Result{}, fmt.Errorf("%w: cluster %q: agent pod %s/%s was replaced (uid %s, token for %s)", ErrNotAttested, c.Name, ns, podName, pod.UID, podUID)
	}
	if pod.Spec.NodeName == "" {
		return Result{}, fmt.Errorf("%w: cluster %q: pod %s/%s is not scheduled on a node", ErrNotAttested, c.Name, ns, podName)
	}
	node, err := c.Client.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Result{}, fmt.Errorf("%w: cluster %q: node %s of pod %s/%s does not exist", ErrNotAttested, c.Name, pod.Spec.NodeName, ns, podName)
	}
	if err != nil {
		return Result{}, fmt.Errorf("cluster %q: get node %s: %w", c.Name, pod.Spec.NodeName, err)
	}
	if node.UID == "" {
		return Result{}, fmt.Errorf("cluster %q: node %s has no uid", c.Name, node.Name)
	}
	id, err := PSATAgentID(p.td, c.Name, string(node.UID))
	if err != nil {
		return Result{}, fmt.Errorf("cluster %q: node uid %q cannot name an agent: %w", c.Name, node.UID, err)
	}
	return Result{
		AgentID:     id,
		Type:        K8sPSATType,
		Selectors:   psatSelectors(c, ns, sa, pod, node),
		CanReattest: true,
	}, nil
}

// PSATAgentID is the ID of the k8s_psat agent on the node with nodeUID in
// cluster: spiffe://TD/agent/k8s_psat/<cluster>/<node-uid>. The Kubernetes
// registration controller parents pods' entries to it.
func PSATAgentID(td spiffeid.TrustDomain, cluster, nodeUID string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "agent", K8sPSATType, cluster, nodeUID)
}

// serviceAccount splits "system:serviceaccount:<ns>:<name>".
func serviceAccount(user string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != ""
}

func extra(u authv1.UserInfo, key string) string {
	if v := u.Extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// psatSelectors are the node selectors node-alias entries match, with
// SPIRE's names.
func psatSelectors(c PSATCluster, ns, sa string, pod *corev1.Pod, node *corev1.Node) []selector.Selector {
	s := func(v string) selector.Selector { return selector.Selector{Type: K8sPSATType, Value: v} }
	out := []selector.Selector{
		s("cluster:" + c.Name),
		s("agent_ns:" + ns),
		s("agent_sa:" + sa),
		s("agent_pod_name:" + pod.Name),
		s("agent_pod_uid:" + string(pod.UID)),
		s("agent_node_name:" + node.Name),
		s("agent_node_uid:" + string(node.UID)),
	}
	if pod.Status.HostIP != "" {
		out = append(out, s("agent_node_ip:"+pod.Status.HostIP))
	}
	out = append(out, labelSelectors(s, "agent_node_label:", node.Labels, c.AllowedNodeLabelKeys)...)
	out = append(out, labelSelectors(s, "agent_pod_label:", pod.Labels, c.AllowedPodLabelKeys)...)
	return selector.Sort(out)
}

func labelSelectors(s func(string) selector.Selector, prefix string, labels map[string]string, allowed []string) []selector.Selector {
	var keys []string
	for k := range labels {
		if slices.Contains(allowed, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]selector.Selector, 0, len(keys))
	for _, k := range keys {
		out = append(out, s(prefix+k+":"+labels[k]))
	}
	return out
}
