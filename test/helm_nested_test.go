package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/k8sreg"
	"github.com/signetid/signet/server/nested"
	"github.com/signetid/signet/server/nodeattest"
)

// nestedRender is a rendered install with its ClusterStaticEntries apart
// (the typed decoder knows only built-in kinds and CRDs).
type nestedRender struct {
	objs    []runtime.Object
	statics []k8sreg.ClusterStaticEntry
	notes   string
	system  signetSystem
}

// helmNested renders the chart, decodes every object strictly (Signet's
// custom resources into k8sreg's types) and checks the install fits
// together (checkSignetSystem).
func helmNested(t *testing.T, ns, values string) nestedRender {
	t.Helper()
	out, notes, err := helmTemplate(t, ns, values)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var rest bytes.Buffer
	var statics []k8sreg.ClusterStaticEntry
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("helm template: %v\n%s", err, doc)
		}
		if !strings.HasPrefix(tm.APIVersion, k8sreg.Group+"/") {
			rest.WriteString("\n---\n")
			rest.Write(doc)
			continue
		}
		if tm.Kind != k8sreg.StaticEntryKind {
			t.Fatalf("the chart renders a %s, which this test does not know", tm.Kind)
		}
		var e k8sreg.ClusterStaticEntry
		if err := yaml.UnmarshalStrict(doc, &e); err != nil {
			t.Fatalf("ClusterStaticEntry: %v\n%s", err, doc)
		}
		statics = append(statics, e)
	}
	objs := decodeManifests(t, "helm template", rest.Bytes())
	return nestedRender{objs: objs, statics: statics, notes: notes, system: checkSignetSystem(t, objs)}
}

// upstreamAgent is what the downstream side's upstream agents are: their
// DaemonSet and their config file as the agent's parser reads it.
type upstreamAgent struct {
	ds   *appsv1.DaemonSet
	pod  corev1.PodSpec
	ctr  corev1.Container
	conf *agent.Config
}

func (r nestedRender) upstreamAgent(t *testing.T) upstreamAgent {
	t.Helper()
	ds := object[*appsv1.DaemonSet](t, r.objs, "signet-agent-upstream")
	pod := ds.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("upstream agent pod has %d containers", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	conf := agentConfigFile(t, r.objs, pod, ctr)
	if conf == nil {
		t.Fatal("the upstream agents have no --config")
	}
	return upstreamAgent{ds: ds, pod: pod, ctr: ctr, conf: conf}
}

// hostPathOf returns the host directory that container c sees at dir, or
// "" when no hostPath volume is mounted exactly there.
func hostPathOf(pod corev1.PodSpec, c corev1.Container, dir string) string {
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				return v.HostPath.Path
			}
		}
	}
	return ""
}

// volumeAt returns the volume container c mounts at dir.
func volumeAt(t *testing.T, pod corev1.PodSpec, c corev1.Container, dir string) corev1.Volume {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			for _, v := range pod.Volumes {
				if v.Name == m.Name {
					return v
				}
			}
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, dir)
	return corev1.Volume{}
}

