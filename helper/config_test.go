package helper

import (
	"io/fs"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// readmeExample is the "Configuration example" from spiffe-helper's README,
// verbatim.
const readmeExample = `agent_address = "/tmp/spire-agent/public/api.sock"
cmd = "ghostunnel"
cmd_args = "server --listen localhost:8002 --target localhost:8001 --keystore certs/svid_key.pem --cacert certs/svid_bundle.pem --allow-uri-san spiffe://example.org/Database"
cert_dir = "certs"
renew_signal = "SIGUSR1"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
jwt_svids = [{jwt_audience="your-audience",jwt_extra_audiences=["your-extra-audience-1", "your-extra-audience-2"], jwt_svid_file_name="jwt_svid.token"}]
jwt_bundle_file_name = "bundle.json"
cert_file_mode = 0444
key_file_mode = 0444
jwt_bundle_file_mode = 0444
jwt_svid_file_mode = 0444
`

func TestParseConfigSpiffeHelperREADME(t *testing.T) {
	cfg := NewConfig()
	if err := ParseConfig([]byte(readmeExample), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if cfg.AgentAddress != "/tmp/spire-agent/public/api.sock" || cfg.Cmd != "ghostunnel" || cfg.CertDir != "certs" || cfg.RenewSignal != "SIGUSR1" {
		t.Errorf("scalars: %+v", cfg)
	}
	if cfg.SVIDFileName != "svid.pem" || cfg.SVIDKeyFileName != "svid_key.pem" || cfg.SVIDBundleFileName != "svid_bundle.pem" || cfg.JWTBundleFileName != "bundle.json" {
		t.Errorf("file names: %+v", cfg)
	}
	want := JWTSVIDConfig{Audience: "your-audience", ExtraAudiences: []string{"your-extra-audience-1", "your-extra-audience-2"}, FileName: "jwt_svid.token"}
	if len(cfg.JWTSVIDs) != 1 || cfg.JWTSVIDs[0].Audience != want.Audience || !slices.Equal(cfg.JWTSVIDs[0].ExtraAudiences, want.ExtraAudiences) || cfg.JWTSVIDs[0].FileName != want.FileName {
		t.Errorf("jwt_svids = %+v", cfg.JWTSVIDs)
	}
	// HCL reads 0444 as octal, like spiffe-helper.
	for _, m := range []fs.FileMode{cfg.CertFileMode, cfg.KeyFileMode, cfg.JWTBundleFileMode, cfg.JWTSVIDFileMode} {
		if m != 0o444 {
			t.Errorf("mode = %#o, want 0444", m)
		}
	}
	args, err := SplitArgs(cfg.CmdArgs)
	if err != nil || len(args) != 11 || args[0] != "server" || args[10] != "spiffe://example.org/Database" {
		t.Errorf("cmd_args split = %q, %v", args, err)
	}
	if !cfg.DaemonMode {
		t.Error("daemon_mode defaults to true")
	}
}

func TestParseConfigAllKeys(t *testing.T) {
	src := `
agent_address = "unix:///run/signet/sockets/agent.sock"
pid_file_name = "/run/nginx.pid"
renew_signal = "SIGHUP"
cert_dir = "/certs"
daemon_mode = false
add_intermediates_to_bundle = true
include_federated_domains = true
omit_expired = true
hint = "internal"
uid = 101
gid = 104
health_checks {
  listener_enabled = true
  bind_port = 9090
  liveness_path = "/l"
  readiness_path = "/r"
}
`
	cfg := NewConfig()
	if err := ParseConfig([]byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if cfg.DaemonMode || !cfg.AddIntermediatesToBundle || !cfg.IncludeFederatedDomains || !cfg.OmitExpired || cfg.Hint != "internal" || cfg.UID != 101 || cfg.GID != 104 {
		t.Errorf("cfg = %+v", cfg)
	}
	if cfg.PIDFileName != "/run/nginx.pid" || cfg.RenewSignal != "SIGHUP" {
		t.Errorf("pid/signal: %+v", cfg)
	}
	if h := cfg.HealthChecks; h.Addr() != ":9090" || h.LivenessPath != "/l" || h.ReadinessPath != "/r" {
		t.Errorf("health = %+v", h)
	}
	// Defaults when none of the X.509 names are given.
	if cfg.SVIDFileName != "svid.pem" || cfg.SVIDKeyFileName != "svid_key.pem" || cfg.SVIDBundleFileName != "bundle.pem" {
		t.Errorf("default names: %+v", cfg)
	}
	if cfg.KeyFileMode != 0o600 || cfg.CertFileMode != 0o644 {
		t.Errorf("default modes: %#o %#o", cfg.KeyFileMode, cfg.CertFileMode)
	}
}

func TestParseConfigUnknownKeys(t *testing.T) {
	for _, tc := range []struct{ src, key string }{
		{`agent_adress = "/x"`, "agent_adress"},
		{`jwt_svids = [{jwt_audience="a", jwt_svid_file_name="f", jwt_file="g"}]`, "jwt_svids[0].jwt_file"},
		{`health_checks { listener_enabled = true
 port = 1 }`, "health_checks.port"},
	} {
		cfg := NewConfig()
		err := ParseConfig([]byte(tc.src), &cfg)
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: err = %v, want it to name %q", tc.src, err, tc.key)
		}
	}
}

func TestValidate(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "SPIFFE_ENDPOINT_SOCKET" {
				return v
			}
			return ""
		}
	}
	cfg := NewConfig()
	cfg.CertDir = "/c"
	if err := cfg.Validate(env("unix:///run/a.sock")); err != nil || cfg.AgentAddress != "unix:///run/a.sock" {
		t.Errorf("env socket: %v %q", err, cfg.AgentAddress)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		sock string
	}{
		{"no socket", func(*Config) {}, ""},
		{"relative unix URL", func(*Config) {}, "unix://rel/a.sock"},
		{"tcp", func(*Config) {}, "tcp://127.0.0.1:1"},
		{"partial x509 names", func(c *Config) { c.SVIDFileName = "a.pem" }, "/s"},
		{"path in name", func(c *Config) { c.SVIDFileName, c.SVIDKeyFileName, c.SVIDBundleFileName = "../a", "b", "c" }, "/s"},
		{"duplicate names", func(c *Config) { c.SVIDFileName, c.SVIDKeyFileName, c.SVIDBundleFileName = "a", "a", "c" }, "/s"},
		{"pid file without signal", func(c *Config) { c.PIDFileName = "/p" }, "/s"},
		{"bad signal", func(c *Config) { c.RenewSignal = "SIGNOPE" }, "/s"},
		{"jwt without audience", func(c *Config) { c.JWTSVIDs = []JWTSVIDConfig{{FileName: "t"}} }, "/s"},
		{"no cert dir", func(c *Config) { c.CertDir = "" }, "/s"},
	} {
		c := NewConfig()
		c.CertDir = "/c"
		tc.mod(&c)
		if err := c.Validate(env(tc.sock)); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestSocketPath(t *testing.T) {
	for in, want := range map[string]string{"unix:///a/b.sock": "/a/b.sock", "/a/b.sock": "/a/b.sock", "rel.sock": "rel.sock"} {
		if got, err := SocketPath(in); err != nil || got != want {
			t.Errorf("SocketPath(%q) = %q, %v", in, got, err)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: `-g 'daemon off;' "a b" c\ d`, want: []string{"-g", "daemon off;", "a b", "c d"}},
		// spiffe-helper's form: double quotes.
		{in: `-c "listen_addresses='127.0.0.1'"  -k  /run`, want: []string{"-c", "listen_addresses='127.0.0.1'", "-k", "/run"}},
		{in: `"a\"b" 'c\d'`, want: []string{`a"b`, `c\d`}},
		{in: `$HOME $(id) x=1`, want: []string{"$HOME", "$(id)", "x=1"}}, // nothing is expanded
		{in: ``, want: nil},
		{in: `'open`, wantErr: "invalid"},
		{in: `trailing\`, wantErr: "invalid"},
		{in: `-g daemon off; x`, wantErr: `";" at byte 13`},
		{in: `a | b`, wantErr: `"|"`},
		{in: `a > /tmp/f`, wantErr: `">"`},
	}
	for _, tt := range tests {
		got, err := SplitArgs(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SplitArgs(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("SplitArgs(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGHUP": syscall.SIGHUP, "hup": syscall.SIGHUP, " usr1 ": syscall.SIGUSR1,
		"SIGWINCH": syscall.SIGWINCH, "pwr": syscall.SIGPWR, "SIGQUIT": syscall.SIGQUIT} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "SIG", "SIGNOPE", "1", "HUP2"} {
		if got, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(readmeExample))
	f.Add([]byte(`health_checks { listener_enabled = true }`))
	f.Add([]byte(`jwt_svids = [{jwt_audience="a"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := NewConfig()
		if err := ParseConfig(data, &cfg); err != nil {
			return
		}
		_ = cfg.Validate(func(string) string { return "unix:///s" })
		for _, m := range []fs.FileMode{cfg.CertFileMode, cfg.KeyFileMode, cfg.JWTBundleFileMode, cfg.JWTSVIDFileMode} {
			if m > 0o777 {
				t.Fatalf("mode %#o accepted", m)
			}
		}
	})
}

func TestExamplePostgresHelperConf(t *testing.T) {
	cfg := NewConfig()
	if err := LoadConfigFile("../examples/postgres/helper.conf", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if cfg.UID != 101 || cfg.KeyFileMode != 0o600 || cfg.RenewSignal != "SIGHUP" {
		t.Errorf("cfg = %+v", cfg)
	}
}

// spiffe-helper writes X.509 files only when all three names are set; a
// helper.conf asking only for JWT material gets none (no private key on
// disk). Flags and a helper.conf asking for nothing else keep the defaults.
func TestValidateX509NamesRule(t *testing.T) {
	for _, tc := range []struct {
		name     string
		conf     string // "" : no helper.conf
		jwt      bool   // a JWT-SVID set as a flag would
		wantX509 bool
	}{
		{"helper.conf with jwt_svids only", `jwt_svids = [{ jwt_audience = "db", jwt_svid_file_name = "db.jwt" }]`, false, false},
		{"helper.conf with jwt_bundle_file_name only", `jwt_bundle_file_name = "jwt.json"`, false, false},
		{"helper.conf without names, JWT by flag", `cert_dir = "/c"`, true, false},
		{"helper.conf with the three names and JWT", `svid_file_name = "a.pem"
svid_key_file_name = "k.pem"
svid_bundle_file_name = "b.pem"
jwt_svids = [{ jwt_audience = "db", jwt_svid_file_name = "db.jwt" }]`, false, true},
		{"helper.conf asking for nothing", `cert_dir = "/c"`, false, true},
		{"flags with a JWT-SVID", "", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := NewConfig()
			if tc.conf != "" {
				if err := ParseConfig([]byte(tc.conf), &cfg); err != nil {
					t.Fatal(err)
				}
			}
			cfg.AgentAddress, cfg.CertDir = "/s", "/c"
			if tc.jwt {
				cfg.JWTSVIDs = append(cfg.JWTSVIDs, JWTSVIDConfig{Audience: "api", FileName: "api.jwt"})
			}
			if err := cfg.Validate(func(string) string { return "" }); err != nil {
				t.Fatal(err)
			}
			if got := cfg.SVIDKeyFileName != ""; got != tc.wantX509 || (cfg.SVIDFileName != "") != got || (cfg.SVIDBundleFileName != "") != got {
				t.Errorf("X.509 names %q %q %q, want X.509 files: %v", cfg.SVIDFileName, cfg.SVIDKeyFileName, cfg.SVIDBundleFileName, tc.wantX509)
			}
		})
	}
}
