package nodeattest

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/internal/selector"
)

// psatCluster is a cluster with one agent pod on node-1 and its token
// "good"; the other tokens exercise the refusals.
func psatCluster(t *testing.T) (*kubetest.APIServer, PSATCluster) {
	t.Helper()
	api := kubetest.NewAPIServer(t)
	api.AddNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-uid-1",
		Labels: map[string]string{"topology.kubernetes.io/zone": "eu-1a", "secret-label": "x"}}})
	api.AddPod(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "agent-abc", UID: "pod-uid-1",
			Labels: map[string]string{"app": "signet-agent"}},
		Spec:   corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "signet-agent"},
		Status: corev1.PodStatus{HostIP: "10.0.0.7"},
	})
	agent := kubetest.Token{Audiences: []string{"signet-server"}, Namespace: "signet-system", ServiceAccount: "signet-agent", PodName: "agent-abc", PodUID: "pod-uid-1"}
	api.AddToken(jwt("good"), agent)
	other := agent
	other.Audiences = []string{"https://kubernetes.default.svc"}
	api.AddToken(jwt("apiserver-audience"), other)
	other = agent
	other.ServiceAccount = "default"
	api.AddToken(jwt("default-sa"), other)
	other = agent
	other.PodName, other.PodUID = "", ""
	api.AddToken(jwt("secret-token"), other)
	other = agent
	other.PodName, other.PodUID = "gone", "pod-uid-gone"
	api.AddToken(jwt("deleted-pod"), other)
	other = agent
	other.PodUID = "pod-uid-old"
	api.AddToken(jwt("replaced-pod"), other)
	api.AddPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "pending", UID: "pod-uid-p"}})
	other = agent
	other.PodName, other.PodUID = "pending", "pod-uid-p"
	api.AddToken(jwt("unscheduled"), other)
	api.AddPod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "signet-system", Name: "orphan", UID: "pod-uid-o"}, Spec: corev1.PodSpec{NodeName: "node-gone"}})
	other = agent
	other.PodName, other.PodUID = "orphan", "pod-uid-o"
	api.AddToken(jwt("no-node"), other)

	client, err := KubeClient(api.Kubeconfig(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return api, PSATCluster{
		Name:                    "prod",
		ServiceAccountAllowList: []string{"signet-system:signet-agent"},
		AllowedNodeLabelKeys:    []string{"topology.kubernetes.io/zone"},
		AllowedPodLabelKeys:     []string{"app"},
		Client:                  client,
	}
}

// jwt shapes a test token name like a service account token.
func jwt(name string) string { return "eyJhbGciOiJSUzI1NiJ9." + name + ".c2ln" }

func psatPayload(cluster, token string) []byte {
	if token != "" {
		token = jwt(token)
	}
	b, _ := json.Marshal(PSATPayload{Cluster: cluster, Token: token})
	return b
}

func TestPSATAttest(t *testing.T) {
	_, cluster := psatCluster(t)
	p, err := NewPSAT(td, []PSATCluster{cluster})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := p.Attest(ctx, psatPayload("prod", "good"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.AgentID.String(), "spiffe://example.org/agent/k8s_psat/prod/node-uid-1"; got != want {
		t.Errorf("agent ID %s, want %s", got, want)
	}
	if !res.CanReattest {
		t.Error("k8s_psat result is not reattestable; its agents would renew without the token being checked again")
	}
	want := []string{
		"k8s_psat:agent_node_ip:10.0.0.7",
		"k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a",
		"k8s_psat:agent_node_name:node-1",
		"k8s_psat:agent_node_uid:node-uid-1",
		"k8s_psat:agent_ns:signet-system",
		"k8s_psat:agent_pod_label:app:signet-agent",
		"k8s_psat:agent_pod_name:agent-abc",
		"k8s_psat:agent_pod_uid:pod-uid-1",
		"k8s_psat:agent_sa:signet-agent",
		"k8s_psat:cluster:prod",
	}
	if got := strings.Join(selector.Strings(res.Selectors), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("selectors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	for _, s := range res.Selectors {
		if err := s.Validate(); err != nil {
			t.Errorf("attested selector is not valid in an entry: %v", err)
		}
	}

	for _, tc := range []struct {
		name    string
		payload []byte
		wantErr error
		wantMsg string
	}{
		{"not json", []byte("eyJhbGciOi"), ErrMalformed, "malformed"},
		{"no token", psatPayload("prod", ""), ErrMalformed, "required"},
		{"token not a JWT", []byte(`{"cluster":"prod","token":"opaque-secret"}`), ErrMalformed, "not a JWT"},
		{"unknown cluster", psatPayload("staging", "good"), ErrNotAttested, `cluster "staging" is not configured`},
		{"invalid token", psatPayload("prod", "forged"), ErrNotAttested, "invalid bearer token"},
		{"token for another audience", psatPayload("prod", "apiserver-audience"), ErrNotAttested, "audiences are invalid"},
		{"service account not allowed", psatPayload("prod", "default-sa"), ErrNotAttested, "signet-system:default is not in service_account_allow_list"},
		{"legacy secret token", psatPayload("prod", "secret-token"), ErrNotAttested, "not bound to a pod"},
		{"pod deleted", psatPayload("prod", "deleted-pod"), ErrNotAttested, "no longer exists"},
		{"pod replaced under the same name", psatPayload("prod", "replaced-pod"), ErrNotAttested, "was replaced"},
		{"pod not scheduled", psatPayload("prod", "unscheduled"), ErrNotAttested, "not scheduled"},
		{"node gone", psatPayload("prod", "no-node"), ErrNotAttested, "node node-gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Attest(ctx, tc.payload)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

// An authenticator that does not support audiences authenticates any valid
// token: one issued for another audience must still not pass as Signet's.
func TestPSATAudienceNotChecked(t *testing.T) {
	api, cluster := psatCluster(t)
	api.IgnoreAudiences()
	p, err := NewPSAT(td, []PSATCluster{cluster})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Attest(context.Background(), psatPayload("prod", "apiserver-audience")); !errors.Is(err, ErrNotAttested) || !strings.Contains(err.Error(), `not issued for audience "signet-server"`) {
		t.Fatalf("err = %v, want ErrNotAttested for the audience", err)
	}
	if _, err := p.Attest(context.Background(), psatPayload("prod", "good")); err != nil {
		t.Fatalf("token for signet-server: %v", err)
	}
}

func TestPSATAPIServerDown(t *testing.T) {
	api, cluster := psatCluster(t)
	p, err := NewPSAT(td, []PSATCluster{cluster})
	if err != nil {
		t.Fatal(err)
	}
	api.Close()
	_, err = p.Attest(context.Background(), psatPayload("prod", "good"))
	if err == nil || errors.Is(err, ErrNotAttested) || errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want a transient error (neither refused nor malformed)", err)
	}
}

func TestNewPSATRefusesBadClusters(t *testing.T) {
	_, good := psatCluster(t)
	for _, tc := range []struct {
		name    string
		mutate  func(*PSATCluster)
		wantMsg string
	}{
		{"empty name", func(c *PSATCluster) { c.Name = "" }, "name is empty"},
		{"name with a slash", func(c *PSATCluster) { c.Name = "a/b" }, "one SPIFFE path segment"},
		{"name ..", func(c *PSATCluster) { c.Name = ".." }, "one SPIFFE path segment"},
		{"no allow list", func(c *PSATCluster) { c.ServiceAccountAllowList = nil }, "service_account_allow_list is required"},
		{"allow list entry without namespace", func(c *PSATCluster) { c.ServiceAccountAllowList = []string{"signet-agent"} }, "want namespace:name"},
		{"no client", func(c *PSATCluster) { c.Client = nil }, "no Kubernetes client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			if _, err := NewPSAT(td, []PSATCluster{c}); err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %q", err, tc.wantMsg)
			}
		})
	}
	if _, err := NewPSAT(td, []PSATCluster{good, good}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate cluster: %v", err)
	}
}
