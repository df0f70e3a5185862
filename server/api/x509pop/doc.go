// Package x509pop is the wire format of x509pop node attestation, shared by
// the agent (which signs) and the server (which verifies): an agent proves
// it holds the private key of a machine certificate an existing PKI gave
// its host, in one Attest call, by signing the agent key the server is
// asked to certify.
package x509pop
