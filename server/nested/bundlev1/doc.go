// Package bundlev1 is the part of SPIRE's Bundle service
// (spire.api.server.bundle.v1) that nested servers use: GetBundle and
// PublishJWTAuthority. Regenerate with `make proto`.
package bundlev1
