package server

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/oidcdiscovery"
)

// sshCAKey is an SSH CA's public key in authorized_keys format.
const sshCAKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID7yPnhzqlqamdfhAg3I8sakcDCkDtAcl/EmoK7D8MIk ca@example.org"

func TestParseConfigFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{
			name: "full",
			in: `trust_domain = "example.org"
data_dir = "/tmp/signet"
listen = "127.0.0.1:8081"
svid_ttl = "10s"
jwt_ttl = "1m"
datastore = "postgres://u@127.0.0.1/db"`,
			check: func(t *testing.T, c Config) {
				if c.TrustDomain.Name() != "example.org" || c.SVIDTTL != 10*time.Second || c.JWTTTL != time.Minute ||
					c.AgentTTL != 10*time.Second || c.Datastore != "postgres://u@127.0.0.1/db" || c.Listen != "127.0.0.1:8081" {
					t.Fatalf("unexpected config %+v", c)
				}
			},
		},
		{
			name: "defaults",
			in:   `trust_domain = "example.org"`,
			check: func(t *testing.T, c Config) {
				if c.SVIDTTL != DefaultSVIDTTL || c.JWTTTL != DefaultJWTTTL || c.DataDir != DefaultDataDir ||
					c.Datastore != "sqlite://"+DefaultDataDir+"/signet.db" || c.AdminSocket != DefaultAdminSocket {
					t.Fatalf("unexpected defaults %+v", c)
				}
			},
		},
		{
			name: "audit log",
			in:   "trust_domain = \"a.org\"\naudit_log_enabled = true",
			check: func(t *testing.T, c Config) {
				if !c.AuditLog {
					t.Fatal("audit_log_enabled = true, AuditLog false")
				}
			},
		},
		{
			name: "audit log off by default",
			in:   "trust_domain = \"a.org\"",
			check: func(t *testing.T, c Config) {
				if c.AuditLog {
					t.Fatal("AuditLog on by default")
				}
			},
		},
		{
			name: "agent pruning",
			in:   "trust_domain = \"a.org\"\nprune_attested_nodes_expired_for = \"720h\"\nprune_tofu_nodes = true",
			check: func(t *testing.T, c Config) {
				if c.PruneAgentsExpiredFor != 720*time.Hour || !c.PruneNonReattestable {
					t.Fatalf("pruning %s %v", c.PruneAgentsExpiredFor, c.PruneNonReattestable)
				}
			},
		},
		{
			name: "agent pruning off by default",
			in:   "trust_domain = \"a.org\"",
			check: func(t *testing.T, c Config) {
				if c.PruneAgentsExpiredFor != 0 || c.PruneNonReattestable {
					t.Fatalf("pruning on by default: %s %v", c.PruneAgentsExpiredFor, c.PruneNonReattestable)
				}
			},
		},
		{name: "agent pruning too soon", in: "trust_domain = \"a.org\"\nprune_attested_nodes_expired_for = \"30s\"", wantErr: "at least 1m"},
		{name: "agent pruning not a duration", in: "trust_domain = \"a.org\"\nprune_attested_nodes_expired_for = \"30 days\"", wantErr: "prune_attested_nodes_expired_for \"30 days\""},
		{name: "tofu pruning alone", in: "trust_domain = \"a.org\"\nprune_tofu_nodes = true", wantErr: "prune_tofu_nodes needs prune_attested_nodes_expired_for"},
		{name: "audit log misspelt", in: "trust_domain = \"a.org\"\naudit_log = true", wantErr: "unknown key(s): audit_log (line 2)"},
		{name: "audit log not a bool", in: "trust_domain = \"a.org\"\naudit_log_enabled = \"true\"", wantErr: "line 2: audit_log_enabled takes true or false (no quotes)"},
		{name: "unknown key", in: "trust_domain = \"a.org\"\nsvid_tll = \"1h\"", wantErr: "unknown key(s): svid_tll (line 2)"},
		{name: "no trust domain", in: `data_dir = "/x"`, wantErr: "trust_domain is required"},
		{name: "bad trust domain", in: `trust_domain = "Example.org"`, wantErr: "trust_domain"},
		{name: "bad duration", in: "trust_domain = \"a.org\"\nsvid_ttl = \"1 hour\"", wantErr: "Go duration"},
		{name: "ca ttl too short", in: "trust_domain = \"a.org\"\nsvid_ttl = \"1h\"\nca_ttl = \"2h\"", wantErr: "at least 6 x svid_ttl"},
		{name: "syntax", in: `trust_domain = "a.org`, wantErr: "parse server config"},
		{
			name: "k8s_psat clusters",
			in: `trust_domain = "example.org"
k8s_psat "prod" {
  service_account_allow_list = ["signet-system:signet-agent"]
  kubeconfig = "/etc/signet/prod.kubeconfig"
  allowed_node_label_keys = ["topology.kubernetes.io/zone"]
}
k8s_psat "dev" {
  service_account_allow_list = ["signet:agent", "kube-system:signet"]
  audience = "signet-dev"
}`,
			check: func(t *testing.T, c Config) {
				if len(c.K8sPSAT) != 2 {
					t.Fatalf("clusters %+v", c.K8sPSAT)
				}
				dev, prod := c.K8sPSAT[0], c.K8sPSAT[1]
				if dev.Name != "dev" || dev.Audience != "signet-dev" || len(dev.ServiceAccountAllowList) != 2 || dev.Kubeconfig != "" {
					t.Errorf("dev cluster %+v", dev)
				}
				if prod.Name != "prod" || prod.Audience != "signet-server" || prod.Kubeconfig != "/etc/signet/prod.kubeconfig" ||
					len(prod.AllowedNodeLabelKeys) != 1 || prod.AllowedNodeLabelKeys[0] != "topology.kubernetes.io/zone" {
					t.Errorf("prod cluster %+v", prod)
				}
			},
		},
		{
			name: "k8s_bundle",
			in:   "trust_domain = \"a.org\"\nk8s_bundle {\n namespace = \"signet-system\"\n config_map = \"signet-trust-bundle\"\n}",
			check: func(t *testing.T, c Config) {
				if b := c.K8sBundle; b == nil || b.Namespace != "signet-system" || b.ConfigMap != "signet-trust-bundle" || b.Kubeconfig != "" {
					t.Fatalf("k8s_bundle %+v", c.K8sBundle)
				}
			},
		},
		{
			name: "x509pop",
			in:   "trust_domain = \"a.org\"\nx509pop {\n ca_bundle_path = \"/etc/signet/node-ca.pem\"\n agent_path_template = \"cn/{{ .Subject.CommonName }}\"\n}",
			check: func(t *testing.T, c Config) {
				if x := c.X509PoP; x == nil || !slices.Equal(x.CABundlePaths, []string{"/etc/signet/node-ca.pem"}) || x.AgentPathTemplate != "cn/{{ .Subject.CommonName }}" {
					t.Fatalf("x509pop %+v", c.X509PoP)
				}
			},
		},
		{
			name: "x509pop with several bundles (SPIRE's ca_bundle_paths)",
			in:   "trust_domain = \"a.org\"\nx509pop {\n ca_bundle_paths = [\"/etc/signet/dc1.pem\", \"/etc/signet/dc2.pem\"]\n}",
			check: func(t *testing.T, c Config) {
				if x := c.X509PoP; x == nil || !slices.Equal(x.CABundlePaths, []string{"/etc/signet/dc1.pem", "/etc/signet/dc2.pem"}) {
					t.Fatalf("x509pop %+v", c.X509PoP)
				}
			},
		},
		{name: "x509pop without a bundle", in: "trust_domain = \"a.org\"\nx509pop {\n agent_path_template = \"x\"\n}", wantErr: "x509pop: ca_bundle_path or ca_bundle_paths is required"},
		{name: "x509pop with both bundle keys", in: "trust_domain = \"a.org\"\nx509pop {\n ca_bundle_path = \"/b\"\n ca_bundle_paths = [\"/c\"]\n}", wantErr: "x509pop: ca_bundle_path and ca_bundle_paths are both set"},
		{name: "x509pop with an empty bundle path", in: "trust_domain = \"a.org\"\nx509pop {\n ca_bundle_paths = [\"/c\", \"\"]\n}", wantErr: "x509pop: ca_bundle_paths holds an empty path"},
		{name: "x509pop unknown key", in: "trust_domain = \"a.org\"\nx509pop {\n ca_bundle_path = \"/b\"\n ca_bundles = [\"/c\"]\n}", wantErr: "x509pop: ca_bundles (line 4)"},
		{name: "x509pop with a label", in: "trust_domain = \"a.org\"\nx509pop \"x\" { ca_bundle_path = \"/b\" }", wantErr: "line 2: want x509pop { ca_bundle_path"},
		{
			name: "sshpop (SPIRE's keys)",
			in: "trust_domain = \"a.org\"\nsshpop {\n cert_authorities = [\"" + sshCAKey + "\"]\n cert_authorities_path = \"/etc/signet/ssh-ca.pub\"\n" +
				" canonical_domain = \"example.org\"\n agent_path_template = \"sshpop/{{ .Hostname }}\"\n}",
			check: func(t *testing.T, c Config) {
				if x := c.SSHPoP; x == nil || !slices.Equal(x.CertAuthorities, []string{sshCAKey}) || x.CertAuthoritiesPath != "/etc/signet/ssh-ca.pub" ||
					x.CanonicalDomain != "example.org" || x.AgentPathTemplate != "sshpop/{{ .Hostname }}" {
					t.Fatalf("sshpop %+v", c.SSHPoP)
				}
			},
		},
		{
			name: "sshpop with a relative CA file",
			in:   "trust_domain = \"a.org\"\nsshpop { cert_authorities_path = \"ssh-ca.pub\" }",
			check: func(t *testing.T, c Config) {
				if x := c.SSHPoP; x == nil || !filepath.IsAbs(x.CertAuthoritiesPath) || filepath.Base(x.CertAuthoritiesPath) != "ssh-ca.pub" {
					t.Fatalf("sshpop %+v", c.SSHPoP)
				}
			},
		},
		{name: "sshpop without a CA", in: "trust_domain = \"a.org\"\nsshpop {\n canonical_domain = \"example.org\"\n}", wantErr: "sshpop: cert_authorities or cert_authorities_path is required"},
		{name: "sshpop with a bad CA", in: "trust_domain = \"a.org\"\nsshpop {\n cert_authorities = [\"" + sshCAKey + "\", \"ssh-rsa AAAA\"]\n}", wantErr: "sshpop: cert_authorities[1]: not an authorized_keys line"},
		{name: "sshpop with a bad canonical domain", in: "trust_domain = \"a.org\"\nsshpop {\n cert_authorities_path = \"/c\"\n canonical_domain = \"*.example.org\"\n}", wantErr: `sshpop: canonical_domain "*.example.org"`},
		{name: "sshpop with a bad template", in: "trust_domain = \"a.org\"\nsshpop {\n cert_authorities_path = \"/c\"\n agent_path_template = \"{{ .Hostname\"\n}", wantErr: "sshpop: agent_path_template"},
		{name: "sshpop unknown key (SPIRE's agent key)", in: "trust_domain = \"a.org\"\nsshpop {\n cert_authorities_path = \"/c\"\n host_key_path = \"/k\"\n}", wantErr: "sshpop: host_key_path (line 4)"},
		{name: "sshpop with a label", in: "trust_domain = \"a.org\"\nsshpop \"x\" { cert_authorities_path = \"/c\" }", wantErr: "line 2: want sshpop { cert_authorities_path"},
		{name: "sshpop twice", in: "trust_domain = \"a.org\"\nsshpop { cert_authorities_path = \"/b\" }\nsshpop { cert_authorities_path = \"/c\" }", wantErr: "line 3: sshpop is already configured at line 2"},
		{name: "x509pop twice", in: "trust_domain = \"a.org\"\nx509pop { ca_bundle_path = \"/b\" }\nx509pop { ca_bundle_path = \"/c\" }", wantErr: "line 3: x509pop is already configured at line 2"},
		{
			name: "aws_iid (SPIRE's keys that need no EC2 API)",
			in: "trust_domain = \"a.org\"\naws_iid {\n account_ids_for_local_validation = [\"111122223333\", \"444455556666\"]\n" +
				" aws_certificates_path = \"aws-certs.pem\"\n agent_path_template = \"aws_iid/{{ .Region }}/{{ .InstanceID }}\"\n}",
			check: func(t *testing.T, c Config) {
				if x := c.AWSIID; x == nil || !slices.Equal(x.AccountIDs, []string{"111122223333", "444455556666"}) || !filepath.IsAbs(x.CertificatesPath) ||
					filepath.Base(x.CertificatesPath) != "aws-certs.pem" || x.AgentPathTemplate != "aws_iid/{{ .Region }}/{{ .InstanceID }}" {
					t.Fatalf("aws_iid %+v", c.AWSIID)
				}
			},
		},
		{name: "aws_iid without accounts", in: "trust_domain = \"a.org\"\naws_iid {\n agent_path_template = \"x\"\n}", wantErr: "aws_iid: account_ids_for_local_validation is required"},
		{name: "aws_iid with a bad account", in: "trust_domain = \"a.org\"\naws_iid {\n account_ids_for_local_validation = [\"prod\"]\n}", wantErr: `"prod" is not an AWS account ID`},
		{name: "aws_iid with SPIRE's EC2 API keys", in: "trust_domain = \"a.org\"\naws_iid {\n account_ids_for_local_validation = [\"111122223333\"]\n skip_block_device = true\n}",
			wantErr: "line 4: aws_iid: skip_block_device is a key of SPIRE's EC2 API calls, which Signet does not make"},
		{name: "aws_iid with a .Tags template", in: "trust_domain = \"a.org\"\naws_iid {\n account_ids_for_local_validation = [\"111122223333\"]\n agent_path_template = \"{{ .Tags.name }}\"\n}",
			wantErr: "uses .Tags"},
		{name: "aws_iid unknown key", in: "trust_domain = \"a.org\"\naws_iid {\n account_ids_for_local_validation = [\"111122223333\"]\n accounts = [\"1\"]\n}", wantErr: "aws_iid: accounts (line 4)"},
		{
			name: "gcp_iit (SPIRE's keys that need no Compute Engine API)",
			in: "trust_domain = \"a.org\"\ngcp_iit {\n projectid_allow_list = [\"project-a\"]\n use_instance_metadata = false\n" +
				" agent_path_template = \"gcp_iit/{{ .Zone }}/{{ .InstanceName }}/{{ .InstanceID }}\"\n google_certificates_url = \"http://127.0.0.1:8080/certs\"\n}",
			check: func(t *testing.T, c Config) {
				if x := c.GCPIIT; x == nil || !slices.Equal(x.ProjectIDs, []string{"project-a"}) || x.AgentPathTemplate != "gcp_iit/{{ .Zone }}/{{ .InstanceName }}/{{ .InstanceID }}" ||
					x.CertsURL != "http://127.0.0.1:8080/certs" {
					t.Fatalf("gcp_iit %+v", c.GCPIIT)
				}
			},
		},
		{name: "gcp_iit without projects", in: "trust_domain = \"a.org\"\ngcp_iit {\n agent_path_template = \"x\"\n}", wantErr: "gcp_iit: projectid_allow_list is required"},
		{name: "gcp_iit with instance metadata", in: "trust_domain = \"a.org\"\ngcp_iit {\n projectid_allow_list = [\"p\"]\n use_instance_metadata = true\n}",
			wantErr: "gcp_iit: use_instance_metadata is not supported: it needs the Compute Engine API"},
		{name: "gcp_iit with SPIRE's Compute Engine API keys", in: "trust_domain = \"a.org\"\ngcp_iit {\n projectid_allow_list = [\"p\"]\n allowed_label_keys = [\"env\"]\n}",
			wantErr: "line 4: gcp_iit: allowed_label_keys is a key of SPIRE's Compute Engine API calls"},
		{name: "gcp_iit with an http certificates URL", in: "trust_domain = \"a.org\"\ngcp_iit {\n projectid_allow_list = [\"p\"]\n google_certificates_url = \"http://www.googleapis.com/oauth2/v1/certs\"\n}",
			wantErr: "plain http is allowed only to a loopback host"},
		{name: "gcp_iit SPIRE's old key", in: "trust_domain = \"a.org\"\ngcp_iit {\n projectid_whitelist = [\"p\"]\n}", wantErr: "line 3: gcp_iit: projectid_whitelist is the old name of projectid_allow_list, its name in SPIRE now: rename it"},
		{name: "gcp_iit with a label", in: "trust_domain = \"a.org\"\ngcp_iit \"x\" { projectid_allow_list = [\"p\"] }", wantErr: "line 2: want gcp_iit { projectid_allow_list"},
		{name: "aws_iid with a label", in: "trust_domain = \"a.org\"\naws_iid \"x\" { account_ids_for_local_validation = [\"111122223333\"] }", wantErr: "line 2: want aws_iid { account_ids_for_local_validation"},
		{name: "k8s_bundle without a name", in: "trust_domain = \"a.org\"\nk8s_bundle {\n namespace = \"signet-system\"\n}", wantErr: "namespace and config_map are required"},
		{name: "k8s_bundle unknown key", in: "trust_domain = \"a.org\"\nk8s_bundle {\n namespace = \"n\"\n configmap = \"x\"\n}", wantErr: "k8s_bundle: configmap (line 4)"},
		{name: "k8s_psat without a cluster name", in: "trust_domain = \"a.org\"\nk8s_psat { service_account_allow_list = [\"a:b\"] }", wantErr: `line 2: want k8s_psat "<cluster name>"`},
		{name: "k8s_psat with two labels", in: "trust_domain = \"a.org\"\nk8s_psat \"a\" \"b\" { service_account_allow_list = [\"a:b\"] }", wantErr: `line 2: want k8s_psat "<cluster name>"`},
		{name: "k8s_psat cluster twice", in: "trust_domain = \"a.org\"\nk8s_psat \"a\" { service_account_allow_list = [\"a:b\"] }\nk8s_psat \"a\" { service_account_allow_list = [\"c:d\"] }", wantErr: `line 3: k8s_psat "a" is already configured at line 2`},
		{name: "k8s_bundle twice", in: "trust_domain = \"a.org\"\nk8s_bundle { namespace = \"n\"\n config_map = \"c\" }\nk8s_bundle { namespace = \"m\"\n config_map = \"c\" }", wantErr: "line 4: k8s_bundle is already configured at line 2"},
		{name: "k8s_bundle with a label", in: "trust_domain = \"a.org\"\nk8s_bundle \"x\" { namespace = \"n\"\n config_map = \"c\" }", wantErr: "(no label)"},
		{name: "k8s_psat unknown key", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" {\n service_account_allow_list = [\"a:b\"]\n audiences = [\"x\"]\n}", wantErr: `unknown key(s): k8s_psat "prod": audiences (line 4)`},
		{name: "k8s_psat no allow list", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" {\n audience = \"x\"\n}", wantErr: "service_account_allow_list is required"},
		{
			name: "k8s_controller defaults",
			in:   "trust_domain = \"a.org\"\nk8s_psat \"prod\" {\n service_account_allow_list = [\"a:b\"]\n kubeconfig = \"/etc/prod.kubeconfig\"\n}\nk8s_controller {\n cluster = \"prod\"\n}",
			check: func(t *testing.T, c Config) {
				k := c.K8sController
				if k == nil || k.Cluster != "prod" || k.Kubeconfig != "/etc/prod.kubeconfig" || strings.Join(k.IgnoreNamespaces, ",") != "kube-system,kube-public" {
					t.Fatalf("k8s_controller %+v", k)
				}
			},
		},
		{
			name: "k8s_controller settings",
			in:   "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n kubeconfig = \"/k\"\n ignore_namespaces = [\"infra\"]\n cluster_domain = \"cluster.local\"\n class_name = \"signet\"\n watch_classless = true\n}",
			check: func(t *testing.T, c Config) {
				k := c.K8sController
				if k == nil || k.Kubeconfig != "/k" || strings.Join(k.IgnoreNamespaces, ",") != "infra" ||
					k.ClusterDomain != "cluster.local" || k.ClassName != "signet" || !k.WatchClassless {
					t.Fatalf("k8s_controller %+v", k)
				}
			},
		},
		{name: "no k8s_controller", in: `trust_domain = "a.org"`, check: func(t *testing.T, c Config) {
			if c.K8sController != nil {
				t.Fatalf("k8s_controller %+v without a block", c.K8sController)
			}
		}},
		{name: "k8s_controller cluster without k8s_psat", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\n\nk8s_controller { cluster = \"dev\" }", wantErr: `line 4: k8s_controller: cluster "dev" has no k8s_psat "dev" block`},
		{name: "k8s_controller without cluster", in: "trust_domain = \"a.org\"\nk8s_controller { ignore_namespaces = [] }", wantErr: "line 2: k8s_controller: cluster is required"},
		{name: "k8s_controller twice", in: "trust_domain = \"a.org\"\nk8s_controller { cluster = \"a\" }\nk8s_controller { cluster = \"a\" }", wantErr: "line 3: k8s_controller is already configured at line 2"},
		{name: "k8s_controller with a label", in: "trust_domain = \"a.org\"\nk8s_controller \"prod\" { cluster = \"prod\" }", wantErr: "line 2: want k8s_controller { cluster"},
		{name: "k8s_controller unknown key", in: "trust_domain = \"a.org\"\nk8s_controller {\n cluster = \"a\"\n ignore_namespace = [\"x\"]\n}", wantErr: "k8s_controller: ignore_namespace (line 4)"},
		{name: "k8s_controller bad namespace", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n ignore_namespaces = [\"Kube System\"]\n}", wantErr: `ignore_namespaces: "Kube System" is not a namespace name`},
		{name: "k8s_controller bad cluster domain", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n cluster_domain = \".cluster.local\"\n}", wantErr: `cluster_domain ".cluster.local" is not a DNS domain`},
		{
			name: "k8s_controller leader election defaults",
			in:   "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n class_name = \"eu\"\n leader_election = true\n}",
			check: func(t *testing.T, c Config) {
				k := c.K8sController
				if k == nil || !k.LeaderElection || k.LeaderElectionLease != "signet-controller-prod-eu" || k.LeaderElectionNamespace != "" {
					t.Fatalf("k8s_controller %+v", k)
				}
			},
		},
		{
			name: "k8s_controller leader election settings",
			in:   "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n leader_election = true\n leader_election_namespace = \"signet\"\n leader_election_lease = \"ctl\"\n}",
			check: func(t *testing.T, c Config) {
				if k := c.K8sController; k == nil || k.LeaderElectionLease != "ctl" || k.LeaderElectionNamespace != "signet" {
					t.Fatalf("k8s_controller %+v", k)
				}
			},
		},
		{name: "k8s_controller lease without leader election", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n leader_election_lease = \"ctl\"\n}", wantErr: "leader_election_lease need leader_election = true"},
		{name: "k8s_controller bad lease namespace", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n leader_election = true\n leader_election_namespace = \"Signet\"\n}", wantErr: `leader_election_namespace "Signet" is not a namespace name`},
		{name: "k8s_controller bad lease name", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n leader_election = true\n leader_election_lease = \"a_b\"\n}", wantErr: `leader_election_lease "a_b" is not an object name`},
		{name: "k8s_controller default lease name invalid", in: "trust_domain = \"a.org\"\nk8s_psat \"Prod_1\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"Prod_1\"\n leader_election = true\n}", wantErr: `the default leader_election_lease "signet-controller-Prod_1" is not an object name`},
		{name: "k8s_controller watch_classless alone", in: "trust_domain = \"a.org\"\nk8s_psat \"prod\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller {\n cluster = \"prod\"\n watch_classless = true\n}", wantErr: "watch_classless needs class_name"},
		{
			name: "upstream_authority disk",
			in:   "trust_domain = \"a.org\"\nupstream_authority \"disk\" {\n cert_file_path = \"/etc/signet/upstream/tls.crt\"\n key_file_path = \"upstream/tls.key\"\n bundle_file_path = \"/etc/signet/upstream/ca.crt\"\n}",
			check: func(t *testing.T, c Config) {
				u := c.UpstreamAuthority
				if u == nil || u.CertFile != "/etc/signet/upstream/tls.crt" || u.BundleFile != "/etc/signet/upstream/ca.crt" ||
					!filepath.IsAbs(u.KeyFile) || !strings.HasSuffix(u.KeyFile, "/upstream/tls.key") {
					t.Fatalf("upstream_authority %+v", u)
				}
			},
		},
		{name: "upstream_authority self-signed", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" {\n cert_file_path = \"/c\"\n key_file_path = \"/k\"\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamAuthority; u == nil || u.BundleFile != "" {
				t.Fatalf("upstream_authority %+v", u)
			}
		}},
		{name: "no upstream_authority", in: `trust_domain = "a.org"`, check: func(t *testing.T, c Config) {
			if c.UpstreamAuthority != nil {
				t.Fatalf("upstream_authority %+v without a block", c.UpstreamAuthority)
			}
		}},
		{name: "upstream_authority without key", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" {\n cert_file_path = \"/c\"\n}", wantErr: "cert_file_path and key_file_path are required"},
		{name: "upstream_authority other kind", in: "trust_domain = \"a.org\"\nupstream_authority \"vault\" {\n cert_file_path = \"/c\"\n}", wantErr: `line 2: want upstream_authority "disk"`},
		{name: "upstream_authority without kind", in: "trust_domain = \"a.org\"\nupstream_authority {\n cert_file_path = \"/c\"\n}", wantErr: `line 2: want upstream_authority "disk"`},
		{name: "upstream_authority twice", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" { cert_file_path = \"/c\"\n key_file_path = \"/k\" }\nupstream_authority \"disk\" { cert_file_path = \"/d\"\n key_file_path = \"/k\" }", wantErr: "line 4: upstream_authority is already configured at line 2"},
		{name: "upstream_authority SPIRE plugin_data shape", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" {\n plugin_data {\n  cert_file_path = \"/c\"\n }\n}", wantErr: `line 3: upstream_authority "disk" takes cert_file_path, key_file_path and bundle_file_path directly, without SPIRE's plugin_data block`},
		{name: "upstream_authority unknown key", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" {\n cert_file_path = \"/c\"\n key_file = \"/k\"\n}", wantErr: `upstream_authority "disk": key_file (line 4)`},
		{name: "jwt_key_type default", in: `trust_domain = "a.org"`, check: func(t *testing.T, c Config) {
			if c.JWTKeyType != ca.JWTKeyECP256 {
				t.Fatalf("jwt_key_type %q, want ec-p256", c.JWTKeyType)
			}
		}},
		{name: "jwt_key_type rsa-2048", in: "trust_domain = \"a.org\"\njwt_key_type = \"rsa-2048\"", check: func(t *testing.T, c Config) {
			if c.JWTKeyType != ca.JWTKeyRSA2048 {
				t.Fatalf("jwt_key_type %q, want rsa-2048", c.JWTKeyType)
			}
		}},
		{name: "jwt_key_type unknown", in: "trust_domain = \"a.org\"\njwt_key_type = \"rsa-1024\"", wantErr: `jwt_key_type: unknown JWT key type "rsa-1024": want one of ec-p256, ec-p384, rsa-2048, rsa-4096`},
		{name: "jwt_issuer", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/tenant-1\"", check: func(t *testing.T, c Config) {
			if c.JWTIssuer != "https://oidc.example.org/tenant-1" || c.OIDCDiscovery != nil {
				t.Fatalf("jwt_issuer %q, oidc_discovery %+v", c.JWTIssuer, c.OIDCDiscovery)
			}
		}},
		{name: "no jwt_issuer", in: `trust_domain = "a.org"`, check: func(t *testing.T, c Config) {
			if c.JWTIssuer != "" || c.OIDCDiscovery != nil {
				t.Fatalf("jwt_issuer %q, oidc_discovery %+v without either", c.JWTIssuer, c.OIDCDiscovery)
			}
		}},
		{name: "jwt_issuer http on loopback (tests)", in: "trust_domain = \"a.org\"\njwt_issuer = \"http://127.0.0.1:8443\"", check: func(t *testing.T, c Config) {
			if c.JWTIssuer != "http://127.0.0.1:8443" {
				t.Fatalf("jwt_issuer %q", c.JWTIssuer)
			}
		}},
		{name: "jwt_issuer http on localhost", in: "trust_domain = \"a.org\"\njwt_issuer = \"http://localhost\"", check: func(t *testing.T, c Config) {}},
		{name: "jwt_issuer http on ::1", in: "trust_domain = \"a.org\"\njwt_issuer = \"http://[::1]:8080\"", check: func(t *testing.T, c Config) {}},
		{name: "jwt_issuer http elsewhere", in: "trust_domain = \"a.org\"\njwt_issuer = \"http://oidc.example.org\"", wantErr: `jwt_issuer "http://oidc.example.org": want https`},
		{name: "jwt_issuer without scheme", in: "trust_domain = \"a.org\"\njwt_issuer = \"oidc.example.org\"", wantErr: `jwt_issuer "oidc.example.org": want an https URL`},
		{name: "jwt_issuer other scheme", in: "trust_domain = \"a.org\"\njwt_issuer = \"spiffe://a.org\"", wantErr: `jwt_issuer "spiffe://a.org": want an https URL`},
		{name: "jwt_issuer without host", in: "trust_domain = \"a.org\"\njwt_issuer = \"https:///keys\"", wantErr: `jwt_issuer "https:///keys": want a host`},
		{name: "jwt_issuer with only a port", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://:443\"", wantErr: `jwt_issuer "https://:443": want a host`},
		{name: "jwt_issuer trailing slash", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/\"", wantErr: `jwt_issuer "https://oidc.example.org/": drop the trailing /`},
		{name: "jwt_issuer query", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org?a=b\"", wantErr: "no query or fragment"},
		{name: "jwt_issuer empty query", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org?\"", wantErr: "no query or fragment"},
		{name: "jwt_issuer fragment", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org#x\"", wantErr: "no query or fragment"},
		{name: "jwt_issuer user info", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://u:p@oidc.example.org\"", wantErr: "user info"},
		{name: "jwt_issuer upper-case scheme", in: "trust_domain = \"a.org\"\njwt_issuer = \"HTTPS://oidc.example.org\"", wantErr: `write it as "https://oidc.example.org"`},
		{name: "jwt_issuer upper-case host", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://OIDC.Example.org\"", wantErr: `lower case ("https://oidc.example.org")`},
		{name: "jwt_issuer non-ASCII host", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://bücher.example\"", wantErr: "punycode"},
		{name: "jwt_issuer default port", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org:443/t\"", wantErr: `drop the default port ("https://oidc.example.org/t")`},
		{name: "jwt_issuer empty port", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org:\"", wantErr: "empty port"},
		{name: "jwt_issuer wildcard", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://*.example.org\"", wantErr: "wildcard"},
		{name: "jwt_issuer dot segments", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/a/../b\"", wantErr: `write it as "/b"`},
		{name: "jwt_issuer double slash", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org//b\"", wantErr: `segments`},
		{name: "jwt_issuer unescaped space", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/a b\"", wantErr: `write it as "https://oidc.example.org/a%20b"`},
		{name: "jwt_issuer other port", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org:8443/t\"", check: func(t *testing.T, c Config) {}},
		{name: "jwt_issuer escaped path", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/a%20b\"", check: func(t *testing.T, c Config) {}},
		{name: "jwt_issuer not a URL", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/%zz\"", wantErr: "not a URL"},
		{
			name: "oidc_discovery",
			in: `trust_domain = "a.org"
jwt_issuer = "https://oidc.example.org"
oidc_discovery {
  listen = "0.0.0.0:8443"
  set_key_use = true
  serving_cert_file {
    cert_file_path = "oidc/tls.crt"
    key_file_path = "/etc/signet/oidc/tls.key"
    file_sync_interval = "1m"
  }
}`,
			check: func(t *testing.T, c Config) {
				o := c.OIDCDiscovery
				if o == nil || o.Listen != "0.0.0.0:8443" || o.Issuer != "https://oidc.example.org" || !o.SetKeyUse ||
					o.KeyFile != "/etc/signet/oidc/tls.key" || !filepath.IsAbs(o.CertFile) || !strings.HasSuffix(o.CertFile, "/oidc/tls.crt") {
					t.Fatalf("oidc_discovery %+v", o)
				}
			},
		},
		{name: "oidc_discovery plain HTTP, issuer repeated", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery {\n listen = \"127.0.0.1:8080\"\n jwt_issuer = \"https://oidc.example.org\"\n}", check: func(t *testing.T, c Config) {
			if o := c.OIDCDiscovery; o == nil || o.Issuer != "https://oidc.example.org" || o.CertFile != "" || o.KeyFile != "" || o.SetKeyUse {
				t.Fatalf("oidc_discovery %+v", o)
			}
		}},
		{name: "oidc_discovery without any jwt_issuer", in: "trust_domain = \"a.org\"\noidc_discovery { listen = \"0.0.0.0:8443\" }", wantErr: "oidc_discovery needs jwt_issuer"},
		{name: "oidc_discovery issuer without jwt_issuer", in: "trust_domain = \"a.org\"\noidc_discovery {\n listen = \"0.0.0.0:8443\"\n jwt_issuer = \"https://oidc.example.org\"\n}", wantErr: `oidc_discovery.jwt_issuer "https://oidc.example.org" is set but the server's jwt_issuer is not`},
		{name: "oidc_discovery issuer differs", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery {\n listen = \"0.0.0.0:8443\"\n jwt_issuer = \"https://oidc.example.org:8443\"\n}", wantErr: `oidc_discovery.jwt_issuer "https://oidc.example.org:8443" differs from jwt_issuer "https://oidc.example.org"`},
		{name: "oidc_discovery without listen", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery { set_key_use = true }", wantErr: `oidc_discovery: listen "": want host:port`},
		{name: "oidc_discovery listen without port", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery { listen = \"0.0.0.0\" }", wantErr: `oidc_discovery: listen "0.0.0.0": want host:port`},
		{name: "oidc_discovery cert without key", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery {\n listen = \":8443\"\n serving_cert_file { cert_file_path = \"/c\" }\n}", wantErr: "oidc_discovery.serving_cert_file: cert_file_path and key_file_path are both required"},
		{name: "oidc_discovery bad file_sync_interval", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery {\n listen = \":8443\"\n serving_cert_file {\n  cert_file_path = \"/c\"\n  key_file_path = \"/k\"\n  file_sync_interval = \"-1m\"\n }\n}", wantErr: `oidc_discovery.serving_cert_file.file_sync_interval "-1m"`},
		{name: "oidc_discovery unknown key", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery {\n listen = \":8443\"\n issuer = \"https://oidc.example.org\"\n}", wantErr: "unknown key(s): oidc_discovery.issuer (line 5)"},
		{name: "oidc_discovery serving_cert_file unknown key", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery {\n listen = \":8443\"\n serving_cert_file {\n  cert_file_path = \"/c\"\n  key_file_path = \"/k\"\n  addr = \":443\"\n }\n}", wantErr: "unknown key(s): oidc_discovery.serving_cert_file.addr (line 8)"},
		{name: "oidc_discovery twice", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery { listen = \":1\" }\noidc_discovery { listen = \":2\" }", wantErr: "line 4: oidc_discovery is already configured at line 3"},
		{name: "oidc_discovery with a label", in: "trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org\"\noidc_discovery \"x\" { listen = \":1\" }", wantErr: "line 3: want oidc_discovery { listen"},
		{name: "k8s_psat bad cluster name", in: "trust_domain = \"a.org\"\nk8s_psat \"prod/eu\" {\n service_account_allow_list = [\"a:b\"]\n}", wantErr: "one SPIFFE path segment"},
		{name: "upstream_authority signet", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"upstream.example.org:8443\"\n workload_api_socket = \"/run/spire/agent.sock\"\n}", check: func(t *testing.T, c Config) {
			u := c.UpstreamSignet
			if u == nil || u.TrustDomain.Name() != "a.org" || u.ServerAddress != "upstream.example.org:8443" || u.WorkloadAPISocket != "unix:///run/spire/agent.sock" || c.UpstreamAuthority != nil {
				t.Fatalf("upstream_authority signet %+v, disk %+v", u, c.UpstreamAuthority)
			}
		}},
		{name: "upstream_authority signet SPIRE's server_port", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"10.0.0.5\"\n server_port = \"8443\"\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamSignet; u == nil || u.ServerAddress != "10.0.0.5:8443" {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet server_port as a number, same as the address's", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:8443\"\n server_port = 8443\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamSignet; u == nil || u.ServerAddress != "up:8443" {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet bare host: port 8081, default socket", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"upstream.example.org\"\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamSignet; u == nil || u.ServerAddress != "upstream.example.org:8081" || u.WorkloadAPISocket != "unix://"+DefaultWorkloadAPISocket || DefaultWorkloadAPISocket != "/run/signet/sockets/agent.sock" {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet bare IPv6 host", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"fd00::5\"\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamSignet; u == nil || u.ServerAddress != "[fd00::5]:8081" {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet socket as a unix URL", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:8081\"\n workload_api_socket = \"unix:///var/run/signet/agent.sock\"\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamSignet; u == nil || u.WorkloadAPISocket != "unix:///var/run/signet/agent.sock" {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet relative socket path made absolute", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:8081\"\n workload_api_socket = \"sockets/agent.sock\"\n}", check: func(t *testing.T, c Config) {
			u := c.UpstreamSignet
			if u == nil || !strings.HasPrefix(u.WorkloadAPISocket, "unix:///") || !strings.HasSuffix(u.WorkloadAPISocket, "/sockets/agent.sock") {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet without server_address", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n workload_api_socket = \"/run/a.sock\"\n}", wantErr: `upstream_authority "signet": server_address is required`},
		{name: "upstream_authority signet conflicting ports", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:8443\"\n server_port = \"8081\"\n}", wantErr: `server_address "up:8443" names port 8443 and server_port says 8081`},
		{name: "upstream_authority signet port not a number", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up\"\n server_port = \"https\"\n}", wantErr: `port "https" is not a TCP port number`},
		{name: "upstream_authority signet port 0", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:0\"\n}", wantErr: `port "0" is not a TCP port number`},
		{name: "upstream_authority signet port too large", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:65536\"\n}", wantErr: `port "65536" is not a TCP port number`},
		{name: "upstream_authority signet empty port", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:\"\n}", wantErr: `port "" is not a TCP port number`},
		{name: "upstream_authority signet bracketed bare IPv6 host", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"[fd00::5]\"\n server_port = \"8443\"\n}", check: func(t *testing.T, c Config) {
			if u := c.UpstreamSignet; u == nil || u.ServerAddress != "[fd00::5]:8443" {
				t.Fatalf("upstream_authority signet %+v", u)
			}
		}},
		{name: "upstream_authority signet gRPC target URL", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"dns:///up:8081\"\n}", wantErr: `server_address "dns:///up:8081": want host:port, or a host name or IP address`},
		{name: "upstream_authority signet https URL", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"https://up:8443\"\n}", wantErr: `server_address "https://up:8443": want host:port`},
		{name: "upstream_authority signet stray colon", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up:8443:1\"\n}", wantErr: `server_address "up:8443:1": want host:port`},
		{name: "upstream_authority signet path in the host", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up/api:8443\"\n}", wantErr: `server_address "up/api:8443": want host:port`},
		{name: "upstream_authority signet no host", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \":8081\"\n}", wantErr: `server_address ":8081" has no host`},
		{name: "upstream_authority signet relative unix URL", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up\"\n workload_api_socket = \"unix://agent.sock\"\n}", wantErr: `workload_api_socket "unix://agent.sock": want unix:///abs/path or a path`},
		{name: "upstream_authority signet unix: without slashes", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up\"\n workload_api_socket = \"unix:/run/agent.sock\"\n}", wantErr: `workload_api_socket "unix:/run/agent.sock": want unix:///abs/path or a path`},
		{name: "upstream_authority signet TCP socket", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up\"\n workload_api_socket = \"tcp://127.0.0.1:9000\"\n}", wantErr: `workload_api_socket "tcp://127.0.0.1:9000": want unix:///abs/path or a path`},
		{name: "upstream_authority signet with a disk key", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up\"\n cert_file_path = \"/c\"\n}", wantErr: `upstream_authority "signet" takes server_address, server_port and workload_api_socket, not cert_file_path`},
		{name: "upstream_authority disk with a signet key", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" {\n cert_file_path = \"/c\"\n key_file_path = \"/k\"\n server_address = \"up\"\n}", wantErr: `upstream_authority "disk" takes cert_file_path, key_file_path and bundle_file_path, not server_address`},
		{name: "upstream_authority signet SPIRE plugin_data shape", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n plugin_data {\n  server_address = \"up\"\n }\n}", wantErr: `line 3: upstream_authority "signet" takes server_address, server_port and workload_api_socket directly, without SPIRE's plugin_data block`},
		{name: "upstream_authority signet unknown key", in: "trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up\"\n trust_bundle_path = \"/b\"\n}", wantErr: `upstream_authority "signet": trust_bundle_path (line 4)`},
		{name: "upstream_authority disk and signet", in: "trust_domain = \"a.org\"\nupstream_authority \"disk\" { cert_file_path = \"/c\"\n key_file_path = \"/k\" }\nupstream_authority \"signet\" { server_address = \"up\" }", wantErr: "line 4: upstream_authority is already configured at line 2"},
		{name: "upstream_authority SPIRE's spire kind", in: "trust_domain = \"a.org\"\nupstream_authority \"spire\" {\n server_address = \"up\"\n}", wantErr: `line 2: want upstream_authority "disk" { cert_file_path = "..." key_file_path = "..." bundle_file_path = "..." } or upstream_authority "signet" { server_address = "host:port"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc, err := ParseConfigFile([]byte(tt.in))
			var cfg Config
			if err == nil {
				cfg, err = fc.Resolve()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg)
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`trust_domain = "example.org"` + "\nsvid_ttl = \"10s\""))
	f.Add([]byte(`listen = "127.0.0.1:1"`))
	f.Add([]byte("trust_domain = \"a.org\"\naudit_log_enabled = true"))
	f.Add([]byte(`x { y = 1 }`))
	f.Add([]byte("trust_domain = \"a.org\"\nupstream_authority \"disk\" { cert_file_path = \"c\"\n key_file_path = \"/k\" }"))
	f.Add([]byte("trust_domain = \"a.org\"\nk8s_psat \"p\" { service_account_allow_list = [\"a:b\"] }\nk8s_controller { cluster = \"p\" }"))
	f.Add([]byte("trust_domain = \"a.org\"\nx509pop { ca_bundle_path = \"/etc/signet/node-ca.pem\" }"))
	f.Add([]byte("trust_domain = \"a.org\"\nsshpop {\n cert_authorities = [\"" + sshCAKey + "\"]\n canonical_domain = \"example.org\"\n}"))
	f.Add([]byte("trust_domain = \"a.org\"\njwt_issuer = \"https://oidc.example.org/t\"\noidc_discovery {\n listen = \":8443\"\n serving_cert_file {\n  cert_file_path = \"c\"\n  key_file_path = \"k\"\n }\n}"))
	f.Add([]byte("trust_domain = \"a.org\"\nupstream_authority \"signet\" {\n server_address = \"up.example.org\"\n server_port = \"8443\"\n workload_api_socket = \"unix:///run/a.sock\"\n}"))
	f.Add([]byte("trust_domain = \"a.org\"\nupstream_authority \"signet\" { server_address = \"[::1]:8081\" workload_api_socket = \"a.sock\" }"))
	f.Add([]byte("trust_domain = \"a.org\"\nupstream_authority \"signet\" { server_address = \":0\" cert_file_path = \"/c\" }"))
	f.Add([]byte("trust_domain = \"a.org\"\nupstream_authority \"signet\" { server_address = \"dns:///up:8081\" }"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fc, err := ParseConfigFile(data)
		if err != nil {
			return
		}
		cfg, err := fc.Resolve()
		if err != nil {
			return
		}
		// Whatever resolves must satisfy the invariants Run relies on.
		if cfg.TrustDomain.IsZero() || cfg.SVIDTTL < time.Second || cfg.AgentTTL == 0 || cfg.Datastore == "" {
			t.Fatalf("resolved config breaks invariants: %+v", cfg)
		}
		if cfg.CATTL != 0 && cfg.CATTL < 6*cfg.SVIDTTL {
			t.Fatalf("ca_ttl below 6 x svid_ttl accepted: %+v", cfg)
		}
		if cfg.JWTIssuer != "" && oidcdiscovery.CheckIssuer(cfg.JWTIssuer) != nil {
			t.Fatalf("invalid jwt_issuer %q accepted", cfg.JWTIssuer)
		}
		if o := cfg.OIDCDiscovery; o != nil && (o.Issuer != cfg.JWTIssuer || o.Issuer == "" || (o.CertFile == "") != (o.KeyFile == "")) {
			t.Fatalf("oidc_discovery inconsistent with jwt_issuer %q: %+v", cfg.JWTIssuer, o)
		}
		if u := cfg.UpstreamAuthority; u != nil && (!filepath.IsAbs(u.CertFile) || !filepath.IsAbs(u.KeyFile) || (u.BundleFile != "" && !filepath.IsAbs(u.BundleFile))) {
			t.Fatalf("upstream_authority with a missing or relative path accepted: %+v", u)
		}
		if u := cfg.UpstreamSignet; u != nil {
			host, port, err := net.SplitHostPort(u.ServerAddress)
			if err != nil || host == "" || strings.ContainsAny(host, "/[]") || port == "" || port == "0" || cfg.UpstreamAuthority != nil ||
				!strings.HasPrefix(u.WorkloadAPISocket, "unix:///") || filepath.Clean(strings.TrimPrefix(u.WorkloadAPISocket, "unix://")) != strings.TrimPrefix(u.WorkloadAPISocket, "unix://") {
				t.Fatalf("upstream_authority signet accepted as %+v (disk %+v)", u, cfg.UpstreamAuthority)
			}
		}
	})
}
