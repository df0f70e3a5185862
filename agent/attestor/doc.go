// Package attestor observes a workload process from the kernel's point of
// view and describes it as selectors. An Attestor takes the PID the kernel
// reported for a Workload API caller (SO_PEERCRED) and never trusts anything
// the caller says about itself. Unix reads /proc; Multi runs several
// attestors (unix, later Kubernetes) as one.
package attestor
