package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
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
// cluster, the CRDs are the resources the controller watches and their
// schemas have exactly the fields of the Go types (a field missing from the
// schema would be pruned by the API server), and the examples are valid.
// (checkSignetSystem checks that the server's RBAC grants what it needs.)
func TestDeployControllerFits(t *testing.T) {
	objs := kustomizeBuild(t, "../deploy/base")
	cfg := checkSignetSystem(t, objs).config
	if cfg.K8sController == nil {
		t.Fatal("deploy/base server.conf does not enable k8s_controller")
	}

	for _, want := range []struct {
		resource, kind string
		spec, status   reflect.Type
	}{
		{k8sreg.Resource, k8sreg.Kind, reflect.TypeFor[k8sreg.ClusterSPIFFEIDSpec](), reflect.TypeFor[k8sreg.ClusterSPIFFEIDStatus]()},
		{k8sreg.StaticEntryResource, k8sreg.StaticEntryKind, reflect.TypeFor[k8sreg.ClusterStaticEntrySpec](), reflect.TypeFor[k8sreg.ClusterStaticEntryStatus]()},
		{k8sreg.FederatedTrustDomainResource, k8sreg.FederatedTrustDomainKind, reflect.TypeFor[k8sreg.ClusterFederatedTrustDomainSpec](), reflect.TypeFor[k8sreg.ClusterFederatedTrustDomainStatus]()},
	} {
		crd := object[*apiextensionsv1.CustomResourceDefinition](t, objs, want.resource+"."+k8sreg.Group)
		if crd.Spec.Group != k8sreg.Group || crd.Spec.Names.Kind != want.kind || crd.Spec.Names.Plural != want.resource ||
			crd.Spec.Scope != apiextensionsv1.ClusterScoped {
			t.Fatalf("CRD names %+v scope %s, want %s/%s %s, cluster-scoped", crd.Spec.Names, crd.Spec.Scope, k8sreg.Group, want.kind, want.resource)
		}
		var version *apiextensionsv1.CustomResourceDefinitionVersion
		for i, v := range crd.Spec.Versions {
			if v.Name == k8sreg.Version {
				version = &crd.Spec.Versions[i]
			}
		}
		if version == nil || !version.Served || !version.Storage || version.Subresources == nil || version.Subresources.Status == nil {
			t.Fatalf("CRD %s version %s must be served, stored and have a status subresource: %+v", want.resource, k8sreg.Version, version)
		}
		root := version.Schema.OpenAPIV3Schema.Properties
		checkSchema(t, want.kind+".spec", want.spec, root["spec"])
		checkSchema(t, want.kind+".status", want.status, root["status"])
	}

	examples, _ := filepath.Glob("../examples/k8s-controller/*.yaml")
	kinds := map[string]int{}
	for _, f := range examples {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil || tm.APIVersion != k8sreg.Group+"/"+k8sreg.Version {
				t.Errorf("%s: %s %s (%v) is not a Signet resource", f, tm.APIVersion, tm.Kind, err)
				continue
			}
			kinds[tm.Kind]++
			switch tm.Kind {
			case k8sreg.Kind:
				var cr k8sreg.ClusterSPIFFEID
				if err = yaml.UnmarshalStrict(doc, &cr); err == nil {
					err = cr.Spec.Validate()
				}
			case k8sreg.StaticEntryKind:
				var cr k8sreg.ClusterStaticEntry
				if err = yaml.UnmarshalStrict(doc, &cr); err == nil {
					_, err = cr.Spec.Entry(cfg.TrustDomain, cfg.K8sController.Cluster)
				}
			case k8sreg.FederatedTrustDomainKind:
				var cr k8sreg.ClusterFederatedTrustDomain
				if err = yaml.UnmarshalStrict(doc, &cr); err == nil {
					_, _, err = cr.Spec.Relationship(cfg.TrustDomain)
				}
			default:
				err = fmt.Errorf("unknown kind %s", tm.Kind)
			}
			if err != nil {
				t.Errorf("%s: %s: %v", f, tm.Kind, err)
			}
		}
	}
	if kinds[k8sreg.Kind] == 0 || kinds[k8sreg.StaticEntryKind] == 0 || kinds[k8sreg.FederatedTrustDomainKind] == 0 {
		t.Errorf("examples/k8s-controller has %v; want an example of each kind", kinds)
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
