// Package gcpiit is the wire format of gcp_iit node attestation, shared by
// the agent (which asks the GCE metadata server for the instance identity
// token) and the server (which verifies it): a JWT Google signs (RS256)
// with the instance's project, zone, name and ID, for SPIRE's audience.
package gcpiit
