package agent

import (
	"cmp"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/client"
	"github.com/signetid/signet/agent/manager"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/internal/hclsafe"
	"github.com/signetid/signet/internal/ids"
)

// Defaults for `signet agent run`.
const (
	DefaultDataDir    = "/var/lib/signet/agent"
	DefaultSocketPath = "/run/signet/sockets/agent.sock"
	// DefaultPSATTokenPath is where the DaemonSet mounts the agent's
	// projected service account token (audience signet-server).
	DefaultPSATTokenPath = "/var/run/secrets/tokens/signet-agent"
)

// Config is the agent's configuration: an HCL file (ParseConfig), flags
// override it, and in-process callers (`signet dev`) fill it directly.
type Config struct {
	// ServerAddress is the server's agent API, HOST:PORT.
	ServerAddress string `hcl:"server_address"`
	TrustDomain   string `hcl:"trust_domain"`
	// DataDir keeps the agent SVID and key, the server bundle and the
	// workload SVID cache (0700).
	DataDir string `hcl:"data_dir"`
	// JoinToken attests the agent. JoinTokenFile is re-read at every
	// (re-)attestation, so a fresh token can be dropped in without a restart.
	JoinToken     string `hcl:"join_token"`
	JoinTokenFile string `hcl:"join_token_file"`
	// K8sPSATCluster, when set, attests the agent with its Kubernetes
	// projected service account token instead of a join token; it is the
	// cluster's name in the server's k8s_psat block. The token is read from
	// K8sPSATTokenPath (default DefaultPSATTokenPath) at every attestation.
	K8sPSATCluster   string `hcl:"k8s_psat_cluster"`
	K8sPSATTokenPath string `hcl:"k8s_psat_token_path"`
	// X509PoPCertPath and X509PoPKeyPath, when set, attest the agent with
	// the host's machine certificate (PEM leaf then intermediates) and its
	// private key, against the server's x509pop block. Both are read at
	// every attestation, so renewed certificates are picked up.
	X509PoPCertPath string `hcl:"x509pop_cert_path"`
	X509PoPKeyPath  string `hcl:"x509pop_key_path"`
	// SSHPoPHostKeyPath and SSHPoPHostCertPath, when either is set, attest
	// the agent with the host's OpenSSH host certificate and its private
	// key, against the server's sshpop block (SPIRE's host_key_path and
	// host_cert_path). The one not set follows OpenSSH's naming, the
	// certificate being <key>-cert.pub. Both are read at every attestation.
	SSHPoPHostKeyPath  string `hcl:"sshpop_host_key_path"`
	SSHPoPHostCertPath string `hcl:"sshpop_host_cert_path"`
	// AWSIID, when set (an `aws_iid { ... }` block, even empty), attests
	// the agent with its EC2 instance identity document, against the
	// server's aws_iid block.
	AWSIID *AWSIIDConfig `hcl:"aws_iid"`
	// GCPIIT, when set (a `gcp_iit { ... }` block, even empty), attests
	// the agent with its GCE instance identity token, against the
	// server's gcp_iit block.
	GCPIIT *GCPIITConfig `hcl:"gcp_iit"`
	// K8sWorkloadAttestor adds Kubernetes selectors (k8s:ns, k8s:sa, ...) to
	// callers that run in a pod, from their cgroup and the node's kubelet.
	K8sWorkloadAttestor bool `hcl:"k8s_workload_attestor"`
	// KubeletURL, KubeletCAPath, KubeletSkipVerify and KubeletTokenPath
	// reach the kubelet (attestor.K8sOptions has the defaults); NodeName is
	// the agent's node, whose pods alone are accepted.
	KubeletURL        string `hcl:"kubelet_url"`
	KubeletCAPath     string `hcl:"kubelet_ca_path"`
	KubeletSkipVerify bool   `hcl:"kubelet_skip_verify"`
	KubeletTokenPath  string `hcl:"kubelet_token_path"`
	NodeName          string `hcl:"node_name"`
	// K8sCgroupRoot is the cgroup path above the kubelet's kubepods root
	// ("/" for the top); default judged from the agent's own pod.
	K8sCgroupRoot string `hcl:"k8s_cgroup_root"`
	// SystemdWorkloadAttestor adds systemd:id:<unit> to callers that run in
	// a systemd unit, read from their cgroup. Unset (nil): on when the host
	// booted with systemd, off otherwise.
	SystemdWorkloadAttestor *bool `hcl:"systemd_workload_attestor"`
	// TrustBundleFile holds the roots that authenticate the server
	// (`signet server bundle show`), in TrustBundleFormat; TrustBundlePEM is
	// the same in memory, always PEM.
	TrustBundleFile string `hcl:"trust_bundle_path"`
	TrustBundlePEM  []byte `hcl:"-"`
	// TrustBundleURL, instead of TrustBundleFile, is where those roots are
	// downloaded at every start: https verified against the system's roots
	// (http only to a loopback host). Whoever holds a certificate for that
	// host picks the server the agent trusts.
	TrustBundleURL string `hcl:"trust_bundle_url"`
	// TrustBundleFormat is the format of TrustBundleFile or of the download:
	// "pem" (the default) or "spiffe" (a SPIFFE bundle document, as the
	// server's federation bundle endpoint serves it).
	TrustBundleFormat string `hcl:"trust_bundle_format"`
	// InsecureBootstrap attests without verifying the server when no trust
	// bundle is known. Labs only; logged as a warning.
	InsecureBootstrap bool `hcl:"insecure_bootstrap"`
	// SocketPath is the Workload API's Unix socket.
	SocketPath string `hcl:"socket_path"`
	// AdminSocketPath, when set, is the Unix socket of SPIRE's Delegated
	// Identity API, served to AuthorizedDelegates alone. It may not lie in
	// the Workload API socket's directory (which the CSI driver mounts into
	// pods) or below it. Empty: off.
	AdminSocketPath string `hcl:"admin_socket_path"`
	// AuthorizedDelegates are the SPIFFE IDs whose holders may use the
	// admin socket: each can obtain the identity of any workload the agent
	// serves.
	AuthorizedDelegates []string `hcl:"authorized_delegates"`
	// HealthListen is the /live, /ready and /metrics address; empty: none.
	HealthListen string `hcl:"health_listen"`
	// SDS names the secrets of the Envoy SDS service on the Workload API
	// socket: an `sds { ... }` block with SPIRE's keys.
	SDS SDSConfig `hcl:"sds"`
	// WorkloadKeyType is the type of the keys made for workload
	// X509-SVIDs: "ec-p256" (default) or "rsa-2048" (SPIRE's key and
	// values), for apps that take no EC keys.
	WorkloadKeyType string `hcl:"workload_x509_svid_key_type"`

	// OnReady is called once, when the agent is attested, has applied the
	// server's first sync and serves the Workload API (in-process use).
	OnReady func(ReadyInfo) `hcl:"-"`
	// Attestor replaces the Unix workload attestor (tests).
	Attestor attestor.Attestor `hcl:"-"`
	// Registry receives the agent's metrics; nil: a private registry.
	Registry *prometheus.Registry `hcl:"-"`
	// HealthListener, when set, is used instead of listening on HealthListen.
	HealthListener net.Listener `hcl:"-"`

	// trustBundleURLRoots, when set, replace the system's roots for the
	// TrustBundleURL download (this package's tests: the system's roots are
	// read once per process).
	trustBundleURLRoots *x509.CertPool
	// systemdRunDir, when set, replaces /run/systemd/system in the check
	// whether the host booted with systemd (this package's tests).
	systemdRunDir string
	// systemdCgroupFS, when set, replaces /sys/fs/cgroup for the systemd
	// attestor (tests).
	systemdCgroupFS string
	// delegates are AuthorizedDelegates, parsed by validate.
	delegates []spiffeid.ID
}

