// Package adminapi serves the AdminService on the server's local Unix
// socket: registration entries, join tokens, the bundle, federated bundles,
// federation relationships and agents. Only root and the server's own uid
// may call it (checked with SO_PEERCRED); the socket itself is 0770. The
// standard gRPC health service on the same socket answers anyone who can
// open it (`signet server healthcheck`). With the audit log on, every
// admin call, refused ones included, gets an audit record. It also holds
// the client side the CLI uses.
package adminapi
