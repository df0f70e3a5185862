package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/logging"
	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/servertest"
)

// TestServerLogger runs `signet server logger get|set|reset` (SPIRE's)
// against a running server: the level changes what the server logs at
// once, reset returns to the launch level, and with the audit log on the
// level cannot rise above info (the audit records would be dropped).
func TestServerLogger(t *testing.T) {
	for _, auditOn := range []bool{false, true} {
		var buf logtest.Buffer
		logger, level, err := logging.New(&buf, "text", "info")
		if err != nil {
			t.Fatal(err)
		}
		cfg := servertest.Config(t, spiffeid.RequireTrustDomainFromString("example.org"), func(c *server.Config) {
			c.LogLevel, c.AuditLog = level, auditOn
		})
		ctx, cancel := context.WithCancel(context.Background())
		s, err := server.New(ctx, cfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		run := func(args ...string) (string, error) {
			return signet(t, append(append([]string{"server"}, args...), "--admin-socket", cfg.AdminSocket)...)
		}
		entry := func(path string) {
			t.Helper()
			if out, err := run("entry", "create", "--spiffe-id", "spiffe://example.org/"+path, "--parent-id", "spiffe://example.org/agent/a", "--selector", "unix:uid:1"); err != nil {
				t.Fatalf("entry create: %v\n%s", err, out)
			}
		}
		if out, err := run("logger", "get"); err != nil || out != "Log level: info\nLaunch log level: info\n" {
			t.Fatalf("logger get: %v\n%s", err, out)
		}
		if auditOn {
			if out, err := run("logger", "set", "--level", "warn"); err == nil || !strings.Contains(err.Error(), "audit records") {
				t.Fatalf("logger set --level warn with the audit log on: %v\n%s", err, out)
			}
			if out, err := run("logger", "set", "--level", "debug", "--output", "json"); err != nil || !strings.Contains(out, `"current_level": "debug"`) {
				t.Fatalf("logger set --level debug: %v\n%s", err, out)
			}
		} else {
			if out, err := run("logger", "set", "--level", "error"); err != nil || out != "Log level: error\nLaunch log level: info\n" {
				t.Fatalf("logger set --level error: %v\n%s", err, out)
			}
			entry("quiet")
			if strings.Contains(buf.String(), "spiffe://example.org/quiet") {
				t.Fatalf("an info line was logged at level error:\n%s", buf.String())
			}
			if out, err := run("logger", "reset"); err != nil || out != "Log level: info\nLaunch log level: info\n" {
				t.Fatalf("logger reset: %v\n%s", err, out)
			}
			entry("loud")
			if !strings.Contains(buf.String(), "spiffe://example.org/loud") || !strings.Contains(buf.String(), "log level changed") {
				t.Fatalf("after reset, the log lacks the entry or the change:\n%s", buf.String())
			}
		}
		if out, err := run("logger", "set", "--level", "verbose"); err == nil || !strings.Contains(err.Error(), `log level "verbose"`) {
			t.Fatalf("logger set --level verbose: %v\n%s", err, out)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("server did not stop")
		}
	}
}