// SDSConfig is the `sds` block. Empty names take SPIRE's defaults
// ("default", "ROOTCA", "ALL"), so Envoy configs written for SPIRE work.
type SDSConfig struct {
	DefaultSVIDName             string `hcl:"default_svid_name"`
	DefaultBundleName           string `hcl:"default_bundle_name"`
	DefaultAllBundlesName       string `hcl:"default_all_bundles_name"`
	DisableSPIFFECertValidation bool   `hcl:"disable_spiffe_cert_validation"`
}

var sdsKeys = []string{"default_svid_name", "default_bundle_name", "default_all_bundles_name", "disable_spiffe_cert_validation"}

func (c SDSConfig) options() workloadapi.SDSOptions {
	return workloadapi.SDSOptions{
		DefaultSVIDName:             c.DefaultSVIDName,
		DefaultBundleName:           c.DefaultBundleName,
		DefaultAllBundlesName:       c.DefaultAllBundlesName,
		DisableSPIFFECertValidation: c.DisableSPIFFECertValidation,
	}
}

// validate refuses names that would shadow each other: one name could then
// mean an SVID or a bundle.
func (c SDSConfig) validate() error {
	o := c.options()
	names := map[string]string{}
	for _, n := range []struct{ key, name, def string }{
		{"default_svid_name", o.DefaultSVIDName, workloadapi.DefaultSDSSVIDName},
		{"default_bundle_name", o.DefaultBundleName, workloadapi.DefaultSDSBundleName},
		{"default_all_bundles_name", o.DefaultAllBundlesName, workloadapi.DefaultSDSAllBundlesName},
	} {
		name := n.name
		if name == "" {
			name = n.def
		}
		if strings.HasPrefix(name, "spiffe://") {
			return fmt.Errorf("agent: sds %s %q: SPIFFE IDs already name SVIDs and bundles; choose a plain name", n.key, name)
		}
		if other, ok := names[name]; ok {
			return fmt.Errorf("agent: sds %s and %s are both %q; each must be distinct", other, n.key, name)
		}
		names[name] = n.key
	}
	return nil
}

