package csidriver

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

const testRoot = "/var/lib/kubelet/pods"

func TestValidateTargetPath(t *testing.T) {
	for _, tc := range []struct {
		name, target, root, wantErr string
	}{
		{"kubelet path", testRoot + "/1f2e/volumes/kubernetes.io~csi/spiffe/mount", testRoot, ""},
		{"direct child", testRoot + "/x", testRoot, ""},
		{"root slash", "/x", "/", ""},
		{"empty", "", testRoot, "required"},
		{"relative", "pods/x/mount", testRoot, "not absolute"},
		{"dot relative", "./mount", testRoot, "not absolute"},
		{"traversal", testRoot + "/../../etc", testRoot, "not clean"},
		{"inner dotdot", testRoot + "/uid/../../../etc", testRoot, "not clean"},
		{"double slash", testRoot + "//uid/mount", testRoot, "not clean"},
		{"trailing slash", testRoot + "/uid/mount/", testRoot, "not clean"},
		{"dot segment", testRoot + "/./uid", testRoot, "not clean"},
		{"outside", "/etc/kubernetes", testRoot, "not under"},
		{"the root itself", testRoot, testRoot, "not under"},
		{"sibling prefix", testRoot + "-evil/uid/mount", testRoot, "not under"},
		{"parent of root", "/var/lib/kubelet", testRoot, "not under"},
		{"nul byte", testRoot + "/uid\x00/mount", testRoot, "NUL"},
		{"too long", testRoot + "/" + strings.Repeat("a", maxPathLen), testRoot, "long"},
		{"relative root", testRoot + "/x", "var/lib/kubelet/pods", "pods root"},
		{"unclean root", testRoot + "/x", testRoot + "/", "pods root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateTargetPath(tc.target, tc.root)
			checkErr(t, err, tc.wantErr)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}

// goodPublish is a request kubelet sends for a correct pod spec.
func goodPublish(target string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-0123456789abcdef",
		TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY},
		},
		Readonly: true,
		VolumeContext: map[string]string{
			ctxEphemeral:    "true",
			ctxPodUID:       "1f2e3d4c-0000-1111-2222-333344445555",
			ctxPodName:      "web",
			ctxPodNamespace: "default",
		},
	}
}

func TestValidatePublishRequest(t *testing.T) {
	target := testRoot + "/uid/volumes/kubernetes.io~csi/spiffe/mount"
	for _, tc := range []struct {
		name    string
		mutate  func(r *csi.NodePublishVolumeRequest)
		wantErr string
	}{
		{"good", func(*csi.NodePublishVolumeRequest) {}, ""},
		{"no volume id", func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }, "volume ID is required"},
		{"no target", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "" }, "target path is required"},
		{"traversal", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = testRoot + "/../../etc" }, "not clean"},
		{"no capability", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability = nil }, "capability is required"},
		{"no access type", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessType = nil }, "only the mount access type"},
		{"block", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, "volumeDevices"},
		{"fsType", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.GetMount().FsType = "ext4" }, "remove fsType"},
		{"mount flags", func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.GetMount().MountFlags = []string{"noexec"} }, "remove the mount options"},
		{"not ephemeral", func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, ctxEphemeral) }, "only ephemeral inline volumes"},
		{"ephemeral false", func(r *csi.NodePublishVolumeRequest) { r.VolumeContext[ctxEphemeral] = "false" }, "only ephemeral inline volumes"},
		{"read-write", func(r *csi.NodePublishVolumeRequest) { r.Readonly = false }, "set readOnly: true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := goodPublish(target)
			tc.mutate(r)
			checkErr(t, ValidatePublishRequest(r, testRoot), tc.wantErr)
		})
	}
}

func TestValidateUnpublishRequest(t *testing.T) {
	for _, tc := range []struct {
		name, id, target, wantErr string
	}{
		{"good", "v", testRoot + "/uid/volumes/kubernetes.io~csi/x/mount", ""},
		{"no id", "", testRoot + "/uid/mount", "volume ID"},
		{"no target", "v", "", "target path is required"},
		{"outside", "v", "/etc", "not under"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateUnpublishRequest(&csi.NodeUnpublishVolumeRequest{VolumeId: tc.id, TargetPath: tc.target}, testRoot)
			checkErr(t, err, tc.wantErr)
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tc := range []struct{ in, want, wantErr string }{
		{"unix:///csi/csi.sock", "/csi/csi.sock", ""},
		{"unix:/csi/csi.sock", "/csi/csi.sock", ""},
		{"/csi/csi.sock", "/csi/csi.sock", ""},
		{"unix://relative.sock", "", "ABSOLUTE"},
		{"tcp://127.0.0.1:10000", "", "only unix"},
		{"", "", "ABSOLUTE"},
	} {
		got, err := ParseEndpoint(tc.in)
		checkErr(t, err, tc.wantErr)
		if got != tc.want {
			t.Errorf("ParseEndpoint(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidateDriverName(t *testing.T) {
	for name, ok := range map[string]bool{
		"csi.signet.dev":        true,
		"a":                     true,
		"":                      false,
		"-csi":                  false,
		"csi.":                  false,
		"csi/signet":            false,
		strings.Repeat("a", 63): true,
		strings.Repeat("a", 64): false,
	} {
		if err := ValidateDriverName(name); (err == nil) != ok {
			t.Errorf("ValidateDriverName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestResolveNodeID(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "MY_NODE_NAME" {
				return v
			}
			return ""
		}
	}
	if got := ResolveNodeID("flag", env("env")); got != "flag" {
		t.Errorf("flag should win, got %q", got)
	}
	if got := ResolveNodeID("", env("env")); got != "env" {
		t.Errorf("env fallback: got %q", got)
	}
	if got := ResolveNodeID("", env("")); got != "" {
		t.Errorf("nothing set: got %q", got)
	}
}

func TestPodUIDFromTarget(t *testing.T) {
	if got := podUIDFromTarget(testRoot+"/abc-123/volumes/kubernetes.io~csi/x/mount", testRoot); got != "abc-123" {
		t.Errorf("got %q", got)
	}
	if got := podUIDFromTarget("/elsewhere/x", testRoot); got != "" {
		t.Errorf("got %q for a path outside the root", got)
	}
}

// FuzzValidateTargetPath checks that every accepted target is absolute,
// clean and strictly inside the pods root, whatever the input.
func FuzzValidateTargetPath(f *testing.F) {
	for _, s := range []string{
		testRoot + "/uid/volumes/kubernetes.io~csi/x/mount", testRoot + "/../../etc", "relative",
		testRoot, testRoot + "/", testRoot + "-x/y", "/", "", testRoot + "/a/./b", testRoot + "//a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if ValidateTargetPath(target, testRoot) != nil {
			return
		}
		if !filepath.IsAbs(target) || filepath.Clean(target) != target {
			t.Fatalf("accepted unclean or relative %q", target)
		}
		rel, err := filepath.Rel(testRoot, target)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("accepted %q outside %s (rel %q, %v)", target, testRoot, rel, err)
		}
		for _, seg := range strings.Split(rel, "/") {
			if seg == ".." || seg == "." || seg == "" {
				t.Fatalf("accepted %q with segment %q", target, seg)
			}
		}
		if strings.IndexByte(target, 0) >= 0 {
			t.Fatalf("accepted %q with NUL", target)
		}
	})
}
