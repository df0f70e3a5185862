package test

import (
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/signetid/signet/server"
)

// TestDeployOverlays builds every overlay under deploy/overlays with
// kustomize and checks that each renders a consistent Signet (as base is),
// changes server.conf only where it means to, and has what it is for.
func TestDeployOverlays(t *testing.T) {
	checks := map[string]func(t *testing.T, objs []runtime.Object, s signetSystem){
		"production": func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if td := s.config.TrustDomain.Name(); td == "example.org" {
				t.Errorf("production keeps base's trust domain %s", td)
			}
			if c := s.config.K8sPSAT[0].Name; c == "kubernetes" || len(s.config.K8sPSAT) != 1 {
				t.Errorf("production k8s_psat clusters %v: want one of its own", s.config.K8sPSAT)
			}
			if !strings.HasPrefix(s.config.Datastore, "postgres://") || *s.server.Spec.Replicas < 2 {
				t.Errorf("production: %d servers on %s, want several on PostgreSQL", *s.server.Spec.Replicas, s.config.Datastore)
			}
			// The database's certificate is verified (checkSignetSystem
			// checks that the CA file is mounted).
			if u, err := url.Parse(s.config.Datastore); err != nil || u.Query().Get("sslmode") != "verify-full" || u.Query().Get("sslrootcert") == "" {
				t.Errorf("production datastore %s: want sslmode=verify-full with sslrootcert (%v)", s.config.Datastore, err)
			}
			pdb := object[*policyv1.PodDisruptionBudget](t, objs, "signet-server")
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(s.server.Spec.Template.Labels)) || pdb.Namespace != s.namespace {
				t.Errorf("PodDisruptionBudget %s/%s %v does not cover the server pods (%v)", pdb.Namespace, pdb.Name, pdb.Spec.Selector, err)
			}
			for _, p := range podSpecs(objs) {
				for _, c := range p.spec.Containers {
					if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
						t.Errorf("%s container %s: image %s is not pinned", p.name, c.Name, c.Image)
					}
					if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s container %s: no memory request and limit", p.name, c.Name)
					}
				}
			}
			for _, name := range []string{"signet-agent", "signet-csi"} {
				if pc := object[*appsv1.DaemonSet](t, objs, name).Spec.Template.Spec.PriorityClassName; pc != "system-node-critical" {
					t.Errorf("%s priorityClassName %q", name, pc)
				}
			}
		},
		"kind": func(t *testing.T, objs []runtime.Object, s signetSystem) {
			if !slices.Contains(s.agent.Spec.Template.Spec.Containers[0].Args, "--kubelet-skip-verify") {
				t.Errorf("kind agents check kubelet certificates kind's kubelets cannot pass: %v", s.agent.Spec.Template.Spec.Containers[0].Args)
			}
			if img := s.agent.Spec.Template.Spec.Containers[0].Image; strings.HasSuffix(img, ":latest") {
				t.Errorf("kind image %s: :latest is always pulled, a loaded image is not used", img)
			}
		},
	}
	base := checkSignetSystem(t, kustomizeBuild(t, "../deploy/base"))

	dirs, err := filepath.Glob("../deploy/overlays/*/kustomization.yaml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays: %v", err)
	}
	for _, k := range dirs {
		dir := filepath.Dir(k)
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			check, ok := checks[name]
			if !ok {
				t.Fatalf("overlay %s has no test of what it is for", name)
			}
			objs := kustomizeBuild(t, dir)
			s := checkSignetSystem(t, objs)
			checkSameConfigBut(t, base.file, s.file)
			check(t, objs, s)
		})
	}
}

// checkSameConfigBut checks that an overlay's server.conf differs from
// base's only in what overlays set (trust domain, cluster name,
// datastore, log level): a block added to base and missing from an overlay
// that replaces server.conf fails here.
func checkSameConfigBut(t *testing.T, base, got server.FileConfig) {
	t.Helper()
	norm := func(fc server.FileConfig) server.FileConfig {
		fc.TrustDomain, fc.Datastore, fc.LogLevel = "", "", ""
		fc.UnusedKeyPositions = nil
		clusters := fc.K8sPSAT
		fc.K8sPSAT = nil
		for _, c := range clusters {
			c.UnusedKeyPositions = nil
			fc.K8sPSAT = map[string]server.K8sPSATFileConfig{"": c}
		}
		if fc.K8sBundle != nil {
			b := *fc.K8sBundle
			b.UnusedKeyPositions = nil
			fc.K8sBundle = &b
		}
		if fc.K8sController != nil {
			c := *fc.K8sController
			if _, ok := clusters[c.Cluster]; !ok {
				t.Errorf("k8s_controller cluster %q has no k8s_psat block", c.Cluster)
			}
			c.Cluster, c.Line, c.UnusedKeyPositions = "", 0, nil
			fc.K8sController = &c
		}
		return fc
	}
	if len(got.K8sPSAT) != len(base.K8sPSAT) {
		t.Errorf("server.conf has %d k8s_psat blocks, base %d", len(got.K8sPSAT), len(base.K8sPSAT))
	}
	if b, g := norm(base), norm(got); !reflect.DeepEqual(b, g) {
		t.Errorf("server.conf differs from base's beyond trust domain, cluster, datastore and log level:\nbase %+v\ngot  %+v", b, g)
	}
}

type namedPodSpec struct {
	name string
	spec corev1.PodSpec
}

// podSpecs returns the pod templates of the workloads in objs.
func podSpecs(objs []runtime.Object) []namedPodSpec {
	var out []namedPodSpec
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			out = append(out, namedPodSpec{"DaemonSet " + o.Name, o.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, namedPodSpec{"StatefulSet " + o.Name, o.Spec.Template.Spec})
		}
	}
	return out
}
