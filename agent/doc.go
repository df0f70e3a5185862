// Package agent is the Signet node agent. Run wires its parts in the one
// direction data flows: the client attests to the server and keeps the
// agent's identity; the manager consumes the server's Sync push stream and
// has workload SVIDs signed; the cache holds them (persisted, so a restart
// during a server outage keeps serving) and pushes every change to the
// Workload API server, which serves attested workloads on a Unix socket;
// the health listener reports liveness, readiness and metrics.
package agent
