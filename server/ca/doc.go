// Package ca is a trust domain's certificate authority and JWT key manager.
//
// A Manager holds the trust domain's X.509 root CA and JWT signing key (ES256
// by default, or another JWTKeyType), persists them under a data directory,
// rotates both in two slots (a next authority is published at half of the
// active one's life and used from one sixth of life left) and signs
// X509-SVIDs and JWT-SVIDs that meet the SPIFFE specs go-spiffe enforces.
//
// The package knows nothing about the store: the server publishes
// Authorities() (union across HA servers) and builds bundles from them with
// the helpers in bundle.go.
package ca
