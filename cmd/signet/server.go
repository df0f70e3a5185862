package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newServerCmd is replaced by the server role's real command tree.
func newServerCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "server",
		Short: "server role (being built)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("server: not built yet") },
	}
}
