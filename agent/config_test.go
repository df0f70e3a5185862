package agent

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/signetid/signet/agent/attestor"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr string
	}{
		{name: "top-level keys", in: `
server_address = "server:8081"
trust_domain = "example.org"
data_dir = "/var/lib/signet/agent"
join_token = "abc"
trust_bundle_path = "/etc/signet/bundle.pem"
insecure_bootstrap = true
socket_path = "/run/signet/sockets/agent.sock"
health_listen = "127.0.0.1:8088"
`, want: Config{ServerAddress: "server:8081", TrustDomain: "example.org", DataDir: "/var/lib/signet/agent",
			JoinToken: "abc", TrustBundleFile: "/etc/signet/bundle.pem", InsecureBootstrap: true,
			SocketPath: "/run/signet/sockets/agent.sock", HealthListen: "127.0.0.1:8088"}},
		{name: "SPIRE-style agent block", in: `agent {
  server_address = "s:1"
  trust_domain = "example.org"
  join_token_file = "/etc/token"
}`, want: Config{ServerAddress: "s:1", TrustDomain: "example.org", JoinTokenFile: "/etc/token"}},
		{name: "trust bundle URL", in: `agent {
  trust_bundle_url = "https://signet.example.org:8443/bundle"
  trust_bundle_format = "spiffe"
}`, want: Config{TrustBundleURL: "https://signet.example.org:8443/bundle", TrustBundleFormat: "spiffe"}},
		{name: "trust bundle URL misspelt", in: `trust_bundle_uri = "https://x"`, wantErr: `unknown key "trust_bundle_uri"`},
		{name: "trust bundle format not a string", in: `trust_bundle_format = ["pem"]`, wantErr: "trust_bundle_format"},
		{name: "k8s_psat", in: `
server_address = "signet-server.signet-system.svc:8081"
trust_domain = "example.org"
k8s_psat_cluster = "prod"
k8s_psat_token_path = "/var/run/secrets/tokens/agent"
`, want: Config{ServerAddress: "signet-server.signet-system.svc:8081", TrustDomain: "example.org",
			K8sPSATCluster: "prod", K8sPSATTokenPath: "/var/run/secrets/tokens/agent"}},
		{name: "x509pop", in: `
x509pop_cert_path = "/etc/pki/host.crt"
x509pop_key_path = "/etc/pki/host.key"
`, want: Config{X509PoPCertPath: "/etc/pki/host.crt", X509PoPKeyPath: "/etc/pki/host.key"}},
		{name: "sshpop", in: `
sshpop_host_key_path = "/etc/ssh/ssh_host_ed25519_key"
sshpop_host_cert_path = "/etc/ssh/ssh_host_ed25519_key-cert.pub"
`, want: Config{SSHPoPHostKeyPath: "/etc/ssh/ssh_host_ed25519_key", SSHPoPHostCertPath: "/etc/ssh/ssh_host_ed25519_key-cert.pub"}},
		{name: "aws_iid, empty block", in: "aws_iid {}\n", want: Config{AWSIID: &AWSIIDConfig{}}},
		{name: "aws_iid with an endpoint (SPIRE's key)", in: `agent {
  aws_iid {
    ec2_metadata_endpoint = "http://127.0.0.1:1338/"
  }
}`, want: Config{AWSIID: &AWSIIDConfig{EC2MetadataEndpoint: "http://127.0.0.1:1338/"}}},
		{name: "aws_iid unknown key", in: `aws_iid { identity_document_url = "http://x" }`, wantErr: `unknown key "identity_document_url" in aws_iid`},
		{name: "aws_iid not a block", in: `aws_iid = true`, wantErr: "`aws_iid` at 1:1 must be a block: aws_iid { }"},
		{name: "gcp_iit, empty block", in: "gcp_iit {}\n", want: Config{GCPIIT: &GCPIITConfig{}}},
		{name: "gcp_iit (SPIRE's keys)", in: `agent {
  gcp_iit {
    identity_token_host = "127.0.0.1:8080"
    service_account = "agent@my-project.iam.gserviceaccount.com"
  }
}`, want: Config{GCPIIT: &GCPIITConfig{IdentityTokenHost: "127.0.0.1:8080", ServiceAccount: "agent@my-project.iam.gserviceaccount.com"}}},
		{name: "gcp_iit unknown key", in: `gcp_iit { audience = "x" }`, wantErr: `unknown key "audience" in gcp_iit`},
		{name: "k8s workload attestor", in: `
k8s_workload_attestor = true
kubelet_url = "https://10.0.0.7:10250"
kubelet_ca_path = "/etc/kubelet-ca.pem"
node_name = "node-1"
`, want: Config{K8sWorkloadAttestor: true, KubeletURL: "https://10.0.0.7:10250", KubeletCAPath: "/etc/kubelet-ca.pem", NodeName: "node-1"}},
		{name: "sds block", in: `agent {
  sds {
    default_svid_name = "my-svid"
    default_bundle_name = "my-bundle"
    default_all_bundles_name = "every-bundle"
    disable_spiffe_cert_validation = true
  }
}`, want: Config{SDS: SDSConfig{DefaultSVIDName: "my-svid", DefaultBundleName: "my-bundle", DefaultAllBundlesName: "every-bundle", DisableSPIFFECertValidation: true}}},
		{name: "admin socket and delegates", in: `agent {
  admin_socket_path = "/run/signet/admin/admin.sock"
  authorized_delegates = ["spiffe://example.org/cilium", "spiffe://example.org/ztunnel"]
}`, want: Config{AdminSocketPath: "/run/signet/admin/admin.sock", AuthorizedDelegates: []string{"spiffe://example.org/cilium", "spiffe://example.org/ztunnel"}}},
		{name: "authorized_delegates not a list", in: `authorized_delegates = { id = "x" }`, wantErr: "authorized_delegates"},
		{name: "sds unknown key", in: `sds { default_name = "x" }`, wantErr: `unknown key "default_name" in sds`},
		{name: "sds key twice", in: "sds {\n default_svid_name = \"a\"\n default_svid_name = \"b\"\n}", wantErr: `"default_svid_name" at 3:2 was already set`},
		{name: "sds not a block", in: `sds = "ROOTCA"`, wantErr: "must be a block"},
		{name: "sds wrong type", in: `sds { disable_spiffe_cert_validation = "perhaps" }`, wantErr: "disable_spiffe_cert_validation"},
		{name: "empty file", in: "", want: Config{}},
		{name: "unknown key is named", in: `trust_domian = "x"`, wantErr: `unknown key "trust_domian"`},
		{name: "unknown key inside the block", in: `agent { sever = "x" }`, wantErr: `unknown key "sever"`},
		{name: "nested block under a key", in: `data_dir { x = 1 }`, wantErr: "data_dir"},
		{name: "duplicate key", in: "trust_domain = \"a\"\ntrust_domain = \"b\"", wantErr: "trust_domain"},
		{name: "syntax error", in: `server_address = "unterminated`, wantErr: "parse agent config"},
		{name: "wrong type", in: `insecure_bootstrap = "maybe"`, wantErr: "insecure_bootstrap"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ServerAddress != tc.want.ServerAddress || got.TrustDomain != tc.want.TrustDomain ||
				got.DataDir != tc.want.DataDir || got.JoinToken != tc.want.JoinToken ||
				got.JoinTokenFile != tc.want.JoinTokenFile || got.TrustBundleFile != tc.want.TrustBundleFile ||
				got.InsecureBootstrap != tc.want.InsecureBootstrap || got.SocketPath != tc.want.SocketPath ||
				got.HealthListen != tc.want.HealthListen || got.K8sPSATCluster != tc.want.K8sPSATCluster ||
				got.K8sPSATTokenPath != tc.want.K8sPSATTokenPath || got.K8sWorkloadAttestor != tc.want.K8sWorkloadAttestor ||
				got.KubeletURL != tc.want.KubeletURL || got.KubeletCAPath != tc.want.KubeletCAPath || got.NodeName != tc.want.NodeName ||
				got.X509PoPCertPath != tc.want.X509PoPCertPath || got.X509PoPKeyPath != tc.want.X509PoPKeyPath ||
				got.SSHPoPHostKeyPath != tc.want.SSHPoPHostKeyPath || got.SSHPoPHostCertPath != tc.want.SSHPoPHostCertPath ||
				got.SDS != tc.want.SDS || got.TrustBundleURL != tc.want.TrustBundleURL || got.TrustBundleFormat != tc.want.TrustBundleFormat ||
				got.AdminSocketPath != tc.want.AdminSocketPath || !slices.Equal(got.AuthorizedDelegates, tc.want.AuthorizedDelegates) ||
				(got.AWSIID == nil) != (tc.want.AWSIID == nil) || got.AWSIID != nil && *got.AWSIID != *tc.want.AWSIID ||
				(got.GCPIIT == nil) != (tc.want.GCPIIT == nil) || got.GCPIIT != nil && *got.GCPIIT != *tc.want.GCPIIT {
				t.Fatalf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

// The sshpop file not given is named as OpenSSH names it; with no file,
// no sshpop attestor.
func TestSSHPoPPaths(t *testing.T) {
	tests := []struct{ key, cert, wantKey, wantCert, wantErr string }{
		{key: "/etc/ssh/ssh_host_rsa_key", wantKey: "/etc/ssh/ssh_host_rsa_key", wantCert: "/etc/ssh/ssh_host_rsa_key-cert.pub"},
		{cert: "/etc/ssh/ssh_host_ed25519_key-cert.pub", wantKey: "/etc/ssh/ssh_host_ed25519_key", wantCert: "/etc/ssh/ssh_host_ed25519_key-cert.pub"},
		{key: "/k", cert: "/c.pub", wantKey: "/k", wantCert: "/c.pub"},
		{cert: "-cert.pub", wantErr: "cannot be named"},
		{wantErr: "not configured"},
	}
	for _, tc := range tests {
		c := Config{SSHPoPHostKeyPath: tc.key, SSHPoPHostCertPath: tc.cert}
		key, cert, err := c.sshpopPaths()
		if key != tc.wantKey || cert != tc.wantCert || (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("sshpopPaths(%q, %q) = %q, %q, %v; want %q, %q, %q", tc.key, tc.cert, key, cert, err, tc.wantKey, tc.wantCert, tc.wantErr)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults filled", Config{ServerAddress: "s:1", TrustDomain: "example.org"}, ""},
		{"no server", Config{TrustDomain: "example.org"}, "server address"},
		{"server without port", Config{ServerAddress: "s", TrustDomain: "example.org"}, "HOST:PORT"},
		{"no trust domain", Config{ServerAddress: "s:1"}, "trust domain"},
		{"bad trust domain", Config{ServerAddress: "s:1", TrustDomain: "Example.ORG"}, "trust domain"},
		{"token and token file", Config{ServerAddress: "s:1", TrustDomain: "example.org", JoinToken: "a", JoinTokenFile: "/f"}, "not both"},
		{"token and k8s_psat", Config{ServerAddress: "s:1", TrustDomain: "example.org", JoinTokenFile: "/f", K8sPSATCluster: "prod"}, "attests one way"},
		{"k8s_psat token path without a cluster", Config{ServerAddress: "s:1", TrustDomain: "example.org", K8sPSATTokenPath: "/t"}, "k8s_psat_cluster is not"},
		{"k8s_psat", Config{ServerAddress: "s:1", TrustDomain: "example.org", K8sPSATCluster: "prod"}, ""},
		{"x509pop", Config{ServerAddress: "s:1", TrustDomain: "example.org", X509PoPCertPath: "/c", X509PoPKeyPath: "/k"}, ""},
		{"x509pop without a key", Config{ServerAddress: "s:1", TrustDomain: "example.org", X509PoPCertPath: "/c"}, "needs both"},
		{"x509pop key without a certificate", Config{ServerAddress: "s:1", TrustDomain: "example.org", X509PoPKeyPath: "/k"}, "needs both"},
		{"token and x509pop", Config{ServerAddress: "s:1", TrustDomain: "example.org", JoinToken: "a", X509PoPCertPath: "/c", X509PoPKeyPath: "/k"}, "not a join token and x509pop_cert_path"},
		{"k8s_psat and x509pop", Config{ServerAddress: "s:1", TrustDomain: "example.org", K8sPSATCluster: "prod", X509PoPCertPath: "/c", X509PoPKeyPath: "/k"}, "not k8s_psat_cluster and x509pop_cert_path"},
		{"sshpop key", Config{ServerAddress: "s:1", TrustDomain: "example.org", SSHPoPHostKeyPath: "/etc/ssh/ssh_host_rsa_key"}, ""},
		{"sshpop certificate", Config{ServerAddress: "s:1", TrustDomain: "example.org", SSHPoPHostCertPath: "/etc/ssh/ssh_host_rsa_key-cert.pub"}, ""},
		{"sshpop certificate not named -cert.pub", Config{ServerAddress: "s:1", TrustDomain: "example.org", SSHPoPHostCertPath: "/etc/ssh/host.crt"},
			`sshpop_host_cert_path "/etc/ssh/host.crt" does not end in -cert.pub`},
		{"sshpop with insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", SSHPoPHostKeyPath: "/k", InsecureBootstrap: true}, ""},
		{"x509pop and sshpop", Config{ServerAddress: "s:1", TrustDomain: "example.org", X509PoPCertPath: "/c", X509PoPKeyPath: "/k", SSHPoPHostKeyPath: "/k"},
			"not x509pop_cert_path and sshpop_host_key_path"},
		{"token file and sshpop", Config{ServerAddress: "s:1", TrustDomain: "example.org", JoinTokenFile: "/f", SSHPoPHostCertPath: "/k-cert.pub"},
			"not a join token and sshpop_host_key_path"},
		{"aws_iid", Config{ServerAddress: "s:1", TrustDomain: "example.org", AWSIID: &AWSIIDConfig{}}, ""},
		{"aws_iid with an endpoint", Config{ServerAddress: "s:1", TrustDomain: "example.org", AWSIID: &AWSIIDConfig{EC2MetadataEndpoint: "http://[fd00:ec2::254]/"}}, ""},
		{"aws_iid with a bad endpoint", Config{ServerAddress: "s:1", TrustDomain: "example.org", AWSIID: &AWSIIDConfig{EC2MetadataEndpoint: "169.254.169.254"}},
			`ec2_metadata_endpoint "169.254.169.254": want an http URL`},
		{"aws_iid and a join token", Config{ServerAddress: "s:1", TrustDomain: "example.org", JoinToken: "t", AWSIID: &AWSIIDConfig{}}, "not a join token and aws_iid"},
		{"aws_iid with insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", AWSIID: &AWSIIDConfig{}, InsecureBootstrap: true},
			"insecure_bootstrap cannot be used with aws_iid"},
		{"gcp_iit", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{}}, ""},
		{"gcp_iit with a host and port", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{IdentityTokenHost: "169.254.169.254:80"}}, ""},
		{"gcp_iit host with a scheme", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{IdentityTokenHost: "http://metadata.google.internal"}},
			"want a host[:port] such as metadata.google.internal"},
		{"gcp_iit service account with a slash", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{ServiceAccount: "a/b"}}, "gcp_iit service_account"},
		{"gcp_iit service account ..", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{ServiceAccount: ".."}}, "gcp_iit service_account"},
		{"gcp_iit service account .", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{ServiceAccount: "."}}, "gcp_iit service_account"},
		{"gcp_iit service account with a newline", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{ServiceAccount: "a\nb"}}, "gcp_iit service_account"},
		{"gcp_iit and aws_iid", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{}, AWSIID: &AWSIIDConfig{}}, "not aws_iid and gcp_iit"},
		{"gcp_iit with insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", GCPIIT: &GCPIITConfig{}, InsecureBootstrap: true},
			"insecure_bootstrap cannot be used with gcp_iit"},
		{"k8s_psat with insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", K8sPSATCluster: "prod", InsecureBootstrap: true}, "insecure_bootstrap cannot be used"},
		{"sds names", Config{ServerAddress: "s:1", TrustDomain: "example.org", SDS: SDSConfig{DefaultSVIDName: "svid", DefaultBundleName: "bundle"}}, ""},
		{"sds bundle name shadows the default SVID name", Config{ServerAddress: "s:1", TrustDomain: "example.org", SDS: SDSConfig{DefaultBundleName: "default"}}, "default_svid_name and default_bundle_name are both \"default\""},
		{"sds all-bundles name shadows the bundle name", Config{ServerAddress: "s:1", TrustDomain: "example.org", SDS: SDSConfig{DefaultAllBundlesName: "ROOTCA"}}, "default_bundle_name and default_all_bundles_name"},
		{"sds name is a SPIFFE ID", Config{ServerAddress: "s:1", TrustDomain: "example.org", SDS: SDSConfig{DefaultBundleName: "spiffe://example.org"}}, "choose a plain name"},
		{"trust bundle URL", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "https://bundle.example.org/b.json", TrustBundleFormat: "spiffe"}, ""},
		{"trust bundle URL over http to loopback", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "http://127.0.0.1:8080/bundle"}, ""},
		{"trust bundle URL over http elsewhere", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "http://bundle.example.org/b.pem"}, "plain http is allowed only to a loopback host"},
		{"trust bundle URL of another scheme", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "ftp://bundle.example.org/b.pem"}, "want an https URL"},
		{"trust bundle URL without a host", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "https:///b.pem"}, "want https://host"},
		{"trust bundle URL with user info", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "https://user:secret@bundle.example.org/"}, "user info in the URL is not allowed"},
		{"trust bundle URL and path", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "https://b.example.org/", TrustBundleFile: "/b.pem"}, "trust_bundle_path or trust_bundle_url, not both"},
		{"trust bundle URL and in-memory roots", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "https://b.example.org/", TrustBundlePEM: []byte("x")}, "not both"},
		{"trust bundle file and insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleFile: "/b.pem", InsecureBootstrap: true}, "give trust_bundle_path or insecure_bootstrap, not both"},
		{"trust bundle PEM and insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundlePEM: []byte("x"), InsecureBootstrap: true}, "give trust_bundle_path or insecure_bootstrap, not both"},
		{"trust bundle URL and insecure bootstrap", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleURL: "https://b.example.org/", InsecureBootstrap: true}, "insecure_bootstrap cannot be used with trust_bundle_url"},
		{"trust bundle path in spiffe format", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleFile: "/b.json", TrustBundleFormat: "spiffe"}, ""},
		{"unknown trust bundle format", Config{ServerAddress: "s:1", TrustDomain: "example.org", TrustBundleFile: "/b.der", TrustBundleFormat: "der"}, `trust_bundle_format "der": want "pem" or "spiffe"`},
		{"kubelet settings without the attestor", Config{ServerAddress: "s:1", TrustDomain: "example.org", KubeletSkipVerify: true}, "workload attestor is off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			_, err := cfg.validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.DataDir != DefaultDataDir || cfg.SocketPath != DefaultSocketPath || cfg.TrustBundleFormat == "" {
					t.Fatalf("defaults not filled: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`server_address = "s:1"` + "\n" + `trust_domain = "example.org"`))
	f.Add([]byte(`agent { join_token = "x" insecure_bootstrap = true }`))
	f.Add([]byte(`agent { agent { x = 1 } }`))
	f.Add([]byte(`"data_dir" = ["a", "b"]`))
	f.Add([]byte(`sds { default_svid_name = "x" disable_spiffe_cert_validation = true }`))
	f.Add([]byte(`sds = [{}, {}]`))
	f.Add([]byte(`agent { trust_bundle_url = "https://b.example.org/" trust_bundle_format = "spiffe" }`))
	f.Add([]byte(`agent { systemd_workload_attestor = false }`))
	f.Add([]byte(`agent { aws_iid { ec2_metadata_endpoint = "http://169.254.169.254/" } }`))
	f.Add([]byte(`aws_iid {}`))
	f.Add([]byte(`gcp_iit { identity_token_host = "h:1" service_account = "default" }`))
	f.Add([]byte(`agent { admin_socket_path = "/run/a.sock" authorized_delegates = ["spiffe://example.org/x"] }`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}

// systemd_workload_attestor: as set, else on when the host booted with
// systemd (a /run/systemd/system directory).
func TestSystemdWorkloadAttestor(t *testing.T) {
	booted := t.TempDir()
	notADir := filepath.Join(booted, "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		file   string
		runDir string
		want   bool
	}{
		{"unset on a host booted with systemd", "", booted, true},
		{"unset on a host without systemd", "", filepath.Join(booted, "missing"), false},
		{"unset, /run/systemd/system not a directory", "", notADir, false},
		{"forced on", "systemd_workload_attestor = true", filepath.Join(booted, "missing"), true},
		{"forced off", "agent {\n systemd_workload_attestor = false\n}", booted, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.file))
			if err != nil {
				t.Fatal(err)
			}
			cfg.systemdRunDir = tc.runDir
			if got := cfg.systemdAttestorOn(); got != tc.want {
				t.Fatalf("systemd attestor on = %v, want %v", got, tc.want)
			}
			a, err := cfg.workloadAttestor(slog.New(slog.DiscardHandler))
			if err != nil {
				t.Skipf("no systemd attestor on this machine: %v", err)
			}
			// Unix alone, or Unix and systemd under Multi.
			if _, unixOnly := a.(*attestor.Unix); unixOnly == tc.want {
				t.Fatalf("workload attestor %T with the systemd attestor on = %v", a, tc.want)
			}
		})
	}
	// /run/systemd/system seen, but no systemd cgroup hierarchy (a
	// container that mounts the host's /run): on by default, the agent
	// runs without it; forced on, it refuses to start.
	noCgroups := t.TempDir()
	for _, tc := range []struct {
		file    string
		wantErr bool
	}{{"", false}, {"systemd_workload_attestor = true", true}} {
		cfg, err := ParseConfig([]byte(tc.file))
		if err != nil {
			t.Fatal(err)
		}
		cfg.systemdRunDir, cfg.systemdCgroupFS = booted, noCgroups
		a, err := cfg.workloadAttestor(slog.New(slog.DiscardHandler))
		switch {
		case tc.wantErr && (err == nil || !strings.Contains(err.Error(), "systemd_workload_attestor")):
			t.Errorf("%q without a systemd hierarchy: %v, want an error naming the setting", tc.file, err)
		case !tc.wantErr && err != nil:
			t.Errorf("%q without a systemd hierarchy: %v, want the agent to run without the attestor", tc.file, err)
		case !tc.wantErr:
			if _, unixOnly := a.(*attestor.Unix); !unixOnly {
				t.Errorf("%q without a systemd hierarchy: attestor %T, want Unix alone", tc.file, a)
			}
		}
	}
	if _, err := ParseConfig([]byte(`systemd_workload_attestor = "yes"`)); err == nil || !strings.Contains(err.Error(), "systemd_workload_attestor") {
		t.Fatalf("a string for systemd_workload_attestor: %v, want an error naming the key", err)
	}
}

