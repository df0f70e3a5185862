package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newAgentRunCmd is replaced by the agent's real `run` command.
func newAgentRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "run", RunE: func(*cobra.Command, []string) error { return errors.New("agent run: not built yet") }}
}
