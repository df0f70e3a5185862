package server

import (
	"errors"
	"fmt"
	"github.com/signetid/signet/internal/hclsafe"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/token"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
)

// Defaults of `signet server run`.
const (
	DefaultDataDir     = "/var/lib/signet/server"
	DefaultListen      = "0.0.0.0:8081"
	DefaultAdminSocket = "/run/signet/server/admin.sock"
	DefaultSVIDTTL     = time.Hour
	DefaultJWTTTL      = 5 * time.Minute
)

// Config is the validated configuration of a server.
type Config struct {
	TrustDomain  spiffeid.TrustDomain
	DataDir      string
	Listen       string
	AdminSocket  string
	Datastore    string // sqlite:///path or postgres://...; empty: <DataDir>/signet.db
	HealthListen string // empty: no health listener
	SVIDTTL      time.Duration
	JWTTTL       time.Duration
	CATTL        time.Duration // zero: derived (6 x SVIDTTL)
	AgentTTL     time.Duration // zero: SVIDTTL
}

// FileConfig is the HCL configuration file (every field optional; flags
// override it). Durations use Go syntax ("90s", "1h").
type FileConfig struct {
	TrustDomain  string `hcl:"trust_domain"`
	DataDir      string `hcl:"data_dir"`
	Listen       string `hcl:"listen"`
	AdminSocket  string `hcl:"admin_socket"`
	Datastore    string `hcl:"datastore"`
	HealthListen string `hcl:"health_listen"`
	SVIDTTL      string `hcl:"svid_ttl"`
	JWTTTL       string `hcl:"jwt_ttl"`
	CATTL        string `hcl:"ca_ttl"`
	AgentTTL     string `hcl:"agent_ttl"`
	LogLevel     string `hcl:"log_level"`
	LogFormat    string `hcl:"log_format"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// ParseConfigFile reads an HCL server configuration. Unknown keys are an
// error naming them, so a typo never silently falls back to a default.
func ParseConfigFile(data []byte) (FileConfig, error) {
	var fc FileConfig
	if err := hclsafe.Do(func() error { return hcl.Decode(&fc, string(data)) }); err != nil {
		return FileConfig{}, fmt.Errorf("parse server config: %w", err)
	}
	if len(fc.UnusedKeyPositions) > 0 {
		keys := make([]string, 0, len(fc.UnusedKeyPositions))
		for k, pos := range fc.UnusedKeyPositions {
			if len(pos) > 0 {
				k = fmt.Sprintf("%s (line %d)", k, pos[0].Line)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return FileConfig{}, fmt.Errorf("parse server config: unknown key(s): %s", strings.Join(keys, ", "))
	}
	return fc, nil
}

// LoadConfigFile reads and parses path.
func LoadConfigFile(path string) (FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return FileConfig{}, fmt.Errorf("read server config: %w", err)
	}
	fc, err := ParseConfigFile(data)
	if err != nil {
		return FileConfig{}, fmt.Errorf("%s: %w", path, err)
	}
	return fc, nil
}

// Resolve validates the file settings, applies defaults and returns a Config.
func (fc FileConfig) Resolve() (Config, error) {
	cfg := Config{
		DataDir:      or(fc.DataDir, DefaultDataDir),
		Listen:       or(fc.Listen, DefaultListen),
		AdminSocket:  or(fc.AdminSocket, DefaultAdminSocket),
		Datastore:    fc.Datastore,
		HealthListen: fc.HealthListen,
	}
	if fc.TrustDomain == "" {
		return Config{}, errors.New("trust_domain is required (e.g. --trust-domain example.org)")
	}
	td, err := ids.ParseTrustDomain(fc.TrustDomain)
	if err != nil {
		return Config{}, fmt.Errorf("trust_domain: %w", err)
	}
	cfg.TrustDomain = td
	for _, d := range []struct {
		name string
		in   string
		def  time.Duration
		out  *time.Duration
	}{
		{"svid_ttl", fc.SVIDTTL, DefaultSVIDTTL, &cfg.SVIDTTL},
		{"jwt_ttl", fc.JWTTTL, DefaultJWTTTL, &cfg.JWTTTL},
		{"ca_ttl", fc.CATTL, 0, &cfg.CATTL},
		{"agent_ttl", fc.AgentTTL, 0, &cfg.AgentTTL},
	} {
		*d.out = d.def
		if d.in == "" {
			continue
		}
		v, err := time.ParseDuration(d.in)
		if err != nil {
			return Config{}, fmt.Errorf("%s %q: want a Go duration like 90s or 1h", d.name, d.in)
		}
		if v < time.Second || v > 5*365*24*time.Hour {
			return Config{}, fmt.Errorf("%s %s is out of range [1s, 43800h]", d.name, v)
		}
		*d.out = v
	}
	if cfg.CATTL != 0 && cfg.CATTL < 6*cfg.SVIDTTL {
		return Config{}, fmt.Errorf("ca_ttl %s must be at least 6 x svid_ttl (%s)", cfg.CATTL, 6*cfg.SVIDTTL)
	}
	if cfg.AgentTTL == 0 {
		cfg.AgentTTL = cfg.SVIDTTL
	}
	if !filepath.IsAbs(cfg.DataDir) {
		abs, err := filepath.Abs(cfg.DataDir)
		if err != nil {
			return Config{}, fmt.Errorf("data_dir %q: %w", cfg.DataDir, err)
		}
		cfg.DataDir = abs
	}
	if cfg.Datastore == "" {
		cfg.Datastore = "sqlite://" + filepath.Join(cfg.DataDir, "signet.db")
	}
	return cfg, nil
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
