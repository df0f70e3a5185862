package test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A mistyped subcommand is an error with one line on stderr, not the group's
// help and exit 0 (a script doing TOKEN=$(signet server token genrate) would
// carry on with the help text as its token).
func TestCLIUnknownSubcommandFails(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"server", "token", "genrate"}, `unknown command "genrate" for "signet server token" (did you mean "generate"?)`},
		{[]string{"server", "start"}, `unknown command "start" for "signet server"`},
		{[]string{"server", "entry", "craete", "--spiffe-id", "spiffe://example.org/x"}, `unknown command "craete" for "signet server entry" (did you mean "create"?)`},
		{[]string{"servr"}, `unknown command "servr" for "signet" (did you mean "server"?)`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, signetBin(t), tt.args...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1", err)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout holds %q, want nothing", stdout.String())
			}
			got := strings.TrimSpace(stderr.String())
			if strings.Count(got, "\n") != 0 || !strings.Contains(got, tt.want) {
				t.Errorf("stderr = %q, want one line containing %q", got, tt.want)
			}
		})
	}
	// A group on its own still shows its help, successfully.
	out, err := runSignet(t, context.Background(), "server", "entry")
	if err != nil || !strings.Contains(out, "Available Commands") {
		t.Fatalf("signet server entry: %v\n%s", err, out)
	}
}
