// Package types holds the protobuf messages of SPIRE's spire.api.types
// package that the Delegated Identity API carries (Selector, SPIFFEID,
// X509SVID, JWTSVID), wire-compatible with spiffe/spire-api-sdk. Regenerate
// with `make proto`.
package types
