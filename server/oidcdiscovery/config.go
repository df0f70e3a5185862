package oidcdiscovery

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/hcl/token"

	"github.com/signetid/signet/internal/hclsafe"
	"github.com/signetid/signet/server/federation"
)

// Config is the validated configuration of the provider.
type Config struct {
	// Listen is host:port.
	Listen string
	// Issuer is the issuer URL (CheckIssuer holds): the documents are served
	// under its path, and jwks_uri is Issuer + "/keys".
	Issuer string
	// SetKeyUse sets "use": "sig" on every key, as SPIRE's set_key_use
	// does, for relying parties that want it.
	SetKeyUse bool
	// CertFile and KeyFile are the PEM certificate chain and key to serve
	// HTTPS with, read again whenever either file changes; both empty
	// serves plain HTTP (behind a TLS-terminating proxy).
	CertFile, KeyFile string
}

// FileConfig is the `oidc_discovery { ... }` block of the server's HCL
// configuration, with the names of SPIRE's oidc-discovery-provider where it
// has them (jwt_issuer, set_key_use, serving_cert_file):
//
//	oidc_discovery {
//	  listen      = "0.0.0.0:8443"
//	  # jwt_issuer = "https://oidc.example.org"   # default: the server's jwt_issuer
//	  set_key_use = false
//	  serving_cert_file {                          # leave out for plain HTTP
//	    cert_file_path = "/etc/signet/oidc/tls.crt"
//	    key_file_path  = "/etc/signet/oidc/tls.key"
//	  }
//	}
type FileConfig struct {
	Listen string `hcl:"listen"`
	// JWTIssuer, if set, must equal the server's jwt_issuer: SPIRE's
	// provider takes it separately, Signet's tokens and documents come from
	// one process.
	JWTIssuer       string                      `hcl:"jwt_issuer"`
	SetKeyUse       bool                        `hcl:"set_key_use"`
	ServingCertFile *federation.ServingCertFile `hcl:"serving_cert_file"`

	UnusedKeyPositions map[string][]token.Pos `hcl:",unusedKeyPositions"`
}

// Resolve validates the block against the server's jwt_issuer (the iss of
// its JWT-SVIDs; empty if unset). A nil FileConfig (no block) resolves to
// nil: no provider.
func (fc *FileConfig) Resolve(jwtIssuer string) (*Config, error) {
	if fc == nil {
		return nil, nil
	}
	if err := unknownKeys("oidc_discovery", fc.UnusedKeyPositions); err != nil {
		return nil, err
	}
	cfg := &Config{Listen: fc.Listen, Issuer: jwtIssuer, SetKeyUse: fc.SetKeyUse}
	if _, _, err := net.SplitHostPort(fc.Listen); err != nil {
		return nil, fmt.Errorf(`oidc_discovery: listen %q: want host:port, e.g. listen = "0.0.0.0:8443"`, fc.Listen)
	}
	switch {
	case fc.JWTIssuer == "" && jwtIssuer == "":
		return nil, errors.New(`oidc_discovery needs jwt_issuer: set jwt_issuer = "https://oidc.example.org" at the top level, the URL relying parties know this issuer by (JWT-SVIDs carry it as iss)`)
	case fc.JWTIssuer == "":
	case jwtIssuer == "":
		return nil, fmt.Errorf("oidc_discovery.jwt_issuer %q is set but the server's jwt_issuer is not: JWT-SVIDs would carry no iss and relying parties would refuse them all; move it to the top level", fc.JWTIssuer)
	case fc.JWTIssuer != jwtIssuer:
		return nil, fmt.Errorf("oidc_discovery.jwt_issuer %q differs from jwt_issuer %q, the iss of every JWT-SVID: relying parties would refuse them all; drop oidc_discovery.jwt_issuer", fc.JWTIssuer, jwtIssuer)
	}
	if err := CheckIssuer(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("jwt_issuer %q: %w", cfg.Issuer, err)
	}
	sc := fc.ServingCertFile
	if sc == nil {
		return cfg, nil
	}
	if err := unknownKeys("oidc_discovery.serving_cert_file", sc.UnusedKeyPositions); err != nil {
		return nil, err
	}
	if sc.CertFilePath == "" || sc.KeyFilePath == "" {
		return nil, errors.New(`oidc_discovery.serving_cert_file: cert_file_path and key_file_path are both required (leave the block out to serve plain HTTP behind a TLS-terminating proxy)`)
	}
	// SPIRE's polling period: accepted so its configuration works, but the
	// files are checked at every handshake instead.
	if sc.FileSyncInterval != "" {
		if d, err := time.ParseDuration(sc.FileSyncInterval); err != nil || d <= 0 {
			return nil, fmt.Errorf("oidc_discovery.serving_cert_file.file_sync_interval %q: want a positive duration such as \"1m\"", sc.FileSyncInterval)
		}
	}
	var err error
	if cfg.CertFile, err = filepath.Abs(sc.CertFilePath); err != nil {
		return nil, fmt.Errorf("oidc_discovery.serving_cert_file.cert_file_path: %w", err)
	}
	if cfg.KeyFile, err = filepath.Abs(sc.KeyFilePath); err != nil {
		return nil, fmt.Errorf("oidc_discovery.serving_cert_file.key_file_path: %w", err)
	}
	return cfg, nil
}

