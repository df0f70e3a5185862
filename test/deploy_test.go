package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/server/k8sreg"
)

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
// TestDeployBaseIsConsistent: deploy/base, as kustomize builds it, fits
// together (checkSignetSystem says what that means).
func TestDeployBaseIsConsistent(t *testing.T) {
	checkSignetSystem(t, kustomizeBuild(t, "../deploy/base"))
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
	objs := kustomizeBuild(t, "../deploy/base")
	cfg := checkSignetSystem(t, objs).config
	if cfg.K8sController == nil {
		t.Fatal("deploy/base server.conf does not enable k8s_controller")
	}

	crd := object[*apiextensionsv1.CustomResourceDefinition](t, objs, k8sreg.Resource+"."+k8sreg.Group)
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

	role := object[*rbacv1.ClusterRole](t, objs, "signet-server")
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
