package server

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/validation"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"

	"github.com/signetid/signet/internal/hclsafe"
	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/k8sreg"
	"github.com/signetid/signet/server/nested"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/oidcdiscovery"
)

// Defaults of `signet server run`.
const (
	DefaultDataDir     = "/var/lib/signet/server"
	DefaultListen      = "0.0.0.0:8081"
	DefaultAdminSocket = "/run/signet/server/admin.sock"
	// DefaultWorkloadAPISocket is the agent's default socket, where a
	// downstream server gets its SVID (upstream_authority "signet").
	DefaultWorkloadAPISocket = "/run/signet/sockets/agent.sock"
	DefaultSVIDTTL           = time.Hour
	DefaultJWTTTL            = 5 * time.Minute
)

// Config is the validated configuration of a server.
type Config struct {
	TrustDomain  spiffeid.TrustDomain
	DataDir      string
	Listen       string
	AdminSocket  string
	Datastore    string // sqlite:///path or postgres://...; empty: <DataDir>/signet.db
	HealthListen string // empty: no health listener
	SVIDTTL      time.Duration
	JWTTTL       time.Duration
	CATTL        time.Duration // zero: derived (6 x SVIDTTL)
	AgentTTL     time.Duration // zero: SVIDTTL
	// K8sPSAT are the Kubernetes clusters whose agents attest with projected
	// service account tokens.
	K8sPSAT []K8sPSATCluster
	// X509PoP, when set, attests agents with their host's machine
	// certificate; CABundlePath is absolute.
	X509PoP *nodeattest.X509PoPConfig
	// SSHPoP, when set, attests agents with their host's OpenSSH host
	// certificate; CertAuthoritiesPath is absolute.
	SSHPoP *nodeattest.SSHPoPConfig
	// AWSIID, when set, attests agents with their EC2 instance identity
	// document; CertificatesPath is absolute.
	AWSIID *nodeattest.AWSIIDConfig
	// GCPIIT, when set, attests agents with their GCE instance identity
	// token.
	GCPIIT *nodeattest.GCPIITConfig
	// Federation is the bundle endpoint and the federation relationships.
	Federation federation.Config
	// K8sBundle, when set, keeps the trust bundle in a Kubernetes ConfigMap.
	K8sBundle *K8sBundleConfig
	// K8sController, when set, runs the Kubernetes registration controller
	// (ClusterSPIFFEIDs to entries); Kubeconfig and IgnoreNamespaces are
	// resolved.
	K8sController *K8sControllerConfig
	// UpstreamAuthority, when set, signs the server's CA certificates, so
	// the trust domain chains to an existing PKI. Nil: a self-signed root.
	UpstreamAuthority *ca.DiskUpstream
	// UpstreamSignet, when set, has another Signet server of the trust
	// domain sign the server's CA certificates (nested servers): this
	// server is a downstream one. At most one of it and UpstreamAuthority.
	UpstreamSignet *nested.UpstreamConfig
	// JWTIssuer, when set, is the iss claim of every JWT-SVID (an OIDC
	// issuer URL; oidcdiscovery.CheckIssuer holds). Empty: no iss.
	JWTIssuer string
	// JWTKeyType is the type of the JWT keys created from now on.
	JWTKeyType ca.JWTKeyType
	// OIDCDiscovery, when set, serves the JWT keys as an OIDC provider
	// whose issuer is JWTIssuer.
	OIDCDiscovery *oidcdiscovery.Config
	// AuditLog writes an audit record (type=audit, at INFO) for every admin
	// API call and every attestation, renewal and signing on the agent API.
	AuditLog bool
	// PruneAgentsExpiredFor, when not zero, removes hourly the agents whose
	// SVID expired longer ago than this (SPIRE's
	// prune_attested_nodes_expired_for): only those that attest again by
	// themselves, unless PruneNonReattestable (SPIRE's prune_tofu_nodes).
	// Banned agents stay.
	PruneAgentsExpiredFor time.Duration
	PruneNonReattestable  bool
	// LogLevel, when set, is the level of the logger Run is given, which
	// the admin API's logger commands change while it runs.
	LogLevel *slog.LevelVar
}

