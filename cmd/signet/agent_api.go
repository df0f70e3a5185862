package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/agent/apicli"
)

// apiFlags are the flags every Workload API client command shares.
type apiFlags struct {
	socket  string
	timeout time.Duration
	output  outputFlag
}

func (f *apiFlags) register(cmd *cobra.Command, withTimeout bool) {
	cmd.Flags().StringVar(&f.socket, "socket", "", "Workload API socket path or unix:// address (default: $"+apicli.EnvSocket+", else "+apicli.DefaultSocket+")")
	if withTimeout {
		cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Second, "how long to wait for the Workload API")
	}
}

func (f *apiFlags) options(cmd *cobra.Command) (apicli.Options, error) {
	if f.output.format == "" {
		f.output.format = "pretty"
	}
	if err := f.output.check(); err != nil {
		return apicli.Options{}, err
	}
	addr, err := apicli.ResolveAddr(f.socket, os.Getenv(apicli.EnvSocket))
	if err != nil {
		return apicli.Options{}, err
	}
	return apicli.Options{Addr: addr, Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr(), In: cmd.InOrStdin(), Timeout: f.timeout, JSON: f.output.json()}, nil
}

func newAgentAPICmd(*globals) *cobra.Command {
	api := &cobra.Command{Use: "api", Short: "Talk to the agent's Workload API as a workload would"}
	fetch := &cobra.Command{Use: "fetch", Short: "Fetch SVIDs once"}

	var x509Flags apiFlags
	var writeDir string
	x509Cmd := &cobra.Command{
		Use:   "x509",
		Short: "Print (and optionally write) the caller's X509-SVIDs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := x509Flags.options(cmd)
			if err != nil {
				return err
			}
			return apicli.FetchX509(cmd.Context(), o, writeDir)
		},
	}
	x509Flags.register(x509Cmd, true)
	x509Flags.output.add(x509Cmd)
	x509Cmd.Flags().StringVar(&writeDir, "write", "", "write svid.N.pem, svid.N.key (0600) and bundle.N.pem into this directory")

	var jwtFlags apiFlags
	var audiences []string
	var spiffeID string
	jwtCmd := &cobra.Command{
		Use:   "jwt",
		Short: "Print JWT-SVIDs for an audience, one token per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := jwtFlags.options(cmd)
			if err != nil {
				return err
			}
			return apicli.FetchJWT(cmd.Context(), o, audiences, spiffeID)
		},
	}
	jwtFlags.register(jwtCmd, true)
	jwtFlags.output.add(jwtCmd)
	jwtCmd.Flags().StringSliceVar(&audiences, "audience", nil, "audience of the token (repeat for more); required")
	jwtCmd.Flags().StringVar(&spiffeID, "spiffe-id", "", "only the JWT-SVID for this SPIFFE ID")
	_ = jwtCmd.MarkFlagRequired("audience")

	var watchFlags apiFlags
	watchCmd := &cobra.Command{
		Use:   "watch",
		Short: "Print the caller's X509-SVIDs now and on every update, until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := watchFlags.options(cmd)
			if err != nil {
				return err
			}
			return apicli.Watch(cmd.Context(), o)
		},
	}
	watchFlags.register(watchCmd, false)

	validate := &cobra.Command{Use: "validate", Short: "Validate an SVID with the Workload API"}
	var validateFlags apiFlags
	var audience, token string
	validateJWTCmd := &cobra.Command{
		Use:   "jwt",
		Short: "Check a JWT-SVID for an audience; print its SPIFFE ID and claims, or exit 1 saying why it is not valid",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := validateFlags.options(cmd)
			if err != nil {
				return err
			}
			return apicli.ValidateJWT(cmd.Context(), o, audience, token)
		},
	}
	validateFlags.register(validateJWTCmd, true)
	validateJWTCmd.Flags().StringVar(&audience, "audience", "", "audience the token must be for (this validator's name); required")
	validateJWTCmd.Flags().StringVar(&token, "svid", "", "the JWT-SVID, or - to read it from stdin (keeps it out of ps); required")
	_ = validateJWTCmd.MarkFlagRequired("audience")
	_ = validateJWTCmd.MarkFlagRequired("svid")
	validate.AddCommand(validateJWTCmd)

	fetch.AddCommand(x509Cmd, jwtCmd)
	api.AddCommand(fetch, watchCmd, validate)
	return api
}

func newAgentHealthcheckCmd(*globals) *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the agent's Workload API answers (no identity for the caller still counts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := f.options(cmd)
			if err != nil {
				return err
			}
			return apicli.Healthcheck(cmd.Context(), o)
		},
	}
	f.register(cmd, true)
	return cmd
}
