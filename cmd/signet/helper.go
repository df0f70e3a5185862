package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newHelperCmd is replaced by the helper role's real command tree.
func newHelperCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "helper",
		Short: "helper role (being built)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("helper: not built yet") },
	}
}
