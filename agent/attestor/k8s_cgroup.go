package attestor

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// podContainer is what a process's cgroups say about it: the UID of its pod
// and the ID of its container (the runtime's, 64 hex digits). Both are empty
// for a process that is in no pod.
type podContainer struct {
	podUID      string
	containerID string
}

var (
	// Pod UIDs are UUIDs; static pods have an MD5 hex digest instead.
	podUIDRE = regexp.MustCompile(`^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$`)
	// A container's cgroup: "<id>" (cgroupfs driver), "crio-<id>" (CRI-O
	// with cgroupfs), "<runtime>-<id>.scope" (systemd driver).
	containerRE = regexp.MustCompile(`^(?:(?:cri-containerd|crio|docker)-)?([0-9a-f]{64})(?:\.scope)?$`)
	// A systemd user manager (user@1000.service): below it, an unprivileged
	// user may create and name cgroups.
	userManagerRE = regexp.MustCompile(`^user@[0-9]+\.service$`)
)

// parseCgroup reads the pod UID and container ID from the contents of
// /proc/PID/cgroup (cgroup v1 and v2 lines, cgroupfs and systemd drivers).
// root is where the kubelet's pod hierarchy lies ("" for the top, else a
// path like "/docker/<id>"): an absolute path whose kubepods root lies
// anywhere else is not a pod's, whatever its names, since whoever owns a
// delegated cgroup tree (a systemd unit with Delegate=yes, a container with
// writable cgroupfs) can build a pod-shaped path in it. Lines outside the
// kubelet's pods (a v2 line of a hybrid host, a v1 hierarchy the runtime
// does not use) are ignored; lines that name different pods or containers
// are an error, never a choice.
func parseCgroup(data []byte, root string) (podContainer, error) {
	var found podContainer
	var foundIn string
	for line, err := range cgroupLines(data) {
		if err != nil {
			return podContainer{}, err
		}
		path := line.path
		pc, err := parseCgroupPath(path, root)
		if err != nil {
			return podContainer{}, err
		}
		switch {
		case pc == podContainer{}:
		case found == podContainer{}:
			found, foundIn = pc, path
		case pc != found:
			return podContainer{}, fmt.Errorf("ambiguous cgroups: %q is pod %s container %s, but %q is pod %s container %s",
				foundIn, found.podUID, found.containerID, path, pc.podUID, pc.containerID)
		}
	}
	return found, nil
}

// parseCgroupPath reads one cgroup path. It looks for the kubelet's pod
// hierarchy, a root, an optional QoS class, the pod, the container:
//
//	cgroupfs: /kubepods/burstable/pod<uid>/<id>
//	systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope
//
// The root may sit under a prefix (the kubelet's --cgroup-root, a node that
// is itself a container: /docker/<id>/kubepods/..., kind's
// /kubelet.slice/kubelet-kubepods.slice/...). Only the outermost pod counts:
// a container that may create cgroups can only create them below its own,
// so nothing it names can change which pod and container it is in.
//
// A path that starts with ".." is relative to the agent's cgroup namespace
// (an agent in a pod on cgroup v2): the kubelet's root and QoS levels may lie
// above the namespace and so be hidden, and the walk starts wherever the
// path does.
func parseCgroupPath(path, root string) (podContainer, error) {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	relative := false
	for len(segs) > 0 && segs[0] == ".." {
		segs, relative = segs[1:], true
	}
	if !relative {
		i := slices.IndexFunc(segs, func(s string) bool { _, _, ok := kubepodsRoot(s); return ok })
		if i < 0 {
			return podContainer{}, nil
		}
		if slices.ContainsFunc(segs[:i], userManagerRE.MatchString) {
			return podContainer{}, fmt.Errorf("cgroup %q looks like a pod's but lies in a user's delegated cgroup tree, where an unprivileged user chooses the names", path)
		}
		if strings.Join(segs[:i], "/") != strings.Trim(root, "/") {
			// Not under the kubelet's root: someone else's pod-shaped tree.
			return podContainer{}, nil
		}
		segs = segs[i:]
	}

	// The walk tracks the driver (known once a level reveals it) and, for
	// systemd, the parent slice's name: a child slice's name extends it
	// ("kubepods-burstable" -> "kubepods-burstable-pod<uid>"), so a slice
	// name carries its ancestry. An empty parent is one a cgroup namespace
	// hid.
	var (
		driverKnown, systemd bool
		parent               string
	)
	next := func() (string, bool) {
		if len(segs) == 0 {
			return "", false
		}
		s := segs[0]
		segs = segs[1:]
		return s, true
	}
	seg, ok := next()
	if !ok {
		return podContainer{}, nil
	}
	if p, sd, ok := kubepodsRoot(seg); ok {
		driverKnown, systemd, parent = true, sd, p
		if seg, ok = next(); !ok {
			return podContainer{}, nil
		}
	}
	if p, sd, ok := qosClass(seg, parent); ok && (!driverKnown || sd == systemd) {
		driverKnown, systemd, parent = true, sd, p
		if seg, ok = next(); !ok {
			return podContainer{}, nil
		}
	}
	uid, sd, ok := podSegment(seg, parent)
	if !ok || (driverKnown && sd != systemd) {
		// Under the root but in no pod: the root or a QoS cgroup itself,
		// or something else the kubelet made.
		return podContainer{}, nil
	}
	seg, ok = next()
	if !ok {
		return podContainer{}, fmt.Errorf("cgroup %q is pod %s's own, not one of its containers'", path, uid)
	}
	m := containerRE.FindStringSubmatch(seg)
	if m == nil {
		return podContainer{}, fmt.Errorf("cgroup %q is in pod %s, but %q names no container", path, uid, seg)
	}
	return podContainer{podUID: uid, containerID: m[1]}, nil
}

