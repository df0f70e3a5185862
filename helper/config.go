package helper

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-shellwords"
	"github.com/signetid/signet/internal/hclsafe"
	"golang.org/x/sys/unix"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

// Defaults, matching spiffe-helper where it has one.
const (
	DefaultSVIDFileName       = "svid.pem"
	DefaultSVIDKeyFileName    = "svid_key.pem"
	DefaultSVIDBundleFileName = "bundle.pem"
	DefaultCertFileMode       = fs.FileMode(0o644)
	DefaultKeyFileMode        = fs.FileMode(0o600)
	DefaultJWTBundleFileMode  = fs.FileMode(0o600)
	DefaultJWTSVIDFileMode    = fs.FileMode(0o600)
	DefaultTimeout            = 2 * time.Minute
	DefaultDebounce           = 250 * time.Millisecond
	DefaultLiveThreshold      = time.Minute
	defaultHealthPort         = 8081
)

// Config is everything the helper does. Zero values are filled by
// [Config.Validate]; [ParseConfig] reads spiffe-helper's helper.conf into it.
type Config struct {
	// AgentAddress is the Workload API socket: "unix:///path" or a bare path.
	AgentAddress string

	// Cmd and CmdArgs are spiffe-helper's managed process: started after a
	// write when it is not running, sent RenewSignal when it is.
	Cmd     string
	CmdArgs string
	// PIDFileName names a file holding the PID to send RenewSignal to after
	// every rotation; it is read afresh each time.
	PIDFileName string
	RenewSignal string

	CertDir            string
	SVIDFileName       string
	SVIDKeyFileName    string
	SVIDBundleFileName string
	JWTSVIDs           []JWTSVIDConfig
	JWTBundleFileName  string

	// DaemonMode false is init mode: fetch once, write, exit.
	DaemonMode               bool
	AddIntermediatesToBundle bool
	IncludeFederatedDomains  bool
	OmitExpired              bool
	Hint                     string

	CertFileMode      fs.FileMode
	KeyFileMode       fs.FileMode
	JWTBundleFileMode fs.FileMode
	JWTSVIDFileMode   fs.FileMode
	// UID and GID own every written file; -1 leaves the owner unchanged.
	UID, GID int

	HealthChecks HealthConfig

	// Signet additions.

	// ReloadCommand runs after every rotation (e.g. nginx -s reload).
	ReloadCommand []string
	// Child is a supervised process (`signet helper -- cmd args`).
	Child []string
	// ReloadOnJWT also reloads after JWT-SVID renewals.
	ReloadOnJWT   bool
	Timeout       time.Duration
	Debounce      time.Duration
	LiveThreshold time.Duration
	LogLevel      string

	// fromHelperConf: a helper.conf was read, so spiffe-helper's rule for
	// the X.509 names applies (see [Config.Validate]).
	fromHelperConf bool
}

// JWTSVIDConfig is one entry of jwt_svids.
type JWTSVIDConfig struct {
	Audience       string
	ExtraAudiences []string
	FileName       string
}

// HealthConfig is spiffe-helper's health_checks block; Listen (Signet's
// --health-listen) overrides BindPort with a full address.
type HealthConfig struct {
	ListenerEnabled bool
	BindPort        int
	LivenessPath    string
	ReadinessPath   string
	Listen          string
}

// Addr is the address the health listener binds, or "" when disabled.
func (h HealthConfig) Addr() string {
	if h.Listen != "" {
		return h.Listen
	}
	if !h.ListenerEnabled {
		return ""
	}
	return fmt.Sprintf(":%d", h.BindPort)
}

// NewConfig returns a Config with the defaults of a daemon.
func NewConfig() Config {
	return Config{DaemonMode: true, UID: -1, GID: -1}
}

