// Package sshpop is the wire format of sshpop node attestation, shared by
// the agent (which signs) and the server (which verifies): an agent proves
// it holds the private key of the OpenSSH host certificate an SSH CA gave
// its host, in one Attest call, by signing with the host key the agent key
// the server is asked to certify.
package sshpop