// The admin socket: off unless set, never the Workload API socket nor in
// its directory (which the CSI driver mounts into pods) or below, symbolic
// links resolved; delegates are workload IDs of the agent's trust domain,
// and need the socket.
func TestConfigValidateAdminSocket(t *testing.T) {
	realDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(realDir, "sockets"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "run")
	if err := os.Symlink(realDir, link); err != nil {
		t.Fatal(err)
	}
	const cilium = "spiffe://example.org/cilium"
	tests := []struct {
		name      string
		socket    string
		admin     string
		delegates []string
		wantErr   string
		want      []string // parsed delegates
	}{
		{name: "off", delegates: nil},
		{name: "apart from the Workload API", admin: "/run/signet/admin/admin.sock", delegates: []string{cilium, "spiffe://example.org/ztunnel", cilium},
			want: []string{cilium, "spiffe://example.org/ztunnel"}},
		{name: "a sibling directory sharing a prefix", admin: "/run/signet/sockets-admin/admin.sock", delegates: []string{cilium}, want: []string{cilium}},
		{name: "no delegates: allowed, everyone refused", admin: "/run/signet/admin.sock"},
		{name: "delegates without the socket", delegates: []string{cilium}, wantErr: "authorized_delegates is set but admin_socket_path is not"},
		{name: "the Workload API socket itself", admin: DefaultSocketPath, wantErr: "is the Workload API socket"},
		{name: "in the Workload API socket's directory", admin: "/run/signet/sockets/admin.sock", wantErr: "inside /run/signet/sockets, the Workload API socket's directory"},
		{name: "below the Workload API socket's directory", admin: "/run/signet/sockets/admin/admin.sock", wantErr: "the Workload API socket's directory"},
		{name: "a name starting with two dots, in the directory", admin: "/run/signet/sockets/..admin.sock", wantErr: "the Workload API socket's directory"},
		{name: "the directory itself", admin: "/run/signet/sockets", wantErr: "the Workload API socket's directory"},
		{name: "relative paths", socket: "sockets/agent.sock", admin: "sockets/../sockets/admin.sock", wantErr: "the Workload API socket's directory"},
		{name: "through a symbolic link", socket: filepath.Join(realDir, "sockets", "agent.sock"), admin: filepath.Join(link, "sockets", "admin.sock"), wantErr: "the Workload API socket's directory"},
		{name: "a delegate of another trust domain", admin: "/run/signet/admin.sock", delegates: []string{"spiffe://other.org/cilium"}, wantErr: `authorized_delegates: SPIFFE ID "spiffe://other.org/cilium" is not in trust domain "example.org"`},
		{name: "the bare trust domain", admin: "/run/signet/admin.sock", delegates: []string{"spiffe://example.org"}, wantErr: "needs a path"},
		{name: "not a SPIFFE ID", admin: "/run/signet/admin.sock", delegates: []string{"cilium"}, wantErr: "authorized_delegates: invalid SPIFFE ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{ServerAddress: "s:1", TrustDomain: "example.org", SocketPath: tc.socket, AdminSocketPath: tc.admin, AuthorizedDelegates: tc.delegates}
			_, err := cfg.validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, id := range cfg.delegates {
				got = append(got, id.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("delegates = %v, want %v", got, tc.want)
			}
		})
	}
}
