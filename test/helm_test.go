package test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/ca"
)

const chartDir = "../deploy/helm/signet"

// helmTemplate renders the chart as `helm template --include-crds` does,
// with Helm's own loader, values schema validation and template engine:
// values are the user's (-f / --set), ns the release namespace. It returns
// the rendered manifests and NOTES.txt.
func helmTemplate(t *testing.T, ns string, values string) ([]byte, string, error) {
	t.Helper()
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(values), &vals); err != nil {
		t.Fatalf("values: %v", err)
	}
	return helmRender(t, ns, vals)
}

// helmRender is helmTemplate with the values already parsed (as --set
// gives them, which may hold what YAML cannot).
func helmRender(t *testing.T, ns string, vals map[string]any) ([]byte, string, error) {
	t.Helper()
	charter, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	ch := charter.(*chartv2.Chart)
	opts := common.ReleaseOptions{Name: "signet", Namespace: ns, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, opts, nil, false)
	if err != nil {
		return nil, "", err
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		return nil, "", err
	}
	var out bytes.Buffer
	for _, crd := range ch.CRDObjects() {
		fmt.Fprintf(&out, "---\n%s\n", crd.File.Data)
	}
	notes := ""
	for _, name := range slices.Sorted(maps.Keys(files)) {
		switch base := path.Base(name); {
		case base == "NOTES.txt":
			notes = files[name]
		case strings.HasSuffix(base, ".yaml"):
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, files[name])
		}
	}
	return out.Bytes(), notes, nil
}

// helmObjects renders the chart and decodes every object strictly.
func helmObjects(t *testing.T, ns, values string) []runtime.Object {
	t.Helper()
	out, notes, err := helmTemplate(t, ns, values)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	if !strings.Contains(notes, ns) {
		t.Errorf("NOTES.txt does not name the namespace %s:\n%s", ns, notes)
	}
	return decodeManifests(t, "helm template", out)
}

// TestHelmDefaultsAreBase checks that the chart with its default values
// installs what `kubectl apply -k deploy/base` does: the same objects (but
// the Namespace, which `helm install --create-namespace` or the user
// makes), the same containers (args, env, mounts, ports, security), pod
// volumes, RBAC rules and server configuration.
func TestHelmDefaultsAreBase(t *testing.T) {
	base := kustomizeBuild(t, "../deploy/base")
	chart := withoutAgentConfig(t, helmObjects(t, "signet-system", ""))

	baseByKey, chartByKey := map[objectKey]runtime.Object{}, map[objectKey]runtime.Object{}
	for _, o := range base {
		if _, ok := o.(*corev1.Namespace); !ok {
			baseByKey[keyOf(t, o)] = o
		}
	}
	for _, o := range chart {
		chartByKey[keyOf(t, o)] = o
	}
	baseKeys, chartKeys := slices.Collect(maps.Keys(baseByKey)), slices.Collect(maps.Keys(chartByKey))
	cmp := func(a, b objectKey) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
	slices.SortFunc(baseKeys, cmp)
	slices.SortFunc(chartKeys, cmp)
	if !slices.Equal(baseKeys, chartKeys) {
		t.Errorf("objects differ:\nbase  %v\nchart %v", baseKeys, chartKeys)
	}

	for key, b := range baseByKey {
		c, ok := chartByKey[key]
		if !ok {
			continue
		}
		switch b := b.(type) {
		case *appsv1.DaemonSet:
			samePods(t, key, b.Spec.Template.Spec, c.(*appsv1.DaemonSet).Spec.Template.Spec)
			same(t, key, "selector", b.Spec.Selector, c.(*appsv1.DaemonSet).Spec.Selector)
		case *appsv1.StatefulSet:
			c := c.(*appsv1.StatefulSet)
			samePods(t, key, b.Spec.Template.Spec, c.Spec.Template.Spec)
			same(t, key, "selector", b.Spec.Selector, c.Spec.Selector)
			same(t, key, "replicas", b.Spec.Replicas, c.Spec.Replicas)
			same(t, key, "volumeClaimTemplates", b.Spec.VolumeClaimTemplates[0].Spec, c.Spec.VolumeClaimTemplates[0].Spec)
		case *rbacv1.ClusterRole:
			same(t, key, "rules", b.Rules, c.(*rbacv1.ClusterRole).Rules)
		case *rbacv1.Role:
			same(t, key, "rules", b.Rules, c.(*rbacv1.Role).Rules)
		case *rbacv1.ClusterRoleBinding:
			same(t, key, "binding", []any{b.RoleRef, b.Subjects}, []any{c.(*rbacv1.ClusterRoleBinding).RoleRef, c.(*rbacv1.ClusterRoleBinding).Subjects})
		case *rbacv1.RoleBinding:
			same(t, key, "binding", []any{b.RoleRef, b.Subjects}, []any{c.(*rbacv1.RoleBinding).RoleRef, c.(*rbacv1.RoleBinding).Subjects})
		case *corev1.Service:
			same(t, key, "spec", b.Spec, c.(*corev1.Service).Spec)
		case *corev1.ServiceAccount:
			same(t, key, "automount", b.AutomountServiceAccountToken, c.(*corev1.ServiceAccount).AutomountServiceAccountToken)
		case *corev1.ConfigMap:
			same(t, key, "server.conf", parseConf(t, b), parseConf(t, c.(*corev1.ConfigMap)))
		case *apiextensionsv1.CustomResourceDefinition:
			same(t, key, "spec", b.Spec, c.(*apiextensionsv1.CustomResourceDefinition).Spec)
		}
	}
}

