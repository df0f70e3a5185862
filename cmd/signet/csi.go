package main

import (
	"errors"

	"github.com/spf13/cobra"
)

// newCSICmd is replaced by the csi role's real command tree.
func newCSICmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "csi",
		Short: "csi role (being built)",
		RunE:  func(*cobra.Command, []string) error { return errors.New("csi: not built yet") },
	}
}
