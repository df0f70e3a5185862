package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/csidriver"
)

// newCSICmd is `signet csi`: the CSI node plugin that kubelet calls to put
// the agent's Workload API socket dir into pods.
func newCSICmd(g *globals) *cobra.Command {
	var cfg csidriver.Config
	cmd := &cobra.Command{
		Use:   "csi",
		Short: "CSI node plugin: mounts the Workload API socket dir into pods (ephemeral, read-only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Logger = log.With("role", "csi")
			cfg.NodeID = csidriver.ResolveNodeID(cfg.NodeID, os.Getenv)
			return csidriver.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Endpoint, "endpoint", csidriver.DefaultEndpoint, "CSI gRPC endpoint, unix:///PATH")
	f.StringVar(&cfg.SocketDir, "workload-api-socket-dir", csidriver.DefaultSocketDir, "agent's Workload API socket directory, bind-mounted into pods")
	f.StringVar(&cfg.SocketName, "workload-api-socket-name", csidriver.DefaultSocketName, "agent socket's file name in the socket directory (checked by Probe)")
	f.StringVar(&cfg.NodeID, "node-id", "", "node ID reported to kubelet (default: $MY_NODE_NAME)")
	f.StringVar(&cfg.DriverName, "driver-name", csidriver.DefaultDriverName, "CSI driver name; must match the CSIDriver object")
	f.StringVar(&cfg.PodsRoot, "kubelet-pods-root", csidriver.DefaultPodsRoot, "kubelet's pods directory; target paths must be below it")
	f.StringVar(&cfg.HealthListen, "health-listen", "", "address for GET /healthz and /readyz (empty: off)")
	return cmd
}
