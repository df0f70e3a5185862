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
	// endpoint instead of the system's.
	CAFile string
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
	var rel Relationship
	td, err := ids.ParseTrustDomain(name)
	if err != nil {
		return rel, err
	}
	if td == own {
		return rel, errors.New("is this server's own trust domain")
	}
	rel.TrustDomain = td
	if err := unknownKeys("federates_with", f.UnusedKeyPositions); err != nil {
		return rel, err
	}
	if f.BundleEndpointURL == "" {
		return rel, errors.New(`bundle_endpoint_url is required, e.g. "https://signet.` + td.Name() + `:8443"`)
	}
	u, err := url.Parse(f.BundleEndpointURL)
	if err != nil {
		return rel, fmt.Errorf("bundle_endpoint_url: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil {
		return rel, fmt.Errorf("bundle_endpoint_url %q: want https://host[:port][/path], without user info", f.BundleEndpointURL)
	}
	rel.URL = u.String()
	p := f.BundleEndpointProfile
	if p == nil {
		return rel, errors.New(`bundle_endpoint_profile is required: "https_spiffe" { endpoint_spiffe_id = "..." } or "https_web" {}`)
	}
	if err := unknownKeys("federates_with.bundle_endpoint_profile", p.UnusedKeyPositions); err != nil {
		return rel, err
	}
	switch {
	case p.HTTPSSPIFFE != nil && p.HTTPSWeb != nil:
		return rel, errors.New(`give one bundle_endpoint_profile: "https_spiffe" or "https_web"`)
	case p.HTTPSSPIFFE != nil:
		if err := unknownKeys("federates_with.bundle_endpoint_profile.https_spiffe", p.HTTPSSPIFFE.UnusedKeyPositions); err != nil {
			return rel, err
		}
		rel.Profile = ProfileSPIFFE
		// Signet servers present spiffe://TD/signet/server; SPIRE's name
		// theirs spiffe://TD/spire/server and must be given.
		rel.EndpointID, err = spiffeid.FromPath(td, ca.ServerPath)
		if err != nil {
			return rel, err
		}
		if s := p.HTTPSSPIFFE.EndpointSPIFFEID; s != "" {
			if rel.EndpointID, err = ids.ParseWorkloadID(s); err != nil {
				return rel, fmt.Errorf("endpoint_spiffe_id: %w", err)
			}
		}
	case p.HTTPSWeb != nil:
		if err := unknownKeys("federates_with.bundle_endpoint_profile.https_web", p.HTTPSWeb.UnusedKeyPositions); err != nil {
			return rel, err
		}
		rel.Profile = ProfileWeb
		if p.HTTPSWeb.CAFile != "" {
			if rel.CAFile, err = filepath.Abs(p.HTTPSWeb.CAFile); err != nil {
				return rel, fmt.Errorf("ca_file: %w", err)
			}
		}
	default:
		return rel, errors.New(`bundle_endpoint_profile must be "https_spiffe" or "https_web"`)
	}
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
