package workloadapi

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/signetid/signet/agent/cache"
)

// SDS resource names and the node metadata key SPIRE's agent uses; Envoy
// configurations written for SPIRE work unchanged.
const (
	DefaultSDSSVIDName       = "default"
	DefaultSDSBundleName     = "ROOTCA"
	DefaultSDSAllBundlesName = "ALL"
	// sdsDisableValidatorKey in an Envoy node's metadata overrides
	// SDSOptions.DisableSPIFFECertValidation for that Envoy.
	sdsDisableValidatorKey = "disable_spiffe_cert_validation"
	// spiffeValidatorName is Envoy's SPIFFE certificate validator extension.
	spiffeValidatorName = "envoy.tls.cert_validator.spiffe"
	secretTypeURL       = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
)

// SDSOptions configure the Envoy Secret Discovery Service (SDS v3) served on
// the Workload API socket. Zero values take SPIRE's defaults.
type SDSOptions struct {
	// DefaultSVIDName names the caller's default SVID (its first).
	DefaultSVIDName string
	// DefaultBundleName names the own trust domain's bundle.
	DefaultBundleName string
	// DefaultAllBundlesName names one validation context holding the own and
	// every federated bundle, each bound to its trust domain (needs Envoy's
	// SPIFFE validator).
	DefaultAllBundlesName string
	// DisableSPIFFECertValidation makes bundles plain trusted_ca validation
	// contexts even for Envoys that have the SPIFFE validator.
	DisableSPIFFECertValidation bool
}

func (o SDSOptions) withDefaults() SDSOptions {
	if o.DefaultSVIDName == "" {
		o.DefaultSVIDName = DefaultSDSSVIDName
	}
	if o.DefaultBundleName == "" {
		o.DefaultBundleName = DefaultSDSBundleName
	}
	if o.DefaultAllBundlesName == "" {
		o.DefaultAllBundlesName = DefaultSDSAllBundlesName
	}
	return o
}

// useSPIFFEValidator tells whether an Envoy gets its bundles as SPIFFE
// validator configs: Envoy 1.18 or later, unless the agent or the Envoy's
// node metadata (`disable_spiffe_cert_validation: true`) turns it off.
// Clients that do not say their build version (older Envoys, other xDS
// clients) get plain trusted_ca contexts, as from SPIRE.
func (o SDSOptions) useSPIFFEValidator(node *corev3.Node) bool {
	disabled := o.DisableSPIFFECertValidation
	if v, ok := node.GetMetadata().GetFields()[sdsDisableValidatorKey]; ok {
		if b, ok := metadataBool(v); ok {
			disabled = b
		}
	}
	if disabled {
		return false
	}
	v := node.GetUserAgentBuildVersion().GetVersion()
	if v == nil {
		return false
	}
	return v.GetMajorNumber() > 1 || (v.GetMajorNumber() == 1 && v.GetMinorNumber() >= 18)
}

// metadataBool reads a bool, or a string strconv.ParseBool accepts; anything
// else is ignored, as SPIRE does.
func metadataBool(v *structpb.Value) (bool, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_BoolValue:
		return k.BoolValue, true
	case *structpb.Value_StringValue:
		b, err := strconv.ParseBool(k.StringValue)
		return b, err == nil
	}
	return false, false
}

