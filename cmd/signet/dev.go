package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/dev"
)

func newDevCmd(g *globals) *cobra.Command {
	var (
		trustDomain, dataDir, socket, adminSocket, healthListen string
		svidTTL                                                 time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Server + agent in one process on an embedded store; registers the calling user",
		Long: "signet dev runs a server and an agent in one process, registers the calling user\n" +
			"(unix:uid) as spiffe://<trust-domain>/dev/<user>, and prints the\n" +
			"SPIFFE_ENDPOINT_SOCKET=... line to use. For trying Signet out, not for production.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, err := ids.ParseTrustDomain(trustDomain)
			if err != nil {
				return err
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			return dev.Run(cmd.Context(), dev.Config{
				TrustDomain:  td,
				DataDir:      dataDir,
				SocketPath:   socket,
				AdminSocket:  adminSocket,
				SVIDTTL:      svidTTL,
				HealthListen: healthListen,
				Out:          cmd.OutOrStdout(),
			}, logger)
		},
	}
	f := cmd.Flags()
	f.StringVar(&trustDomain, "trust-domain", "example.org", "trust domain")
	f.StringVar(&dataDir, "data-dir", "", "directory for all state (default: a temporary one, removed on exit)")
	f.StringVar(&socket, "socket", "", "Workload API socket (default <data-dir>/sockets/agent.sock)")
	f.StringVar(&adminSocket, "admin-socket", "", "admin socket for signet server entry ... (default <data-dir>/admin.sock)")
	f.DurationVar(&svidTTL, "svid-ttl", time.Hour, "X509-SVID lifetime")
	f.StringVar(&healthListen, "health-listen", "", "agent /live, /ready and /metrics address")
	return cmd
}
