// Package certfile serves a TLS certificate from a PEM certificate file and
// key file that an operator or a tool (cert-manager, certbot, a Secret's
// atomic swap) replaces while the server runs: the pair is read again at
// the first handshake after either file changes, and a pair that cannot be
// loaded leaves the previous certificate in service.
package certfile
