package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/server"
)

// deployObjects decodes every document under deploy/base strictly into its
// Kubernetes type: an unknown or misspelt field fails, as kubectl's
// server-side validation would.
func deployObjects(t *testing.T) []runtime.Object {
	t.Helper()
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, json.SerializerOptions{Yaml: true, Strict: true})
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