// AWSIIDConfig is the `aws_iid` block, with SPIRE's agent plugin key.
type AWSIIDConfig struct {
	// EC2MetadataEndpoint is the instance metadata service (default
	// client.DefaultEC2MetadataEndpoint, http://169.254.169.254/).
	EC2MetadataEndpoint string `hcl:"ec2_metadata_endpoint"`
}

var awsIIDKeys = []string{"ec2_metadata_endpoint"}

// validate checks the endpoint: an http(s) URL of a host.
func (c *AWSIIDConfig) validate() error {
	if c.EC2MetadataEndpoint == "" {
		return nil
	}
	u, err := url.Parse(c.EC2MetadataEndpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("agent: aws_iid ec2_metadata_endpoint %q: want an http URL such as %s", c.EC2MetadataEndpoint, client.DefaultEC2MetadataEndpoint)
	}
	return nil
}

// GCPIITConfig is the `gcp_iit` block, with SPIRE's agent plugin keys.
type GCPIITConfig struct {
	// IdentityTokenHost is the metadata server, host[:port] (default
	// metadata.google.internal), reached over http.
	IdentityTokenHost string `hcl:"identity_token_host"`
	// ServiceAccount is the instance's service account whose token is
	// asked for (default "default").
	ServiceAccount string `hcl:"service_account"`
}

var gcpIITKeys = []string{"identity_token_host", "service_account"}

// validate checks the host is a host[:port] alone and the account a name
// (one path segment: no "/", "." or "..", which would name another path).
func (c *GCPIITConfig) validate() error {
	if h := c.IdentityTokenHost; h != "" {
		u, err := url.Parse("http://" + h)
		if err != nil || u.Host != h || u.Hostname() == "" {
			return fmt.Errorf("agent: gcp_iit identity_token_host %q: want a host[:port] such as metadata.google.internal (no scheme or path)", h)
		}
	}
	if strings.ContainsAny(c.ServiceAccount, "/?# \t") || c.ServiceAccount == "." || c.ServiceAccount == ".." ||
		strings.ContainsFunc(c.ServiceAccount, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("agent: gcp_iit service_account %q: want a service account's email or \"default\"", c.ServiceAccount)
	}
	return nil
}

// ReadyInfo describes a ready agent.
type ReadyInfo struct {
	AgentID    spiffeid.ID
	SocketPath string
	// HealthAddr is the health listener's address, empty when none.
	HealthAddr string
}

// configKeys are the keys a config file may hold.
var configKeys = []string{
	"server_address", "trust_domain", "data_dir", "join_token", "join_token_file",
	"k8s_psat_cluster", "k8s_psat_token_path", "x509pop_cert_path", "x509pop_key_path",
	"sshpop_host_key_path", "sshpop_host_cert_path", "aws_iid", "gcp_iit", "k8s_workload_attestor", "kubelet_url",
	"kubelet_ca_path", "kubelet_skip_verify", "kubelet_token_path", "node_name", "k8s_cgroup_root", "systemd_workload_attestor",
	"trust_bundle_path", "trust_bundle_url", "trust_bundle_format", "insecure_bootstrap", "socket_path", "health_listen", "sds",
	"admin_socket_path", "authorized_delegates",
}