// checkDownstream checks that a downstream install fits together: the
// server's upstream_authority "signet" socket is where the upstream agent
// on its node serves, the upstream agents attest to the server the block
// names, in its trust domain, with a projected token, trust roots from the
// configured ConfigMap, and attest pods with the kubelet; and the server
// outlives its wait for the first SVID.
func checkDownstream(t *testing.T, r nestedRender, wantAddr, wantCluster, wantBundleCM, wantBundleKey string) upstreamAgent {
	t.Helper()
	s := r.system
	up := s.config.UpstreamSignet
	if up == nil {
		t.Fatal("server.conf has no upstream_authority \"signet\"")
	}
	if s.config.UpstreamAuthority != nil {
		t.Errorf("server.conf has a disk upstream too: %+v", s.config.UpstreamAuthority)
	}
	if up.ServerAddress != wantAddr || up.TrustDomain != s.config.TrustDomain {
		t.Errorf("upstream_authority: server %s, trust domain %s; want %s, %s", up.ServerAddress, up.TrustDomain, wantAddr, s.config.TrustDomain)
	}

	ua := r.upstreamAgent(t)
	if ua.conf.ServerAddress != up.ServerAddress {
		t.Errorf("upstream agents attest to %s, the server's upstream is %s", ua.conf.ServerAddress, up.ServerAddress)
	}
	if ua.conf.TrustDomain != s.config.TrustDomain.Name() || ua.conf.K8sPSATCluster != wantCluster || !ua.conf.K8sWorkloadAttestor {
		t.Errorf("upstream agent: trust domain %s, k8s_psat cluster %q, k8s workload attestor %v; want %s, %q, true",
			ua.conf.TrustDomain, ua.conf.K8sPSATCluster, ua.conf.K8sWorkloadAttestor, s.config.TrustDomain.Name(), wantCluster)
	}
	if ua.pod.ServiceAccountName != "signet-agent-upstream" || !ua.pod.HostPID {
		t.Errorf("upstream agent pod: service account %q, hostPID %v", ua.pod.ServiceAccountName, ua.pod.HostPID)
	}

	// The socket: the server's mount and the agent's are one host directory.
	srvPod := s.server.Spec.Template.Spec
	srv := srvPod.Containers[0]
	sock := strings.TrimPrefix(up.WorkloadAPISocket, "unix://")
	srvHost := hostPathOf(srvPod, srv, filepath.Dir(sock))
	agentHost := hostPathOf(ua.pod, ua.ctr, filepath.Dir(ua.conf.SocketPath))
	if srvHost == "" || srvHost != agentHost || filepath.Base(sock) != filepath.Base(ua.conf.SocketPath) {
		t.Errorf("server dials %s (host dir %q), the upstream agent serves %s (host dir %q)", sock, srvHost, ua.conf.SocketPath, agentHost)
	}
	// Apart from the cluster's own agents: another server's socket and data.
	own := s.agent.Spec.Template.Spec
	ownSock, ownData := hostPathOf(own, own.Containers[0], filepath.Dir(argValue(own.Containers[0].Args, "socket"))), hostPathOf(own, own.Containers[0], argValue(own.Containers[0].Args, "data-dir"))
	upData := hostPathOf(ua.pod, ua.ctr, ua.conf.DataDir)
	if upData == "" || agentHost == ownSock || upData == ownData {
		t.Errorf("upstream agents keep data in host %q and serve in %q; the cluster's agents use %q and %q", upData, agentHost, ownData, ownSock)
	}

	// Attestation to the upstream: a projected token for the audience a
	// k8s_psat block expects by default (downstreamClusters renders none).
	tok := volumeAt(t, ua.pod, ua.ctr, filepath.Dir(ua.conf.K8sPSATTokenPath))
	if tok.Projected == nil || len(tok.Projected.Sources) != 1 || tok.Projected.Sources[0].ServiceAccountToken == nil ||
		tok.Projected.Sources[0].ServiceAccountToken.Path != filepath.Base(ua.conf.K8sPSATTokenPath) ||
		tok.Projected.Sources[0].ServiceAccountToken.Audience != nodeattest.DefaultPSATAudience {
		t.Errorf("k8s_psat_token_path %s: volume %+v, want a projected token for audience %s", ua.conf.K8sPSATTokenPath, tok, nodeattest.DefaultPSATAudience)
	}
	bundle := volumeAt(t, ua.pod, ua.ctr, filepath.Dir(ua.conf.TrustBundleFile))
	if cm := bundle.ConfigMap; cm == nil || cm.Name != wantBundleCM || len(cm.Items) != 1 ||
		cm.Items[0].Key != wantBundleKey || cm.Items[0].Path != filepath.Base(ua.conf.TrustBundleFile) {
		t.Errorf("trust_bundle_path %s: volume %+v, want ConfigMap %s key %s", ua.conf.TrustBundleFile, bundle, wantBundleCM, wantBundleKey)
	}
	// The kubelet: --kubelet-url, and the pod list it authorizes.
	if argValue(ua.ctr.Args, "kubelet-url") != "https://$(NODE_IP):10250" ||
		!slices.ContainsFunc(ua.ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_IP" && e.ValueFrom != nil }) ||
		!slices.ContainsFunc(ua.ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "MY_NODE_NAME" && e.ValueFrom != nil }) {
		t.Errorf("upstream agent args %v, env %v: want the node's kubelet and name", ua.ctr.Args, ua.ctr.Env)
	}
	if !saMay(t, r.objs, ua.ds.Namespace, "signet-agent-upstream", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes/proxy"}, Verbs: []string{"get"}}) {
		t.Error("the upstream agents may not read their kubelet's pods (nodes/proxy get)")
	}

	// The agent's own checks accept the file: agent.Run gets past them to
	// the (missing) trust bundle.
	cfg := *ua.conf
	cfg.DataDir, cfg.SocketPath, cfg.TrustBundleFile = t.TempDir(), filepath.Join(t.TempDir(), "agent.sock"), filepath.Join(t.TempDir(), "none.pem")
	cfg.HealthListen = "127.0.0.1:0"
	if err := agent.Run(t.Context(), cfg, nil); err == nil || !strings.Contains(err.Error(), "agent: trust bundle") {
		t.Errorf("agent.Run with the upstream agents' config: %v, want the missing trust bundle's error", err)
	}

	// A first start waits up to nested.DefaultStartTimeout for the SVID
	// before the health listener opens: the probes must not kill it first.
	p := srv.StartupProbe
	if p == nil || p.HTTPGet == nil || time.Duration(p.PeriodSeconds*p.FailureThreshold)*time.Second <= nested.DefaultStartTimeout {
		t.Errorf("server startupProbe %+v: want one on the health port that allows more than %s", p, nested.DefaultStartTimeout)
	}
	return ua
}