// CheckIssuer reports whether s can be an OIDC issuer (OpenID Connect Core
// 1.0, section 2): an absolute https URL with a host and no query, fragment
// or user info. http is allowed for loopback hosts only, for tests. A
// trailing "/" is refused: relying parties compare iss byte for byte, and
// one written with and one without would never match. For the same reason
// only one spelling of a URL is accepted: lower-case scheme and host, ASCII
// (punycode) host, no default or empty port, a clean, escaped path.
func CheckIssuer(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %w", err)
	case u.Scheme != "https" && u.Scheme != "http":
		return errors.New(`want an https URL such as "https://oidc.example.org"`)
	case u.Host == "" || u.Hostname() == "":
		return errors.New(`want a host, as in "https://oidc.example.org"`)
	case u.Scheme == "http" && !isLoopback(u.Hostname()):
		return errors.New("want https: relying parties fetch the keys from the issuer URL, and http is allowed only for loopback hosts (tests)")
	case u.User != nil:
		return errors.New("user info in an issuer URL is not allowed")
	case strings.ContainsAny(s, "?#"):
		return errors.New("an issuer URL has no query or fragment")
	case strings.HasSuffix(u.Path, "/"):
		return fmt.Errorf("drop the trailing /: relying parties compare the issuer byte for byte (%q)", strings.TrimRight(s, "/"))
	}
	// One spelling only: a relying party compares iss with the URL it was
	// configured with byte for byte, and fetches keys from what the
	// discovery document says.
	host := u.Hostname()
	switch {
	case strings.ContainsRune(host, '*'):
		return errors.New("a wildcard host cannot be an issuer")
	case !isASCII(host):
		return errors.New("write the host in its ASCII (punycode, xn--...) form: relying parties compare the issuer byte for byte")
	case host != strings.ToLower(host):
		return fmt.Errorf("write the host in lower case (%q): relying parties compare the issuer byte for byte", strings.Replace(s, host, strings.ToLower(host), 1))
	case strings.HasSuffix(u.Host, ":"):
		return errors.New("an empty port: drop the \":\"")
	case (u.Scheme == "https" && u.Port() == "443") || (u.Scheme == "http" && u.Port() == "80"):
		return fmt.Errorf("drop the default port (%q): relying parties compare the issuer byte for byte", strings.Replace(s, ":"+u.Port(), "", 1))
	case u.Path != "" && path.Clean(u.Path) != u.Path:
		return fmt.Errorf("the path %q has empty, . or .. segments; write it as %q", u.Path, path.Clean(u.Path))
	case u.String() != s:
		return fmt.Errorf("write it as %q (scheme in lower case, path escaped): relying parties compare the issuer byte for byte", u.String())
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// unknownKeys names the keys of a block that no field took, or returns nil.
func unknownKeys(where string, unused map[string][]token.Pos) error {
	named := make(map[string][]token.Pos, len(unused))
	for k, pos := range unused {
		named[where+"."+k] = pos
	}
	return hclsafe.UnknownKeys(named)
}