// withoutAgentConfig checks that the chart's agents, which read a config
// file for the settings that have no flag (base's take flags alone), get
// an empty one from the defaults, and returns the objects without it: the
// ConfigMap, and the agent's --config, volume and mount.
func withoutAgentConfig(t *testing.T, objs []runtime.Object) []runtime.Object {
	t.Helper()
	s := checkSignetSystem(t, objs)
	if s.agentFile == nil {
		t.Fatal("the chart's agents have no --config")
	}
	if !reflect.DeepEqual(*s.agentFile, agent.Config{}) {
		t.Errorf("the default agent config file sets %+v, want nothing (the agent's defaults)", *s.agentFile)
	}
	ds := s.agent.DeepCopy()
	pod := &ds.Spec.Template.Spec
	ctr := &pod.Containers[0]
	path := argValue(ctr.Args, "config")
	cm := mountedConfigMap(t, *pod, *ctr, filepath.Dir(path))
	ctr.Args = slices.DeleteFunc(ctr.Args, func(a string) bool { return a == "--config="+path })
	var vol string
	ctr.VolumeMounts = slices.DeleteFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool {
		if m.MountPath == filepath.Dir(path) {
			vol = m.Name
			return true
		}
		return false
	})
	pod.Volumes = slices.DeleteFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vol })
	var out []runtime.Object
	for _, o := range objs {
		switch k := keyOf(t, o); {
		case k.Kind == "*v1.ConfigMap" && k.Name == cm:
		case o == runtime.Object(s.agent):
			out = append(out, ds)
		default:
			out = append(out, o)
		}
	}
	return out
}

// parseConf parses a ConfigMap's server.conf, for comparison.
func parseConf(t *testing.T, cm *corev1.ConfigMap) server.FileConfig {
	t.Helper()
	fc, err := server.ParseConfigFile([]byte(cm.Data["server.conf"]))
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", cm.Name, err)
	}
	if fc.K8sController != nil {
		fc.K8sController.Line = 0 // where the block starts is no setting
	}
	return fc
}

func same(t *testing.T, key objectKey, what string, base, chart any) {
	t.Helper()
	if !reflect.DeepEqual(base, chart) {
		t.Errorf("%v %s: chart differs from base:\nbase  %+v\nchart %+v", key, what, base, chart)
	}
}

// samePods compares what the chart's and base's pods run: images aside
// (the chart pins its appVersion), containers must be the same.
func samePods(t *testing.T, key objectKey, base, chart corev1.PodSpec) {
	t.Helper()
	for _, p := range []*corev1.PodSpec{&base, &chart} {
		for i := range p.Containers {
			if strings.Contains(p.Containers[i].Image, "signetid/signet") {
				p.Containers[i].Image = "signet"
			}
		}
	}
	same(t, key, "pod spec", base, chart)
}