// hclConfig mirrors spiffe-helper's helper.conf keys, plus uid and gid.
type hclConfig struct {
	AgentAddress             string          `hcl:"agent_address"`
	Cmd                      string          `hcl:"cmd"`
	CmdArgs                  string          `hcl:"cmd_args"`
	PIDFileName              string          `hcl:"pid_file_name"`
	CertDir                  string          `hcl:"cert_dir"`
	CertFileMode             int             `hcl:"cert_file_mode"`
	KeyFileMode              int             `hcl:"key_file_mode"`
	JWTBundleFileMode        int             `hcl:"jwt_bundle_file_mode"`
	JWTSVIDFileMode          int             `hcl:"jwt_svid_file_mode"`
	IncludeFederatedDomains  bool            `hcl:"include_federated_domains"`
	OmitExpired              bool            `hcl:"omit_expired"`
	RenewSignal              string          `hcl:"renew_signal"`
	DaemonMode               *bool           `hcl:"daemon_mode"`
	AddIntermediatesToBundle bool            `hcl:"add_intermediates_to_bundle"`
	Hint                     string          `hcl:"hint"`
	LogLevel                 string          `hcl:"log_level"`
	SVIDFileName             string          `hcl:"svid_file_name"`
	SVIDKeyFileName          string          `hcl:"svid_key_file_name"`
	SVIDBundleFileName       string          `hcl:"svid_bundle_file_name"`
	JWTSVIDs                 []hclJWTSVID    `hcl:"jwt_svids"`
	JWTBundleFileName        string          `hcl:"jwt_bundle_file_name"`
	HealthChecks             *hclHealthCheck `hcl:"health_checks"`
	UID                      *int            `hcl:"uid"`
	GID                      *int            `hcl:"gid"`
}

type hclJWTSVID struct {
	Audience       string   `hcl:"jwt_audience"`
	ExtraAudiences []string `hcl:"jwt_extra_audiences"`
	FileName       string   `hcl:"jwt_svid_file_name"`
}

type hclHealthCheck struct {
	ListenerEnabled bool   `hcl:"listener_enabled"`
	BindPort        int    `hcl:"bind_port"`
	LivenessPath    string `hcl:"liveness_path"`
	ReadinessPath   string `hcl:"readiness_path"`
}

// LoadConfigFile reads a helper.conf file into cfg (see [ParseConfig]).
func LoadConfigFile(path string, cfg *Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read helper config: %w", err)
	}
	if err := ParseConfig(b, cfg); err != nil {
		return fmt.Errorf("helper config %s: %w", path, err)
	}
	return nil
}

// ParseConfig decodes spiffe-helper's HCL helper.conf into cfg, overwriting
// the fields the file sets. Unknown keys are an error naming the key.
func ParseConfig(data []byte, cfg *Config) error {
	return hclsafe.Explain(data, hclsafe.Do(func() error { return parseConfig(data, cfg) }))
}

func parseConfig(data []byte, cfg *Config) error {
	// hcl v1 ignores unknown keys (its ",unusedKeys" tag is never
	// filled), so walk the AST against the struct tags first.
	file, err := hcl.ParseBytes(data)
	if err != nil {
		return fmt.Errorf("parse HCL: %w", err)
	}
	if err := checkKeys(file.Node); err != nil {
		return err
	}
	var h hclConfig
	if err := hcl.DecodeObject(&h, file); err != nil {
		return fmt.Errorf("decode HCL: %w", err)
	}
	setStr := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	cfg.fromHelperConf = true
	setStr(&cfg.AgentAddress, h.AgentAddress)
	setStr(&cfg.Cmd, h.Cmd)
	setStr(&cfg.CmdArgs, h.CmdArgs)
	setStr(&cfg.PIDFileName, h.PIDFileName)
	setStr(&cfg.RenewSignal, h.RenewSignal)
	setStr(&cfg.CertDir, h.CertDir)
	setStr(&cfg.SVIDFileName, h.SVIDFileName)
	setStr(&cfg.SVIDKeyFileName, h.SVIDKeyFileName)
	setStr(&cfg.SVIDBundleFileName, h.SVIDBundleFileName)
	setStr(&cfg.JWTBundleFileName, h.JWTBundleFileName)
	setStr(&cfg.Hint, h.Hint)
	setStr(&cfg.LogLevel, h.LogLevel)
	cfg.IncludeFederatedDomains = cfg.IncludeFederatedDomains || h.IncludeFederatedDomains
	cfg.OmitExpired = cfg.OmitExpired || h.OmitExpired
	cfg.AddIntermediatesToBundle = cfg.AddIntermediatesToBundle || h.AddIntermediatesToBundle
	if h.DaemonMode != nil {
		cfg.DaemonMode = *h.DaemonMode
	}
	modes := []struct {
		key string
		v   int
		dst *fs.FileMode
	}{
		{"cert_file_mode", h.CertFileMode, &cfg.CertFileMode},
		{"key_file_mode", h.KeyFileMode, &cfg.KeyFileMode},
		{"jwt_bundle_file_mode", h.JWTBundleFileMode, &cfg.JWTBundleFileMode},
		{"jwt_svid_file_mode", h.JWTSVIDFileMode, &cfg.JWTSVIDFileMode},
	}
	for _, m := range modes {
		if m.v < 0 || m.v > 0o777 {
			return fmt.Errorf("%s: %#o is not a file mode (0 to 0777)", m.key, m.v)
		}
		if m.v != 0 {
			*m.dst = fs.FileMode(m.v)
		}
	}
	for _, j := range h.JWTSVIDs {
		cfg.JWTSVIDs = append(cfg.JWTSVIDs, JWTSVIDConfig{Audience: j.Audience, ExtraAudiences: j.ExtraAudiences, FileName: j.FileName})
	}
	if hc := h.HealthChecks; hc != nil {
		cfg.HealthChecks.ListenerEnabled = hc.ListenerEnabled
		if hc.BindPort != 0 {
			cfg.HealthChecks.BindPort = hc.BindPort
		}
		setStr(&cfg.HealthChecks.LivenessPath, hc.LivenessPath)
		setStr(&cfg.HealthChecks.ReadinessPath, hc.ReadinessPath)
	}
	if h.UID != nil {
		cfg.UID = *h.UID
	}
	if h.GID != nil {
		cfg.GID = *h.GID
	}
	return nil
}

