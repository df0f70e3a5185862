// Package manager keeps the agent's SVID cache in step with the server: it
// consumes the server's Sync push stream, generates a fresh P-256 key for
// every entry that needs an SVID (new, changed, untrusted or tainted
// issuer, or past half its lifetime plus jitter), has the CSRs signed in
// batches, and puts the results in the cache. When the server is
// unreachable the cache keeps serving and the manager retries with capped
// exponential backoff.
package manager
