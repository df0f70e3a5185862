package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/server/adminapi"
)

// healthcheckTimeout bounds one check; probes bring their own, shorter
// ones.
const healthcheckTimeout = 10 * time.Second

func newServerHealthcheckCmd() *cobra.Command {
	var socket string
	var shallow, verbose bool
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when the server is ready (store reachable, CA loaded), for exec probes and Docker HEALTHCHECK; --shallow: when it answers at all",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if verbose {
				fmt.Fprintf(cmd.OutOrStdout(), "Checking server health on %s\n", socket)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), healthcheckTimeout)
			defer cancel()
			if err := adminapi.CheckHealth(ctx, socket, shallow); err != nil {
				return err
			}
			if verbose {
				if shallow {
					fmt.Fprintln(cmd.OutOrStdout(), "Server is live.")
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "Server is healthy.")
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "admin-socket", adminapi.DefaultSocket, "server admin API socket")
	f.BoolVar(&shallow, "shallow", false, "only check that the server answers (liveness), not that it is ready")
	f.BoolVar(&verbose, "verbose", false, "say what is checked and the result")
	return cmd
}