// saMay reports whether a ClusterRole bound to service account ns/sa
// grants rule (every verb on every resource of it).
func saMay(t *testing.T, objs []runtime.Object, ns, sa string, rule rbacv1.PolicyRule) bool {
	t.Helper()
	for _, o := range objs {
		b, ok := o.(*rbacv1.ClusterRoleBinding)
		if !ok || !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Kind == "ServiceAccount" && s.Namespace == ns && s.Name == sa }) {
			continue
		}
		role := object[*rbacv1.ClusterRole](t, objs, b.RoleRef.Name)
		if rulesGrant(role.Rules, rule) {
			return true
		}
	}
	return false
}

func rulesGrant(rules []rbacv1.PolicyRule, want rbacv1.PolicyRule) bool {
	for _, res := range want.Resources {
		for _, verb := range want.Verbs {
			if !slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.APIGroups, want.APIGroups[0]) && slices.Contains(r.Resources, res) && slices.Contains(r.Verbs, verb)
			}) {
				return false
			}
		}
	}
	return true
}

// TestHelmDownstream renders downstream installs (upstream.enabled) and
// checks each fits together, with the values given, and leaves the
// cluster's own agents as they are without it.
func TestHelmDownstream(t *testing.T) {
	for _, tc := range []struct {
		name, ns, values                   string
		addr, cluster, bundleCM, bundleKey string
		check                              func(t *testing.T, r nestedRender, ua upstreamAgent)
	}{{
		name: "defaults", ns: "signet-system",
		values: "clusterName: east\nupstream: {enabled: true, serverAddress: 'signet.west.example.org:8081'}\n",
		addr:   "signet.west.example.org:8081", cluster: "east", bundleCM: "signet-trust-bundle", bundleKey: "bundle.pem",
		check: func(t *testing.T, r nestedRender, ua upstreamAgent) {
			// The cluster's agents read the same ConfigMap: its roots are
			// the upstream's, the downstream's bundle.
			own := r.system.agent.Spec.Template.Spec
			if v := volumeAt(t, own, own.Containers[0], filepath.Dir(argValue(own.Containers[0].Args, "trust-bundle"))); v.ConfigMap == nil || v.ConfigMap.Name != "signet-trust-bundle" {
				t.Errorf("the cluster's agents read their roots from %+v", v)
			}
			if ua.conf.KubeletSkipVerify {
				t.Error("kubelet_skip_verify without agent.kubeletSkipVerify")
			}
			if !strings.Contains(r.notes, "downstreamClusters[0].name=east") || !strings.Contains(r.notes, "secret signet-upstream-reviewer") {
				t.Errorf("NOTES.txt does not tell what the upstream needs:\n%s", r.notes)
			}
		},
	}, {
		name: "IPv6 upstream, own names, kind, scheduling, several servers", ns: "identity",
		values: `
clusterName: east
agent: {kubeletSkipVerify: true}
datastore: {type: postgres, postgres: {url: "postgres://signet@db/signet", existingSecret: pg}}
server: {replicas: 2}
upstream:
  enabled: true
  serverAddress: "[2001:db8::7]:9081"
  clusterName: east-1
  trustBundle: {configMap: west-roots, key: ca.pem}
  agent:
    nodeSelector: {signet.example/server: "true"}
    tolerations: []
    priorityClassName: ""
    resources: {limits: {memory: 64Mi}}
`,
		addr: "[2001:db8::7]:9081", cluster: "east-1", bundleCM: "west-roots", bundleKey: "ca.pem",
		check: func(t *testing.T, r nestedRender, ua upstreamAgent) {
			if !ua.conf.KubeletSkipVerify {
				t.Error("agent.kubeletSkipVerify does not reach the upstream agents (same kubelets)")
			}
			if ua.pod.NodeSelector["signet.example/server"] != "true" || len(ua.pod.Tolerations) != 0 || ua.pod.PriorityClassName != "" ||
				ua.ctr.Resources.Limits.Memory().String() != "64Mi" {
				t.Errorf("upstream agent scheduling %v %v %q, resources %v", ua.pod.NodeSelector, ua.pod.Tolerations, ua.pod.PriorityClassName, ua.ctr.Resources)
			}
			if !strings.Contains(r.notes, "downstreamClusters[0].namespace=identity") {
				t.Errorf("NOTES.txt does not name the namespace for the upstream:\n%s", r.notes)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := helmNested(t, tc.ns, tc.values)
			ua := checkDownstream(t, r, tc.addr, tc.cluster, tc.bundleCM, tc.bundleKey)
			checkReviewer(t, r.objs, tc.ns)
			if len(r.statics) != 0 {
				t.Errorf("a downstream renders ClusterStaticEntries: %+v", r.statics)
			}
			tc.check(t, r, ua)
		})
	}
}

// checkReviewer checks the upstream server's access to the downstream
// cluster: a service account with a long-lived token Secret, allowed what
// k8s_psat asks of the API server and nothing more: TokenReviews, nodes,
// and pods in the release's namespace alone (where the upstream agents
// run), as the token sits in another cluster.
func checkReviewer(t *testing.T, objs []runtime.Object, ns string) {
	t.Helper()
	sec := object[*corev1.Secret](t, objs, "signet-upstream-reviewer")
	if sec.Type != corev1.SecretTypeServiceAccountToken || sec.Annotations[corev1.ServiceAccountNameKey] != "signet-upstream-reviewer" || sec.Namespace != ns {
		t.Errorf("reviewer token Secret %+v", sec)
	}
	object[*corev1.ServiceAccount](t, objs, "signet-upstream-reviewer")
	cluster := []rbacv1.PolicyRule{
		{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}},
	}
	pods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}
	for _, rule := range cluster {
		if !saMay(t, objs, ns, "signet-upstream-reviewer", rule) {
			t.Errorf("the reviewer may not %v", rule)
		}
	}
	if saMay(t, objs, ns, "signet-upstream-reviewer", pods) {
		t.Error("the reviewer may read every namespace's pods")
	}
	if role := object[*rbacv1.ClusterRole](t, objs, "signet-upstream-reviewer"); !reflect.DeepEqual(role.Rules, cluster) {
		t.Errorf("reviewer cluster rules %+v, want exactly %+v", role.Rules, cluster)
	}
	role := object[*rbacv1.Role](t, objs, "signet-upstream-reviewer")
	b := object[*rbacv1.RoleBinding](t, objs, "signet-upstream-reviewer")
	if role.Namespace != ns || !reflect.DeepEqual(role.Rules, []rbacv1.PolicyRule{pods}) ||
		b.Namespace != ns || b.RoleRef.Kind != "Role" || b.RoleRef.Name != role.Name ||
		!slices.Equal(b.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "signet-upstream-reviewer", Namespace: ns}}) {
		t.Errorf("reviewer Role %+v, RoleBinding %+v: want pods get in %s for signet-upstream-reviewer", role, b, ns)
	}
}

