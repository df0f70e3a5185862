// Package nested joins Signet servers into one trust domain, as SPIRE's
// nested topology does: an upstream server signs the intermediate CAs of
// downstream servers (each with its own store and agents, in another
// cluster or region), so every SVID of the trust domain chains to the same
// roots and every JWT key is in every server's bundle.
//
// Service is the upstream's side, served on the agent API port with
// SPIRE's server API messages (NewDownstreamX509CA, GetBundle,
// PublishJWTAuthority) to callers holding the X509-SVID of a downstream
// entry. Upstream is the downstream's side: a ca.UpstreamAuthority that
// gets its SVID from the local agent's Workload API, has the upstream sign
// its CAs, follows the upstream's bundle, and publishes its JWT keys there.
package nested
