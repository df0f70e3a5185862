package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newAgentCmd is replaced by the agent role's real command tree.
func newAgentCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "agent role (being built)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("agent: not built yet") },
	}
}