// TestHelmDownstreamLeavesTheRest: upstream.enabled adds objects and
// changes the server's pod and config, but the cluster's own agents, CSI
// driver and everything else render as without it.
func TestHelmDownstreamLeavesTheRest(t *testing.T) {
	plain := helmObjects(t, "signet-system", "clusterName: east\n")
	nest := helmNested(t, "signet-system", "clusterName: east\nupstream: {enabled: true, serverAddress: 'up:8081'}\n").objs
	byKey := map[objectKey]runtime.Object{}
	for _, o := range nest {
		byKey[keyOf(t, o)] = o
	}
	for _, o := range plain {
		k := keyOf(t, o)
		n, ok := byKey[k]
		if !ok {
			t.Errorf("upstream.enabled drops %v", k)
			continue
		}
		delete(byKey, k)
		if k.Name == "signet-server" && (k.Kind == "*v1.StatefulSet" || k.Kind == "*v1.ConfigMap") {
			continue // the server's pod and config are what changes
		}
		if !reflect.DeepEqual(o, n) {
			t.Errorf("upstream.enabled changes %v", k)
		}
	}
	var added []string
	for k := range byKey {
		added = append(added, k.Kind+"/"+k.Name)
	}
	slices.Sort(added)
	want := []string{
		"*v1.ClusterRole/signet-upstream-reviewer", "*v1.ClusterRoleBinding/signet-agent-upstream", "*v1.ClusterRoleBinding/signet-upstream-reviewer",
		"*v1.ConfigMap/signet-agent-upstream", "*v1.DaemonSet/signet-agent-upstream", "*v1.Role/signet-upstream-reviewer",
		"*v1.RoleBinding/signet-upstream-reviewer", "*v1.Secret/signet-upstream-reviewer",
		"*v1.ServiceAccount/signet-agent-upstream", "*v1.ServiceAccount/signet-upstream-reviewer",
	}
	if !slices.Equal(added, want) {
		t.Errorf("upstream.enabled adds %v, want %v", added, want)
	}
}