// kubepodsRoot reports whether seg is the kubelet's pods root: "kubepods"
// (cgroupfs) or "kubepods.slice", "<prefix>-kubepods.slice" (systemd), and
// the name its children extend.
func kubepodsRoot(seg string) (parent string, systemd, ok bool) {
	switch {
	case seg == "kubepods":
		return "", false, true
	case seg == "kubepods.slice" || strings.HasSuffix(seg, "-kubepods.slice"):
		return strings.TrimSuffix(seg, ".slice"), true, true
	}
	return "", false, false
}

// qosClass reports whether seg is a QoS class cgroup (Guaranteed pods have
// none) below parent.
func qosClass(seg, parent string) (name string, systemd, ok bool) {
	if seg == "besteffort" || seg == "burstable" {
		return "", false, true
	}
	name, isSlice := strings.CutSuffix(seg, ".slice")
	if !isSlice {
		return "", false, false
	}
	for _, class := range []string{"-besteffort", "-burstable"} {
		if extends(name, parent, class) {
			return name, true, true
		}
	}
	return "", false, false
}

// cgroupRoot returns where the kubelet's pod hierarchy lies, judged from
// the cgroups of a process known to be in a pod (the agent itself, in its
// DaemonSet): "" when its path starts at a kubepods root or is relative (a
// cgroup namespace), else the prefix above that root ("/docker/<id>" on a
// node that is itself a container). ok is false when the process is in no
// pod.
func cgroupRoot(data []byte) (root string, ok bool) {
	for line, err := range cgroupLines(data) {
		if err != nil || strings.HasPrefix(line.path, "/..") {
			continue
		}
		segs := strings.Split(strings.TrimPrefix(line.path, "/"), "/")
		if i := slices.IndexFunc(segs, func(s string) bool { _, _, ok := kubepodsRoot(s); return ok }); i >= 0 {
			return "/" + strings.Join(segs[:i], "/"), true
		}
	}
	return "", false
}

// podSegment reports whether seg is a pod's cgroup below parent:
// "pod<uid>" (cgroupfs) or "<parent>-pod<uid with _ for ->.slice" (systemd),
// and returns the UID.
func podSegment(seg, parent string) (uid string, systemd, ok bool) {
	if rest, ok := strings.CutPrefix(seg, "pod"); ok && podUIDRE.MatchString(rest) {
		return rest, false, true
	}
	name, isSlice := strings.CutSuffix(seg, ".slice")
	if !isSlice {
		return "", false, false
	}
	i := strings.LastIndex(name, "-pod")
	if i < 0 || !extends(name[:i+len("-pod")], parent, "-pod") {
		return "", false, false
	}
	// systemd reserves "-" for nesting: the kubelet writes the UID's
	// dashes as underscores.
	escaped := name[i+len("-pod"):]
	uid = strings.ReplaceAll(escaped, "_", "-")
	if strings.Contains(escaped, "-") || !podUIDRE.MatchString(uid) {
		return "", false, false
	}
	return uid, true, true
}

// extends reports whether the systemd slice name is parent+suffix, or,
// where a cgroup namespace hid the parent, some kubepods slice's name +
// suffix.
func extends(name, parent, suffix string) bool {
	if parent != "" {
		return name == parent+suffix
	}
	base, ok := strings.CutSuffix(name, suffix)
	if !ok {
		return false
	}
	if suffix == "-pod" {
		// The pod's parent is the root or a QoS class.
		for _, class := range []string{"-besteffort", "-burstable"} {
			if b, ok := strings.CutSuffix(base, class); ok {
				base = b
				break
			}
		}
	}
	return base == "kubepods" || strings.HasSuffix(base, "-kubepods")
}
