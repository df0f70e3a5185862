// Package ids validates SPIFFE IDs and trust domain names the way every
// Signet entry point must: go-spiffe's spiffeid parser plus the length limits
// of the SPIFFE spec (2048 bytes for an ID, 255 for a trust domain).
package ids
