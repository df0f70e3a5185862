package server

import "github.com/signetid/signet/server/nodeattest"

// Check runs the start-up checks of a resolved configuration that need no
// store, CA or network (SPIRE's spire-server validate): the node
// attestors' CA files are read and parsed as New does. What only a
// running server can see (the datastore, a kubeconfig's cluster, the
// upstream) is not checked.
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
	return nil
}