// hclKeys lists the keys a struct's hcl tags accept.
func hclKeys(v any) map[string]bool {
	keys := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("hcl"), ","); name != "" {
			keys[name] = true
		}
	}
	return keys
}

// checkKeys reports the first key, in file order, that spiffe-helper's
// helper.conf (plus uid/gid) does not have, with its path and line.
func checkKeys(node ast.Node) error {
	top, ok := node.(*ast.ObjectList)
	if !ok {
		return errors.New("HCL root is not an object")
	}
	nested := map[string]map[string]bool{
		"jwt_svids":     hclKeys(hclJWTSVID{}),
		"health_checks": hclKeys(hclHealthCheck{}),
	}
	return checkList(top, hclKeys(hclConfig{}), nested, "")
}

func checkList(list *ast.ObjectList, known map[string]bool, nested map[string]map[string]bool, prefix string) error {
	for _, item := range list.Items {
		if len(item.Keys) == 0 {
			continue
		}
		key := item.Keys[0].Token.Value()
		name, _ := key.(string)
		if !known[name] {
			return fmt.Errorf("unknown key %q (line %d)", prefix+name, item.Keys[0].Pos().Line)
		}
		sub, ok := nested[name]
		if !ok {
			continue
		}
		var objs []*ast.ObjectList
		switch v := item.Val.(type) {
		case *ast.ObjectType:
			objs = append(objs, v.List)
		case *ast.ListType:
			for _, e := range v.List {
				if o, ok := e.(*ast.ObjectType); ok {
					objs = append(objs, o.List)
				}
			}
		}
		for i, o := range objs {
			p := prefix + name + "."
			if _, isList := item.Val.(*ast.ListType); isList {
				p = fmt.Sprintf("%s%s[%d].", prefix, name, i)
			}
			if err := checkList(o, sub, nil, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate fills defaults and checks the configuration as a whole. env looks
// up environment variables (os.Getenv in production).
func (c *Config) Validate(env func(string) string) error {
	if c.AgentAddress == "" {
		c.AgentAddress = env("SPIFFE_ENDPOINT_SOCKET")
	}
	if c.AgentAddress == "" {
		return errors.New("no Workload API socket: set --socket, agent_address or SPIFFE_ENDPOINT_SOCKET")
	}
	if _, err := SocketPath(c.AgentAddress); err != nil {
		return err
	}
	if c.CertDir == "" {
		return errors.New("no cert dir: set --cert-dir or cert_dir")
	}
	// spiffe-helper: all or none of the three X.509 names. None means our
	// default names, except in a helper.conf that asks for JWT material:
	// spiffe-helper then writes no X.509 files (and no private key), and
	// so do we. (spiffe-helper refuses a file that asks for nothing; we
	// write the defaults.)
	names := []*string{&c.SVIDFileName, &c.SVIDKeyFileName, &c.SVIDBundleFileName}
	set := 0
	for _, n := range names {
		if *n != "" {
			set++
		}
	}
	switch set {
	case 0:
		if !c.fromHelperConf || (len(c.JWTSVIDs) == 0 && c.JWTBundleFileName == "") {
			c.SVIDFileName, c.SVIDKeyFileName, c.SVIDBundleFileName = DefaultSVIDFileName, DefaultSVIDKeyFileName, DefaultSVIDBundleFileName
		}
	case 3:
	default:
		return errors.New("all or none of svid_file_name, svid_key_file_name, svid_bundle_file_name (--svid-file, --key-file, --bundle-file) must be set in a helper.conf")
	}
	seen := map[string]string{}
	check := func(key, name string) error {
		if name == "" {
			return fmt.Errorf("%s is empty", key)
		}
		if name != filepath.Base(name) || name == "." || name == ".." || strings.HasPrefix(name, "..") {
			return fmt.Errorf("%s %q must be a plain file name inside cert_dir", key, name)
		}
		if other, dup := seen[name]; dup {
			return fmt.Errorf("%s and %s both name %q", other, key, name)
		}
		seen[name] = key
		return nil
	}
	if c.writesX509() {
		for _, kv := range [][2]string{{"svid_file_name", c.SVIDFileName}, {"svid_key_file_name", c.SVIDKeyFileName}, {"svid_bundle_file_name", c.SVIDBundleFileName}} {
			if err := check(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	if c.JWTBundleFileName != "" {
		if err := check("jwt_bundle_file_name", c.JWTBundleFileName); err != nil {
			return err
		}
	}
	for i, j := range c.JWTSVIDs {
		if j.Audience == "" {
			return fmt.Errorf("jwt_svids[%d]: jwt_audience is required", i)
		}
		if err := check(fmt.Sprintf("jwt_svids[%d].jwt_svid_file_name", i), j.FileName); err != nil {
			return err
		}
	}
	if c.PIDFileName != "" && c.RenewSignal == "" {
		return errors.New("pid_file_name needs renew_signal")
	}
	if c.RenewSignal != "" {
		if _, err := ParseSignal(c.RenewSignal); err != nil {
			return err
		}
	}
	if len(c.Child) > 0 && c.Cmd != "" {
		return errors.New("a supervised child (-- cmd) and cmd cannot both be set")
	}
	if c.CmdArgs != "" && c.Cmd == "" {
		return errors.New("cmd_args needs cmd")
	}
	if _, err := SplitArgs(c.CmdArgs); err != nil {
		return fmt.Errorf("cmd_args: %w", err)
	}
	def := func(m *fs.FileMode, d fs.FileMode) {
		if *m == 0 {
			*m = d
		}
	}
	def(&c.CertFileMode, DefaultCertFileMode)
	def(&c.KeyFileMode, DefaultKeyFileMode)
	def(&c.JWTBundleFileMode, DefaultJWTBundleFileMode)
	def(&c.JWTSVIDFileMode, DefaultJWTSVIDFileMode)
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Debounce < 0 {
		return errors.New("debounce must not be negative")
	}
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.LiveThreshold <= 0 {
		c.LiveThreshold = DefaultLiveThreshold
	}
	if c.HealthChecks.BindPort == 0 {
		c.HealthChecks.BindPort = defaultHealthPort
	}
	if c.HealthChecks.LivenessPath == "" {
		c.HealthChecks.LivenessPath = "/live"
	}
	if c.HealthChecks.ReadinessPath == "" {
		c.HealthChecks.ReadinessPath = "/ready"
	}
	return nil
}

// writesX509 reports whether the set holds the SVID, key and bundle files
// (after [Config.Validate]; see there).
func (c *Config) writesX509() bool { return c.SVIDFileName != "" }

// SocketPath turns "unix:///path" or a bare path into a filesystem path.
func SocketPath(addr string) (string, error) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("socket address %q: want unix:///absolute/path", addr)
		}
		return p, nil
	}
	if strings.Contains(addr, "://") || strings.HasPrefix(addr, "unix:") {
		return "", fmt.Errorf("socket address %q: want unix:///path or a path", addr)
	}
	if addr == "" {
		return "", errors.New("empty socket address")
	}
	return addr, nil
}

// addrURL is the socket in the form go-spiffe's client dials.
func addrURL(addr string) (string, error) {
	p, err := SocketPath(addr)
	if err != nil {
		return "", err
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("socket path: %w", err)
	}
	return "unix://" + abs, nil
}

// ParseSignal accepts "SIGHUP", "HUP" or "hup": any signal of the system.
func ParseSignal(name string) (syscall.Signal, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if sig := unix.SignalNum(n); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", name)
}

// SplitArgs splits a command line the way a POSIX shell splits words, with
// single quotes, double quotes and backslashes, but no expansion of
// variables or commands. spiffe-helper's cmd_args (double quotes only) split
// the same; a backslash meant literally must be doubled here.
func SplitArgs(s string) ([]string, error) {
	p := shellwords.NewParser() // expands nothing unless told to
	args, err := p.Parse(s)
	if err != nil {
		return nil, err
	}
	if p.Position >= 0 {
		// The parser stops at a shell operator (; | & < >) and would
		// drop the rest.
		return nil, fmt.Errorf("%q at byte %d: quote it to pass it on", s[p.Position:p.Position+1], p.Position)
	}
	return args, nil
}
