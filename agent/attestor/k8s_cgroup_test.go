package attestor

import (
	"cmp"
	"regexp"
	"strings"
	"testing"
)

const (
	tUID  = "a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80"
	tUID_ = "a2830d0d_b0f0_4ff0_81b5_0ee4e299cf80" // as the systemd driver writes it
	tUID2 = "0b5e3bb2-3a04-4c4f-9e8c-4d4a2d5ac1f7"
	tCID  = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6"
	tCID2 = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26"
	// A static pod's UID: the kubelet's MD5 of its manifest.
	tStatic = "4b2c38a1c2b6f5d8e8f0a1b2c3d4e5f6"
)

// cgroupCases are /proc/PID/cgroup files as kubelets, runtimes and hosts
// write them; they seed the fuzzer too.
var cgroupCases = []struct {
	name    string
	in      string
	root    string // the kubelet's cgroup root; "" means "/"
	want    podContainer
	wantErr string
}{
	{
		name: "cgroup v1, cgroupfs, besteffort, in kind (the node is a docker container)",
		root: "/docker/" + tCID2,
		in: "12:pids:/docker/" + tCID2 + "/kubepods/besteffort/pod" + tUID + "/" + tCID + "\n" +
			"11:memory:/docker/" + tCID2 + "/kubepods/besteffort/pod" + tUID + "/" + tCID + "\n" +
			"1:name=systemd:/docker/" + tCID2 + "/kubepods/besteffort/pod" + tUID + "/" + tCID + "\n" +
			"0::/docker/" + tCID2 + "/system.slice/containerd.service\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "cgroupfs, guaranteed (no QoS level)",
		in:   "3:cpu,cpuacct:/kubepods/pod" + tUID + "/" + tCID + "\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "cgroupfs, CRI-O",
		in:   "0::/kubepods/burstable/pod" + tUID + "/crio-" + tCID + "\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "cgroup v2, systemd, containerd, burstable",
		in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "cgroup v1, systemd, CRI-O, hybrid host",
		in: "12:hugetlb:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + tUID_ + ".slice/crio-" + tCID + ".scope\n" +
			"3:rdma:/\n" +
			"1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + tUID_ + ".slice/crio-" + tCID + ".scope\n" +
			"0::/system.slice/crio.service\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "systemd, docker, guaranteed",
		in:   "0::/kubepods.slice/kubepods-pod" + tUID_ + ".slice/docker-" + tCID + ".scope\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "kind on cgroup v2 (cgroup root /kubelet)",
		root: "/kubelet.slice",
		in:   "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "static pod, cgroupfs",
		in:   "0::/kubepods/burstable/pod" + tStatic + "/" + tCID + "\n",
		want: podContainer{tStatic, tCID},
	},
	{
		name: "static pod, systemd",
		in:   "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + tStatic + ".slice/cri-containerd-" + tCID + ".scope\n",
		want: podContainer{tStatic, tCID},
	},
	{
		name: "agent in a cgroup namespace, systemd: the root is hidden",
		in:   "0::/../../kubepods-besteffort-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "agent in a cgroup namespace, systemd, from the QoS level",
		in:   "0::/../../../kubepods-besteffort.slice/kubepods-besteffort-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "agent in a cgroup namespace, cgroupfs, same QoS class",
		in:   "0::/../../pod" + tUID + "/" + tCID + "\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "agent in a cgroup namespace, cgroupfs, another QoS class",
		in:   "0::/../../../besteffort/pod" + tUID + "/" + tCID + "\n",
		want: podContainer{tUID, tCID},
	},
	{
		name: "cgroups a container made below its own do not change its pod",
		in:   "0::/kubepods/besteffort/pod" + tUID + "/" + tCID + "/kubepods/besteffort/pod" + tUID2 + "/" + tCID2 + "\n",
		want: podContainer{tUID, tCID},
	},
	{name: "host process, hybrid", in: "9:name=systemd:/\n8:pids:/\n4:memory:/user.slice\n0::/user.slice/user-1000.slice/session-1.scope\n"},
	{name: "root cgroup", in: "0::/\n"},
	{name: "empty file", in: ""},
	{name: "docker container outside Kubernetes", in: "0::/system.slice/docker-" + tCID + ".scope\n"},
	{name: "the kubepods root itself", in: "0::/kubepods.slice\n"},
	{name: "a QoS cgroup", in: "0::/kubepods/besteffort\n"},
	{name: "not a pod under the root", in: "0::/kubepods/burstable/notapod/" + tCID + "\n"},
	{name: "pod-like names without a kubepods root", in: "0::/pod" + tUID + "/" + tCID + "\n"},
	{name: "systemd pod slice that does not extend its parent", in: "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n"},
	{name: "systemd pod slice with dashes in the UID", in: "0::/kubepods.slice/kubepods-pod" + tUID + ".slice/cri-containerd-" + tCID + ".scope\n"},
	{name: "drivers mixed", in: "0::/kubepods/besteffort/kubepods-besteffort-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n"},
	{name: "upper-case UID", in: "0::/kubepods/pod" + strings.ToUpper(tUID) + "/" + tCID + "\n"},
	{name: "a sibling container of the agent's cgroup namespace (pod hidden)", in: "0::/../crio-" + tCID + ".scope\n"},
	{name: "relative path to a user's cgroup", in: "0::/../../../user.slice/user-1000.slice/user@1000.service/kubepods/pod" + tUID + "/" + tCID + "\n"},
	{
		name:    "two pods",
		in:      "1:pids:/kubepods/pod" + tUID + "/" + tCID + "\n0::/kubepods/pod" + tUID2 + "/" + tCID + "\n",
		wantErr: "ambiguous cgroups",
	},
	{
		name:    "two containers",
		in:      "1:pids:/kubepods/pod" + tUID + "/" + tCID + "\n0::/kubepods.slice/kubepods-pod" + tUID_ + ".slice/cri-containerd-" + tCID2 + ".scope\n",
		wantErr: "ambiguous cgroups",
	},
	{
		name:    "the pod's own cgroup",
		in:      "0::/kubepods/besteffort/pod" + tUID + "\n",
		wantErr: "pod " + tUID + "'s own",
	},
	{
		name:    "in a pod but no container (CRI-O's conmon)",
		in:      "0::/kubepods.slice/kubepods-pod" + tUID_ + ".slice/crio-conmon-" + tCID + ".scope\n",
		wantErr: "names no container",
	},
	{
		name:    "short container ID",
		in:      "0::/kubepods/pod" + tUID + "/" + tCID[:12] + "\n",
		wantErr: "names no container",
	},
	{
		name:    "a pod-like tree in a user's delegated cgroups",
		in:      "0::/user.slice/user-1000.slice/user@1000.service/app.slice/kubepods/besteffort/pod" + tUID + "/" + tCID + "\n",
		wantErr: "delegated",
	},
	{name: "a pod-shaped tree in a delegated service's cgroups", in: "0::/system.slice/app.service/kubepods/besteffort/pod" + tUID + "/" + tCID + "\n"},
	{name: "a pod-shaped tree in a docker container's cgroups", in: "0::/system.slice/docker-" + tCID2 + ".scope/kubepods.slice/kubepods-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n"},
	{name: "kind's layout where the kubelet's root is the top", in: "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n"},
	{name: "the top layout where the kubelet's root is elsewhere", root: "/kubelet.slice", in: "0::/kubepods.slice/kubepods-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n"},
	{name: "malformed line", in: "0::/\ngarbage\n", wantErr: "malformed cgroup line"},
	{name: "path not absolute", in: "0::kubepods/pod" + tUID + "/" + tCID + "\n", wantErr: "malformed cgroup line"},
}