// ParseConfig parses an agent config file (HCL). The keys may be at the top
// level or inside one `agent { ... }` block, as in SPIRE's files. An unknown
// key is an error naming it.
func ParseConfig(data []byte) (cfg *Config, err error) {
	err = hclsafe.Do(func() error {
		cfg, err = parseConfig(data)
		return err
	})
	if err != nil {
		return nil, hclsafe.Explain(data, err)
	}
	return cfg, nil
}

func parseConfig(data []byte) (*Config, error) {
	file, err := hcl.ParseBytes(data)
	if err != nil {
		return nil, fmt.Errorf("parse agent config: %w", err)
	}
	list, ok := file.Node.(*ast.ObjectList)
	if !ok {
		return nil, errors.New("parse agent config: not a list of settings")
	}
	if len(list.Items) == 1 && len(list.Items[0].Keys) == 1 && list.Items[0].Keys[0].Token.Value() == "agent" {
		obj, ok := list.Items[0].Val.(*ast.ObjectType)
		if !ok {
			return nil, errors.New("agent config: `agent` must be a block: agent { ... }")
		}
		list = obj.List
	}
	seen := map[string]bool{}
	for _, item := range list.Items {
		if len(item.Keys) == 0 {
			continue
		}
		key, _ := item.Keys[0].Token.Value().(string)
		if len(item.Keys) > 1 || !slices.Contains(configKeys, key) {
			return nil, fmt.Errorf("agent config: unknown key %q at %s (known: %s)", key, item.Pos(), strings.Join(configKeys, ", "))
		}
		if seen[key] {
			return nil, fmt.Errorf("agent config: key %q is set twice (%s)", key, item.Pos())
		}
		seen[key] = true
		switch key {
		case "sds":
			if err := checkBlock(item, "sds", sdsKeys, `sds { default_svid_name = "..." }`); err != nil {
				return nil, err
			}
		case "aws_iid":
			if err := checkBlock(item, "aws_iid", awsIIDKeys, `aws_iid { } (or aws_iid { ec2_metadata_endpoint = "http://169.254.169.254/" })`); err != nil {
				return nil, err
			}
		case "gcp_iit":
			if err := checkBlock(item, "gcp_iit", gcpIITKeys, `gcp_iit { } (or gcp_iit { service_account = "..." })`); err != nil {
				return nil, err
			}
		}
	}
	var cfg Config
	if err := hcl.DecodeObject(&cfg, list); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	return &cfg, nil
}

// checkBlock refuses a block setting (sds, aws_iid) that is not a block,
// and unknown keys inside it (the HCL parser refuses repeated ones).
func checkBlock(item *ast.ObjectItem, name string, keys []string, example string) error {
	obj, ok := item.Val.(*ast.ObjectType)
	if !ok {
		return fmt.Errorf("agent config: `%s` at %s must be a block: %s", name, item.Pos(), example)
	}
	for _, it := range obj.List.Items {
		if len(it.Keys) == 0 {
			continue
		}
		key, _ := it.Keys[0].Token.Value().(string)
		if len(it.Keys) > 1 || !slices.Contains(keys, key) {
			return fmt.Errorf("agent config: unknown key %q in %s at %s (known: %s)", key, name, it.Pos(), strings.Join(keys, ", "))
		}
	}
	return nil
}

// LoadConfig reads and parses the config file at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Check validates the configuration as Run would before starting, without
// starting (SPIRE's spire-agent validate): the settings, and the trust
// bundle file when one is named. It does not reach the server.
func (c Config) Check() error {
	td, err := c.validate()
	if err != nil {
		return err
	}
	_, err = loadTrustBundle(c, td)
	return err
}

