package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/internal/logging"
	"github.com/signetid/signet/server/api"
)

// newServerLoggerCmd is `signet server logger get|set|reset` (SPIRE's): the
// running server's log level, changed without a restart.
func newServerLoggerCmd() *cobra.Command {
	none := func(*cobra.Command) error { return nil }
	get := newAdminCmd("get", "Show the server's log level, now and at launch", none,
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			l, err := c.GetLogger(ctx, &api.GetLoggerRequest{})
			return printLogger(w, out, l, err)
		})
	var level string
	set := newAdminCmd("set", "Set the server's log level until reset or restart",
		func(*cobra.Command) error {
			_, err := logging.ParseLevel(level)
			return err
		},
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			l, err := c.SetLogLevel(ctx, &api.SetLogLevelRequest{Level: level})
			return printLogger(w, out, l, err)
		})
	set.Flags().StringVar(&level, "level", "", "debug (or SPIRE's trace), info, warn or error; required")
	_ = set.MarkFlagRequired("level")
	reset := newAdminCmd("reset", "Return the server's log level to the one it started with", none,
		func(ctx context.Context, c api.AdminServiceClient, w io.Writer, out *outputFlag) error {
			l, err := c.ResetLogLevel(ctx, &api.ResetLogLevelRequest{})
			return printLogger(w, out, l, err)
		})
	cmd := &cobra.Command{Use: "logger", Short: "The running server's log level (SPIRE's logger commands)"}
	cmd.AddCommand(get, set, reset)
	return cmd
}

func printLogger(w io.Writer, out *outputFlag, l *api.Logger, err error) error {
	if err != nil {
		return err
	}
	if out.json() {
		return writeJSON(w, struct {
			Current string `json:"current_level"`
			Launch  string `json:"launch_level"`
		}{l.CurrentLevel, l.LaunchLevel})
	}
	_, err = fmt.Fprintf(w, "Log level: %s\nLaunch log level: %s\n", l.CurrentLevel, l.LaunchLevel)
	return err
}