func TestParseCgroup(t *testing.T) {
	for _, tc := range cgroupCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCgroup([]byte(tc.in), cmp.Or(tc.root, "/"))
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseCgroup = %+v, %v; want an error containing %q", got, err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("parseCgroup: %v", err)
			case got != tc.want:
				t.Fatalf("parseCgroup = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCgroupRoot(t *testing.T) {
	for _, tc := range []struct {
		in        string
		root      string
		wantInPod bool
	}{
		{"0::/kubepods.slice/kubepods-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n", "/", true},
		{"12:pids:/docker/" + tCID2 + "/kubepods/besteffort/pod" + tUID + "/" + tCID + "\n", "/docker/" + tCID2, true},
		{"0::/\n", "", false},
		// Seen from another cgroup namespace, the path climbs above the
		// reader's root: no prefix can be judged from it.
		{"0::/../../kubepods.slice/kubepods-pod" + tUID_ + ".slice/cri-containerd-" + tCID + ".scope\n", "", false},
		{"0::/system.slice/signet-agent.service\n", "", false},
	} {
		root, inPod := cgroupRoot([]byte(tc.in))
		if root != tc.root || inPod != tc.wantInPod {
			t.Errorf("cgroupRoot(%q) = %q, %v; want %q, %v", tc.in, root, inPod, tc.root, tc.wantInPod)
		}
	}
}

var hex64RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func FuzzParseCgroup(f *testing.F) {
	for _, tc := range cgroupCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := parseCgroup(in, "/")
		if err != nil || got == (podContainer{}) {
			return
		}
		if !podUIDRE.MatchString(got.podUID) || !hex64RE.MatchString(got.containerID) {
			t.Fatalf("parseCgroup(%q) = %+v: not a pod UID and container ID", in, got)
		}
		// A line outside any pod changes nothing; a line naming the same
		// container agrees; one naming another container conflicts.
		same := "0::/kubepods/pod" + got.podUID + "/" + got.containerID
		other := "0::/kubepods/pod" + got.podUID + "/" + strings.Repeat("f", 64)
		if got.containerID == strings.Repeat("f", 64) {
			other = "0::/kubepods/pod" + got.podUID + "/" + strings.Repeat("e", 64)
		}
		for _, extra := range []string{"0::/", same} {
			if again, err := parseCgroup(append([]byte(extra+"\n"), in...), "/"); err != nil || again != got {
				t.Fatalf("with %q first: parseCgroup = %+v, %v; want %+v", extra, again, err, got)
			}
		}
		if _, err := parseCgroup(append([]byte(other+"\n"), in...), "/"); err == nil {
			t.Fatalf("parseCgroup(%q) = %+v, yet a line naming another container did not conflict", in, got)
		}
	})
}
