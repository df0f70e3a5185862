package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/signetid/signet/server/ca"
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

// --jwt-key-type overrides the file's jwt_key_type; unset, the file's or
// the default holds.
func TestServerRunJWTKeyType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.conf")
	if err := os.WriteFile(path, []byte("trust_domain = \"example.org\"\njwt_key_type = \"ec-p384\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		conf string
		args []string
		want ca.JWTKeyType
	}{
		{"", []string{"--trust-domain", "example.org"}, ca.JWTKeyECP256},
		{path, nil, ca.JWTKeyECP384},
		{path, []string{"--jwt-key-type", "rsa-2048"}, ca.JWTKeyRSA2048},
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
		if cfg.JWTKeyType != tt.want {
			t.Errorf("config %q, args %v: jwt_key_type %q, want %q", tt.conf, tt.args, cfg.JWTKeyType, tt.want)
		}
	}
}
