package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/agent/client"
)

// newAgentRunCmd is `signet agent run`: flags override the config file.
func newAgentRunCmd(g *globals) *cobra.Command {
	var (
		configPath      string
		flags           agent.Config
		systemdAttestor bool
		awsIID          bool
		awsIIDEndpoint  string
		gcpIIT          bool
		gcpIITHost      string
		gcpIITAccount   string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent: attest to the server and serve the Workload API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg := &agent.Config{}
			if configPath != "" {
				if cfg, err = agent.LoadConfig(configPath); err != nil {
					return err
				}
			}
			set := cmd.Flags().Changed
			if set("server") {
				cfg.ServerAddress = flags.ServerAddress
			}
			if set("trust-domain") {
				cfg.TrustDomain = flags.TrustDomain
			}
			if set("data-dir") || cfg.DataDir == "" {
				cfg.DataDir = flags.DataDir
			}
			if set("join-token") {
				cfg.JoinToken, cfg.JoinTokenFile = flags.JoinToken, ""
			}
			if set("join-token-file") {
				cfg.JoinTokenFile, cfg.JoinToken = flags.JoinTokenFile, ""
			}
			if set("k8s-psat-cluster") {
				cfg.K8sPSATCluster = flags.K8sPSATCluster
			}
			if set("k8s-psat-token-path") {
				cfg.K8sPSATTokenPath = flags.K8sPSATTokenPath
			}
			if set("x509pop-cert") {
				cfg.X509PoPCertPath = flags.X509PoPCertPath
			}
			if set("x509pop-key") {
				cfg.X509PoPKeyPath = flags.X509PoPKeyPath
			}
			if set("sshpop-host-key") {
				cfg.SSHPoPHostKeyPath = flags.SSHPoPHostKeyPath
			}
			if set("sshpop-host-cert") {
				cfg.SSHPoPHostCertPath = flags.SSHPoPHostCertPath
			}
			if set("aws-iid") {
				cfg.AWSIID = nil
				if awsIID {
					cfg.AWSIID = &agent.AWSIIDConfig{}
				}
			}
			if set("aws-iid-metadata-endpoint") {
				if cfg.AWSIID == nil {
					cfg.AWSIID = &agent.AWSIIDConfig{}
				}
				cfg.AWSIID.EC2MetadataEndpoint = awsIIDEndpoint
			}
			if set("gcp-iit") {
				cfg.GCPIIT = nil
				if gcpIIT {
					cfg.GCPIIT = &agent.GCPIITConfig{}
				}
			}
			if set("gcp-iit-identity-token-host") || set("gcp-iit-service-account") {
				if cfg.GCPIIT == nil {
					cfg.GCPIIT = &agent.GCPIITConfig{}
				}
				if set("gcp-iit-identity-token-host") {
					cfg.GCPIIT.IdentityTokenHost = gcpIITHost
				}
				if set("gcp-iit-service-account") {
					cfg.GCPIIT.ServiceAccount = gcpIITAccount
				}
			}
			if set("k8s-workload-attestor") {
				cfg.K8sWorkloadAttestor = flags.K8sWorkloadAttestor
			}
			if set("kubelet-url") {
				cfg.KubeletURL = flags.KubeletURL
			}
			if set("kubelet-ca") {
				cfg.KubeletCAPath = flags.KubeletCAPath
			}
			if set("kubelet-skip-verify") {
				cfg.KubeletSkipVerify = flags.KubeletSkipVerify
			}
			if set("kubelet-token-path") {
				cfg.KubeletTokenPath = flags.KubeletTokenPath
			}
			if set("k8s-cgroup-root") {
				cfg.K8sCgroupRoot = flags.K8sCgroupRoot
			}
			if set("systemd-workload-attestor") {
				cfg.SystemdWorkloadAttestor = &systemdAttestor
			}
			if set("node-name") || cfg.NodeName == "" {
				cfg.NodeName = flags.NodeName
			}
			// Either source flag replaces the file's source of the other
			// kind (as --join-token does the file's join_token_file); both
			// flags together are refused by the agent.
			if set("trust-bundle") {
				cfg.TrustBundleFile = flags.TrustBundleFile
				if !set("trust-bundle-url") {
					cfg.TrustBundleURL = ""
				}
			}
			if set("trust-bundle-url") {
				cfg.TrustBundleURL = flags.TrustBundleURL
				if !set("trust-bundle") {
					cfg.TrustBundleFile = ""
				}
			}
			if set("trust-bundle-format") {
				cfg.TrustBundleFormat = flags.TrustBundleFormat
			}
			// A source of trust on the command line replaces the file's
			// other sources; two on the command line are refused.
			bundleFlag := set("trust-bundle") || set("trust-bundle-url")
			if set("insecure-bootstrap") {
				cfg.InsecureBootstrap = flags.InsecureBootstrap
				if cfg.InsecureBootstrap && !bundleFlag {
					cfg.TrustBundleFile, cfg.TrustBundleURL = "", ""
				}
			} else if bundleFlag {
				cfg.InsecureBootstrap = false
			}
			if set("socket") || cfg.SocketPath == "" {
				cfg.SocketPath = flags.SocketPath
			}
			if set("health-listen") {
				cfg.HealthListen = flags.HealthListen
			}
			if set("workload-x509-svid-key-type") {
				cfg.WorkloadKeyType = flags.WorkloadKeyType
			}
			if set("admin-socket") {
				cfg.AdminSocketPath = flags.AdminSocketPath
			}
			if set("authorized-delegate") {
				cfg.AuthorizedDelegates = flags.AuthorizedDelegates
			}
			return agent.Run(cmd.Context(), *cfg, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "agent config file (HCL); flags override it")
	f.StringVar(&flags.ServerAddress, "server", "", "server agent API address, HOST:PORT")
	f.StringVar(&flags.TrustDomain, "trust-domain", "", "trust domain, e.g. example.org")
	f.StringVar(&flags.DataDir, "data-dir", agent.DefaultDataDir, "directory for the agent SVID, keys, bundle and SVID cache")
	f.StringVar(&flags.JoinToken, "join-token", "", "join token to attest with (from signet server token generate)")
	f.StringVar(&flags.JoinTokenFile, "join-token-file", "", "file holding the join token, re-read at every (re-)attestation")
	f.StringVar(&flags.K8sPSATCluster, "k8s-psat-cluster", "", "attest with the pod's projected service account token instead of a join token; the cluster's name in the server's k8s_psat config")
	f.StringVar(&flags.K8sPSATTokenPath, "k8s-psat-token-path", "", "projected service account token file (audience signet-server; default "+agent.DefaultPSATTokenPath+")")
	f.StringVar(&flags.X509PoPCertPath, "x509pop-cert", "", "attest with the host's machine certificate instead of a join token: PEM file, the certificate then its intermediates (re-read at every attestation)")
	f.StringVar(&flags.X509PoPKeyPath, "x509pop-key", "", "private key of --x509pop-cert (PEM: PKCS #8, EC or RSA)")
	f.StringVar(&flags.SSHPoPHostKeyPath, "sshpop-host-key", "", "attest with the host's OpenSSH host certificate instead of a join token: the host's private key, e.g. /etc/ssh/ssh_host_rsa_key (re-read at every attestation)")
	f.StringVar(&flags.SSHPoPHostCertPath, "sshpop-host-cert", "", "OpenSSH host certificate of --sshpop-host-key (default: the key's path with -cert.pub)")
	f.BoolVar(&awsIID, "aws-iid", false, "attest with the EC2 instance identity document instead of a join token (the server's aws_iid block; it attests an instance once, until its agent is evicted)")
	f.StringVar(&awsIIDEndpoint, "aws-iid-metadata-endpoint", "", "EC2 instance metadata service for --aws-iid (SPIRE's ec2_metadata_endpoint; default "+client.DefaultEC2MetadataEndpoint+"); implies --aws-iid")
	f.BoolVar(&gcpIIT, "gcp-iit", false, "attest with the GCE instance identity token instead of a join token (the server's gcp_iit block; it attests an instance once, until its agent is evicted)")
	f.StringVar(&gcpIITHost, "gcp-iit-identity-token-host", "", "GCE metadata server for --gcp-iit, host[:port] (SPIRE's identity_token_host; default metadata.google.internal); implies --gcp-iit")
	f.StringVar(&gcpIITAccount, "gcp-iit-service-account", "", "service account whose identity token --gcp-iit asks for (SPIRE's service_account; default \"default\"); implies --gcp-iit")
	f.BoolVar(&flags.K8sWorkloadAttestor, "k8s-workload-attestor", false, "add Kubernetes selectors (k8s:ns, k8s:sa, k8s:pod-label, ...) for callers in pods, from the node's kubelet")
	f.StringVar(&flags.KubeletURL, "kubelet-url", "", "kubelet API for the Kubernetes workload attestor (default https://127.0.0.1:10250; http://...:10255 for the read-only port)")
	f.StringVar(&flags.KubeletCAPath, "kubelet-ca", "", "PEM CA of the kubelet's serving certificate (default the service account's ca.crt)")
	f.BoolVar(&flags.KubeletSkipVerify, "kubelet-skip-verify", false, "accept any kubelet certificate (for self-signed kubelet certificates; whoever answers on the kubelet's address then picks the selectors)")
	f.StringVar(&flags.KubeletTokenPath, "kubelet-token-path", "", "bearer token for the kubelet (default the pod's service account token)")
	f.StringVar(&flags.K8sCgroupRoot, "k8s-cgroup-root", "", "cgroup path above the kubelet's kubepods root, / for the top (default: judged from the agent's own pod, else /)")
	f.BoolVar(&systemdAttestor, "systemd-workload-attestor", false, "add systemd:id:<unit> for callers in a systemd unit, from their cgroup (default: on when the host booted with systemd; =false turns it off)")
	f.StringVar(&flags.NodeName, "node-name", os.Getenv("MY_NODE_NAME"), "this agent's Kubernetes node; pods the kubelet reports elsewhere are refused (default $MY_NODE_NAME)")
	f.StringVar(&flags.TrustBundleFile, "trust-bundle", "", "roots to verify the server (from signet server bundle show), in --trust-bundle-format")
	f.StringVar(&flags.TrustBundleURL, "trust-bundle-url", "", "instead of --trust-bundle, download the roots at every start from this https URL, verified with the system's roots (SSL_CERT_FILE, SSL_CERT_DIR); plain http only to a loopback host")
	f.StringVar(&flags.TrustBundleFormat, "trust-bundle-format", "", `format of --trust-bundle or --trust-bundle-url: "pem" (default) or "spiffe" (a SPIFFE bundle document, as a bundle endpoint serves)`)
	f.BoolVar(&flags.InsecureBootstrap, "insecure-bootstrap", false, "labs only: attest without verifying the server when no trust bundle is known")
	f.StringVar(&flags.SocketPath, "socket", agent.DefaultSocketPath, "Workload API Unix socket")
	f.StringVar(&flags.HealthListen, "health-listen", "", "address for /live, /ready and /metrics, e.g. 127.0.0.1:8081")
	f.StringVar(&flags.WorkloadKeyType, "workload-x509-svid-key-type", "", "key type of workload X509-SVIDs: ec-p256 (default) or rsa-2048, for apps that take no EC keys")
	f.StringVar(&flags.AdminSocketPath, "admin-socket", "", "Unix socket for SPIRE's Delegated Identity API (off when empty); not in the --socket directory")
	f.StringArrayVar(&flags.AuthorizedDelegates, "authorized-delegate", nil, "SPIFFE ID allowed on --admin-socket to obtain any workload's SVIDs (Cilium, ztunnel); repeat for more; replaces the file's list")
	return cmd
}
