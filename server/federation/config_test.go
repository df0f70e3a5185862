package federation

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/hclsafe"
)

var own = spiffeid.RequireTrustDomainFromString("example.org")

// parse decodes a server configuration holding a federation block, as the
// server's parser does, and resolves the block.
func parse(in string) (Config, error) {
	var w struct {
		Federation *FileConfig `hcl:"federation"`
	}
	if err := hclsafe.Do(func() error { return hcl.Decode(&w, in) }); err != nil {
		return Config{}, err
	}
	return w.Federation.Resolve(own)
}

func TestResolveConfig(t *testing.T) {
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr string
	}{
		{name: "no block", in: `trust_domain = "example.org"`},
		{
			name: "SPIRE shape, https_spiffe both ways",
			in: `federation {
  bundle_endpoint {
    address = "0.0.0.0"
    port = 8443
    refresh_hint = "1m"
    profile "https_spiffe" {}
  }
  federates_with "spire.org" {
    bundle_endpoint_url = "https://spire.spire.org:8443"
    bundle_endpoint_profile "https_spiffe" { endpoint_spiffe_id = "spiffe://spire.org/spire/server" }
  }
  federates_with "b.org" {
    bundle_endpoint_url = "https://127.0.0.1:9443/bundle"
    bundle_endpoint_profile "https_spiffe" {}
  }
}`,
			want: Config{
				Endpoint: &EndpointConfig{Address: "0.0.0.0:8443", RefreshHint: time.Minute, Profile: ProfileSPIFFE},
				Relationships: []Relationship{
					{TrustDomain: spiffeid.RequireTrustDomainFromString("b.org"), URL: "https://127.0.0.1:9443/bundle", Profile: ProfileSPIFFE,
						EndpointID: spiffeid.RequireFromString("spiffe://b.org/signet/server")},
					{TrustDomain: spiffeid.RequireTrustDomainFromString("spire.org"), URL: "https://spire.spire.org:8443", Profile: ProfileSPIFFE,
						EndpointID: spiffeid.RequireFromString("spiffe://spire.org/spire/server")},
				},
			},
		},
		{
			name: "https_web both ways",
			in: `federation {
  bundle_endpoint {
    address = "[::1]:8443"
    profile "https_web" {
      serving_cert_file {
        cert_file_path = "tls.crt"
        key_file_path = "/etc/tls.key"
        file_sync_interval = "1h" # SPIRE's; Signet checks the files at every handshake
      }
    }
  }
  federates_with "web.org" {
    bundle_endpoint_url = "https://bundle.web.org"
    bundle_endpoint_profile "https_web" {}
  }
  federates_with "corp.org" {
    bundle_endpoint_url = "https://bundle.corp.org"
    bundle_endpoint_profile "https_web" { ca_file = "/etc/corp-ca.pem" }
  }
}`,
			want: Config{
				Endpoint: &EndpointConfig{Address: "[::1]:8443", RefreshHint: DefaultRefreshHint, Profile: ProfileWeb, CertFile: abs("tls.crt"), KeyFile: "/etc/tls.key"},
				Relationships: []Relationship{
					{TrustDomain: spiffeid.RequireTrustDomainFromString("corp.org"), URL: "https://bundle.corp.org", Profile: ProfileWeb, CAFile: "/etc/corp-ca.pem"},
					{TrustDomain: spiffeid.RequireTrustDomainFromString("web.org"), URL: "https://bundle.web.org", Profile: ProfileWeb},
				},
			},
		},
		{name: "endpoint without address", in: `federation { bundle_endpoint { port = 8443 } }`, wantErr: "address is required"},
		{name: "endpoint without port", in: `federation { bundle_endpoint { address = "0.0.0.0" } }`, wantErr: "has no port"},
		{name: "port twice", in: `federation { bundle_endpoint { address = "0.0.0.0:1" port = 2 } }`, wantErr: "already has a port"},
		{name: "bad hint", in: `federation { bundle_endpoint { address = ":1" refresh_hint = "5 minutes" } }`, wantErr: "Go duration"},
		{name: "hint too short", in: `federation { bundle_endpoint { address = ":1" refresh_hint = "10ms" } }`, wantErr: "out of range"},
		{name: "https_web without files", in: `federation { bundle_endpoint { address = ":1" profile "https_web" {} } }`, wantErr: "serving_cert_file"},
		{name: "bad file_sync_interval", in: `federation { bundle_endpoint { address = ":1" profile "https_web" { serving_cert_file { cert_file_path = "a" key_file_path = "b" file_sync_interval = "hourly" } } } }`,
			wantErr: `file_sync_interval "hourly"`},
		{name: "acme", in: `federation { bundle_endpoint { address = ":1" profile "https_web" { acme { domain_name = "x" } } } }`,
			wantErr: "bundle_endpoint.profile.https_web.acme"},
		{name: "two endpoint profiles", in: `federation { bundle_endpoint { address = ":1" profile "https_spiffe" {} profile "https_web" {} } }`, wantErr: "one profile"},
		{name: "unknown key in federation", in: `federation { bundle_endpont { } }`, wantErr: "unknown key(s): federation.bundle_endpont (line 1)"},
		{name: "unknown key deep down", in: "federation {\n federates_with \"b.org\" {\n bundle_endpoint_url = \"https://b\"\n bundle_endpoint_profile \"https_spiffe\" { endpoint_id = \"x\" }\n }\n}",
			wantErr: "federates_with.bundle_endpoint_profile.https_spiffe.endpoint_id (line 4)"},
		{name: "own trust domain", in: `federation { federates_with "example.org" { bundle_endpoint_url = "https://x" bundle_endpoint_profile "https_web" {} } }`,
			wantErr: "own trust domain"},
		{name: "bad trust domain", in: `federation { federates_with "B.org" { bundle_endpoint_url = "https://x" bundle_endpoint_profile "https_web" {} } }`,
			wantErr: `federates_with "B.org"`},
		{name: "one trust domain twice", in: `federation {
  federates_with "b.org" { bundle_endpoint_url = "https://x" bundle_endpoint_profile "https_web" {} }
  federates_with "spiffe://b.org" { bundle_endpoint_url = "https://y" bundle_endpoint_profile "https_web" {} }
}`, wantErr: "b.org is named twice"},
		{name: "no url", in: `federation { federates_with "b.org" { bundle_endpoint_profile "https_web" {} } }`, wantErr: "bundle_endpoint_url is required"},
		{name: "http url", in: `federation { federates_with "b.org" { bundle_endpoint_url = "http://b.org" bundle_endpoint_profile "https_web" {} } }`,
			wantErr: "want https://"},
		{name: "no profile", in: `federation { federates_with "b.org" { bundle_endpoint_url = "https://b.org" } }`, wantErr: "bundle_endpoint_profile is required"},
		{name: "unknown profile", in: `federation { federates_with "b.org" { bundle_endpoint_url = "https://b.org" bundle_endpoint_profile "http" {} } }`,
			wantErr: `bundle_endpoint_profile must be "https_spiffe" or "https_web"`},
		{name: "bad endpoint ID", in: `federation { federates_with "b.org" { bundle_endpoint_url = "https://b.org" bundle_endpoint_profile "https_spiffe" { endpoint_spiffe_id = "spiffe://b.org" } } }`,
			wantErr: "endpoint_spiffe_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v (%+v), want error containing %q", err, got, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func FuzzResolveConfig(f *testing.F) {
	f.Add([]byte(`federation { bundle_endpoint { address = "0.0.0.0" port = 8443 } }`))
	f.Add([]byte(`federation { federates_with "b.org" { bundle_endpoint_url = "https://b.org" bundle_endpoint_profile "https_spiffe" { endpoint_spiffe_id = "spiffe://b.org/x" } } }`))
	f.Add([]byte(`federation { bundle_endpoint { address = ":1" profile "https_web" { serving_cert_file { cert_file_path = "a" key_file_path = "b" } } } }`))
	f.Add([]byte(`federation { federates_with "b.org" { bundle_endpoint_url = "https://b.org" bundle_endpoint_profile "https_web" { ca_file = "/x" } } }`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parse(string(data))
		if err != nil {
			return
		}
		// Whatever resolves must be usable as is.
		if ep := cfg.Endpoint; ep != nil {
			if ep.Address == "" || ep.RefreshHint < time.Second ||
				(ep.Profile == ProfileWeb) != (ep.CertFile != "" && ep.KeyFile != "") ||
				(ep.Profile != ProfileWeb && ep.Profile != ProfileSPIFFE) {
				t.Fatalf("unusable endpoint %+v", *ep)
			}
		}
		for _, r := range cfg.Relationships {
			if r.TrustDomain.IsZero() || r.TrustDomain == own || !strings.HasPrefix(r.URL, "https://") ||
				(r.Profile == ProfileSPIFFE) == r.EndpointID.IsZero() || (r.Profile != ProfileWeb && r.Profile != ProfileSPIFFE) {
				t.Fatalf("unusable relationship %+v", r)
			}
		}
	})
}
