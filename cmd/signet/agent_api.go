package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newAgentAPICmd and newAgentHealthcheckCmd are replaced by the real Workload API client commands.
func newAgentAPICmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "api", RunE: func(*cobra.Command, []string) error { return errors.New("agent api: not built yet") }}
}

func newAgentHealthcheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{Use: "healthcheck", RunE: func(*cobra.Command, []string) error { return errors.New("agent healthcheck: not built yet") }}
}
