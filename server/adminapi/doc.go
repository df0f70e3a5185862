// Package adminapi serves the AdminService on the server's local Unix
// socket: registration entries, join tokens, the bundle, federated bundles,
// federation relationships and agents. Only root and the server's own uid
// may call it (checked with SO_PEERCRED); the socket itself is 0770. It
// also holds the client side the CLI uses.
package adminapi
