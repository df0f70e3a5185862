package federation

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/hcl/token"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/hclsafe"
	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/store"
)

// Profile is how a bundle endpoint authenticates itself (SPIFFE
// Federation, section 5.2).
type Profile string

const (
	// ProfileSPIFFE: the endpoint presents an X509-SVID, checked against the
	// bundle of its SPIFFE ID's trust domain already held.
	ProfileSPIFFE Profile = "https_spiffe"
	// ProfileWeb: the endpoint presents a Web PKI certificate.
	ProfileWeb Profile = "https_web"
)

// Defaults.
const (
	// DefaultRefreshHint is the refresh hint the endpoint serves, and the
	// refresh interval of a fetched bundle that gives none.
	DefaultRefreshHint = 5 * time.Minute
	// DefaultMinRefresh and DefaultMaxRefresh bound the refresh interval a
	// foreign bundle's hint asks for.
	DefaultMinRefresh = 30 * time.Second
	DefaultMaxRefresh = time.Hour
)

// Config is the validated federation configuration of a server. The zero
// value serves no endpoint and fetches nothing.
type Config struct {
	// Endpoint, if not nil, serves the own trust domain's bundle.
	Endpoint *EndpointConfig
	// Relationships are the foreign trust domains whose bundles are fetched.
	Relationships []Relationship
	// MinRefresh and MaxRefresh bound the refresh interval of fetched
	// bundles; zero means DefaultMinRefresh and DefaultMaxRefresh.
	MinRefresh, MaxRefresh time.Duration
}

// EndpointConfig is the bundle endpoint this server serves.
type EndpointConfig struct {
	// Address is host:port to listen on.
	Address string
	// RefreshHint is the spiffe_refresh_hint served.
	RefreshHint time.Duration
	Profile     Profile
	// CertFile and KeyFile are the PEM certificate chain and key of the
	// https_web profile, read again whenever either file changes.
	CertFile, KeyFile string
}

// Relationship is one foreign trust domain whose bundle is fetched.
type Relationship struct {
	TrustDomain spiffeid.TrustDomain
	// URL is the foreign bundle endpoint (https://...).
	URL     string
	Profile Profile
	// EndpointID is the SPIFFE ID the https_spiffe endpoint must present.
	EndpointID spiffeid.ID
	// CAFile, if set, holds the PEM roots that authenticate an https_web
	// endpoint instead of the system's (server configuration only).
	CAFile string
	// Stored: the relationship comes from the store, not the server's
	// configuration; Owner is what manages it there ("" for an operator).
	Stored bool
	Owner  string
}

