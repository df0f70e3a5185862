// Package csidriver is Signet's CSI node plugin: it puts the agent's Workload
// API socket directory into pods as a read-only ephemeral inline volume, so
// workloads reach the SPIFFE Workload API without a hostPath volume.
//
// The layout follows kubernetes-csi/csi-driver-host-path: identity.go and
// node.go are thin gRPC adapters over plain methods of Driver (Publish,
// Unpublish, Ready), validate.go holds the request checks as plain functions,
// driver.go wires the gRPC server on a unix endpoint, health.go serves
// /healthz, and run.go is the data flow behind `signet csi`.
//
// A publish bind-mounts the socket DIRECTORY (never the socket file) onto the
// target and remounts it read-only, so a socket the agent re-creates after a
// restart shows up in every running pod. Publishing is idempotent by checking
// the mount table before mounting, which is what keeps kubelet restarts from
// stacking mounts; unpublishing treats "not mounted" and "already gone" as done.
package csidriver
