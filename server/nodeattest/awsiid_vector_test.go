package nodeattest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/api/awsiid"
)

// awsVectorDoc and awsVectorRSA2048 are a real EC2 instance identity
// document and its rsa2048 PKCS #7 signature (ap-southeast-2, signed
// 2026-02-16T00:38:28Z by AWS's regional certificate). They are public: the
// Jest tests of an open-source JavaScript library that verifies instance
// identity documents publish them (validInstanceIdentityDocument and
// validRsa2048Signature); they come from neither SPIRE's nor AWS's test
// data.
const awsVectorDoc = "{\n  \"accountId\" : \"189292791360\",\n  \"architecture\" : \"arm64\",\n  \"availabilityZone\" : \"ap-southeast-2a\",\n  \"billingProducts\" : null,\n  \"devpayProductCodes\" : null,\n  \"marketplaceProductCodes\" : null,\n  \"imageId\" : \"ami-0cbde744623b7506b\",\n  \"instanceId\" : \"i-0c5541936caf78c12\",\n  \"instanceType\" : \"t4g.small\",\n  \"kernelId\" : null,\n  \"pendingTime\" : \"2026-02-16T00:38:27Z\",\n  \"privateIp\" : \"10.0.1.242\",\n  \"ramdiskId\" : null,\n  \"region\" : \"ap-southeast-2\",\n  \"version\" : \"2017-09-30\"\n}"

const awsVectorRSA2048 = `MIAGCSqGSIb3DQEHAqCAMIACAQExDTALBglghkgBZQMEAgEwgAYJKoZIhvcNAQcBoIAkgASCAeR7
CiAgImFjY291bnRJZCIgOiAiMTg5MjkyNzkxMzYwIiwKICAiYXJjaGl0ZWN0dXJlIiA6ICJhcm02
NCIsCiAgImF2YWlsYWJpbGl0eVpvbmUiIDogImFwLXNvdXRoZWFzdC0yYSIsCiAgImJpbGxpbmdQ
cm9kdWN0cyIgOiBudWxsLAogICJkZXZwYXlQcm9kdWN0Q29kZXMiIDogbnVsbCwKICAibWFya2V0
cGxhY2VQcm9kdWN0Q29kZXMiIDogbnVsbCwKICAiaW1hZ2VJZCIgOiAiYW1pLTBjYmRlNzQ0NjIz
Yjc1MDZiIiwKICAiaW5zdGFuY2VJZCIgOiAiaS0wYzU1NDE5MzZjYWY3OGMxMiIsCiAgImluc3Rh
bmNlVHlwZSIgOiAidDRnLnNtYWxsIiwKICAia2VybmVsSWQiIDogbnVsbCwKICAicGVuZGluZ1Rp
bWUiIDogIjIwMjYtMDItMTZUMDA6Mzg6MjdaIiwKICAicHJpdmF0ZUlwIiA6ICIxMC4wLjEuMjQy
IiwKICAicmFtZGlza0lkIiA6IG51bGwsCiAgInJlZ2lvbiIgOiAiYXAtc291dGhlYXN0LTIiLAog
ICJ2ZXJzaW9uIiA6ICIyMDE3LTA5LTMwIgp9AAAAAAAAMYICKzCCAicCAQEwaTBcMQswCQYDVQQG
EwJVUzEZMBcGA1UECBMQV2FzaGluZ3RvbiBTdGF0ZTEQMA4GA1UEBxMHU2VhdHRsZTEgMB4GA1UE
ChMXQW1hem9uIFdlYiBTZXJ2aWNlcyBMTEMCCQC9mzoG/navazALBglghkgBZQMEAgGggZYwGAYJ
KoZIhvcNAQkDMQsGCSqGSIb3DQEHATAcBgkqhkiG9w0BCQUxDxcNMjYwMjE2MDAzODI4WjArBgkq
hkiG9w0BCTQxHjAcMAsGCWCGSAFlAwQCAaENBgkqhkiG9w0BAQsFADAvBgkqhkiG9w0BCQQxIgQg
JuBakWdgxV8tjlul+DIT6i+w6b8/C55oWPvN4ZjsikQwDQYJKoZIhvcNAQELBQAEggEAKb9EHZze
cWagTKFctn6wj09JvLDpRx9nxBqT62WIh8lXYERWxCuL9Q6PcTnyaVgydldyZ+R2LSdb6+J7341l
LmKJpwwQCX/YuSlYWEKaQkliG6LSEFBg3sTmQeM4LhZAAiAlZ3U2OekfVqvCuzNRFcqfKbTPzUJU
q07M76Si2G8JcJW8OBYmzNsJYbeDVnhp3L6uet6zHWzlSA1U0Q3MNs8gmt9HWGzW9sDOaj5ZOkK7
WzMXqkdbCuFkesa6EaV2nRtD+Xm2LipxGbOwlmBPumg0WGcgDuPUc62A5DewgctliURC6qzhTLnS
AKOTPvMq3Nro7tmuvFahEjsAdcWoBQAAAAAAAA==`

// A document AWS signed verifies against the embedded ap-southeast-2
// certificate alone (no aws_certificates_path), at its signing time; a
// one-byte change anywhere is refused: in the document sent, in the
// document and its signed copy together, or in the signature value.
func TestAWSIIDRealVector(t *testing.T) {
	p, err := NewAWSIID(td, AWSIIDConfig{AccountIDs: []string{"189292791360"}})
	if err != nil {
		t.Fatal(err)
	}
	signedAt := time.Date(2026, 2, 16, 0, 38, 28, 0, time.UTC)
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(awsVectorRSA2048), ""))
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(der, []byte(awsVectorDoc))
	if at < 0 {
		t.Fatal("the document is not in the signature")
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	docByte := strings.Index(awsVectorDoc, "i-0c55") + 5 // in the instance ID
	enc := func(doc string, sig []byte) []byte {
		b, _ := json.Marshal(awsiid.Payload{Document: doc, RSA2048: base64.StdEncoding.EncodeToString(sig)})
		return b
	}

	res, err := p.Attest(context.Background(), enc(awsVectorDoc, der), signedAt)
	if err != nil || res.AgentID.String() != "spiffe://example.org/agent/aws_iid/189292791360/ap-southeast-2/i-0c5541936caf78c12" {
		t.Fatalf("the real vector: %v, %v", res.AgentID, err)
	}
	changedDoc := string(flip([]byte(awsVectorDoc), docByte))
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"the document sent", enc(changedDoc, der), "the rsa2048 signature is not of this document"},
		{"the document and its signed copy", enc(changedDoc, flip(der, at+docByte)), "not signed by AWS's certificate for region ap-southeast-2"},
		{"the signature value", enc(awsVectorDoc, flip(der, len(der)-20)), "not signed by AWS's certificate for region ap-southeast-2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Attest(context.Background(), tc.payload, signedAt)
			if !errors.Is(err, ErrAWSIIDRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest: %v; want ErrAWSIIDRefused containing %q", err, tc.want)
			}
		})
	}
}