// validate fills defaults and checks what Run needs.
func (c *Config) validate() (spiffeid.TrustDomain, error) {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.SocketPath == "" {
		c.SocketPath = DefaultSocketPath
	}
	if c.ServerAddress == "" {
		return spiffeid.TrustDomain{}, errors.New("agent: server address is required (--server HOST:PORT)")
	}
	if _, _, err := net.SplitHostPort(c.ServerAddress); err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("agent: server address %q: want HOST:PORT", c.ServerAddress)
	}
	if c.TrustDomain == "" {
		return spiffeid.TrustDomain{}, errors.New("agent: trust domain is required (--trust-domain)")
	}
	td, err := ids.ParseTrustDomain(c.TrustDomain)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("agent: %w", err)
	}
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		return spiffeid.TrustDomain{}, errors.New("agent: give join_token or join_token_file, not both")
	}
	if (c.X509PoPCertPath == "") != (c.X509PoPKeyPath == "") {
		return spiffeid.TrustDomain{}, errors.New("agent: x509pop needs both x509pop_cert_path and x509pop_key_path (--x509pop-cert, --x509pop-key)")
	}
	var ways []string
	if c.JoinToken != "" || c.JoinTokenFile != "" {
		ways = append(ways, "a join token")
	}
	if c.K8sPSATCluster != "" {
		ways = append(ways, "k8s_psat_cluster")
	}
	if c.X509PoPCertPath != "" {
		ways = append(ways, "x509pop_cert_path")
	}
	if c.SSHPoPHostKeyPath != "" || c.SSHPoPHostCertPath != "" {
		ways = append(ways, "sshpop_host_key_path")
		if _, _, err := c.sshpopPaths(); err != nil {
			return spiffeid.TrustDomain{}, err
		}
	}
	if c.AWSIID != nil {
		ways = append(ways, "aws_iid")
		if err := c.AWSIID.validate(); err != nil {
			return spiffeid.TrustDomain{}, err
		}
	}
	if c.GCPIIT != nil {
		ways = append(ways, "gcp_iit")
		if err := c.GCPIIT.validate(); err != nil {
			return spiffeid.TrustDomain{}, err
		}
	}
	if len(ways) > 1 {
		return spiffeid.TrustDomain{}, fmt.Errorf("agent: give one of a join token, k8s_psat_cluster, x509pop_cert_path, sshpop_host_key_path, aws_iid or gcp_iit, not %s: an agent attests one way", strings.Join(ways, " and "))
	}
	if c.K8sPSATCluster != "" && c.InsecureBootstrap {
		// A projected token stays valid for hours: shown to an unverified
		// server, it could be replayed to take this node's agent ID.
		return spiffeid.TrustDomain{}, errors.New("agent: insecure_bootstrap cannot be used with k8s_psat_cluster; give --trust-bundle (the server's k8s_bundle ConfigMap)")
	}
	if c.AWSIID != nil && c.InsecureBootstrap {
		// The signed document never expires: shown to an unverified
		// server, it could be replayed to the real one to take this
		// instance's agent ID before its agent attests.
		return spiffeid.TrustDomain{}, errors.New("agent: insecure_bootstrap cannot be used with aws_iid; give --trust-bundle or --trust-bundle-url")
	}
	if c.GCPIIT != nil && c.InsecureBootstrap {
		// The token stays valid for an hour: shown to an unverified server,
		// it could be replayed to the real one to take this instance's
		// agent ID before its agent attests.
		return spiffeid.TrustDomain{}, errors.New("agent: insecure_bootstrap cannot be used with gcp_iit; give --trust-bundle or --trust-bundle-url")
	}
	if err := c.validateTrustBundle(); err != nil {
		return spiffeid.TrustDomain{}, err
	}
	if c.K8sPSATTokenPath != "" && c.K8sPSATCluster == "" {
		return spiffeid.TrustDomain{}, errors.New("agent: k8s_psat_token_path is set but k8s_psat_cluster is not (--k8s-psat-cluster NAME)")
	}
	if c.K8sPSATCluster != "" && c.K8sPSATTokenPath == "" {
		c.K8sPSATTokenPath = DefaultPSATTokenPath
	}
	if err := c.SDS.validate(); err != nil {
		return spiffeid.TrustDomain{}, err
	}
	if _, err := manager.ParseKeyType(c.WorkloadKeyType); err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("agent: workload_x509_svid_key_type: %w", err)
	}
	if err := c.validateAdminSocket(td); err != nil {
		return spiffeid.TrustDomain{}, err
	}
	if !c.K8sWorkloadAttestor && (c.KubeletURL != "" || c.KubeletCAPath != "" || c.KubeletSkipVerify || c.KubeletTokenPath != "" || c.K8sCgroupRoot != "") {
		return spiffeid.TrustDomain{}, errors.New("agent: kubelet settings are given but the Kubernetes workload attestor is off (--k8s-workload-attestor)")
	}
	return td, nil
}