// UpstreamAuthorityFileConfig is an `upstream_authority "<kind>" { ... }`
// block, with the keys of SPIRE's plugin of that kind: "disk" (files of an
// existing PKI) or "signet" (another Signet server, SPIRE's "spire").
type UpstreamAuthorityFileConfig struct {
	// disk
	CertFilePath   string `hcl:"cert_file_path"`
	KeyFilePath    string `hcl:"key_file_path"`
	BundleFilePath string `hcl:"bundle_file_path"`
	// signet
	ServerAddress     string `hcl:"server_address"`
	ServerPort        string `hcl:"server_port"`
	WorkloadAPISocket string `hcl:"workload_api_socket"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// K8sControllerConfig is the `k8s_controller { ... }` block: the Kubernetes
// registration controller for one k8s_psat cluster.
type K8sControllerConfig struct {
	// Cluster names the k8s_psat block of the cluster whose pods get
	// entries, parented to that cluster's agents.
	Cluster string `hcl:"cluster"`
	// Kubeconfig is empty for the k8s_psat cluster's own kubeconfig.
	Kubeconfig string `hcl:"kubeconfig"`
	// IgnoreNamespaces get no entries; default kube-system and kube-public.
	IgnoreNamespaces []string `hcl:"ignore_namespaces"`
	// ClusterDomain is the cluster's DNS domain (cluster.local, usually),
	// for {{ .ClusterDomain }} and autoPopulateDNSNames.
	ClusterDomain string `hcl:"cluster_domain"`
	// ClassName limits the controller to ClusterSPIFFEIDs of that
	// className (and classless ones with WatchClassless).
	ClassName      string `hcl:"class_name"`
	WatchClassless bool   `hcl:"watch_classless"`
	// LeaderElection lets one of the servers sharing a store run the
	// controller at a time, through the Lease LeaderElectionLease (default
	// signet-controller-<cluster>[-<class_name>]) in
	// LeaderElectionNamespace (default: the server pod's namespace).
	LeaderElection          bool   `hcl:"leader_election"`
	LeaderElectionNamespace string `hcl:"leader_election_namespace"`
	LeaderElectionLease     string `hcl:"leader_election_lease"`

	// Line is where the block starts, for errors found after parsing.
	Line               int                    `hcl:"-"`
	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// K8sBundleConfig names the ConfigMap the server keeps its X.509 roots in,
// for agent pods' --trust-bundle (the `k8s_bundle { ... }` block).
type K8sBundleConfig struct {
	Namespace string `hcl:"namespace"`
	ConfigMap string `hcl:"config_map"`
	// Key is the data key; default "bundle.pem".
	Key string `hcl:"key"`
	// Kubeconfig is empty for the cluster the server runs in.
	Kubeconfig string `hcl:"kubeconfig"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// K8sPSATCluster is one cluster of k8s_psat attestation: its settings and
// how to reach its API server.
type K8sPSATCluster struct {
	nodeattest.PSATCluster
	// Kubeconfig is the kubeconfig file for the cluster's API server; empty
	// means the cluster the server runs in.
	Kubeconfig string
}

// K8sPSATFileConfig is one `k8s_psat "<cluster>" { ... }` block.
type K8sPSATFileConfig struct {
	ServiceAccountAllowList []string `hcl:"service_account_allow_list"`
	Audience                string   `hcl:"audience"`
	Kubeconfig              string   `hcl:"kubeconfig"`
	AllowedNodeLabelKeys    []string `hcl:"allowed_node_label_keys"`
	AllowedPodLabelKeys     []string `hcl:"allowed_pod_label_keys"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// X509PoPFileConfig is the `x509pop { ... }` block, with the keys of
// SPIRE's x509pop server plugin.
type X509PoPFileConfig struct {
	CABundlePath      string   `hcl:"ca_bundle_path"`
	CABundlePaths     []string `hcl:"ca_bundle_paths"`
	AgentPathTemplate string   `hcl:"agent_path_template"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// SSHPoPFileConfig is the `sshpop { ... }` block, with the keys of SPIRE's
// sshpop server plugin.
type SSHPoPFileConfig struct {
	CertAuthorities     []string `hcl:"cert_authorities"`
	CertAuthoritiesPath string   `hcl:"cert_authorities_path"`
	CanonicalDomain     string   `hcl:"canonical_domain"`
	AgentPathTemplate   string   `hcl:"agent_path_template"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// AWSIIDFileConfig is the `aws_iid { ... }` block, with the keys of SPIRE's
// aws_iid server plugin that need no EC2 API, and aws_certificates_path.
type AWSIIDFileConfig struct {
	// AccountIDsForLocalValidation: the accounts whose instances may
	// attest; Signet validates every document locally (required).
	AccountIDsForLocalValidation []string `hcl:"account_ids_for_local_validation"`
	// AWSCertificatesPath: a PEM file of more AWS signing certificates. A
	// block with a `Region: <region>` header signs only that region's
	// documents; one without is trusted for every region.
	AWSCertificatesPath string `hcl:"aws_certificates_path"`
	AgentPathTemplate   string `hcl:"agent_path_template"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// awsIIDAPIKeys are SPIRE's aws_iid keys for its EC2, IAM and Organizations
// API calls, which Signet does not make: refused, saying so.
var awsIIDAPIKeys = []string{"access_key_id", "secret_access_key", "assume_role", "skip_block_device", "skip_ec2_attest_calling",
	"disable_instance_profile_selectors", "partition", "verify_organization", "validate_eks_cluster_membership", "endpoint"}

// GCPIITFileConfig is the `gcp_iit { ... }` block, with the keys of SPIRE's
// gcp_iit server plugin that need no Compute Engine API, and
// google_certificates_url.
type GCPIITFileConfig struct {
	ProjectIDAllowList    []string `hcl:"projectid_allow_list"`
	AgentPathTemplate     string   `hcl:"agent_path_template"`
	GoogleCertificatesURL string   `hcl:"google_certificates_url"`
	// UseInstanceMetadata may only be false: the Compute Engine API is
	// not called.
	UseInstanceMetadata bool `hcl:"use_instance_metadata"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// gcpIITAPIKeys are SPIRE's gcp_iit keys for its Compute Engine API calls,
// which Signet does not make: refused, saying so.
var gcpIITAPIKeys = []string{"service_account_file", "allowed_label_keys", "allowed_metadata_keys", "max_metadata_value_size"}

// FileConfig is the HCL configuration file (every field optional; flags
// override it). Durations use Go syntax ("90s", "1h").
type FileConfig struct {
	TrustDomain  string `hcl:"trust_domain"`
	DataDir      string `hcl:"data_dir"`
	Listen       string `hcl:"listen"`
	AdminSocket  string `hcl:"admin_socket"`
	Datastore    string `hcl:"datastore"`
	HealthListen string `hcl:"health_listen"`
	SVIDTTL      string `hcl:"svid_ttl"`
	JWTTTL       string `hcl:"jwt_ttl"`
	CATTL        string `hcl:"ca_ttl"`
	AgentTTL     string `hcl:"agent_ttl"`
	JWTIssuer    string `hcl:"jwt_issuer"`
	JWTKeyType   string `hcl:"jwt_key_type"`
	LogLevel     string `hcl:"log_level"`
	LogFormat    string `hcl:"log_format"`
	// AuditLogEnabled is SPIRE's audit_log_enabled.
	AuditLogEnabled bool `hcl:"audit_log_enabled"`
	// PruneAttestedNodesExpiredFor and PruneTOFUNodes are SPIRE's keys
	// for removing long-expired agents.
	PruneAttestedNodesExpiredFor string `hcl:"prune_attested_nodes_expired_for"`
	PruneTOFUNodes               bool   `hcl:"prune_tofu_nodes"`
	// K8sPSAT holds the clusters whose agents attest with projected service
	// account tokens, by cluster name (the block's label).
	K8sPSAT map[string]K8sPSATFileConfig `hcl:"k8s_psat"`
	// X509PoP attests agents with machine certificates of an existing PKI.
	X509PoP *X509PoPFileConfig `hcl:"x509pop"`
	// SSHPoP attests agents with OpenSSH host certificates.
	SSHPoP *SSHPoPFileConfig `hcl:"sshpop"`
	// AWSIID attests agents on EC2 with their instance identity document.
	AWSIID *AWSIIDFileConfig `hcl:"aws_iid"`
	// GCPIIT attests agents on GCE with their instance identity token.
	GCPIIT *GCPIITFileConfig `hcl:"gcp_iit"`
	// Federation is the `federation { ... }` block, shaped like SPIRE's.
	Federation *federation.FileConfig `hcl:"federation"`
	// K8sBundle publishes the trust bundle to a ConfigMap.
	K8sBundle *K8sBundleConfig `hcl:"k8s_bundle"`
	// K8sController registers the cluster's pods from ClusterSPIFFEIDs.
	K8sController *K8sControllerConfig `hcl:"k8s_controller"`
	// UpstreamAuthority holds at most one block, labelled by its kind:
	// "disk" or "signet".
	UpstreamAuthority map[string]UpstreamAuthorityFileConfig `hcl:"upstream_authority"`
	// OIDCDiscovery serves the JWT keys to OIDC relying parties.
	OIDCDiscovery *oidcdiscovery.FileConfig `hcl:"oidc_discovery"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// ParseConfigFile reads an HCL server configuration. Unknown keys are an
// error naming them, so a typo never silently falls back to a default.
func ParseConfigFile(data []byte) (FileConfig, error) {
	var fc FileConfig
	var lines map[string]int
	err := hclsafe.Do(func() error {
		file, err := hcl.ParseBytes(data)
		if err != nil {
			return err
		}
		if lines, err = checkBlocks(file); err != nil {
			return err
		}
		return hcl.DecodeObject(&fc, file)
	})
	if err != nil {
		return FileConfig{}, fmt.Errorf("parse server config: %w", hclsafe.Explain(data, err))
	}
	unused := map[string][]token.Pos{}
	maps.Copy(unused, fc.UnusedKeyPositions)
	addUnused := func(prefix string, keys map[string][]token.Pos) {
		for k, pos := range keys {
			unused[prefix+k] = pos
		}
	}
	for name, c := range fc.K8sPSAT {
		addUnused(fmt.Sprintf("k8s_psat %q: ", name), c.UnusedKeyPositions)
	}
	if fc.X509PoP != nil {
		addUnused("x509pop: ", fc.X509PoP.UnusedKeyPositions)
	}
	if fc.SSHPoP != nil {
		addUnused("sshpop: ", fc.SSHPoP.UnusedKeyPositions)
	}
	if fc.AWSIID != nil {
		for k, pos := range fc.AWSIID.UnusedKeyPositions {
			if slices.Contains(awsIIDAPIKeys, k) {
				return FileConfig{}, fmt.Errorf("parse server config: line %d: aws_iid: %s is a key of SPIRE's EC2 API calls, which Signet does not make: it checks the signed instance identity document alone (accounts in account_ids_for_local_validation); remove it", firstLine(pos), k)
			}
		}
		addUnused("aws_iid: ", fc.AWSIID.UnusedKeyPositions)
	}
	if fc.GCPIIT != nil {
		for k, pos := range fc.GCPIIT.UnusedKeyPositions {
			switch {
			case slices.Contains(gcpIITAPIKeys, k):
				return FileConfig{}, fmt.Errorf("parse server config: line %d: gcp_iit: %s is a key of SPIRE's Compute Engine API calls (use_instance_metadata), which Signet does not make: it checks the instance identity token alone; remove it", firstLine(pos), k)
			case k == "projectid_whitelist":
				return FileConfig{}, fmt.Errorf("parse server config: line %d: gcp_iit: projectid_whitelist is the old name of projectid_allow_list, its name in SPIRE now: rename it", firstLine(pos))
			}
		}
		addUnused("gcp_iit: ", fc.GCPIIT.UnusedKeyPositions)
	}
	if fc.K8sBundle != nil {
		addUnused("k8s_bundle: ", fc.K8sBundle.UnusedKeyPositions)
	}
	for kind, u := range fc.UpstreamAuthority {
		if pos, ok := u.UnusedKeyPositions["plugin_data"]; ok && len(pos) > 0 {
			return FileConfig{}, fmt.Errorf(`parse server config: line %d: upstream_authority %q takes %s directly, without SPIRE's plugin_data block`, pos[0].Line, kind, upstreamKeys[kind])
		}
		addUnused(fmt.Sprintf("upstream_authority %q: ", kind), u.UnusedKeyPositions)
		if other := u.otherKindKey(kind); other != "" {
			return FileConfig{}, fmt.Errorf(`parse server config: upstream_authority %q takes %s, not %s`, kind, upstreamKeys[kind], other)
		}
	}
	if fc.K8sController != nil {
		fc.K8sController.Line = lines["k8s_controller"]
		addUnused("k8s_controller: ", fc.K8sController.UnusedKeyPositions)
	}
	if err := hclsafe.UnknownKeys(unused); err != nil {
		return FileConfig{}, fmt.Errorf("parse server config: %w", err)
	}
	return fc, nil
}

// firstLine is the line of a key's first position (0 if unknown).
func firstLine(pos []token.Pos) int {
	if len(pos) == 0 {
		return 0
	}
	return pos[0].Line
}

// unlabelledBlock reports whether name is a block given at most once and
// without a label, with the example its shape error shows.
func unlabelledBlock(name string) (example string, ok bool) {
	switch name {
	case "x509pop":
		return `{ ca_bundle_path = "..." }`, true
	case "sshpop":
		return `{ cert_authorities_path = "..." }`, true
	case "aws_iid":
		return `{ account_ids_for_local_validation = ["123456789012"] }`, true
	case "gcp_iit":
		return `{ projectid_allow_list = ["my-project"] }`, true
	case "k8s_bundle":
		return `{ namespace = "..." config_map = "..." }`, true
	case "k8s_controller":
		return `{ cluster = "<k8s_psat cluster name>" }`, true
	case "oidc_discovery":
		return `{ listen = "0.0.0.0:8443" }`, true
	}
	return "", false
}

// checkBlocks catches labelled blocks written in another shape, which the
// HCL decoder would misread or reject with a message naming Go types. It
// returns the line of each block.
func checkBlocks(file *ast.File) (map[string]int, error) {
	list, ok := file.Node.(*ast.ObjectList)
	if !ok {
		return nil, nil
	}
	// The decoder merges repeated blocks silently (two k8s_psat "prod"
	// blocks would join their allow lists): refuse them instead.
	seen := map[string]int{}
	for _, item := range list.Items {
		if len(item.Keys) == 0 {
			continue
		}
		line := item.Pos().Line
		_, isBlock := item.Val.(*ast.ObjectType)
		switch item.Keys[0].Token.Value() {
		case "k8s_psat":
			if !isBlock || len(item.Keys) != 2 {
				return nil, fmt.Errorf("line %d: want k8s_psat \"<cluster name>\" { service_account_allow_list = [...] ... }", line)
			}
			name, _ := item.Keys[1].Token.Value().(string)
			if first, dup := seen["k8s_psat "+name]; dup {
				return nil, fmt.Errorf("line %d: k8s_psat %q is already configured at line %d", line, name, first)
			}
			seen["k8s_psat "+name] = line
		case "upstream_authority":
			kind := ""
			if len(item.Keys) == 2 {
				kind, _ = item.Keys[1].Token.Value().(string)
			}
			if _, known := upstreamKeys[kind]; !isBlock || !known {
				return nil, fmt.Errorf(`line %d: want upstream_authority "disk" { cert_file_path = "..." key_file_path = "..." bundle_file_path = "..." } or upstream_authority "signet" { server_address = "host:port" workload_api_socket = "..." }`, line)
			}
			if first, dup := seen["upstream_authority"]; dup {
				return nil, fmt.Errorf("line %d: upstream_authority is already configured at line %d", line, first)
			}
			seen["upstream_authority"] = line
		case "audit_log_enabled":
			// The decoder's own refusal names Go types.
			if lit, ok := item.Val.(*ast.LiteralType); !ok || lit.Token.Type != token.BOOL {
				return nil, fmt.Errorf("line %d: audit_log_enabled takes true or false (no quotes)", line)
			}
		default:
			name, _ := item.Keys[0].Token.Value().(string)
			example, ok := unlabelledBlock(name)
			if !ok {
				continue
			}
			if !isBlock || len(item.Keys) != 1 {
				return nil, fmt.Errorf("line %d: want %s %s (no label)", line, name, example)
			}
			if first, dup := seen[name]; dup {
				return nil, fmt.Errorf("line %d: %s is already configured at line %d", line, name, first)
			}
			seen[name] = line
		}
	}
	return seen, nil
}

// LoadConfigFile reads and parses path.
func LoadConfigFile(path string) (FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return FileConfig{}, fmt.Errorf("read server config: %w", err)
	}
	fc, err := ParseConfigFile(data)
	if err != nil {
		return FileConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return fc, nil
}

// Resolve validates the file settings, applies defaults and returns a Config.
func (fc FileConfig) Resolve() (Config, error) {
	cfg := Config{
		DataDir:      or(fc.DataDir, DefaultDataDir),
		Listen:       or(fc.Listen, DefaultListen),
		AdminSocket:  or(fc.AdminSocket, DefaultAdminSocket),
		Datastore:    fc.Datastore,
		HealthListen: fc.HealthListen,
		AuditLog:     fc.AuditLogEnabled,
	}
	if fc.TrustDomain == "" {
		return Config{}, errors.New("trust_domain is required (e.g. --trust-domain example.org)")
	}
	td, err := ids.ParseTrustDomain(fc.TrustDomain)
	if err != nil {
		return Config{}, fmt.Errorf("trust_domain: %w", err)
	}
	cfg.TrustDomain = td
	for _, d := range []struct {
		name string
		in   string
		def  time.Duration
		out  *time.Duration
	}{
		{"svid_ttl", fc.SVIDTTL, DefaultSVIDTTL, &cfg.SVIDTTL},
		{"jwt_ttl", fc.JWTTTL, DefaultJWTTTL, &cfg.JWTTTL},
		{"ca_ttl", fc.CATTL, 0, &cfg.CATTL},
		{"agent_ttl", fc.AgentTTL, 0, &cfg.AgentTTL},
	} {
		*d.out = d.def
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil {
			return Config{}, fmt.Errorf("%s %q: want a Go duration like 90s or 1h", d.name, d.in)
		}
		if v < time.Second || v > 5*365*24*time.Hour {
			return Config{}, fmt.Errorf("%s %s is out of range [1s, 43800h]", d.name, v)
		}
		*d.out = v
	}
	if fc.PruneAttestedNodesExpiredFor != "" {
		v, err := time.ParseDuration(fc.PruneAttestedNodesExpiredFor)
		if err != nil || v < time.Minute {
			return Config{}, fmt.Errorf("prune_attested_nodes_expired_for %q: want a Go duration of at least 1m, like 720h (how long after an agent's SVID expired it is removed)", fc.PruneAttestedNodesExpiredFor)
		}
		cfg.PruneAgentsExpiredFor = v
	}
	if fc.PruneTOFUNodes && cfg.PruneAgentsExpiredFor == 0 {
		return Config{}, errors.New("prune_tofu_nodes needs prune_attested_nodes_expired_for (how long after their SVID expired join-token, aws_iid and gcp_iit agents are removed)")
	}
	cfg.PruneNonReattestable = fc.PruneTOFUNodes
	if cfg.CATTL != 0 && cfg.CATTL < 6*cfg.SVIDTTL {
		return Config{}, fmt.Errorf("ca_ttl %s must be at least 6 x svid_ttl (%s)", cfg.CATTL, 6*cfg.SVIDTTL)
	}
	if cfg.AgentTTL == 0 {
		cfg.AgentTTL = cfg.SVIDTTL
	}
	if !filepath.IsAbs(cfg.DataDir) {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return Config{}, fmt.Errorf("data_dir %q: %w", cfg.DataDir, err)
		}
		cfg.DataDir = abs
	}
	if cfg.Datastore == "" {
		cfg.Datastore = "sqlite://" + filepath.Join(cfg.DataDir, "signet.db")
	}
	names := make([]string, 0, len(fc.K8sPSAT))
	for name := range fc.K8sPSAT {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		in := fc.K8sPSAT[name]
		c := K8sPSATCluster{Kubeconfig: in.Kubeconfig, PSATCluster: nodeattest.PSATCluster{
			Name:                    name,
			ServiceAccountAllowList: in.ServiceAccountAllowList,
			Audience:                in.Audience,
			AllowedNodeLabelKeys:    in.AllowedNodeLabelKeys,
			AllowedPodLabelKeys:     in.AllowedPodLabelKeys,
		}}
		if err := nodeattest.CheckPSATCluster(&c.PSATCluster); err != nil {
			return Config{}, err
		}
		cfg.K8sPSAT = append(cfg.K8sPSAT, c)
	}
	if cfg.X509PoP, err = fc.X509PoP.resolve(); err != nil {
		return Config{}, err
	}
	if cfg.SSHPoP, err = fc.SSHPoP.resolve(); err != nil {
		return Config{}, err
	}
	if cfg.AWSIID, err = fc.AWSIID.resolve(); err != nil {
		return Config{}, err
	}
	if cfg.GCPIIT, err = fc.GCPIIT.resolve(); err != nil {
		return Config{}, err
	}
	if b := fc.K8sBundle; b != nil {
		if b.Namespace == "" || b.ConfigMap == "" {
			return Config{}, errors.New(`k8s_bundle: namespace and config_map are required (e.g. namespace = "signet-system", config_map = "signet-trust-bundle")`)
		}
		cfg.K8sBundle = b
	}
	if u, ok := fc.UpstreamAuthority["disk"]; ok {
		if cfg.UpstreamAuthority, err = u.resolve(); err != nil {
			return Config{}, err
		}
	}
	if u, ok := fc.UpstreamAuthority["signet"]; ok {
		if cfg.UpstreamSignet, err = u.resolveSignet(td); err != nil {
			return Config{}, err
		}
	}
	if cfg.K8sController, err = fc.K8sController.resolve(cfg.K8sPSAT); err != nil {
		return Config{}, err
	}
	if cfg.Federation, err = fc.Federation.Resolve(td); err != nil {
		return Config{}, err
	}
	if fc.JWTIssuer != "" {
		if err := oidcdiscovery.CheckIssuer(fc.JWTIssuer); err != nil {
			return Config{}, fmt.Errorf("jwt_issuer %q: %w", fc.JWTIssuer, err)
		}
		cfg.JWTIssuer = fc.JWTIssuer
	}
	if cfg.JWTKeyType, err = ca.ParseJWTKeyType(fc.JWTKeyType); err != nil {
		return Config{}, fmt.Errorf("jwt_key_type: %w", err)
	}
	if cfg.OIDCDiscovery, err = fc.OIDCDiscovery.Resolve(cfg.JWTIssuer); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// resolve checks the controller's block against the k8s_psat clusters and
// fills in the defaults; nil stays nil (no controller).
func (c *K8sControllerConfig) resolve(clusters []K8sPSATCluster) (*K8sControllerConfig, error) {
	if c == nil {
		return nil, nil
	}
	at := "k8s_controller"
	if c.Line > 0 {
		at = fmt.Sprintf("line %d: k8s_controller", c.Line)
	}
	if c.Cluster == "" {
		return nil, fmt.Errorf(`%s: cluster is required (the name of a k8s_psat block, e.g. cluster = "prod")`, at)
	}
	i := slices.IndexFunc(clusters, func(k K8sPSATCluster) bool { return k.Name == c.Cluster })
	if i < 0 {
		return nil, fmt.Errorf("%s: cluster %q has no k8s_psat %[2]q block; entries are parented to that cluster's k8s_psat agents", at, c.Cluster)
	}
	out := *c
	out.Kubeconfig = or(c.Kubeconfig, clusters[i].Kubeconfig)
	if out.IgnoreNamespaces == nil {
		out.IgnoreNamespaces = slices.Clone(k8sreg.DefaultIgnoreNamespaces)
	}
	for _, ns := range out.IgnoreNamespaces {
		if errs := validation.ValidateNamespaceName(ns, false); len(errs) > 0 {
			return nil, fmt.Errorf("%s: ignore_namespaces: %q is not a namespace name: %s", at, ns, strings.Join(errs, "; "))
		}
	}
	if c.ClusterDomain != "" {
		if errs := utilvalidation.IsDNS1123Subdomain(c.ClusterDomain); len(errs) > 0 {
			return nil, fmt.Errorf("%s: cluster_domain %q is not a DNS domain: %s", at, c.ClusterDomain, strings.Join(errs, "; "))
		}
	}
	if c.WatchClassless && c.ClassName == "" {
		return nil, fmt.Errorf("%s: watch_classless needs class_name: without one, the controller handles only ClusterSPIFFEIDs with no className already", at)
	}
	if !c.LeaderElection {
		if c.LeaderElectionNamespace != "" || c.LeaderElectionLease != "" {
			return nil, fmt.Errorf("%s: leader_election_namespace and leader_election_lease need leader_election = true", at)
		}
		return &out, nil
	}
	if c.LeaderElectionNamespace != "" {
		if errs := validation.ValidateNamespaceName(c.LeaderElectionNamespace, false); len(errs) > 0 {
			return nil, fmt.Errorf("%s: leader_election_namespace %q is not a namespace name: %s", at, c.LeaderElectionNamespace, strings.Join(errs, "; "))
		}
	}
	if out.LeaderElectionLease == "" {
		out.LeaderElectionLease = "signet-controller-" + c.Cluster
		if c.ClassName != "" {
			out.LeaderElectionLease += "-" + c.ClassName
		}
		if errs := utilvalidation.IsDNS1123Subdomain(out.LeaderElectionLease); len(errs) > 0 {
			return nil, fmt.Errorf("%s: the default leader_election_lease %q is not an object name (%s); set leader_election_lease", at, out.LeaderElectionLease, strings.Join(errs, "; "))
		}
	} else if errs := utilvalidation.IsDNS1123Subdomain(c.LeaderElectionLease); len(errs) > 0 {
		return nil, fmt.Errorf("%s: leader_election_lease %q is not an object name: %s", at, c.LeaderElectionLease, strings.Join(errs, "; "))
	}
	return &out, nil
}

// resolve checks the x509pop block; the bundle is read (and the template
// parsed) when the server starts. nil stays nil.
func (x *X509PoPFileConfig) resolve() (*nodeattest.X509PoPConfig, error) {
	if x == nil {
		return nil, nil
	}
	paths := x.CABundlePaths
	switch {
	case x.CABundlePath != "" && len(paths) > 0:
		return nil, errors.New("x509pop: ca_bundle_path and ca_bundle_paths are both set; use ca_bundle_paths alone (it takes a list)")
	case x.CABundlePath != "":
		paths = []string{x.CABundlePath}
	case len(paths) == 0:
		return nil, errors.New(`x509pop: ca_bundle_path or ca_bundle_paths is required (the PEM roots of your node certificates, e.g. ca_bundle_path = "/etc/signet/node-ca.pem")`)
	}
	out := &nodeattest.X509PoPConfig{AgentPathTemplate: x.AgentPathTemplate}
	for _, p := range paths {
		if p == "" {
			return nil, errors.New("x509pop: ca_bundle_paths holds an empty path")
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("x509pop: CA bundle path %q: %w", p, err)
		}
		out.CABundlePaths = append(out.CABundlePaths, abs)
	}
	return out, nil
}

// resolve checks the sshpop block; the CA file is read when the server
// starts. nil stays nil.
func (x *SSHPoPFileConfig) resolve() (*nodeattest.SSHPoPConfig, error) {
	if x == nil {
		return nil, nil
	}
	out := &nodeattest.SSHPoPConfig{CertAuthorities: x.CertAuthorities, CanonicalDomain: x.CanonicalDomain, AgentPathTemplate: x.AgentPathTemplate}
	if x.CertAuthoritiesPath != "" {
		abs, err := filepath.Abs(x.CertAuthoritiesPath)
		if err != nil {
			return nil, fmt.Errorf("sshpop: cert_authorities_path %q: %w", x.CertAuthoritiesPath, err)
		}
		out.CertAuthoritiesPath = abs
	}
	if err := out.Check(); err != nil {
		return nil, err
	}
	return out, nil
}

// resolve checks the aws_iid block; the certificates file is read when the
// server starts. nil stays nil.
func (x *AWSIIDFileConfig) resolve() (*nodeattest.AWSIIDConfig, error) {
	if x == nil {
		return nil, nil
	}
	out := &nodeattest.AWSIIDConfig{AccountIDs: x.AccountIDsForLocalValidation, AgentPathTemplate: x.AgentPathTemplate}
	if x.AWSCertificatesPath != "" {
		abs, err := filepath.Abs(x.AWSCertificatesPath)
		if err != nil {
			return nil, fmt.Errorf("aws_iid: aws_certificates_path %q: %w", x.AWSCertificatesPath, err)
		}
		out.CertificatesPath = abs
	}
	if err := out.Check(); err != nil {
		return nil, err
	}
	return out, nil
}

// resolve checks the gcp_iit block. nil stays nil.
func (x *GCPIITFileConfig) resolve() (*nodeattest.GCPIITConfig, error) {
	if x == nil {
		return nil, nil
	}
	if x.UseInstanceMetadata {
		return nil, errors.New("gcp_iit: use_instance_metadata is not supported: it needs the Compute Engine API, which Signet does not call (the tag, sa, label and metadata selectors are left out); the token's project-id, zone and instance-name selectors remain")
	}
	out := &nodeattest.GCPIITConfig{ProjectIDs: x.ProjectIDAllowList, CertsURL: x.GoogleCertificatesURL, AgentPathTemplate: x.AgentPathTemplate}
	if err := out.Check(); err != nil {
		return nil, err
	}
	return out, nil
}

// upstreamKeys are the keys of each kind of upstream_authority block.
var upstreamKeys = map[string]string{
	"disk":   "cert_file_path, key_file_path and bundle_file_path",
	"signet": "server_address, server_port and workload_api_socket",
}

// otherKindKey names a key the block sets that belongs to the other kind
// ("" when none).
func (u UpstreamAuthorityFileConfig) otherKindKey(kind string) string {
	keys := map[string]string{
		"cert_file_path": u.CertFilePath, "key_file_path": u.KeyFilePath, "bundle_file_path": u.BundleFilePath,
		"server_address": u.ServerAddress, "server_port": u.ServerPort, "workload_api_socket": u.WorkloadAPISocket,
	}
	for _, k := range []string{"cert_file_path", "key_file_path", "bundle_file_path", "server_address", "server_port", "workload_api_socket"} {
		if keys[k] != "" && !strings.Contains(upstreamKeys[kind], k) {
			return k
		}
	}
	return ""
}

// resolveSignet checks the "signet" block: the upstream's address (SPIRE's
// separate server_port is accepted too; 8081 when neither names a port)
// and the local agent's socket (Signet's default when empty).
func (u UpstreamAuthorityFileConfig) resolveSignet(td spiffeid.TrustDomain) (*nested.UpstreamConfig, error) {
	if u.ServerAddress == "" {
		return nil, errors.New(`upstream_authority "signet": server_address is required (the upstream server's agent API, host:port)`)
	}
	addr := u.ServerAddress
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// A bare host ("[::1]" too): SPIRE's server_address, with
		// server_port beside it.
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), or(u.ServerPort, "8081")
	} else if u.ServerPort != "" && u.ServerPort != port {
		return nil, fmt.Errorf(`upstream_authority "signet": server_address %q names port %s and server_port says %s`, addr, port, u.ServerPort)
	}
	if host == "" {
		return nil, fmt.Errorf(`upstream_authority "signet": server_address %q has no host`, addr)
	}
	// A URL ("dns:///up:8081", "https://up") or a stray colon would be
	// joined into an address that fails only when dialled.
	if strings.ContainsAny(host, "/[]@ ") || strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return nil, fmt.Errorf(`upstream_authority "signet": server_address %q: want host:port, or a host name or IP address`, addr)
	}
	if !validPort(port) {
		return nil, fmt.Errorf(`upstream_authority "signet": port %q is not a TCP port number`, port)
	}
	addr = net.JoinHostPort(host, port)
	sock := or(u.WorkloadAPISocket, DefaultWorkloadAPISocket)
	if strings.Contains(sock, "://") || strings.HasPrefix(sock, "unix:") {
		p, ok := strings.CutPrefix(sock, "unix://")
		if !ok || !filepath.IsAbs(p) {
			return nil, fmt.Errorf(`upstream_authority "signet": workload_api_socket %q: want unix:///abs/path or a path`, sock)
		}
		sock = p
	}
	abs, err := filepath.Abs(sock)
	if err != nil {
		return nil, fmt.Errorf(`upstream_authority "signet": workload_api_socket %q: %w`, sock, err)
	}
	return &nested.UpstreamConfig{TrustDomain: td, ServerAddress: addr, WorkloadAPISocket: "unix://" + abs}, nil
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}

// resolve checks the block's paths; the files are read when the CA starts,
// so a bad certificate or key is reported with what is wrong with it.
func (u UpstreamAuthorityFileConfig) resolve() (*ca.DiskUpstream, error) {
	if u.CertFilePath == "" || u.KeyFilePath == "" {
		return nil, errors.New(`upstream_authority "disk": cert_file_path and key_file_path are required`)
	}
	d := &ca.DiskUpstream{}
	for _, p := range []struct {
		name string
		in   string
		out  *string
	}{
		{"cert_file_path", u.CertFilePath, &d.CertFile},
		{"key_file_path", u.KeyFilePath, &d.KeyFile},
		{"bundle_file_path", u.BundleFilePath, &d.BundleFile},
	} {
		if p.in == "" {
			continue
		}
		abs, err := filepath.Abs(p.in)
		if err != nil {
			return nil, fmt.Errorf(`upstream_authority "disk": %s %q: %w`, p.name, p.in, err)
		}
		*p.out = abs
	}
	return d, nil
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