// sdsSecrets renders the secrets a workload's state holds under the
// requested names; no names means all of them (own and federated bundles
// under their trust domain IDs, SVIDs under their SPIFFE IDs). A name the
// caller has nothing under is refused with PermissionDenied naming it, so a
// misspelt name or a missing registration shows in Envoy's log and ours
// instead of as a listener that never warms.
func sdsSecrets(st *cache.WorkloadState, names []string, o SDSOptions, spiffeValidator bool) ([]*anypb.Any, error) {
	if st.Bundle == nil || len(st.Bundle.X509Authorities()) == 0 {
		// Before the agent's first sync: an empty ROOTCA would make Envoy
		// refuse every peer until the next push.
		return nil, status.Error(codes.Unavailable, "no trust bundle for the agent's trust domain yet")
	}
	want := map[string]bool{}
	for _, n := range names {
		if n != "" {
			want[n] = true
		}
	}
	all := len(want) == 0
	take := func(name string) bool {
		if all {
			return true
		}
		if want[name] {
			delete(want, name)
			return true
		}
		return false
	}

	bundles := []*x509bundle.Bundle{st.Bundle}
	for _, b := range st.FederatedBundles {
		if b != nil && b.TrustDomain() != st.Bundle.TrustDomain() {
			bundles = append(bundles, b)
		}
	}
	slices.SortStableFunc(bundles[1:], func(a, b *x509bundle.Bundle) int {
		return strings.Compare(a.TrustDomain().Name(), b.TrustDomain().Name())
	})

	var out []*anypb.Any
	add := func(s *tlsv3.Secret, err error) error {
		if err != nil {
			return status.Errorf(codes.Internal, "encode secret: %v", err)
		}
		a, err := anypb.New(s)
		if err != nil {
			return status.Errorf(codes.Internal, "encode secret %q: %v", s.Name, err)
		}
		out = append(out, a)
		return nil
	}
	for _, b := range bundles {
		if take(b.TrustDomain().IDString()) {
			if err := add(validationSecret(b.TrustDomain().IDString(), []*x509bundle.Bundle{b}, spiffeValidator)); err != nil {
				return nil, err
			}
		}
	}
	if !all && take(o.DefaultBundleName) {
		if err := add(validationSecret(o.DefaultBundleName, bundles[:1], spiffeValidator)); err != nil {
			return nil, err
		}
	}
	if !all && take(o.DefaultAllBundlesName) {
		if !spiffeValidator {
			return nil, status.Errorf(codes.FailedPrecondition, "%q holds every trust domain's bundle and needs Envoy's SPIFFE certificate validator (Envoy 1.18 or later, with disable_spiffe_cert_validation off); ask for %q or a trust domain ID instead", o.DefaultAllBundlesName, o.DefaultBundleName)
		}
		if err := add(validationSecret(o.DefaultAllBundlesName, bundles, true)); err != nil {
			return nil, err
		}
	}

	seen := map[spiffeid.ID]bool{}
	for i, svid := range st.SVIDs {
		var as []string
		if !seen[svid.ID] && take(svid.ID.String()) {
			as = append(as, svid.ID.String())
		}
		seen[svid.ID] = true
		if i == 0 && !all && take(o.DefaultSVIDName) {
			as = append(as, o.DefaultSVIDName)
		}
		if len(as) == 0 {
			continue
		}
		key, err := st.KeyDER(i)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		for _, name := range as {
			if err := add(tlsSecret(name, svid.Certificates, key), nil); err != nil {
				return nil, err
			}
		}
	}

	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		slices.Sort(missing)
		return nil, status.Errorf(codes.PermissionDenied, "the caller has no secret named %q: its SVIDs are named by SPIFFE ID (or %q), bundles by trust domain ID (or %q, %q)", missing, o.DefaultSVIDName, o.DefaultBundleName, o.DefaultAllBundlesName)
	}
	return out, nil
}

// tlsSecret is an SVID as Envoy's tls_certificate: the chain (leaf first)
// and the PKCS#8 key, inline PEM.
func tlsSecret(name string, chain []*x509.Certificate, keyDER []byte) *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: name,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(certsPEM(chain)),
			PrivateKey:       inline(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		}},
	}
}

// validationSecret is a validation context for bundles. With the SPIFFE
// validator each bundle verifies only IDs of its own trust domain; without
// it the roots go in trusted_ca, which is only safe for one bundle, so
// callers pass more than one only with spiffeValidator.
func validationSecret(name string, bundles []*x509bundle.Bundle, spiffeValidator bool) (*tlsv3.Secret, error) {
	vc := &tlsv3.CertificateValidationContext{}
	if spiffeValidator {
		cfg := &tlsv3.SPIFFECertValidatorConfig{}
		for _, b := range bundles {
			cfg.TrustDomains = append(cfg.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
				Name:        b.TrustDomain().Name(),
				TrustBundle: inline(certsPEM(b.X509Authorities())),
			})
		}
		typed, err := anypb.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("encode SPIFFE validator config of %q: %w", name, err)
		}
		vc.CustomValidatorConfig = &corev3.TypedExtensionConfig{Name: spiffeValidatorName, TypedConfig: typed}
	} else {
		vc.TrustedCa = inline(certsPEM(bundles[0].X509Authorities()))
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func certsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