// validateAdminSocket checks the Delegated Identity API's settings: a socket
// apart from the Workload API's directory, which the CSI driver mounts into
// every pod that asks (SPIRE refuses it there too), and delegates of the
// agent's trust domain, the only ones its entries can name.
func (c *Config) validateAdminSocket(td spiffeid.TrustDomain) error {
	c.delegates = nil
	if c.AdminSocketPath == "" {
		if len(c.AuthorizedDelegates) > 0 {
			return errors.New("agent: authorized_delegates is set but admin_socket_path is not (--admin-socket PATH): delegates are served only on the admin socket")
		}
		return nil
	}
	admin, err := filepath.Abs(c.AdminSocketPath)
	if err != nil {
		return fmt.Errorf("agent: admin_socket_path %q: %w", c.AdminSocketPath, err)
	}
	wl, err := filepath.Abs(c.SocketPath)
	if err != nil {
		return fmt.Errorf("agent: socket_path %q: %w", c.SocketPath, err)
	}
	for _, p := range [][2]string{{admin, wl}, {resolvePath(admin), resolvePath(wl)}} {
		if p[0] == p[1] {
			return fmt.Errorf("agent: admin_socket_path %s is the Workload API socket (socket_path); give the admin socket a path of its own", c.AdminSocketPath)
		}
		if dir := filepath.Dir(p[1]); isWithin(dir, p[0]) {
			return fmt.Errorf("agent: admin_socket_path %s is inside %s, the Workload API socket's directory, which workloads (and pods, through the CSI driver) can reach; put it elsewhere, e.g. /run/signet/admin/admin.sock", c.AdminSocketPath, dir)
		}
	}
	seen := map[spiffeid.ID]bool{}
	for _, s := range c.AuthorizedDelegates {
		id, err := ids.ParseWorkloadIDIn(s, td)
		if err != nil {
			return fmt.Errorf("agent: authorized_delegates: %w (the agent's entries are all in %s)", err, td.Name())
		}
		if !seen[id] {
			seen[id] = true
			c.delegates = append(c.delegates, id)
		}
	}
	return nil
}

