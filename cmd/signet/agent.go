package main

import "github.com/spf13/cobra"

func newAgentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "Node agent: attests to the server and serves the SPIFFE Workload API"}
	cmd.AddCommand(newAgentRunCmd(g), newAgentAPICmd(g), newAgentHealthcheckCmd(g), newAgentValidateCmd())
	return cmd
}
