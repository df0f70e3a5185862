package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newDevCmd is replaced by the dev role's real command tree.
func newDevCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dev",
		Short: "dev role (being built)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("dev: not built yet") },
	}
}
