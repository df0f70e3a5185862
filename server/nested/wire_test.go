package nested

import (
	"slices"
	"testing"

	"github.com/signetid/signet/internal/protowire"
)

// The protobufs must stay wire-compatible with SPIRE's (spiffe/spire-api-sdk
// proto/spire/api/server/{svid,bundle}/v1 and proto/spire/api/types/bundle.proto):
// the full names, field numbers and kinds below are SPIRE's, for the
// fields Signet declares. A renamed or renumbered field would make SPIRE
// servers and Signet misread each other silently.
func TestWireCompatibleWithSPIRE(t *testing.T) {
	want := map[string][]string{
		"spire.api.types.Bundle": {"trust_domain=1 string", "x509_authorities=2 repeated message spire.api.types.X509Certificate",
			"jwt_authorities=3 repeated message spire.api.types.JWTKey", "refresh_hint=4 int64", "sequence_number=5 uint64"},
		"spire.api.types.X509Certificate": {"asn1=1 bytes", "tainted=2 bool"},
		"spire.api.types.JWTKey":          {"public_key=1 bytes", "key_id=2 string", "expires_at=3 int64", "tainted=4 bool"},
		"spire.api.types.BundleMask": {"x509_authorities=2 bool", "jwt_authorities=3 bool", "refresh_hint=4 bool",
			"sequence_number=5 bool"},
		"spire.api.server.svid.v1.NewDownstreamX509CARequest":    {"csr=1 bytes", "preferred_ttl=2 int32"},
		"spire.api.server.svid.v1.NewDownstreamX509CAResponse":   {"ca_cert_chain=1 repeated bytes", "x509_authorities=2 repeated bytes"},
		"spire.api.server.bundle.v1.GetBundleRequest":            {"output_mask=1 message spire.api.types.BundleMask"},
		"spire.api.server.bundle.v1.PublishJWTAuthorityRequest":  {"jwt_authority=1 message spire.api.types.JWTKey"},
		"spire.api.server.bundle.v1.PublishJWTAuthorityResponse": {"jwt_authorities=1 repeated message spire.api.types.JWTKey"},
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
	for service, want := range map[string][]string{
		"spire.api.server.svid.v1.SVID": {"NewDownstreamX509CA(NewDownstreamX509CARequest) stream=false NewDownstreamX509CAResponse"},
		"spire.api.server.bundle.v1.Bundle": {"GetBundle(GetBundleRequest) stream=false Bundle",
			"PublishJWTAuthority(PublishJWTAuthorityRequest) stream=false PublishJWTAuthorityResponse"},
	} {
		rpcs, err := protowire.RPCs(service)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rpcs, want) {
			t.Errorf("%s RPCs:\n got %q\nwant %q", service, rpcs, want)
		}
	}
}
