package main

import (
	"os"
	"path/filepath"
	"testing"
)

// --audit-log overrides the file's audit_log_enabled either way.
func TestServerRunAuditLogSetting(t *testing.T) {
	dir := t.TempDir()
	conf := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("trust_domain = \"example.org\"\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	on, off := conf("on.conf", "audit_log_enabled = true\n"), conf("off.conf", "")
	for _, tt := range []struct {
		conf string
		args []string
		want bool
	}{
		{off, nil, false},
		{on, nil, true},
		{off, []string{"--audit-log"}, true},
		{on, []string{"--audit-log=false"}, false},
	} {
		cmd := newServerRunCmd(&globals{})
		if err := cmd.ParseFlags(tt.args); err != nil {
			t.Fatal(err)
		}
		fc, err := serverFileConfig(cmd, tt.conf)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := fc.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AuditLog != tt.want {
			t.Errorf("%s %v: audit log %v, want %v", filepath.Base(tt.conf), tt.args, cfg.AuditLog, tt.want)
		}
	}
}