// TestHelmValues renders value combinations users set and checks each
// renders a consistent Signet with what the values ask for.
func TestHelmValues(t *testing.T) {
	for _, tc := range []struct {
		name, ns, values string
		check            func(t *testing.T, objs []runtime.Object, s signetSystem)
	}{{
		name: "own trust domain and cluster in another namespace", ns: "identity",
		values: "trustDomain: prod.acme.io\nclusterName: eu-1\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if s.config.TrustDomain.Name() != "prod.acme.io" || s.config.K8sPSAT[0].Name != "eu-1" {
				t.Errorf("trust domain %s, clusters %v", s.config.TrustDomain, s.config.K8sPSAT)
			}
			if c := s.config.K8sController; c == nil || !c.LeaderElection || c.LeaderElectionNamespace != "identity" {
				t.Errorf("k8s_controller %+v: want its Lease in the release namespace", c)
			}
			for _, o := range objs {
				if k := keyOf(t, o); k.Namespace != "" && k.Namespace != "identity" {
					t.Errorf("%v is not in the release namespace", k)
				}
			}
		},
	}, {
		name: "postgres HA", ns: "signet-system",
		values: `
datastore:
  type: postgres
  postgres: {url: "postgres://signet@db:5432/signet?sslmode=verify-full", existingSecret: pg, passwordKey: pw, caSecret: db-ca, caKey: tls.ca}
server:
  replicas: 3
  podDisruptionBudget: {enabled: true}
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 512Mi}}
image: {tag: v9.9.9, pullPolicy: IfNotPresent}
`,
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if *s.server.Spec.Replicas != 3 || s.config.Datastore != "postgres://signet@db:5432/signet?sslmode=verify-full&sslrootcert=/etc/signet/postgres/ca.crt" {
				t.Errorf("%d servers on %s", *s.server.Spec.Replicas, s.config.Datastore)
			}
			ref := s.server.Spec.Template.Spec.Containers[0].Env[0].ValueFrom.SecretKeyRef
			if ref.Name != "pg" || ref.Key != "pw" {
				t.Errorf("password from Secret %s key %s, want pg/pw", ref.Name, ref.Key)
			}
			c := s.server.Spec.Template.Spec.Containers[0]
			if c.Image != "ghcr.io/signetid/signet:v9.9.9" || c.ImagePullPolicy != corev1.PullIfNotPresent || c.Resources.Limits.Memory().String() != "512Mi" {
				t.Errorf("server image %s (%s), resources %v", c.Image, c.ImagePullPolicy, c.Resources)
			}
			if i := slices.IndexFunc(s.server.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "db-ca" }); i < 0 ||
				s.server.Spec.Template.Spec.Volumes[i].Secret.Items[0].Key != "tls.ca" {
				t.Errorf("the database CA is not mounted from Secret db-ca key tls.ca: %v", s.server.Spec.Template.Spec.Volumes)
			}
			pdb := object[*policyv1.PodDisruptionBudget](t, objs, "signet-server")
			if pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "signet-server" {
				t.Errorf("PodDisruptionBudget %+v", pdb.Spec)
			}
		},
	}, {
		name: "kind: skip verify, debug logs, no CSI, scheduling", ns: "signet-system",
		values: `
logLevel: debug
agent:
  kubeletSkipVerify: true
  nodeSelector: {kubernetes.io/os: linux}
  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
csi: {enabled: false}
`,
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			pod := s.agent.Spec.Template.Spec
			args := pod.Containers[0].Args
			if !slices.Contains(args, "--kubelet-skip-verify") || argValue(args, "log-level") != "debug" || s.file.LogLevel != "debug" {
				t.Errorf("agent args %v, server log_level %q", args, s.file.LogLevel)
			}
			if pod.NodeSelector["kubernetes.io/os"] != "linux" || len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" {
				t.Errorf("agent nodeSelector %v, tolerations %v", pod.NodeSelector, pod.Tolerations)
			}
			for _, o := range objs {
				if k := keyOf(t, o); strings.Contains(k.Name, "csi") {
					t.Errorf("csi.enabled false still renders %v", k)
				}
			}
		},
	}, {
		name: "upstream authority from a cert-manager Secret", ns: "signet-system",
		values: "upstreamAuthority: {secretName: signet-upstream-ca}\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			u := s.config.UpstreamAuthority
			if u == nil || u.CertFile != "/etc/signet/upstream/tls.crt" || u.KeyFile != "/etc/signet/upstream/tls.key" || u.BundleFile != "/etc/signet/upstream/ca.crt" {
				t.Fatalf("upstream_authority %+v", u)
			}
			i := slices.IndexFunc(s.server.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
				return v.Secret != nil && v.Secret.SecretName == "signet-upstream-ca"
			})
			if i < 0 {
				t.Fatal("the upstream Secret is not mounted")
			}
			if m := s.server.Spec.Template.Spec.Volumes[i].Secret.DefaultMode; m == nil || *m&0o007 != 0 {
				t.Errorf("the upstream key is readable by others (mode %v)", m)
			}
		},
	}, {
		name: "self-signed upstream, own keys", ns: "signet-system",
		values: "upstreamAuthority: {secretName: corp-ca, certKey: ca.pem, keyKey: ca-key.pem, bundleKey: \"\"}\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if u := s.config.UpstreamAuthority; u == nil || u.BundleFile != "" {
				t.Fatalf("upstream_authority %+v: want no bundle_file_path", u)
			}
			i := slices.IndexFunc(s.server.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "corp-ca" })
			if i < 0 || len(s.server.Spec.Template.Spec.Volumes[i].Secret.Items) != 2 || s.server.Spec.Template.Spec.Volumes[i].Secret.Items[1].Key != "ca-key.pem" {
				t.Errorf("upstream Secret volume: %+v", s.server.Spec.Template.Spec.Volumes)
			}
		},
	}, {
		name: "controller class, no cluster domain", ns: "signet-system",
		values: "controller: {className: signet-eu, watchClassless: true, clusterDomain: \"\"}\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if c := s.config.K8sController; c == nil || c.ClassName != "signet-eu" || !c.WatchClassless || c.ClusterDomain != "" {
				t.Errorf("k8s_controller %+v", c)
			}
		},
	}, {
		name: "controller without leader election", ns: "signet-system",
		values: "controller: {leaderElection: false}\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if c := s.config.K8sController; c == nil || c.LeaderElection {
				t.Errorf("k8s_controller %+v", c)
			}
			for _, o := range objs {
				if k := keyOf(t, o); strings.Contains(k.Name, "leader") {
					t.Errorf("leaderElection false still renders %v", k)
				}
			}
		},
	}, {
		name: "no JWT issuer, no OIDC discovery by default", ns: "signet-system",
		values: "",
		check:  func(t *testing.T, objs []runtime.Object, s signetSystem) { noOIDCDiscovery(t, objs, s, "") },
	}, {
		name: "JWT issuer without OIDC discovery", ns: "signet-system",
		values: "jwtIssuer: https://oidc.example.org\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			noOIDCDiscovery(t, objs, s, "https://oidc.example.org")
			if s.config.JWTKeyType != ca.JWTKeyECP256 {
				t.Errorf("jwt_key_type %q without jwtKeyType, want the default ec-p256", s.config.JWTKeyType)
			}
		},
	}, {
		name: "RSA JWT keys for Entra ID", ns: "signet-system",
		values: "jwtIssuer: https://oidc.example.org\njwtKeyType: rsa-2048\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if s.config.JWTKeyType != ca.JWTKeyRSA2048 {
				t.Errorf("jwt_key_type %q, want rsa-2048", s.config.JWTKeyType)
			}
		},
	}, {
		name: "OIDC discovery in plain HTTP behind a TLS-terminating load balancer", ns: "signet-system",
		values: `
jwtIssuer: https://oidc.example.org
oidcDiscovery:
  enabled: true
  port: 9443
  service: {type: LoadBalancer, port: 443, annotations: {service.beta.kubernetes.io/aws-load-balancer-ssl-ports: "443"}}
`,
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			o := s.config.OIDCDiscovery
			if o == nil || o.Issuer != "https://oidc.example.org" || o.Listen != ":9443" || o.SetKeyUse || o.CertFile != "" || o.KeyFile != "" {
				t.Fatalf("oidc_discovery %+v", o)
			}
			svc := object[*corev1.Service](t, objs, "signet-oidc-discovery")
			if p := svc.Spec.Ports; svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(p) != 1 || p[0].Port != 443 || p[0].Name != "http" ||
				p[0].AppProtocol == nil || *p[0].AppProtocol != "http" || svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-ssl-ports"] != "443" {
				t.Errorf("Service %+v %v: want a LoadBalancer with plain HTTP on 443", svc.Spec, svc.Annotations)
			}
			if slices.ContainsFunc(s.server.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "oidc-tls" }) {
				t.Error("a certificate volume without oidcDiscovery.tls.secretName")
			}
			if slices.ContainsFunc(objs, func(o runtime.Object) bool { _, ok := o.(*networkingv1.Ingress); return ok }) {
				t.Error("an Ingress without oidcDiscovery.ingress.enabled")
			}
		},
	}, {
		name: "OIDC discovery over HTTPS from a Secret, with an Ingress", ns: "identity",
		values: `
jwtIssuer: https://oidc.example.org/prod
oidcDiscovery:
  enabled: true
  setKeyUse: true
  tls: {secretName: oidc-serving}
  ingress:
    enabled: true
    className: nginx
    annotations: {nginx.ingress.kubernetes.io/backend-protocol: HTTPS}
    tlsSecret: oidc-public
`,
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			o := s.config.OIDCDiscovery
			if o == nil || o.Issuer != "https://oidc.example.org/prod" || o.Listen != ":8443" || !o.SetKeyUse ||
				o.CertFile != "/etc/signet/oidc/tls.crt" || o.KeyFile != "/etc/signet/oidc/tls.key" {
				t.Fatalf("oidc_discovery %+v", o)
			}
			pod := s.server.Spec.Template.Spec
			i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "oidc-serving" })
			if i < 0 {
				t.Fatalf("Secret oidc-serving is not mounted: %+v", pod.Volumes)
			}
			if m := pod.Volumes[i].Secret.DefaultMode; m == nil {
				t.Error("Secret oidc-serving has no defaultMode: its key would be readable by others (0644)")
			} else if *m&0o007 != 0 {
				t.Errorf("Secret oidc-serving defaultMode %#o: its key is readable by others", *m)
			}
			m := slices.IndexFunc(pod.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == pod.Volumes[i].Name })
			if m < 0 || !pod.Containers[0].VolumeMounts[m].ReadOnly {
				t.Errorf("Secret oidc-serving is not mounted read-only: %+v", pod.Containers[0].VolumeMounts)
			}
			svc := object[*corev1.Service](t, objs, "signet-oidc-discovery")
			if p := svc.Spec.Ports; svc.Spec.Type != corev1.ServiceTypeClusterIP || len(p) != 1 || p[0].Port != 443 || p[0].Name != "https" {
				t.Errorf("Service %+v: want HTTPS on 443", svc.Spec)
			}
			ing := object[*networkingv1.Ingress](t, objs, "signet-oidc-discovery")
			if c := ing.Spec.IngressClassName; c == nil || *c != "nginx" || ing.Annotations["nginx.ingress.kubernetes.io/backend-protocol"] != "HTTPS" ||
				len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "oidc-public" || !slices.Equal(ing.Spec.TLS[0].Hosts, []string{"oidc.example.org"}) {
				t.Errorf("Ingress %+v %v", ing.Spec, ing.Annotations)
			}
			if r := ing.Spec.Rules; len(r) != 1 || r[0].Host != "oidc.example.org" || len(r[0].HTTP.Paths) != 1 || r[0].HTTP.Paths[0].Path != "/prod" {
				t.Errorf("Ingress rules %+v: want oidc.example.org/prod", r)
			}
		},
	}, {
		name: "OIDC discovery in plain HTTP behind an Ingress with the default certificate", ns: "signet-system",
		values: "jwtIssuer: https://oidc.example.org\noidcDiscovery: {enabled: true, ingress: {enabled: true}}\n",
		check: func(t *testing.T, objs []runtime.Object, s signetSystem) {
			svc := object[*corev1.Service](t, objs, "signet-oidc-discovery")
			if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 80 || p[0].Name != "http" {
				t.Errorf("Service ports %+v: want plain HTTP on 80", p)
			}
			ing := object[*networkingv1.Ingress](t, objs, "signet-oidc-discovery")
			if ing.Spec.IngressClassName != nil || len(ing.Spec.TLS) != 1 || ing.Spec.TLS[0].SecretName != "" || ing.Spec.Rules[0].HTTP.Paths[0].Path != "/" {
				t.Errorf("Ingress %+v: want TLS for the host with the controller's certificate, path /", ing.Spec)
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmObjects(t, tc.ns, tc.values)
			tc.check(t, objs, checkSignetSystem(t, objs))
		})
	}
}

