// Package api holds the protobuf contracts of the Signet server: the
// agent-facing AgentService (mutual TLS 1.3) and the local AdminService.
// The agent imports this package as a client; regenerate with `make proto`.
package api