// TestHelmUpstreamSide renders an upstream server with downstream
// clusters and checks, against the downstream's own render, that the
// pieces meet: the upstream's k8s_psat block for the cluster admits the
// downstream's upstream agents, and its downstream entry (a valid entry,
// by k8sreg's own conversion) selects the downstream's server container as
// the agents' Kubernetes workload attestor describes it.
func TestHelmUpstreamSide(t *testing.T) {
	down := helmNested(t, "identity", "clusterName: east\nupstream: {enabled: true, serverAddress: 'signet.west.example.org:8081'}\n")
	dua := down.upstreamAgent(t)
	srvPod := down.system.server.Spec.Template
	srvSelectors := []string{ // what agent/attestor.K8s reports for the server container
		"k8s:ns:" + down.system.server.Namespace, "k8s:sa:" + srvPod.Spec.ServiceAccountName, "k8s:container-name:" + srvPod.Spec.Containers[0].Name,
		"k8s:pod-label:app.kubernetes.io/name:" + srvPod.Labels["app.kubernetes.io/name"],
	}

	for _, tc := range []struct {
		name, values string
		spiffeID     string
		controller   bool
	}{
		{"with the controller", "clusterName: west\ndownstreamClusters: [{name: east, kubeconfigSecret: east-kc, namespace: identity}, {name: south, kubeconfigSecret: south-kc, kubeconfigKey: config}]\n",
			"spiffe://example.org/server/east", true},
		{"own SPIFFE ID and class", "clusterName: west\ncontroller: {className: nest}\ndownstreamClusters: [{name: east, kubeconfigSecret: east-kc, namespace: identity, spiffeID: 'spiffe://example.org/region/east/signet'}]\n",
			"spiffe://example.org/region/east/signet", true},
		{"without the controller", "clusterName: west\ncontroller: {enabled: false}\ndownstreamClusters: [{name: east, kubeconfigSecret: east-kc, namespace: identity}]\n",
			"spiffe://example.org/server/east", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := helmNested(t, "signet-system", tc.values)
			cfg := up.system.config
			if cfg.UpstreamSignet != nil {
				t.Error("an upstream server has upstream_authority \"signet\"")
			}
			i := slices.IndexFunc(cfg.K8sPSAT, func(c server.K8sPSATCluster) bool { return c.Name == dua.conf.K8sPSATCluster })
			if i < 0 {
				t.Fatalf("no k8s_psat block %q for the downstream's upstream agents: %+v", dua.conf.K8sPSATCluster, cfg.K8sPSAT)
			}
			psat := cfg.K8sPSAT[i]
			if sa := dua.ds.Namespace + ":" + dua.pod.ServiceAccountName; !slices.Equal(psat.ServiceAccountAllowList, []string{sa}) {
				t.Errorf("k8s_psat %q allows %v, want the downstream's upstream agents %s alone", psat.Name, psat.ServiceAccountAllowList, sa)
			}
			if psat.Audience != nodeattest.DefaultPSATAudience {
				t.Errorf("k8s_psat %q audience %q", psat.Name, psat.Audience)
			}
			// Its kubeconfig: from the Secret, mounted for the server alone.
			srv := up.system.server.Spec.Template.Spec
			v := volumeAt(t, srv, srv.Containers[0], filepath.Dir(psat.Kubeconfig))
			if v.Secret == nil || v.Secret.SecretName != "east-kc" || !mounted(srv, srv.Containers[0].Name, psat.Kubeconfig) {
				t.Errorf("k8s_psat %q kubeconfig %s: volume %+v", psat.Name, psat.Kubeconfig, v)
			} else if m := v.Secret.DefaultMode; m == nil || *m&0o007 != 0 {
				t.Errorf("the kubeconfig (a token) is readable by others: mode %v", m)
			}
			if strings.Contains(tc.values, "south") {
				j := slices.IndexFunc(cfg.K8sPSAT, func(c server.K8sPSATCluster) bool { return c.Name == "south" })
				if j < 0 || !slices.Equal(cfg.K8sPSAT[j].ServiceAccountAllowList, []string{"signet-system:signet-agent-upstream"}) {
					t.Fatalf("second downstream cluster: %+v", cfg.K8sPSAT)
				}
				if v := volumeAt(t, srv, srv.Containers[0], filepath.Dir(cfg.K8sPSAT[j].Kubeconfig)); v.Secret == nil || v.Secret.SecretName != "south-kc" || v.Secret.Items[0].Key != "config" {
					t.Errorf("second downstream cluster's kubeconfig volume %+v", v)
				}
			}

			if !tc.controller {
				if len(up.statics) != 0 {
					t.Errorf("ClusterStaticEntries without the controller: %+v", up.statics)
				}
				for _, want := range []string{"--node --spiffe-id spiffe://example.org/k8s/east/upstream-agents --selector k8s_psat:cluster:east",
					"--parent-id spiffe://example.org/k8s/east/upstream-agents --spiffe-id " + tc.spiffeID + " --downstream --selector k8s:ns:identity --selector k8s:sa:signet-server --selector k8s:container-name:signet-server"} {
					if !strings.Contains(up.notes, want) {
						t.Errorf("NOTES.txt lacks %q:\n%s", want, up.notes)
					}
				}
				return
			}
			entries := map[string]k8sreg.ClusterStaticEntry{}
			for _, e := range up.statics {
				entries[e.Name] = e
				if e.Spec.ClassName != cfg.K8sController.ClassName {
					t.Errorf("ClusterStaticEntry %s className %q, the controller's %q", e.Name, e.Spec.ClassName, cfg.K8sController.ClassName)
				}
				if _, err := e.Spec.Entry(cfg.TrustDomain, cfg.K8sController.Cluster); err != nil {
					t.Errorf("ClusterStaticEntry %s is refused by the controller: %v", e.Name, err)
				}
			}
			alias, entry := entries["signet-downstream-east-agents"], entries["signet-downstream-east"]
			if !alias.Spec.Node || !slices.Equal(alias.Spec.Selectors, []string{"k8s_psat:cluster:" + psat.Name}) {
				t.Errorf("node alias %+v: want every agent of k8s_psat cluster %s", alias.Spec, psat.Name)
			}
			if !entry.Spec.Downstream || entry.Spec.Node || entry.Spec.ParentID != alias.Spec.SPIFFEID || entry.Spec.SPIFFEID != tc.spiffeID {
				t.Errorf("downstream entry %+v: want downstream, %s, parent %s", entry.Spec, tc.spiffeID, alias.Spec.SPIFFEID)
			}
			for _, sel := range entry.Spec.Selectors {
				if !slices.Contains(srvSelectors, sel) {
					t.Errorf("downstream entry selector %s is not one the server container has (%v)", sel, srvSelectors)
				}
			}
			if len(entry.Spec.Selectors) < 3 {
				t.Errorf("downstream entry selectors %v: want namespace, service account and container", entry.Spec.Selectors)
			}
		})
	}
}