// noOIDCDiscovery checks that server.conf has jwt_issuer iss (empty: none)
// and that nothing serves OIDC discovery.
func noOIDCDiscovery(t *testing.T, objs []runtime.Object, s signetSystem, iss string) {
	t.Helper()
	if s.config.JWTIssuer != iss || s.config.OIDCDiscovery != nil {
		t.Errorf("jwt_issuer %q, oidc_discovery %+v: want jwt_issuer %q and no oidc_discovery", s.config.JWTIssuer, s.config.OIDCDiscovery, iss)
	}
	for _, o := range objs {
		if k := keyOf(t, o); strings.Contains(k.Name, "oidc") {
			t.Errorf("OIDC discovery is off but %v is rendered", k)
		}
	}
	if len(s.server.Spec.Template.Spec.Containers[0].Ports) != 2 {
		t.Errorf("server ports %+v: want agent-api and health alone", s.server.Spec.Template.Spec.Containers[0].Ports)
	}
}

// TestHelmAgentSDS checks that agent.sds reaches the agents: their
// config file, read by the agent's own parser, has the values given, and
// none but those (an empty value keeps the agent's default). Names with
// characters HCL treats specially must read back unchanged.
func TestHelmAgentSDS(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         agent.SDSConfig
	}{
		{"defaults", "", agent.SDSConfig{}},
		{"empty names", "agent: {sds: {defaultSVIDName: '', defaultBundleName: '', defaultAllBundlesName: ''}}", agent.SDSConfig{}},
		{"SVID name", "agent: {sds: {defaultSVIDName: svid}}", agent.SDSConfig{DefaultSVIDName: "svid"}},
		{"bundle name", "agent: {sds: {defaultBundleName: own-ca}}", agent.SDSConfig{DefaultBundleName: "own-ca"}},
		{"all bundles name", "agent: {sds: {defaultAllBundlesName: every.ca}}", agent.SDSConfig{DefaultAllBundlesName: "every.ca"}},
		{"SPIFFE validator off", "agent: {sds: {disableSPIFFECertValidation: true}}", agent.SDSConfig{DisableSPIFFECertValidation: true}},
		{"SPIFFE validator on", "agent: {sds: {disableSPIFFECertValidation: false}}", agent.SDSConfig{}},
		{"all four", "agent: {sds: {defaultSVIDName: a, defaultBundleName: b, defaultAllBundlesName: c, disableSPIFFECertValidation: true}}",
			agent.SDSConfig{DefaultSVIDName: "a", DefaultBundleName: "b", DefaultAllBundlesName: "c", DisableSPIFFECertValidation: true}},
		{"quote and backslash", `agent: {sds: {defaultSVIDName: 'say "hi"', defaultBundleName: 'C:\ca\', defaultAllBundlesName: '\"'}}`,
			agent.SDSConfig{DefaultSVIDName: `say "hi"`, DefaultBundleName: `C:\ca\`, DefaultAllBundlesName: `\"`}},
		{"HCL interpolation", `agent: {sds: {defaultSVIDName: '${env.HOME}', defaultBundleName: '$${', defaultAllBundlesName: '${"}'}}`,
			agent.SDSConfig{DefaultSVIDName: "${env.HOME}", DefaultBundleName: "$${", DefaultAllBundlesName: `${"}`}},
		{"braces, dollar, comment signs", `agent: {sds: {defaultSVIDName: '}{', defaultBundleName: '$', defaultAllBundlesName: '# // /*'}}`,
			agent.SDSConfig{DefaultSVIDName: "}{", DefaultBundleName: "$", DefaultAllBundlesName: "# // /*"}},
		{"control and non-ASCII characters", `agent: {sds: {defaultSVIDName: "line\nbreak\ttab\a\x7f", defaultBundleName: "é☃ 😀", defaultAllBundlesName: "\u2028\u00a0\ufeff"}}`,
			agent.SDSConfig{DefaultSVIDName: "line\nbreak\ttab\a\x7f", DefaultBundleName: "é☃ 😀", DefaultAllBundlesName: "\u2028\u00a0\ufeff"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := helmObjects(t, "signet-system", tc.values)
			s := checkSignetSystem(t, objs)
			if s.agentFile == nil {
				t.Fatal("the agents have no --config")
			}
			if want := (agent.Config{SDS: tc.want}); !reflect.DeepEqual(*s.agentFile, want) {
				t.Errorf("agent config file:\n got %+v\nwant %+v", *s.agentFile, want)
			}
			// An empty value leaves its key out, and no value the block.
			conf := object[*corev1.ConfigMap](t, objs, "signet-agent").Data["agent.conf"]
			keys, block := sdsBlockKeys(t, conf)
			if want := setHCLKeys(reflect.ValueOf(tc.want)); !slices.Equal(keys, want) || block != (len(want) > 0) {
				t.Errorf("sds block (present: %v) sets %v, want %v:\n%s", block, keys, want, conf)
			}
			pod := s.agent.Spec.Template.Spec
			dir := filepath.Dir(argValue(pod.Containers[0].Args, "config"))
			if !slices.ContainsFunc(pod.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir && m.ReadOnly }) {
				t.Errorf("the agent config is not mounted read-only at %s: %+v", dir, pod.Containers[0].VolumeMounts)
			}
		})
	}
}

