// Package client is the agent's connection to the server: it bootstraps
// trust (a PEM trust bundle, or an explicit insecure bootstrap for labs),
// attests with its node attestor (join token, k8s_psat, x509pop), keeps the
// agent X509-SVID, its key and how it renews in the data directory, renews
// them at half their lifetime (in place for a join-token agent, which
// re-attests with a fresh token only when the server no longer knows it; by
// attesting again with fresh evidence for a reattestable one), tracks the
// server's bundle across CA rotations, and dials the server with mutual TLS
// 1.3, authorizing exactly spiffe://<trust domain>/signet/server.
package client
