// Package awsiid is the wire format of aws_iid node attestation, shared by
// the agent (which fetches the evidence from EC2's instance metadata
// service) and the server (which verifies it): the instance identity
// document EC2 gives the instance and AWS's RSA-2048 PKCS #7 signature of
// it, with SPIRE's field names.
package awsiid