// FuzzHelmUpstreamServerAddress: whatever upstream.serverAddress holds,
// the chart refuses it naming the value, or both the downstream server
// (upstream_authority "signet") and its upstream agents (agent.Run's own
// checks) take it, as the same address.
func FuzzHelmUpstreamServerAddress(f *testing.F) {
	for _, seed := range []string{"up:8081", "signet.west.example.org:443", "[2001:db8::1]:8081", "[::1]:1", "10.0.0.7:65535", "up",
		"up:0", "up:65536", "up:08081", ":8081", "https://up:8081", "dns:///up:8081", "up:8081/x", "a_b:1", "-up:1", "up.:1", "[up]:1", "[1::2::3]:1", "[]:1"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if !utf8.ValidString(addr) {
			t.Skip("Helm's values are UTF-8")
		}
		out, _, err := helmRender(t, "signet-system", map[string]any{"upstream": map[string]any{"enabled": true, "serverAddress": addr}})
		if err != nil {
			if !strings.Contains(err.Error(), "serverAddress") {
				t.Fatalf("address %q: refused with %v, which does not name the value", addr, err)
			}
			return
		}
		objs := decodeManifests(t, "helm template", out)
		srv := object[*appsv1.StatefulSet](t, objs, "signet-server").Spec.Template.Spec
		fc, err := server.ParseConfigFile([]byte(object[*corev1.ConfigMap](t, objs, mountedConfigMap(t, srv, srv.Containers[0], "/etc/signet")).Data["server.conf"]))
		if err != nil {
			t.Fatalf("address %q: server.conf: %v", addr, err)
		}
		cfg, err := fc.Resolve()
		if err != nil {
			t.Fatalf("address %q: the server refuses what the chart took: %v", addr, err)
		}
		pod := object[*appsv1.DaemonSet](t, objs, "signet-agent-upstream").Spec.Template.Spec
		ac := agentConfigFile(t, objs, pod, pod.Containers[0])
		if ac.ServerAddress != cfg.UpstreamSignet.ServerAddress {
			t.Fatalf("address %q: the upstream agents dial %q, the server %q", addr, ac.ServerAddress, cfg.UpstreamSignet.ServerAddress)
		}
		c := *ac
		c.DataDir, c.SocketPath, c.TrustBundleFile, c.HealthListen = t.TempDir(), filepath.Join(t.TempDir(), "s"), filepath.Join(t.TempDir(), "none.pem"), ""
		if err := agent.Run(t.Context(), c, nil); err == nil || !strings.Contains(err.Error(), "agent: trust bundle") {
			t.Fatalf("address %q: the upstream agents refuse what the chart took: %v", addr, err)
		}
	})
}

