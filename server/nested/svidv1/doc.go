// Package svidv1 is the part of SPIRE's SVID service
// (spire.api.server.svid.v1) that nested servers use: NewDownstreamX509CA.
// Regenerate with `make proto`.
package svidv1
