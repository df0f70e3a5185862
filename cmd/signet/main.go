// Command signet is the one Signet binary: `signet server`, `signet agent`,
// `signet csi`, `signet helper` and `signet dev`. This package only defines
// subcommands and flags; each role's logic lives in its own folder.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/signetid/signet/internal/logging"
)

// globals are the flags every subcommand shares.
type globals struct {
	logFormat string
	logLevel  string
}

func (g *globals) logger() (*slog.Logger, error) {
	return logging.New(os.Stderr, g.logFormat, g.logLevel)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "signet: %v\n", err)
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit status (the helper exits with its child's).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func exitCode(err error) int {
	if e, ok := err.(exitError); ok {
		return e.code
	}
	return 1
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "signet",
		Short:         "Signet: attested, short-lived SPIFFE identities for every workload",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newServerCmd(g), newAgentCmd(g), newCSICmd(g), newHelperCmd(g), newDevCmd(g))
	return root
}