// TestHelmNestedRealAPIServer applies a rendered downstream install to a
// real kube-apiserver (which validates every object), then has the
// upstream's rendered k8s_psat block for that cluster, with a kubeconfig
// of the downstream's rendered reviewer account and nothing else, attest
// an upstream agent pod's token as the DaemonSet would get it: the agent
// is named after its node and matches the upstream's node alias. The
// cluster's own agents are refused by that block.
func TestHelmNestedRealAPIServer(t *testing.T) {
	kube := kubetest.StartRealAPIServer(t)
	ctx := t.Context()
	const ns = "signet-system"
	// The CSI driver is privileged, which this API server does not allow.
	downValues := "clusterName: east\ncsi: {enabled: false}\nupstream: {enabled: true, serverAddress: 'signet.west.example.org:8081'}\n"
	manifest, _, err := helmTemplate(t, ns, downValues)
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.Apply(ctx, ns, []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: signet-system}\n")); err != nil {
		t.Fatal(err)
	}
	if err := kube.Apply(ctx, ns, manifest); err != nil {
		t.Fatalf("apply the rendered downstream install: %v", err)
	}
	down := helmNested(t, ns, downValues)
	ua := down.upstreamAgent(t)

	up := helmNested(t, ns, "clusterName: west\ndownstreamClusters: [{name: east, kubeconfigSecret: east-kc}]\n")
	i := slices.IndexFunc(up.system.config.K8sPSAT, func(c server.K8sPSATCluster) bool { return c.Name == ua.conf.K8sPSATCluster })
	if i < 0 {
		t.Fatalf("the upstream has no k8s_psat block %q", ua.conf.K8sPSATCluster)
	}
	cluster := up.system.config.K8sPSAT[i].PSATCluster
	// The Secret's kubeconfig: the reviewer's token (the token controller
	// that fills the rendered Secret is not running here).
	tok, err := kube.TokenRequest(ctx, ns, "signet-upstream-reviewer", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if cluster.Client, err = nodeattest.KubeClient(kube.KubeconfigFor(t, t.TempDir(), "signet-upstream-reviewer", tok)); err != nil {
		t.Fatal(err)
	}
	psat, err := nodeattest.NewPSAT(up.system.config.TrustDomain, []nodeattest.PSATCluster{cluster})
	if err != nil {
		t.Fatal(err)
	}

	node, err := kube.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var audience string
	for _, v := range ua.pod.Volumes {
		if v.Projected != nil && v.Projected.Sources[0].ServiceAccountToken != nil {
			audience = v.Projected.Sources[0].ServiceAccountToken.Audience
		}
	}
	attest := func(sa string) (nodeattest.Result, error) {
		pod, err := kube.Client().CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: sa + "-"},
			Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node.Name,
				Containers: []corev1.Container{{Name: "agent", Image: "ghcr.io/signetid/signet:test"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := kube.TokenRequest(ctx, ns, sa, pod.Name, audience)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := json.Marshal(nodeattest.PSATPayload{Cluster: ua.conf.K8sPSATCluster, Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		return psat.Attest(ctx, payload)
	}
	res, err := attest(ua.pod.ServiceAccountName)
	if err != nil {
		t.Fatalf("the upstream refuses the upstream agent: %v", err)
	}
	if want := "spiffe://example.org/agent/k8s_psat/east/" + string(node.UID); res.AgentID.String() != want {
		t.Errorf("upstream agent attested as %s, want %s", res.AgentID, want)
	}
	var sels []string
	for _, s := range res.Selectors {
		sels = append(sels, s.Type+":"+s.Value)
	}
	for _, e := range up.statics {
		if e.Spec.Node && !isSubset(e.Spec.Selectors, sels) {
			t.Errorf("node alias %s selects %v; the upstream agent has %v", e.Name, e.Spec.Selectors, sels)
		}
	}
	if _, err := attest("signet-agent"); err == nil || !errors.Is(err, nodeattest.ErrNotAttested) {
		t.Errorf("the downstream's own agent attested to the upstream (%v)", err)
	}

	// The reviewer's long-lived token sits in another cluster: it reads the
	// upstream agents' pods, in the release's namespace, and no others.
	if _, err := kube.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client().CoreV1().ServiceAccounts("apps").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	other, err := kube.Client().CoreV1().Pods("apps").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec:       corev1.PodSpec{NodeName: node.Name, Containers: []corev1.Container{{Name: "app", Image: "example.org/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Client.CoreV1().Pods("apps").Get(ctx, other.Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the reviewer reads pod apps/%s (%v): want forbidden outside %s", other.Name, err, ns)
	}
}

func isSubset(sub, of []string) bool {
	for _, s := range sub {
		if !slices.Contains(of, s) {
			return false
		}
	}
	return true
}

// TestHelmUpstreamConfigChangeRollsUpstreamAgents: a change of the upstream
// agents' config file changes their pods' checksum (the DaemonSet rolls);
// a change of the server's alone leaves it.
func TestHelmUpstreamConfigChangeRollsUpstreamAgents(t *testing.T) {
	const up = "upstream: {enabled: true, serverAddress: 'up:8081'"
	sum := func(values string) string {
		return configChecksum(t, object[*appsv1.DaemonSet](t, helmObjects(t, "signet-system", values), "signet-agent-upstream").Spec.Template)
	}
	def := sum(up + "}")
	for _, v := range []string{up + ", clusterName: east}", "upstream: {enabled: true, serverAddress: 'up2:8081'}", up + "}\nagent: {kubeletSkipVerify: true}"} {
		if sum(v) == def {
			t.Errorf("%s leaves the upstream agent pods' checksum", v)
		}
	}
	if sum(up+"}\nlogLevel: warn\njwtIssuer: https://oidc.example.org") != def {
		t.Error("a server-only change changes the upstream agent pods' checksum")
	}
}
