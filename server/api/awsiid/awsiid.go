package awsiid

// Type is the attestation type (and node selector type) of aws_iid.
const Type = "aws_iid"

// Paths of the instance metadata service (IMDS) the agent reads, below its
// endpoint (http://169.254.169.254/ on EC2).
const (
	// TokenPath is IMDSv2's session token: a PUT with TokenTTLHeader
	// answers a token the GETs present in TokenHeader.
	TokenPath      = "latest/api/token"
	TokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	TokenHeader    = "X-aws-ec2-metadata-token"
	// DocumentPath is the instance identity document (JSON).
	DocumentPath = "latest/dynamic/instance-identity/document"
	// RSA2048Path is AWS's PKCS #7 signature of the document with its
	// region's RSA-2048 key: base64 DER without PEM armour, the document
	// attached.
	RSA2048Path = "latest/dynamic/instance-identity/rsa2048"
)

// Payload is what the agent sends, with SPIRE's JSON names. Signature (the
// bare RSA-1024 signature SPIRE's agents also send, for old servers) is
// never verified: a payload is checked by its RSA2048 signature alone.
type Payload struct {
	Document  string `json:"document"`
	Signature string `json:"signature,omitempty"`
	RSA2048   string `json:"rsa2048"`
}

// Document is the part of the instance identity document Signet reads (EC2
// sends more: instanceType, privateIp, pendingTime, architecture, ...).
type Document struct {
	AccountID        string `json:"accountId"`
	InstanceID       string `json:"instanceId"`
	Region           string `json:"region"`
	AvailabilityZone string `json:"availabilityZone"`
	ImageID          string `json:"imageId"`
	InstanceType     string `json:"instanceType,omitempty"`
	PrivateIP        string `json:"privateIp,omitempty"`
	PendingTime      string `json:"pendingTime,omitempty"`
	Architecture     string `json:"architecture,omitempty"`
	Version          string `json:"version,omitempty"`
}