// sdsBlockKeys returns the keys an agent config file sets in its sds
// block, in order, and whether it has one.
func sdsBlockKeys(t *testing.T, conf string) ([]string, bool) {
	t.Helper()
	f, err := hcl.ParseString(conf)
	if err != nil {
		t.Fatalf("agent config: %v", err)
	}
	sds := f.Node.(*ast.ObjectList).Filter("sds")
	if len(sds.Items) == 0 {
		return nil, false
	}
	var keys []string
	for _, it := range sds.Items[0].Val.(*ast.ObjectType).List.Items {
		keys = append(keys, it.Keys[0].Token.Value().(string))
	}
	return keys, true
}

// FuzzHelmSDSName: whatever string agent.sds.defaultSVIDName holds, the
// chart either refuses it or renders an agent config file that the agent's
// parser reads back with that very name.
func FuzzHelmSDSName(f *testing.F) {
	for _, seed := range []string{"svid", `a"b`, `\`, `x\`, "${x}", `${"}`, "$${", "}{", "line\nbreak", "\x00", "\u2028", "é😀", "# c", "default", "ROOTCA", "spiffe://x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !utf8.ValidString(name) {
			t.Skip("Helm's values are UTF-8 (YAML files, --set on the command line)")
		}
		out, _, err := helmRender(t, "signet-system", map[string]any{"agent": map[string]any{"sds": map[string]any{"defaultSVIDName": name}}})
		if err != nil {
			if !strings.Contains(err.Error(), "agent.sds.defaultSVIDName") {
				t.Fatalf("name %q: refused with %v, which does not name the value", name, err)
			}
			return
		}
		objs := decodeManifests(t, "helm template", out)
		pod := object[*appsv1.DaemonSet](t, objs, "signet-agent").Spec.Template.Spec
		if got := agentConfigFile(t, objs, pod, pod.Containers[0]).SDS.DefaultSVIDName; got != name {
			t.Fatalf("name %q reads back as %q", name, got)
		}
	})
}

