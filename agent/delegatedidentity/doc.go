// Package delegatedidentity serves SPIRE's Delegated Identity API
// (spire.api.agent.delegatedidentity.v1, wire-compatible; the protobufs are
// in the v1 and types subpackages) on the agent's admin socket, so that
// trusted node-level components (Cilium's mutual authentication, Istio
// ambient's ztunnel, node proxies) obtain the SVIDs of other workloads on
// the node as they do from a SPIRE agent.
//
// Every caller is attested as a Workload API caller is (SO_PEERCRED and the
// agent's workload attestors) and is served only while one of the SPIFFE IDs
// the agent would give it is an authorized delegate; otherwise
// PermissionDenied. A delegate names the workload by selectors, or by a PID
// the agent attests with the same attestors. Streams send the current state
// at once and again on every change, as SPIRE's do: a workload with no
// identity gets an empty response, not an error, so a delegate can
// subscribe before the workload's entry exists.
package delegatedidentity
