package delegatedidentity

import (
	"slices"
	"testing"

	_ "github.com/signetid/signet/agent/delegatedidentity/v1"
	"github.com/signetid/signet/internal/protowire"
)

// The protobuf must stay wire-compatible with SPIRE's (spiffe/spire-api-sdk
// proto/spire/api/agent/delegatedidentity/v1 and proto/spire/api/types): the
// full names, field numbers and kinds below are SPIRE's. A renamed or
// renumbered field would break every SPIRE client silently.
func TestWireCompatibleWithSPIRE(t *testing.T) {
	want := map[string][]string{
		"spire.api.types.Selector": {"type=1 string", "value=2 string"},
		"spire.api.types.SPIFFEID": {"trust_domain=1 string", "path=2 string"},
		"spire.api.types.X509SVID": {"cert_chain=1 repeated bytes", "id=2 message spire.api.types.SPIFFEID", "expires_at=3 int64", "hint=4 string"},
		"spire.api.types.JWTSVID": {"token=1 string", "id=2 message spire.api.types.SPIFFEID", "expires_at=3 int64",
			"issued_at=4 int64", "hint=5 string"},
		"spire.api.agent.delegatedidentity.v1.X509SVIDWithKey":             {"x509_svid=1 message spire.api.types.X509SVID", "x509_svid_key=2 bytes"},
		"spire.api.agent.delegatedidentity.v1.SubscribeToX509SVIDsRequest": {"selectors=1 repeated message spire.api.types.Selector", "pid=3 int32"},
		"spire.api.agent.delegatedidentity.v1.SubscribeToX509SVIDsResponse": {
			"x509_svids=1 repeated message spire.api.agent.delegatedidentity.v1.X509SVIDWithKey", "federates_with=2 repeated string"},
		"spire.api.agent.delegatedidentity.v1.SubscribeToX509BundlesRequest":  {},
		"spire.api.agent.delegatedidentity.v1.SubscribeToX509BundlesResponse": {"ca_certificates=1 map<string,bytes>"},
		"spire.api.agent.delegatedidentity.v1.FetchJWTSVIDsRequest": {"audience=1 repeated string",
			"selectors=2 repeated message spire.api.types.Selector", "pid=4 int32"},
		"spire.api.agent.delegatedidentity.v1.FetchJWTSVIDsResponse":         {"svids=1 repeated message spire.api.types.JWTSVID"},
		"spire.api.agent.delegatedidentity.v1.SubscribeToJWTBundlesRequest":  {},
		"spire.api.agent.delegatedidentity.v1.SubscribeToJWTBundlesResponse": {"bundles=1 map<string,bytes>"},
	}
	for name, fields := range want {
		got, err := protowire.Fields(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(got, fields) {
			t.Errorf("%s fields:\n got %q\nwant %q", name, got, fields)
		}
	}

	rpcs, err := protowire.RPCs("spire.api.agent.delegatedidentity.v1.DelegatedIdentity")
	if err != nil {
		t.Fatal(err)
	}
	wantRPCs := []string{
		"SubscribeToX509SVIDs(SubscribeToX509SVIDsRequest) stream=true SubscribeToX509SVIDsResponse",
		"SubscribeToX509Bundles(SubscribeToX509BundlesRequest) stream=true SubscribeToX509BundlesResponse",
		"FetchJWTSVIDs(FetchJWTSVIDsRequest) stream=false FetchJWTSVIDsResponse",
		"SubscribeToJWTBundles(SubscribeToJWTBundlesRequest) stream=true SubscribeToJWTBundlesResponse",
	}
	if !slices.Equal(rpcs, wantRPCs) {
		t.Errorf("RPCs:\n got %q\nwant %q", rpcs, wantRPCs)
	}
}
