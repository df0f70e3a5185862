// Package delegatedidentityv1 is SPIRE's Delegated Identity API
// (spire.api.agent.delegatedidentity.v1), generated from a wire-compatible
// copy of its protobuf: the same package, service, RPC, message and field
// names and numbers, so SPIRE's clients talk to a Signet agent unchanged.
// Regenerate with `make proto`.
package delegatedidentityv1
