// Package client is the agent's connection to the server: it bootstraps
// trust (a PEM trust bundle, or an explicit insecure bootstrap for labs),
// attests with a join token, keeps the agent X509-SVID and key in the data
// directory, renews them at half their lifetime (re-attesting with a fresh
// token when the server no longer knows the agent), tracks the server's
// bundle across CA rotations, and dials the server with mutual TLS 1.3,
// authorizing exactly spiffe://<trust domain>/signet/server.
package client