// TestHelmRefusesBadValues checks that `helm install` stops on values that
// would install a broken or unsafe Signet, naming what is wrong.
func TestHelmRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ name, values, want string }{
		{"misspelt top-level value", "trustDomian: prod.acme.io", "trustDomian"},
		{"misspelt nested value", "server: {replica: 3}", "replica"},
		{"misspelt agent value", "agent: {kubeletSkipVerfy: true}", "kubeletSkipVerfy"},
		{"trust domain not lower case", "trustDomain: Example.ORG", "trustDomain"},
		{"cluster name not a path segment", "clusterName: a/b", "clusterName"},
		{"unknown datastore", "datastore: {type: mysql}", "type"},
		{"postgres without a Secret", "datastore: {type: postgres, postgres: {url: 'postgres://s@db/s'}}", "existingSecret"},
		{"several servers on SQLite", "server: {replicas: 3}", "postgres"},
		{"password in the ConfigMap", "datastore: {type: postgres, postgres: {url: 'postgres://s:hunter2@db/s', existingSecret: pg}}", "must not hold a password"},
		{"password parameter in the ConfigMap", "datastore: {type: postgres, postgres: {url: 'postgres://s@db/s?password=hunter2', existingSecret: pg}}", "must not hold a password"},
		{"unknown log level", "logLevel: verbose", "logLevel"},
		{"unknown JWT key type", "jwtKeyType: rsa-1024", "jwtKeyType"},
		{"two CAs for the database", "datastore: {type: postgres, postgres: {url: 'postgres://s@db/s?sslrootcert=/x', existingSecret: pg, caSecret: db-ca}}", "sets sslrootcert"},
		{"upstream Secret without a key name", "upstreamAuthority: {secretName: corp-ca, keyKey: \"\"}", "keyKey"},
		{"misspelt upstream value", "upstreamAuthority: {secret: corp-ca}", "secret"},
		{"cluster domain with a leading dot", "controller: {clusterDomain: .cluster.local}", "clusterDomain"},
		{"OIDC discovery without an issuer", "oidcDiscovery: {enabled: true}", "oidcDiscovery.enabled needs jwtIssuer"},
		{"http issuer", "jwtIssuer: http://oidc.example.org\noidcDiscovery: {enabled: true}", "must be an https URL"},
		{"issuer without a scheme", "jwtIssuer: oidc.example.org", "must be an https URL"},
		{"issuer with a trailing slash", "jwtIssuer: https://oidc.example.org/prod/", "trailing /"},
		{"issuer with a query", "jwtIssuer: https://oidc.example.org/?td=prod", "no user info, query"},
		{"issuer with user info", "jwtIssuer: https://me@oidc.example.org", "no user info"},
		{"Ingress for an issuer with a port", "jwtIssuer: https://oidc.example.org:8443\noidcDiscovery: {enabled: true, ingress: {enabled: true}}", "drop the port"},
		{"Ingress for an IP issuer", "jwtIssuer: https://192.0.2.7\noidcDiscovery: {enabled: true, ingress: {enabled: true}}", "DNS host"},
		{"OIDC port taken by the agent API", "jwtIssuer: https://oidc.example.org\noidcDiscovery: {enabled: true, port: 8081}", "oidcDiscovery.port 8081 is taken"},
		{"misspelt OIDC value", "oidcDiscovery: {issuer: https://oidc.example.org}", "issuer"},
		{"unknown OIDC Service type", "oidcDiscovery: {service: {type: External}}", "type"},
		{"misspelt SDS value", "agent: {sds: {defaultSvidName: svid}}", "defaultSvidName"},
		{"SPIRE's sds.enabled (Signet's agents always serve SDS)", "agent: {sds: {enabled: true}}", "enabled"},
		{"SDS name not a string", "agent: {sds: {defaultBundleName: [a]}}", "defaultBundleName"},
		{"SDS validator switch not a boolean", "agent: {sds: {disableSPIFFECertValidation: 'yes'}}", "disableSPIFFECertValidation"},
		{"SDS name taken by a default", "agent: {sds: {defaultBundleName: default}}", "agent.sds.defaultBundleName and agent.sds.defaultSVIDName both name the SDS secret \"default\""},
		{"two SDS names alike", "agent: {sds: {defaultBundleName: ca, defaultAllBundlesName: ca}}", "both name the SDS secret \"ca\""},
		{"SDS name a SPIFFE ID", "agent: {sds: {defaultSVIDName: 'spiffe://example.org/app'}}", "agent.sds.defaultSVIDName \"spiffe://example.org/app\": SPIFFE IDs already name"},
		{"downstream without an upstream address", "upstream: {enabled: true}", "/upstream/serverAddress"},
		{"upstream address without a port (the upstream agents need one)", "upstream: {enabled: true, serverAddress: up.example.org}", "/upstream/serverAddress"},
		{"upstream address a URL", "upstream: {enabled: true, serverAddress: 'https://up.example.org:8081'}", "/upstream/serverAddress"},
		{"upstream port out of range", "upstream: {enabled: true, serverAddress: 'up:65536'}", "/upstream/serverAddress"},
		{"two upstreams: a Signet server and a PKI", "upstream: {enabled: true, serverAddress: 'up:8081'}\nupstreamAuthority: {secretName: corp-ca}", "/upstreamAuthority/secretName"},
		{"misspelt upstream value", "upstream: {enabled: true, server: 'up:8081'}", "server"},
		{"upstream cluster name not a path segment", "upstream: {enabled: true, serverAddress: 'up:8081', clusterName: a/b}", "/upstream/clusterName"},
		// The upstream's downstreamClusters[].name, which names objects there.
		{"upstream cluster name not a DNS label", "upstream: {enabled: true, serverAddress: 'up:8081', clusterName: East_1}", "/upstream/clusterName"},
		{"downstream's clusterName not a DNS label", "clusterName: Prod.East\nupstream: {enabled: true, serverAddress: 'up:8081'}",
			`clusterName "Prod.East" (upstream.clusterName's default) cannot be the upstream's downstreamClusters[].name, a DNS label: set upstream.clusterName`},
		{"downstream SPIFFE ID in another trust domain", "downstreamClusters: [{name: east, kubeconfigSecret: a, spiffeID: 'spiffe://other.org/server/east'}]",
			`downstreamClusters[0].spiffeID "spiffe://other.org/server/east" is not a workload ID of trust domain example.org`},
		{"downstream SPIFFE ID with a dot segment", "downstreamClusters: [{name: east, kubeconfigSecret: a, spiffeID: 'spiffe://example.org/a/../b'}]",
			`downstreamClusters[0].spiffeID "spiffe://example.org/a/../b" is not a workload ID`},
		{"downstream SPIFFE ID reserved", "downstreamClusters: [{name: east, kubeconfigSecret: a, spiffeID: 'spiffe://example.org/signet/east'}]",
			`downstreamClusters[0].spiffeID "spiffe://example.org/signet/east": paths under /signet/ are reserved`},
		{"upstream bundle without a ConfigMap", "upstream: {enabled: true, serverAddress: 'up:8081', trustBundle: {configMap: ''}}", "configMap"},
		{"upstream agents' unknown value", "upstream: {agent: {kubeletSkipVerify: true}}", "kubeletSkipVerify"},
		{"downstream cluster without a kubeconfig", "downstreamClusters: [{name: east}]", "kubeconfigSecret"},
		{"downstream cluster name not a DNS label", "downstreamClusters: [{name: East_1, kubeconfigSecret: kc}]", "/downstreamClusters/0/name"},
		{"downstream cluster twice", "downstreamClusters: [{name: east, kubeconfigSecret: a}, {name: east, kubeconfigSecret: b}]", `downstreamClusters[1].name "east" is already another downstream cluster's`},
		{"downstream cluster named as this one", "clusterName: west\ndownstreamClusters: [{name: west, kubeconfigSecret: a}]", `downstreamClusters[0].name "west" is already this cluster's clusterName`},
		{"downstream SPIFFE ID not a URI", "downstreamClusters: [{name: east, kubeconfigSecret: a, spiffeID: /server/east}]", "spiffeID"},
		{"misspelt downstream value", "downstreamClusters: [{name: east, kubeconfig: a}]", "kubeconfig"},
		{"unknown server Service type", "server: {service: {type: ExternalName}}", "/server/service/type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := helmTemplate(t, "signet-system", tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error repeats the password: %v", err)
			}
		})
	}
}

