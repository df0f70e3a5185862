package api

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo details the agent
// API attaches to the refusals an agent acts on.
const ErrorDomain = "signet.api"

// ReasonAttestedWithAnotherKey: Attest with evidence trusted on first use
// (aws_iid, gcp_iit) for an agent ID recorded with another agent key.
// Metadata "agent_id" names the ID. An agent whose last SVID has that ID
// attests again with that SVID's key.
const ReasonAttestedWithAnotherKey = "ATTESTED_WITH_ANOTHER_KEY"

// AttestedWithAnotherKeyError is the PermissionDenied refusal msg for
// agentID, with its ErrorInfo.
func AttestedWithAnotherKeyError(msg, agentID string) error {
	st, err := status.New(codes.PermissionDenied, msg).WithDetails(&errdetails.ErrorInfo{
		Reason: ReasonAttestedWithAnotherKey, Domain: ErrorDomain, Metadata: map[string]string{"agent_id": agentID},
	})
	if err != nil {
		return status.Error(codes.PermissionDenied, msg)
	}
	return st.Err()
}

// AttestedWithAnotherKey returns the agent ID err names if it is an
// AttestedWithAnotherKeyError.
func AttestedWithAnotherKey(err error) (agentID string, ok bool) {
	st, _ := status.FromError(err)
	if st.Code() != codes.PermissionDenied {
		return "", false
	}
	for _, d := range st.Details() {
		if info, isInfo := d.(*errdetails.ErrorInfo); isInfo && info.Domain == ErrorDomain && info.Reason == ReasonAttestedWithAnotherKey {
			return info.Metadata["agent_id"], info.Metadata["agent_id"] != ""
		}
	}
	return "", false
}
