// Command signet is the one Signet binary: `signet server`, `signet agent`,
// `signet csi`, `signet helper` and `signet dev`. This package only defines
// subcommands and flags; each role's logic lives in its own folder.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	"github.com/signetid/signet/internal/logging"
)

// globals are the flags every subcommand shares.
type globals struct {
	logFormat string
	logLevel  string
	// level is the built logger's level, which the server lets admins
	// change while it runs.
	level *slog.LevelVar
}

func (g *globals) logger() (*slog.Logger, error) {
	return g.loggerTo(os.Stderr)
}

// loggerTo also routes client-go's log (klog, process-wide) through the
// logger, so that a JSON log stays JSON when the Kubernetes clients speak.
func (g *globals) loggerTo(w io.Writer) (*slog.Logger, error) {
	l, level, err := logging.New(w, g.logFormat, g.logLevel)
	if err != nil {
		return nil, err
	}
	g.level = level
	klog.SetSlogLogger(l.With("component", "client-go"))
	return l, nil
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
	rejectUnknownSubcommands(root)
	return root
}

// rejectUnknownSubcommands makes every command group (one that only holds
// subcommands) fail on an unknown subcommand, with a one-line error and a
// non-zero exit: cobra would print the group's help and exit 0, so a typo in
// a script (TOKEN=$(signet server token genrate)) would pass for success.
// A group run bare still prints its help.
func rejectUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		rejectUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Runnable() {
		return
	}
	// Flags meant for the mistyped subcommand must not hide the real error.
	c.FParseErrWhitelist.UnknownFlags = true
	c.SuggestionsMinimumDistance = 2
	c.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return fmt.Errorf("%s; see '%s --help'", msg, cmd.CommandPath())
	}
	c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
}
