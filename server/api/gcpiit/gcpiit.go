package gcpiit

import (
	"net/url"

	"github.com/go-jose/go-jose/v4/jwt"
)

// Type is the attestation type (and node selector type) of gcp_iit.
const Type = "gcp_iit"

// Audience is the aud the agent asks for and the server requires (SPIRE's,
// so a token means the same to either).
const Audience = "spire-gcp-node-attestor"

// Metadata server facts: the header every request carries (and every
// answer), and where the identity token of a service account is.
const (
	MetadataFlavorHeader = "Metadata-Flavor"
	MetadataFlavor       = "Google"
	// DefaultHost is the metadata server (SPIRE's identity_token_host).
	DefaultHost = "metadata.google.internal"
	// DefaultServiceAccount is the instance's default service account.
	DefaultServiceAccount = "default"
)

// IdentityPath is the path of the identity token of serviceAccount.
func IdentityPath(serviceAccount string) string {
	return "/computeMetadata/v1/instance/service-accounts/" + url.PathEscape(serviceAccount) + "/identity"
}

// Query asks for a token for Audience with the Compute Engine claims
// (format=full).
func Query() url.Values {
	return url.Values{"audience": {Audience}, "format": {"full"}}
}

// Claims are the token's claims Signet reads.
type Claims struct {
	jwt.Claims
	AuthorizedParty string `json:"azp,omitempty"`
	Email           string `json:"email,omitempty"`
	Google          Google `json:"google"`
}

// Google holds the Compute Engine claims (format=full only).
type Google struct {
	ComputeEngine ComputeEngine `json:"compute_engine"`
}

// ComputeEngine names the instance.
type ComputeEngine struct {
	ProjectID                 string `json:"project_id"`
	ProjectNumber             int64  `json:"project_number"`
	Zone                      string `json:"zone"`
	InstanceID                string `json:"instance_id"`
	InstanceName              string `json:"instance_name"`
	InstanceCreationTimestamp int64  `json:"instance_creation_timestamp"`
}
