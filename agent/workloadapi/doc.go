// Package workloadapi serves the SPIFFE Workload API (go-spiffe's
// proto/spiffe/workload service) on a Unix socket, from the agent's
// cache.Provider.
//
// Every call must carry the `workload.spiffe.io: true` metadata
// (InvalidArgument otherwise). The caller is identified from the kernel, never
// from the request: the socket's SO_PEERCRED gives its PID, the workload
// attestor turns that into selectors, and the Provider decides which SVIDs
// those selectors may have. A caller with no identity gets PermissionDenied,
// which go-spiffe clients retry; streams send the current state at once and
// the complete state again on every change, and end only when the client
// leaves, with an error status, or when the server shuts down (Unavailable).
//
// The same socket serves Envoy's Secret Discovery Service (SDS v3), with the
// same attestation and cache, as SPIRE's agent does: an SVID is the secret
// named by its SPIFFE ID (or "default" for the caller's first), a bundle the
// one named by its trust domain ID (or "ROOTCA" for the own one, "ALL" for
// all of them in one SPIFFE validator config). The names are SDSOptions.
package workloadapi
