package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/k8sreg"
)

// deployObjects decodes every document under deploy/base strictly into its
// Kubernetes type: an unknown or misspelt field fails, as kubectl's
// server-side validation would.
func deployObjects(t *testing.T) []runtime.Object {
	t.Helper()
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch, json.SerializerOptions{Yaml: true, Strict: true})
	files, err := filepath.Glob("../deploy/base/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var out []runtime.Object
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj, _, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Errorf("%s document %d: %v", f, i+1, err)
				continue
			}
			out = append(out, obj)
		}
	}
	return out
}

func findObject[T runtime.Object](t *testing.T, objs []runtime.Object, name string, get func(T) string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok && get(v) == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %s in deploy/base", zero, name)
	return zero
}

// argValue returns the value of --name=value in args.
func argValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// TestDeployBaseIsConsistent checks that the pieces of deploy/base fit
// together: the server's config is one the server accepts, the agents
// attest to a cluster it knows with a token it accepts, read the bundle the
// server publishes, and every flag in every container exists.
func TestDeployBaseIsConsistent(t *testing.T) {
	objs := deployObjects(t)
	cmName := func(c *corev1.ConfigMap) string { return c.Name }
	dsName := func(d *appsv1.DaemonSet) string { return d.Name }

	conf := findObject(t, objs, "signet-server", cmName).Data["server.conf"]
	fc, err := server.ParseConfigFile([]byte(conf))
	if err != nil {
		t.Fatalf("deploy/base server.conf: %v", err)
	}
	cfg, err := fc.Resolve()
	if err != nil {
		t.Fatalf("deploy/base server.conf: %v", err)
	}

	ds := findObject(t, objs, "signet-agent", dsName)
	pod := ds.Spec.Template.Spec
	ctr := pod.Containers[0]
	cluster := argValue(ctr.Args, "k8s-psat-cluster")
	i := slices.IndexFunc(cfg.K8sPSAT, func(c server.K8sPSATCluster) bool { return c.Name == cluster })
	if i < 0 {
		t.Fatalf("agent's --k8s-psat-cluster=%q is not a k8s_psat cluster of the server", cluster)
	}
	psat := cfg.K8sPSAT[i]
	if sa := "signet-system:" + pod.ServiceAccountName; !slices.Contains(psat.ServiceAccountAllowList, sa) {
		t.Errorf("agent service account %s is not in the server's allow list %v", sa, psat.ServiceAccountAllowList)
	}
	if td := argValue(ctr.Args, "trust-domain"); td != cfg.TrustDomain.Name() {
		t.Errorf("agent --trust-domain=%s, server %s", td, cfg.TrustDomain.Name())
	}

	// The projected token: the audience the server wants, where the agent
	// reads it.
	tokenPath := argValue(ctr.Args, "k8s-psat-token-path")
	if tokenPath == "" {
		tokenPath = agent.DefaultPSATTokenPath
	}
	var bundlePath string
	for _, v := range pod.Volumes {
		m := slices.IndexFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
		if m < 0 {
			continue
		}
		mount := ctr.VolumeMounts[m].MountPath
		switch {
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if sat := src.ServiceAccountToken; sat != nil && filepath.Join(mount, sat.Path) == tokenPath {
					if sat.Audience != psat.Audience {
						t.Errorf("agent token audience %q, server wants %q", sat.Audience, psat.Audience)
					}
					tokenPath = ""
				}
			}
		case v.ConfigMap != nil && v.ConfigMap.Name == cfg.K8sBundle.ConfigMap:
			key := cfg.K8sBundle.Key
			if key == "" {
				key = "bundle.pem"
			}
			bundlePath = filepath.Join(mount, key)
		}
	}
	if tokenPath != "" {
		t.Errorf("no projected service account token is mounted at %s", tokenPath)
	}
	if cfg.K8sBundle == nil || argValue(ctr.Args, "trust-bundle") != bundlePath {
		t.Errorf("agent --trust-bundle=%s is not the server's k8s_bundle ConfigMap (mounted at %q)", argValue(ctr.Args, "trust-bundle"), bundlePath)
	}

	// Every flag given to a Signet container exists.
	for _, o := range objs {
		var spec *corev1.PodSpec
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			spec = &o.Spec.Template.Spec
		case *appsv1.StatefulSet:
			spec = &o.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range spec.Containers {
			if !strings.Contains(c.Image, "signetid/signet") {
				continue
			}
			checkFlagsExist(t, c.Args)
		}
	}
}

