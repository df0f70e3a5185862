// Package types holds the messages of SPIRE's spire.api.types package that
// nested servers exchange (bundles and their authorities), generated from a
// wire-compatible copy of SPIRE's protobuf. Regenerate with `make proto`.
package types