// isWithin reports whether path lies in dir or below it.
func isWithin(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolvePath resolves the symbolic links of the longest part of the
// absolute path p that exists (/var/run is often /run), keeping the rest.
func resolvePath(p string) string {
	dir, rest := p, ""
	for {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
		dir = parent
	}
}

// validateTrustBundle checks where the server's roots come from: a file
// (or TrustBundlePEM), a URL, or nothing (insecure_bootstrap, or a data dir
// that already holds the server's bundle). As in SPIRE, a URL excludes the
// other two; the format defaults to pem.
func (c *Config) validateTrustBundle() error {
	switch c.TrustBundleFormat {
	case "":
		c.TrustBundleFormat = TrustBundleFormatPEM
	case TrustBundleFormatPEM, TrustBundleFormatSPIFFE:
	default:
		return fmt.Errorf("agent: trust_bundle_format %q: want %q or %q (--trust-bundle-format)", c.TrustBundleFormat, TrustBundleFormatPEM, TrustBundleFormatSPIFFE)
	}
	if c.TrustBundleURL == "" {
		if c.InsecureBootstrap && (c.TrustBundleFile != "" || len(c.TrustBundlePEM) > 0) {
			// SPIRE refuses this too: the operator meant one of them, and
			// which one wins would be a guess.
			return errors.New("agent: give trust_bundle_path or insecure_bootstrap, not both (--trust-bundle, --insecure-bootstrap): with a trust bundle the server is verified, so insecure_bootstrap would do nothing")
		}
		return nil
	}
	if c.TrustBundleFile != "" || len(c.TrustBundlePEM) > 0 {
		return errors.New("agent: give trust_bundle_path or trust_bundle_url, not both (--trust-bundle, --trust-bundle-url)")
	}
	if c.InsecureBootstrap {
		return errors.New("agent: insecure_bootstrap cannot be used with trust_bundle_url: the download is what the server is verified with")
	}
	if _, err := checkTrustBundleURL(c.TrustBundleURL); err != nil {
		return fmt.Errorf("agent: trust_bundle_url: %w", err)
	}
	return nil
}

// workloadAttestor is how the Workload API names its callers: Unix
// attributes always, systemd units and Kubernetes pod attributes when
// enabled.
func (c *Config) workloadAttestor(logger *slog.Logger) (attestor.Attestor, error) {
	if c.Attestor != nil {
		return c.Attestor, nil
	}
	attestors := []attestor.Attestor{attestor.NewUnix(attestor.UnixOptions{Logger: logger})}
	if c.systemdAttestorOn() {
		systemd, err := attestor.NewSystemd(attestor.SystemdOptions{CgroupFS: c.systemdCgroupFS, Logger: logger})
		switch {
		case err != nil && c.SystemdWorkloadAttestor == nil:
			// On only by default: an agent that sees /run/systemd/system
			// but not the host's cgroups (a container, a chroot) runs
			// without it rather than not at all.
			logger.Warn("systemd workload attestor off: /run/systemd/system exists but units cannot be read here; set systemd_workload_attestor = false to silence this, or true to make it an error", "error", err)
		case err != nil:
			return nil, fmt.Errorf("agent: systemd workload attestor (systemd_workload_attestor, --systemd-workload-attestor): %w", err)
		default:
			attestors = append(attestors, systemd)
		}
	}
	if c.K8sWorkloadAttestor {
		k8s, err := attestor.NewK8s(attestor.K8sOptions{
			KubeletURL:        c.KubeletURL,
			TokenPath:         c.KubeletTokenPath,
			KubeletCAPath:     c.KubeletCAPath,
			SkipKubeletVerify: c.KubeletSkipVerify,
			NodeName:          c.NodeName,
			CgroupRoot:        c.K8sCgroupRoot,
			Logger:            logger,
		})
		if err != nil {
			return nil, fmt.Errorf("agent: Kubernetes workload attestor: %w", err)
		}
		attestors = append(attestors, k8s)
	}
	if len(attestors) == 1 {
		return attestors[0], nil
	}
	return attestor.Multi(attestors...), nil
}

// systemdAttestorOn reports whether the systemd attestor runs: as
// configured, else when the host booted with systemd (sd_booted: systemd
// creates /run/systemd/system early at boot).
func (c *Config) systemdAttestorOn() bool {
	if c.SystemdWorkloadAttestor != nil {
		return *c.SystemdWorkloadAttestor
	}
	fi, err := os.Stat(cmp.Or(c.systemdRunDir, "/run/systemd/system")) // sd_booted follows a symlink
	return err == nil && fi.IsDir()
}

// sshpopPaths are the sshpop host key and certificate, the one not given
// named as OpenSSH names them (the certificate of key K is K-cert.pub);
// an error when neither is given or the key cannot be named.
func (c *Config) sshpopPaths() (key, cert string, err error) {
	key, cert = c.SSHPoPHostKeyPath, c.SSHPoPHostCertPath
	switch {
	case key == "" && cert == "":
		return "", "", errors.New("agent: sshpop is not configured")
	case cert == "":
		cert = key + "-cert.pub"
	case key == "":
		var ok bool
		if key, ok = strings.CutSuffix(cert, "-cert.pub"); !ok || key == "" {
			return "", "", fmt.Errorf("agent: sshpop_host_cert_path %q does not end in -cert.pub, so its key cannot be named: give sshpop_host_key_path too (--sshpop-host-key)", cert)
		}
	}
	return key, cert, nil
}

// nodeAttestor is how the agent attests: a projected service account
// token, a machine certificate, an SSH host certificate, the EC2 instance
// identity document, the GCE instance identity token, or the join token (the file re-read at every
// attestation).
func (c *Config) nodeAttestor(td spiffeid.TrustDomain) client.NodeAttestor {
	if c.K8sPSATCluster != "" {
		return client.PSAT(c.K8sPSATCluster, c.K8sPSATTokenPath)
	}
	if c.X509PoPCertPath != "" {
		return client.X509PoP(td, c.X509PoPCertPath, c.X509PoPKeyPath)
	}
	if key, cert, err := c.sshpopPaths(); err == nil {
		return client.SSHPoP(td, key, cert)
	}
	if c.AWSIID != nil {
		return client.AWSIID(c.AWSIID.EC2MetadataEndpoint)
	}
	if c.GCPIIT != nil {
		return client.GCPIIT(c.GCPIIT.IdentityTokenHost, c.GCPIIT.ServiceAccount)
	}
	if c.JoinTokenFile == "" {
		tok := strings.TrimSpace(c.JoinToken)
		return client.JoinToken(func() string { return tok })
	}
	path := c.JoinTokenFile
	return client.JoinToken(func() string {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	})
}
