package csidriver

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// Volume context keys kubelet sets on ephemeral inline volumes (the pod.*
// and serviceAccount keys only when the CSIDriver object has podInfoOnMount).
const (
	ctxEphemeral      = "csi.storage.k8s.io/ephemeral"
	ctxPodUID         = "csi.storage.k8s.io/pod.uid"
	ctxPodName        = "csi.storage.k8s.io/pod.name"
	ctxPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	ctxServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
)

// maxPathLen is Linux's PATH_MAX; longer targets cannot be mounted anyway.
const maxPathLen = 4096

// driverNameRE is the CSI spec's plugin name rule: at most 63 characters,
// starting and ending with an alphanumeric, with '-', '_' and '.' between.
var driverNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$`)

// ValidateDriverName reports whether name is a valid CSI plugin name.
func ValidateDriverName(name string) error {
	if !driverNameRE.MatchString(name) {
		return fmt.Errorf("driver name %q: want at most 63 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit", name)
	}
	return nil
}

// ValidatePodsRoot reports whether root can serve as the kubelet pods root.
func ValidatePodsRoot(root string) error {
	if root == "" || !filepath.IsAbs(root) || filepath.Clean(root) != root {
		return fmt.Errorf("kubelet pods root %q: want an absolute, clean path such as /var/lib/kubelet/pods", root)
	}
	return nil
}

// ValidateTargetPath checks that target is absolute, clean (no "..", "//" or
// trailing "/") and strictly below podsRoot, which must itself be absolute
// and clean. It looks at the string only; symlinks are checked at publish.
func ValidateTargetPath(target, podsRoot string) error {
	// Kubelet picks the target path itself, so the hint is about kubelet's
	// root dir, not the pod spec.
	hint := fmt.Sprintf("kubelet passes a path under its pods dir; if kubelet runs with another --root-dir, start the driver with a matching --kubelet-pods-root (now %s)", podsRoot)
	switch {
	case target == "":
		return errors.New("target path is required")
	case len(target) > maxPathLen:
		return fmt.Errorf("target path is %d bytes long, more than %d", len(target), maxPathLen)
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("target path contains a NUL byte")
	case !filepath.IsAbs(target):
		return fmt.Errorf("target path %q is not absolute: %s", target, hint)
	case filepath.Clean(target) != target:
		return fmt.Errorf("target path %q is not clean (it has \"..\", \".\", \"//\" or a trailing \"/\"): %s", target, hint)
	}
	if err := ValidatePodsRoot(podsRoot); err != nil {
		return err
	}
	prefix := podsRoot + "/"
	if podsRoot == "/" {
		prefix = "/"
	}
	if !strings.HasPrefix(target, prefix) || len(target) == len(prefix) {
		return fmt.Errorf("target path %q is not under the kubelet pods root %s: %s", target, podsRoot, hint)
	}
	return nil
}

// ValidatePublishRequest checks a NodePublishVolume request against what
// Signet serves: a read-only, ephemeral inline volume with mount access and
// no fsType or mount flags, at a target under podsRoot. Each error says what
// to change in the pod spec.
func ValidatePublishRequest(req *csi.NodePublishVolumeRequest, podsRoot string) error {
	if req.GetVolumeId() == "" {
		return errors.New("volume ID is required")
	}
	if err := ValidateTargetPath(req.GetTargetPath(), podsRoot); err != nil {
		return err
	}
	vc := req.GetVolumeCapability()
	if vc == nil {
		return errors.New("volume capability is required")
	}
	if vc.GetBlock() != nil {
		return errors.New("block access is not supported: mount the volume with volumeMounts, not volumeDevices")
	}
	m := vc.GetMount()
	if m == nil {
		return errors.New("only the mount access type is supported: mount the volume with volumeMounts")
	}
	if m.GetFsType() != "" {
		return fmt.Errorf("fsType %q is not supported: remove fsType from the pod's csi volume source", m.GetFsType())
	}
	if len(m.GetMountFlags()) > 0 {
		return fmt.Errorf("mount flags %q are not supported: remove the mount options", m.GetMountFlags())
	}
	if req.GetVolumeContext()[ctxEphemeral] != "true" {
		return errors.New("only ephemeral inline volumes are supported: declare the volume in the pod spec " +
			"(volumes: [{name: spiffe-workload-api, csi: {driver: csi.signet.dev, readOnly: true}}]), " +
			"not as a PersistentVolume, and keep volumeLifecycleModes [Ephemeral] on the CSIDriver object")
	}
	if !req.GetReadonly() {
		return errors.New("the volume must be read-only: set readOnly: true in the pod's csi volume source")
	}
	return nil
}

// ValidateUnpublishRequest checks a NodeUnpublishVolume request; the target
// must be under podsRoot so the driver never unmounts anything else.
func ValidateUnpublishRequest(req *csi.NodeUnpublishVolumeRequest, podsRoot string) error {
	if req.GetVolumeId() == "" {
		return errors.New("volume ID is required")
	}
	return ValidateTargetPath(req.GetTargetPath(), podsRoot)
}

// ParseEndpoint turns unix:///path (or a bare absolute path) into the
// socket path; other schemes are refused, the driver only listens locally.
func ParseEndpoint(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if rest, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		p = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q: only unix:///ABSOLUTE/PATH is supported", endpoint)
	}
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("endpoint %q: want unix:///ABSOLUTE/PATH", endpoint)
	}
	return filepath.Clean(p), nil
}

// podUIDFromTarget extracts <uid> from <podsRoot>/<uid>/volumes/..., for
// logging unpublish calls, which carry no volume context.
func podUIDFromTarget(target, podsRoot string) string {
	rest, ok := strings.CutPrefix(target, strings.TrimSuffix(podsRoot, "/")+"/")
	if !ok {
		return ""
	}
	uid, _, _ := strings.Cut(rest, "/")
	return uid
}
