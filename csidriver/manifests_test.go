package csidriver

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// manifest is one YAML document from deploy/base or examples/csi (the Helm
// chart and the overlays are rendered and compared with base in test/).
type manifest struct {
	file string
	obj  map[string]any
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// loadManifests yaml-decodes every document of every YAML file under dirs.
func loadManifests(t *testing.T, dirs ...string) []manifest {
	t.Helper()
	var out []manifest
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for i, doc := range docSep.Split(string(b), -1) {
				if len(bytes.TrimSpace([]byte(doc))) == 0 {
					continue
				}
				var obj map[string]any
				if err := yaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
					t.Errorf("%s document %d: %v", p, i+1, err)
					continue
				}
				if obj["apiVersion"] == nil || obj["kind"] == nil {
					t.Errorf("%s document %d: no apiVersion or kind", p, i+1)
				}
				out = append(out, manifest{file: p, obj: obj})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// dig walks obj by map keys and list indexes given as ints.
func dig(obj any, path ...any) any {
	for _, k := range path {
		switch k := k.(type) {
		case string:
			m, _ := obj.(map[string]any)
			obj = m[k]
		case int:
			l, _ := obj.([]any)
			if k >= len(l) {
				return nil
			}
			obj = l[k]
		}
	}
	return obj
}

func find(ms []manifest, kind, name string) map[string]any {
	for _, m := range ms {
		n, _ := dig(m.obj, "metadata", "name").(string)
		if m.obj["kind"] == kind && n == name {
			return m.obj
		}
	}
	return nil
}

func namedItem(list any, name string) map[string]any {
	l, _ := list.([]any)
	for _, it := range l {
		if m, ok := it.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

func TestManifests(t *testing.T) {
	ms := loadManifests(t, "../deploy/base", "../examples/csi")
	if len(ms) < 8 {
		t.Fatalf("found only %d manifests", len(ms))
	}

	// Every kustomization resource exists and parses.
	kust := find(ms, "Kustomization", "")
	if kust == nil {
		t.Fatal("no deploy/base kustomization")
	}
	for _, r := range toStrings(dig(kust, "resources")) {
		if _, err := os.Stat(filepath.Join("../deploy/base", r)); err != nil {
			t.Errorf("kustomization resource %v: %v", r, err)
		}
	}

	drv := find(ms, "CSIDriver", DefaultDriverName)
	if drv == nil {
		t.Fatal("no CSIDriver csi.signet.dev")
	}
	for field, want := range map[string]any{"attachRequired": false, "podInfoOnMount": true, "fsGroupPolicy": "None"} {
		if got := dig(drv, "spec", field); got != want {
			t.Errorf("CSIDriver spec.%s = %v, want %v", field, got, want)
		}
	}
	if modes := toStrings(dig(drv, "spec", "volumeLifecycleModes")); len(modes) != 1 || modes[0] != "Ephemeral" {
		t.Errorf("volumeLifecycleModes = %v, want [Ephemeral]", modes)
	}

	ds := find(ms, "DaemonSet", "signet-csi")
	pod := dig(ds, "spec", "template", "spec")
	csiC := namedItem(dig(pod, "containers"), "signet-csi")
	if args := strings.Join(toStrings(csiC["args"]), " "); !strings.HasPrefix(args, "csi ") ||
		!strings.Contains(args, "--workload-api-socket-dir=/run/signet/sockets") {
		t.Errorf("driver args %q", args)
	}
	if dig(csiC, "livenessProbe", "httpGet", "path") != "/healthz" {
		t.Error("driver has no /healthz liveness probe")
	}
	podsMount := namedItem(csiC["volumeMounts"], "pods-dir")
	if podsMount["mountPath"] != DefaultPodsRoot || podsMount["mountPropagation"] != "Bidirectional" {
		t.Errorf("pods dir mount = %v, want %s Bidirectional", podsMount, DefaultPodsRoot)
	}
	reg := namedItem(dig(pod, "containers"), "node-driver-registrar")
	if img, _ := reg["image"].(string); !strings.HasPrefix(img, "registry.k8s.io/sig-storage/csi-node-driver-registrar:") {
		t.Errorf("registrar image %q", img)
	}
	if !strings.Contains(strings.Join(toStrings(reg["args"]), " "), "/var/lib/kubelet/plugins/csi.signet.dev/csi.sock") {
		t.Error("registrar does not register /var/lib/kubelet/plugins/csi.signet.dev/csi.sock")
	}
	if dig(namedItem(dig(pod, "volumes"), "plugin-dir"), "hostPath", "path") != "/var/lib/kubelet/plugins/csi.signet.dev" {
		t.Error("plugin dir is not /var/lib/kubelet/plugins/csi.signet.dev")
	}

	// Agent and driver share the socket dir through the same hostPath.
	agent := dig(find(ms, "DaemonSet", "signet-agent"), "spec", "template", "spec")
	for _, p := range []any{pod, agent} {
		if dig(namedItem(dig(p, "volumes"), "agent-sockets"), "hostPath", "path") != DefaultSocketDir {
			t.Errorf("agent-sockets hostPath is not %s", DefaultSocketDir)
		}
	}

	ex := find(ms, "Pod", "signet-csi-example")
	vol := namedItem(dig(ex, "spec", "volumes"), "spiffe-workload-api")
	if dig(vol, "csi", "driver") != DefaultDriverName || dig(vol, "csi", "readOnly") != true {
		t.Errorf("example pod volume = %v, want csi.signet.dev readOnly", vol)
	}
	if args := strings.Join(toStrings(dig(ex, "spec", "containers", 0, "args")), " "); args != "agent api fetch x509 --socket /spiffe-workload-api/agent.sock" {
		t.Errorf("example pod args %q", args)
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
