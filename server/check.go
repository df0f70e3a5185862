package server

import (
	"crypto/tls"
	"fmt"

	"github.com/signetid/signet/server/nodeattest"
)

// Check runs the start-up checks of a resolved configuration that need no
// store, CA or network (SPIRE's spire-server validate): the files the
// server reads at start (node CA bundles, aws_iid's certificates, the disk
// upstream authority, serving certificates) are read and parsed as New
// does. What only a running server can see (the datastore, a kubeconfig's
// cluster, another Signet server upstream) is not checked.
func (cfg Config) Check() error {
	if cfg.X509PoP != nil {
		if _, err := nodeattest.NewX509PoP(cfg.TrustDomain, *cfg.X509PoP); err != nil {
			return err
		}
	}
	if cfg.SSHPoP != nil {
		if _, err := nodeattest.NewSSHPoP(cfg.TrustDomain, *cfg.SSHPoP); err != nil {
			return err
		}
	}
	if cfg.AWSIID != nil {
		if _, err := nodeattest.NewAWSIID(cfg.TrustDomain, *cfg.AWSIID); err != nil {
			return err
		}
	}
	if cfg.GCPIIT != nil {
		// Google's certificates are fetched at the first attestation.
		if _, err := nodeattest.NewGCPIIT(cfg.TrustDomain, *cfg.GCPIIT); err != nil {
			return err
		}
	}
	if cfg.UpstreamAuthority != nil {
		if err := cfg.UpstreamAuthority.Check(); err != nil {
			return fmt.Errorf("upstream_authority \"disk\": %w", err)
		}
	}
	if ep := cfg.Federation.Endpoint; ep != nil && ep.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(ep.CertFile, ep.KeyFile); err != nil {
			return fmt.Errorf("federation bundle endpoint serving_cert_file: %w", err)
		}
	}
	if o := cfg.OIDCDiscovery; o != nil && o.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile); err != nil {
			return fmt.Errorf("oidc_discovery serving_cert_file: %w", err)
		}
	}
	return nil
}