// FileConfig is the `federation` block of the server's HCL configuration,
// shaped like SPIRE's so that its users can copy theirs:
//
//	federation {
//	  bundle_endpoint {
//	    address      = "0.0.0.0:8443"   # or address = "0.0.0.0" + port = 8443
//	    refresh_hint = "5m"
//	    profile "https_web" {            # default: profile "https_spiffe" {}
//	      serving_cert_file {
//	        cert_file_path = "/etc/signet/federation.crt"
//	        key_file_path  = "/etc/signet/federation.key"
//	      }
//	    }
//	  }
//	  federates_with "other.org" {
//	    bundle_endpoint_url = "https://signet.other.org:8443"
//	    bundle_endpoint_profile "https_spiffe" {
//	      endpoint_spiffe_id = "spiffe://other.org/signet/server"   # the default
//	    }
//	  }
//	}
type FileConfig struct {
	BundleEndpoint *BundleEndpointFile          `hcl:"bundle_endpoint"`
	FederatesWith  map[string]FederatesWithFile `hcl:"federates_with"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// BundleEndpointFile is `bundle_endpoint { ... }`.
type BundleEndpointFile struct {
	Address     string               `hcl:"address"`
	Port        int                  `hcl:"port"`
	RefreshHint string               `hcl:"refresh_hint"`
	Profile     *EndpointProfileFile `hcl:"profile"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// EndpointProfileFile is `profile "https_spiffe" {}` or
// `profile "https_web" { serving_cert_file { ... } }`.
type EndpointProfileFile struct {
	HTTPSSPIFFE *emptyBlock   `hcl:"https_spiffe"`
	HTTPSWeb    *HTTPSWebFile `hcl:"https_web"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// HTTPSWebFile is the https_web profile of the own endpoint.
type HTTPSWebFile struct {
	ServingCertFile *ServingCertFile `hcl:"serving_cert_file"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// ServingCertFile names the endpoint's certificate and key files.
type ServingCertFile struct {
	CertFilePath string `hcl:"cert_file_path"`
	KeyFilePath  string `hcl:"key_file_path"`
	// FileSyncInterval is SPIRE's polling period for the files. Signet
	// checks them at every TLS handshake, so it is accepted (a SPIRE config
	// works unchanged) and checked, but nothing waits for it.
	FileSyncInterval string `hcl:"file_sync_interval"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// FederatesWithFile is `federates_with "TD" { ... }`.
type FederatesWithFile struct {
	BundleEndpointURL     string             `hcl:"bundle_endpoint_url"`
	BundleEndpointProfile *RemoteProfileFile `hcl:"bundle_endpoint_profile"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// RemoteProfileFile is `bundle_endpoint_profile "https_spiffe" { ... }` or
// `bundle_endpoint_profile "https_web" { ... }`.
type RemoteProfileFile struct {
	HTTPSSPIFFE *RemoteSPIFFEFile `hcl:"https_spiffe"`
	HTTPSWeb    *RemoteWebFile    `hcl:"https_web"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// RemoteSPIFFEFile is the https_spiffe profile of a foreign endpoint.
type RemoteSPIFFEFile struct {
	EndpointSPIFFEID string `hcl:"endpoint_spiffe_id"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// RemoteWebFile is the https_web profile of a foreign endpoint.
type RemoteWebFile struct {
	// CAFile is a Signet extension: roots to trust instead of the system's.
	CAFile string `hcl:"ca_file"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

type emptyBlock struct {
	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// unknownKeys returns an error naming the keys of a block that no field
// took, as "federation.<where>.<key> (line N)", or nil.
func unknownKeys(where string, unused map[string][]token.Pos) error {
	named := make(map[string][]token.Pos, len(unused))
	for k, pos := range unused {
		named[where+"."+k] = pos
	}
	return hclsafe.UnknownKeys(named)
}

// Resolve validates the block for a server of trust domain own. A nil
// FileConfig (no federation block) resolves to the zero Config.
func (fc *FileConfig) Resolve(own spiffeid.TrustDomain) (Config, error) {
	var cfg Config
	if fc == nil {
		return cfg, nil
	}
	if err := unknownKeys("federation", fc.UnusedKeyPositions); err != nil {
		return Config{}, err
	}
	if fc.BundleEndpoint != nil {
		ep, err := fc.BundleEndpoint.resolve()
		if err != nil {
			return Config{}, fmt.Errorf("federation.bundle_endpoint: %w", err)
		}
		cfg.Endpoint = &ep
	}
	for name, fw := range fc.FederatesWith {
		rel, err := fw.resolve(name, own)
		if err != nil {
			return Config{}, fmt.Errorf("federation.federates_with %q: %w", name, err)
		}
		cfg.Relationships = append(cfg.Relationships, rel)
	}
	// Map order is random; keep logs and tests stable.
	slices.SortFunc(cfg.Relationships, func(a, b Relationship) int {
		return strings.Compare(a.TrustDomain.Name(), b.TrustDomain.Name())
	})
	for i := 1; i < len(cfg.Relationships); i++ {
		if td := cfg.Relationships[i].TrustDomain; td == cfg.Relationships[i-1].TrustDomain {
			return Config{}, fmt.Errorf("federation.federates_with: %s is named twice (as %q and as spiffe://%s)", td, td.Name(), td.Name())
		}
	}
	return cfg, nil
}

func (f *BundleEndpointFile) resolve() (EndpointConfig, error) {
	ep := EndpointConfig{Profile: ProfileSPIFFE, RefreshHint: DefaultRefreshHint}
	if err := unknownKeys("bundle_endpoint", f.UnusedKeyPositions); err != nil {
		return ep, err
	}
	switch _, _, err := net.SplitHostPort(f.Address); {
	case f.Address == "":
		return ep, errors.New(`address is required, e.g. address = "0.0.0.0:8443"`)
	case err == nil && f.Port != 0:
		return ep, fmt.Errorf("address %q already has a port; drop port = %d", f.Address, f.Port)
	case err == nil:
		ep.Address = f.Address
	case f.Port <= 0 || f.Port > 65535:
		return ep, fmt.Errorf("address %q has no port: write host:port, or give port = 1..65535", f.Address)
	default:
		ep.Address = net.JoinHostPort(f.Address, strconv.Itoa(f.Port))
	}
	if f.RefreshHint != "" {
		d, err := time.ParseDuration(f.RefreshHint)
		if err != nil {
			return ep, fmt.Errorf("refresh_hint %q: want a Go duration like 5m", f.RefreshHint)
		}
		// The document carries whole seconds.
		if d < time.Second || d > 24*time.Hour {
			return ep, fmt.Errorf("refresh_hint %s is out of range [1s, 24h]", d)
		}
		ep.RefreshHint = d
	}
	p := f.Profile
	if p == nil {
		return ep, nil
	}
	if err := unknownKeys("bundle_endpoint.profile", p.UnusedKeyPositions); err != nil {
		return ep, err
	}
	switch {
	case p.HTTPSSPIFFE != nil && p.HTTPSWeb != nil:
		return ep, errors.New(`give one profile: "https_spiffe" or "https_web"`)
	case p.HTTPSSPIFFE != nil:
		return ep, unknownKeys("bundle_endpoint.profile.https_spiffe", p.HTTPSSPIFFE.UnusedKeyPositions)
	case p.HTTPSWeb != nil:
		if err := unknownKeys("bundle_endpoint.profile.https_web", p.HTTPSWeb.UnusedKeyPositions); err != nil {
			return ep, err
		}
		sc := p.HTTPSWeb.ServingCertFile
		if sc == nil || sc.CertFilePath == "" || sc.KeyFilePath == "" {
			return ep, errors.New(`profile "https_web" needs serving_cert_file { cert_file_path = "..." key_file_path = "..." } (ACME is not supported)`)
		}
		if err := unknownKeys("bundle_endpoint.profile.https_web.serving_cert_file", sc.UnusedKeyPositions); err != nil {
			return ep, err
		}
		if sc.FileSyncInterval != "" {
			if d, err := time.ParseDuration(sc.FileSyncInterval); err != nil || d <= 0 {
				return ep, fmt.Errorf("serving_cert_file.file_sync_interval %q: want a positive duration such as \"1h\"", sc.FileSyncInterval)
			}
		}
		ep.Profile = ProfileWeb
		var err error
		if ep.CertFile, err = filepath.Abs(sc.CertFilePath); err != nil {
			return ep, fmt.Errorf("cert_file_path: %w", err)
		}
		if ep.KeyFile, err = filepath.Abs(sc.KeyFilePath); err != nil {
			return ep, fmt.Errorf("key_file_path: %w", err)
		}
	}
	return ep, nil
}

func (f FederatesWithFile) resolve(name string, own spiffeid.TrustDomain) (Relationship, error) {
	spec := RelationshipSpec{TrustDomain: name, BundleEndpointURL: f.BundleEndpointURL}
	if err := unknownKeys("federates_with", f.UnusedKeyPositions); err != nil {
		return Relationship{}, err
	}
	if f.BundleEndpointURL == "" {
		return Relationship{}, errors.New(`bundle_endpoint_url is required, e.g. "https://signet.` + name + `:8443"`)
	}
	p := f.BundleEndpointProfile
	if p == nil {
		return Relationship{}, errors.New(`bundle_endpoint_profile is required: "https_spiffe" {} (endpoint_spiffe_id defaults to spiffe://TD/signet/server; a SPIRE server's is spiffe://TD/spire/server) or "https_web" {}`)
	}
	if err := unknownKeys("federates_with.bundle_endpoint_profile", p.UnusedKeyPositions); err != nil {
		return Relationship{}, err
	}
	var caFile string
	switch {
	case p.HTTPSSPIFFE != nil && p.HTTPSWeb != nil:
		return Relationship{}, errors.New(`give one bundle_endpoint_profile: "https_spiffe" or "https_web"`)
	case p.HTTPSSPIFFE != nil:
		if err := unknownKeys("federates_with.bundle_endpoint_profile.https_spiffe", p.HTTPSSPIFFE.UnusedKeyPositions); err != nil {
			return Relationship{}, err
		}
		spec.Profile, spec.EndpointSPIFFEID = ProfileSPIFFE, p.HTTPSSPIFFE.EndpointSPIFFEID
	case p.HTTPSWeb != nil:
		if err := unknownKeys("federates_with.bundle_endpoint_profile.https_web", p.HTTPSWeb.UnusedKeyPositions); err != nil {
			return Relationship{}, err
		}
		spec.Profile, caFile = ProfileWeb, p.HTTPSWeb.CAFile
	default:
		return Relationship{}, errors.New(`bundle_endpoint_profile must be "https_spiffe" or "https_web"`)
	}
	rel, err := spec.Resolve(own, ConfigFields)
	if err != nil {
		return Relationship{}, err
	}
	if caFile != "" {
		if rel.CAFile, err = filepath.Abs(caFile); err != nil {
			return Relationship{}, fmt.Errorf("ca_file: %w", err)
		}
	}
	return rel, nil
}

// RelationshipSpec is a relationship as an operator or a resource states
// it: `signet server federation create`, a ClusterFederatedTrustDomain, or
// (through FileConfig) a federates_with block.
type RelationshipSpec struct {
	TrustDomain       string
	BundleEndpointURL string
	Profile           Profile
	// EndpointSPIFFEID is the ID an https_spiffe endpoint presents; empty
	// means a Signet server's, spiffe://TD/signet/server (a SPIRE server's
	// is spiffe://TD/spire/server and must be given).
	EndpointSPIFFEID string
}

// FieldNames are what a surface calls the spec's fields, for errors to name
// the one at fault as its user wrote it.
type FieldNames struct {
	TrustDomain, BundleEndpointURL, Profile, EndpointSPIFFEID string
}

// Field names of the surfaces.
var (
	// ConfigFields: server.conf's federates_with block.
	ConfigFields = FieldNames{"trust domain name", "bundle_endpoint_url", "bundle_endpoint_profile", "endpoint_spiffe_id"}
	// FlagFields: `signet server federation create|update`.
	FlagFields = FieldNames{"--trust-domain", "--bundle-endpoint-url", "--bundle-endpoint-profile", "--endpoint-spiffe-id"}
	// ResourceFields: a ClusterFederatedTrustDomain's spec.
	ResourceFields = FieldNames{"trustDomain", "bundleEndpointURL", "bundleEndpointProfile.type", "bundleEndpointProfile.endpointSPIFFEID"}
)

// Resolve checks the spec for a server of trust domain own; errors name
// fields as names says.
func (s RelationshipSpec) Resolve(own spiffeid.TrustDomain, names FieldNames) (Relationship, error) {
	var rel Relationship
	td, err := ids.ParseTrustDomain(s.TrustDomain)
	if err != nil {
		return rel, fmt.Errorf("%s: %w", names.TrustDomain, err)
	}
	if td == own {
		return rel, fmt.Errorf("%s is this server's own trust domain", td.Name())
	}
	rel.TrustDomain = td
	if s.BundleEndpointURL == "" {
		return rel, fmt.Errorf("%s is required, e.g. https://signet.%s:8443", names.BundleEndpointURL, td.Name())
	}
	u, err := url.Parse(s.BundleEndpointURL)
	if err != nil {
		return rel, fmt.Errorf("%s: %w", names.BundleEndpointURL, err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil {
		return rel, fmt.Errorf("%s %q: want https://host[:port][/path], without user info", names.BundleEndpointURL, s.BundleEndpointURL)
	}
	rel.URL = u.String()
	rel.Profile = s.Profile
	switch s.Profile {
	case ProfileSPIFFE:
		if rel.EndpointID, err = spiffeid.FromPath(td, ca.ServerPath); err != nil {
			return rel, err
		}
		if s.EndpointSPIFFEID != "" {
			if rel.EndpointID, err = ids.ParseWorkloadID(s.EndpointSPIFFEID); err != nil {
				return rel, fmt.Errorf("%s: %w", names.EndpointSPIFFEID, err)
			}
		}
	case ProfileWeb:
		if s.EndpointSPIFFEID != "" {
			return rel, fmt.Errorf("%s goes with the https_spiffe profile only", names.EndpointSPIFFEID)
		}
	default:
		return rel, fmt.Errorf("%s %q: want %q or %q", names.Profile, s.Profile, ProfileSPIFFE, ProfileWeb)
	}
	return rel, nil
}

// Spec is the relationship as a RelationshipSpec.
func (r Relationship) Spec() RelationshipSpec {
	s := RelationshipSpec{TrustDomain: r.TrustDomain.Name(), BundleEndpointURL: r.URL, Profile: r.Profile}
	if r.Profile == ProfileSPIFFE {
		s.EndpointSPIFFEID = r.EndpointID.String()
	}
	return s
}

// StoreForm is the relationship as the store keeps it, managed by owner (""
// for an operator).
func (r Relationship) StoreForm(owner string) store.FederationRelationship {
	s := r.Spec()
	return store.FederationRelationship{TrustDomain: s.TrustDomain, BundleEndpointURL: s.BundleEndpointURL,
		Profile: string(s.Profile), EndpointSPIFFEID: s.EndpointSPIFFEID, Owner: owner}
}

// FromStore checks a stored relationship as Resolve does.
func FromStore(r store.FederationRelationship, own spiffeid.TrustDomain) (Relationship, error) {
	rel, err := RelationshipSpec{TrustDomain: r.TrustDomain, BundleEndpointURL: r.BundleEndpointURL,
		Profile: Profile(r.Profile), EndpointSPIFFEID: r.EndpointSPIFFEID}.Resolve(own, FieldNames{"trust domain", "bundle endpoint URL", "profile", "endpoint SPIFFE ID"})
	if err != nil {
		return Relationship{}, err
	}
	rel.Owner, rel.Stored = r.Owner, true
	return rel, nil
}

// withDefaults fills in the refresh bounds.
func (c Config) withDefaults() Config {
	if c.MinRefresh <= 0 {
		c.MinRefresh = DefaultMinRefresh
	}
	if c.MaxRefresh <= 0 {
		c.MaxRefresh = DefaultMaxRefresh
	}
	c.MaxRefresh = max(c.MaxRefresh, c.MinRefresh)
	return c
}