// checkFlagsExist runs `signet <subcommands> --help` and looks for each flag.
func checkFlagsExist(t *testing.T, args []string) {
	t.Helper()
	var sub []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		sub = append(sub, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	help, err := exec.CommandContext(ctx, signetBin(t), append(sub, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("signet %s --help: %v\n%s", strings.Join(sub, " "), err, help)
	}
	for _, a := range args[len(sub):] {
		flag, _, _ := strings.Cut(a, "=")
		if strings.HasPrefix(flag, "--") && !strings.Contains(string(help), flag+" ") {
			t.Errorf("signet %s has no flag %s", strings.Join(sub, " "), flag)
		}
	}
}

// TestDeployControllerFits checks the Kubernetes registration controller's
// pieces of deploy/base: the server's config enables it for a k8s_psat
// cluster, the CRD is the resource the controller watches and its schema
// has exactly the fields of the Go types (a field missing from the schema
// would be pruned by the API server), the server's role lets it watch and
// write status, and the example ClusterSPIFFEID is valid.
func TestDeployControllerFits(t *testing.T) {
	objs := deployObjects(t)
	conf := findObject(t, objs, "signet-server", func(c *corev1.ConfigMap) string { return c.Name }).Data["server.conf"]
	fc, err := server.ParseConfigFile([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fc.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.K8sController == nil {
		t.Fatal("deploy/base server.conf does not enable k8s_controller")
	}

	crd := findObject(t, objs, k8sreg.Resource+"."+k8sreg.Group, func(c *apiextensionsv1.CustomResourceDefinition) string { return c.Name })
	if crd.Spec.Group != k8sreg.Group || crd.Spec.Names.Kind != k8sreg.Kind || crd.Spec.Names.Plural != k8sreg.Resource ||
		crd.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Fatalf("CRD names %+v scope %s, want %s/%s %s, cluster-scoped", crd.Spec.Names, crd.Spec.Scope, k8sreg.Group, k8sreg.Kind, k8sreg.Resource)
	}
	var version *apiextensionsv1.CustomResourceDefinitionVersion
	for i, v := range crd.Spec.Versions {
		if v.Name == k8sreg.Version {
			version = &crd.Spec.Versions[i]
		}
	}
	if version == nil || !version.Served || !version.Storage || version.Subresources == nil || version.Subresources.Status == nil {
		t.Fatalf("CRD version %s must be served, stored and have a status subresource: %+v", k8sreg.Version, version)
	}
	root := version.Schema.OpenAPIV3Schema.Properties
	checkSchema(t, "spec", reflect.TypeFor[k8sreg.ClusterSPIFFEIDSpec](), root["spec"])
	checkSchema(t, "status", reflect.TypeFor[k8sreg.ClusterSPIFFEIDStatus](), root["status"])

	role := findObject(t, objs, "signet-server", func(r *rbacv1.ClusterRole) string { return r.Name })
	for _, want := range []struct{ group, resource, verb string }{
		{"", "pods", "list"}, {"", "pods", "watch"}, {"", "namespaces", "list"}, {"", "namespaces", "watch"},
		{"", "nodes", "list"}, {"", "nodes", "watch"},
		{k8sreg.Group, k8sreg.Resource, "list"}, {k8sreg.Group, k8sreg.Resource, "watch"},
		{k8sreg.Group, k8sreg.Resource + "/status", "update"},
	} {
		if !slices.ContainsFunc(role.Rules, func(r rbacv1.PolicyRule) bool {
			return slices.Contains(r.APIGroups, want.group) && slices.Contains(r.Resources, want.resource) && slices.Contains(r.Verbs, want.verb)
		}) {
			t.Errorf("ClusterRole signet-server does not allow %s %s (group %q)", want.verb, want.resource, want.group)
		}
	}

	examples, _ := filepath.Glob("../examples/k8s-controller/*.yaml")
	if len(examples) == 0 {
		t.Fatal("no example under examples/k8s-controller")
	}
	for _, f := range examples {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cr k8sreg.ClusterSPIFFEID
		if err := yaml.UnmarshalStrict(b, &cr); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if cr.APIVersion != k8sreg.Group+"/"+k8sreg.Version || cr.Kind != k8sreg.Kind {
			t.Errorf("%s: %s %s is not a ClusterSPIFFEID", f, cr.APIVersion, cr.Kind)
		}
		if err := cr.Spec.Validate(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// checkSchema compares a Go type's JSON fields with a schema's properties,
// both ways, into nested objects and arrays of objects.
func checkSchema(t *testing.T, path string, typ reflect.Type, schema apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
		if schema.Items != nil && schema.Items.Schema != nil {
			schema = *schema.Items.Schema
		}
	}
	if typ.Kind() != reflect.Struct || len(schema.Properties) == 0 {
		return
	}
	fields := map[string]reflect.Type{}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	for name, ft := range fields {
		prop, ok := schema.Properties[name]
		if !ok {
			t.Errorf("CRD schema has no %s.%s", path, name)
			continue
		}
		checkSchema(t, path+"."+name, ft, prop)
	}
	for name := range schema.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("CRD schema has %s.%s, which the Go type lacks", path, name)
		}
	}
}