// TestHelmSDSRefusalsAreTheAgents checks that the SDS names the chart
// refuses are the ones the agent refuses at start (which would crash-loop
// every agent), so the chart's copy of the rule and of the default names
// stays the agent's.
func TestHelmSDSRefusalsAreTheAgents(t *testing.T) {
	// The agent checks its config before it touches anything else; past
	// that check, the missing trust bundle stops it.
	runAgent := func(sds agent.SDSConfig) error {
		return agent.Run(t.Context(), agent.Config{
			ServerAddress: "127.0.0.1:1", TrustDomain: "example.org", JoinToken: "t", SDS: sds,
			DataDir: t.TempDir(), SocketPath: filepath.Join(t.TempDir(), "s"), TrustBundleFile: filepath.Join(t.TempDir(), "none.pem"),
		}, nil)
	}
	if err := runAgent(agent.SDSConfig{DefaultSVIDName: "svid"}); err == nil || !strings.Contains(err.Error(), "agent: trust bundle") {
		t.Fatalf("agent with a valid sds block: %v, want the missing trust bundle's error", err)
	}
	for _, sds := range []agent.SDSConfig{
		{DefaultBundleName: "default"},
		{DefaultSVIDName: "ALL"},
		{DefaultBundleName: "ca", DefaultAllBundlesName: "ca"},
		{DefaultSVIDName: "spiffe://example.org/app"},
		{DefaultAllBundlesName: "spiffe://example.org"},
	} {
		values, err := yaml.Marshal(map[string]any{"agent": map[string]any{"sds": map[string]any{
			"defaultSVIDName": sds.DefaultSVIDName, "defaultBundleName": sds.DefaultBundleName, "defaultAllBundlesName": sds.DefaultAllBundlesName,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := helmTemplate(t, "signet-system", string(values)); err == nil || !strings.Contains(err.Error(), "agent.sds.") {
			t.Errorf("chart with sds %+v: %v, want a refusal naming agent.sds", sds, err)
		}
		if err := runAgent(sds); err == nil || !strings.Contains(err.Error(), "agent: sds") {
			t.Errorf("agent with sds %+v: %v, want a refusal naming sds", sds, err)
		}
	}
}

// configChecksum returns a pod template's checksum/config annotation.
func configChecksum(t *testing.T, tmpl corev1.PodTemplateSpec) string {
	t.Helper()
	v := tmpl.Annotations["checksum/config"]
	if len(v) != 64 {
		t.Fatalf("%s pods: checksum/config %q, want a SHA-256", tmpl.Labels["app.kubernetes.io/name"], v)
	}
	return v
}

// TestHelmConfigChangeRollsAgents checks the agent pods' config checksum:
// an agent config change changes it (so the DaemonSet rolls), anything
// else leaves it.
func TestHelmConfigChangeRollsAgents(t *testing.T) {
	sum := func(values string) string {
		return configChecksum(t, object[*appsv1.DaemonSet](t, helmObjects(t, "signet-system", values), "signet-agent").Spec.Template)
	}
	def := sum("")
	for _, v := range []string{"agent: {sds: {defaultSVIDName: svid}}", "agent: {sds: {disableSPIFFECertValidation: true}}"} {
		if sum(v) == def {
			t.Errorf("%s leaves the agent pods' checksum", v)
		}
	}
	for _, v := range []string{"clusterName: other", "logLevel: warn", "agent: {kubeletSkipVerify: true}"} {
		if sum(v) != def {
			t.Errorf("%s (no agent config change) changes the agent pods' checksum", v)
		}
	}
}

// TestHelmConfigChangeRollsServer checks the server pods' config checksum:
// a server.conf change changes it (so the StatefulSet rolls), anything else
// leaves it.
func TestHelmConfigChangeRollsServer(t *testing.T) {
	sum := func(values string) string {
		return configChecksum(t, object[*appsv1.StatefulSet](t, helmObjects(t, "signet-system", values), "signet-server").Spec.Template)
	}
	def := sum("")
	if sum("clusterName: other") == def || sum("logLevel: warn") == def || sum("jwtIssuer: https://oidc.example.org") == def {
		t.Error("a server.conf change leaves the server pods' checksum")
	}
	if sum("agent: {kubeletSkipVerify: true}") != def || sum("agent: {sds: {defaultSVIDName: svid}}") != def {
		t.Error("an agent change changes the server pods' checksum")
	}
}

// TestHelmCRDsAreBase: the chart's crds/ holds deploy/base's CRD files,
// byte for byte (comments included), and nothing else.
func TestHelmCRDsAreBase(t *testing.T) {
	base, _ := filepath.Glob("../deploy/base/crd-*.yaml")
	chart, _ := filepath.Glob(chartDir + "/crds/*.yaml")
	names := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if len(base) == 0 || !slices.Equal(names(base), names(chart)) {
		t.Fatalf("CRD files: base %v, chart %v", names(base), names(chart))
	}
	for i := range base {
		b, err := os.ReadFile(base[i])
		if err != nil {
			t.Fatal(err)
		}
		c, err := os.ReadFile(chart[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, c) {
			t.Errorf("%s differs from %s: copy it", chart[i], base[i])
		}
	}
}
