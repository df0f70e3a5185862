// Package attestor observes a workload process from the kernel's point of
// view and describes it as selectors. An Attestor takes the PID the kernel
// reported for a Workload API caller (SO_PEERCRED) and never trusts anything
// the caller says about itself. Unix reads /proc; K8s reads the pod and
// container from the process's cgroups and asks the node's kubelet about
// them; Systemd reads the systemd unit from the process's cgroup; Multi runs
// several attestors as one.
package attestor
