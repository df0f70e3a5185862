package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/server"
)

// newServerValidateCmd is `signet server validate` (SPIRE's): the config
// file checked as `server run` would, the node CA files it names read,
// nothing started; the datastore and clusters are not reached.
func newServerValidateCmd() *cobra.Command {
	return newValidateCmd("Check a server config file as server run would, without running (exit 1 and the reason if it is not valid)", func(path string) error {
		fc, err := server.LoadConfigFile(path)
		if err != nil {
			return err
		}
		cfg, err := fc.Resolve()
		if err == nil {
			err = cfg.Check()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
}

// newAgentValidateCmd is `signet agent validate` (SPIRE's).
func newAgentValidateCmd() *cobra.Command {
	return newValidateCmd("Check an agent config file as agent run would, without running (exit 1 and the reason if it is not valid)", func(path string) error {
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			return err
		}
		if err := cfg.Check(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
}

// newValidateCmd is `signet <role> validate --config path`: check(path)
// reads and checks the file as `<role> run` would.
func newValidateCmd(short string, check func(path string) error) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := check(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is valid.\n", path)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "HCL configuration file; required")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}
