package nodeattest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/sshpop"
)

// SSHPoPType is the attestation type of OpenSSH host certificates an SSH
// CA gave the host (SPIRE's sshpop).
const SSHPoPType = sshpop.Type

// maxSSHPoPPayload bounds a payload, far above real certificates (an RSA
// 8192 host key and CA make about 4 KiB): Attest needs no authentication.
const maxSSHPoPPayload = 32 << 10

var (
	// ErrSSHPoPRefused: the host certificate is not a host certificate of
	// a configured CA valid now for the canonical domain, or the signature
	// does not prove its key. The agent API answers PermissionDenied.
	ErrSSHPoPRefused = errors.New("sshpop attestation refused")
	// ErrSSHPoPMalformed: the payload cannot be read; InvalidArgument.
	ErrSSHPoPMalformed = errors.New("malformed sshpop attestation data")
)

// SSHPoPConfig is the server's `sshpop { ... }` block.
type SSHPoPConfig struct {
	// CertAuthorities are CA public keys in authorized_keys format, one per
	// string (SPIRE's cert_authorities).
	CertAuthorities []string
	// CertAuthoritiesPath is a file of CA public keys in authorized_keys
	// format (SPIRE's cert_authorities_path), read at every attestation, so
	// a CA can be added or removed without a restart. The CAs trusted are
	// those of both keys.
	CertAuthoritiesPath string
	// CanonicalDomain, when set, is the domain host certificates must name
	// their host in: a principal <hostname>.<CanonicalDomain>, whose
	// <hostname> the template sees as .Hostname.
	CanonicalDomain string
	// AgentPathTemplate renders the agent ID's path under
	// spiffe://TD/agent/ (text/template over SSHPoPTemplateData); default
	// "{{ .PluginName }}/{{ .Fingerprint }}".
	AgentPathTemplate string
}

// SSHPoPTemplateData is what AgentPathTemplate sees: the certificate's
// fields (.ValidPrincipals, .KeyId, .Serial, ...) and SPIRE's names.
type SSHPoPTemplateData struct {
	*ssh.Certificate
	PluginName  string
	Fingerprint string
	// Hostname is the principal that names the host: with a canonical
	// domain, the first principal in it, less the domain; else the first.
	Hostname    string
	TrustDomain string
}

// SSHPoP attests agents by their host's OpenSSH host certificate. The
// agent may attest again with the same certificate at any time and takes
// the same ID.
type SSHPoP struct {
	td     spiffeid.TrustDomain
	inline map[string]bool // fingerprints of cert_authorities
	caPath string
	domain string
	tmpl   *template.Template
}

// NewSSHPoP checks cfg (Check) and reads the CA file now: a typo is
// reported at start, not at the first agent's attestation.
func NewSSHPoP(td spiffeid.TrustDomain, cfg SSHPoPConfig) (*SSHPoP, error) {
	p := &SSHPoP{td: td, caPath: cfg.CertAuthoritiesPath, domain: cfg.CanonicalDomain}
	var err error
	if p.inline, p.tmpl, err = cfg.compile(); err != nil {
		return nil, err
	}
	if _, err := p.authorities(); err != nil {
		return nil, err
	}
	return p, nil
}

// Check checks what can be checked without reading the CA file: some CA
// is given, every cert_authorities entry is one CA public key, the
// canonical domain is a domain and the template parses.
func (cfg SSHPoPConfig) Check() error {
	_, _, err := cfg.compile()
	return err
}

// compile is Check's work: the fingerprints of cert_authorities and the
// parsed template.
func (cfg SSHPoPConfig) compile() (map[string]bool, *template.Template, error) {
	if len(cfg.CertAuthorities) == 0 && cfg.CertAuthoritiesPath == "" {
		return nil, nil, errors.New(`sshpop: cert_authorities or cert_authorities_path is required (your SSH CAs' public keys in authorized_keys format, e.g. cert_authorities_path = "/etc/signet/ssh-ca.pub")`)
	}
	if d := cfg.CanonicalDomain; strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || strings.ContainsAny(d, " \t,*?/") {
		return nil, nil, fmt.Errorf("sshpop: canonical_domain %q: want a domain such as example.org, without leading or trailing dots", d)
	}
	inline := map[string]bool{}
	for i, line := range cfg.CertAuthorities {
		key, err := parseCAKey([]byte(line))
		if err != nil {
			return nil, nil, fmt.Errorf("sshpop: cert_authorities[%d]: %w", i, err)
		}
		inline[ssh.FingerprintSHA256(key)] = true
	}
	tmpl, err := parseAgentPathTemplate(SSHPoPType, cfg.AgentPathTemplate)
	if err != nil {
		return nil, nil, err
	}
	return inline, tmpl, nil
}

// authorities are the fingerprints (OpenSSH's SHA256:...) of the trusted
// CA keys: cert_authorities and the file's, read now.
func (p *SSHPoP) authorities() (map[string]bool, error) {
	if p.caPath == "" {
		return p.inline, nil
	}
	data, err := os.ReadFile(p.caPath)
	if err != nil {
		return nil, fmt.Errorf("sshpop: read cert_authorities_path: %w", err)
	}
	out := map[string]bool{}
	for fp := range p.inline {
		out[fp] = true
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, err := parseCAKey([]byte(text))
		if err != nil {
			return nil, fmt.Errorf("sshpop: %s line %d: %w", p.caPath, line, err)
		}
		out[ssh.FingerprintSHA256(key)] = true
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sshpop: read %s: %w", p.caPath, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("sshpop: %s holds no CA public key (want authorized_keys lines such as \"ssh-ed25519 AAAA... ca\")", p.caPath)
	}
	return out, nil
}

// parseCAKey reads one CA: an authorized_keys line holding a plain public
// key, with comment lines around it. The only option taken is
// cert-authority: the others (principals=, from=, expiry-time=, ...)
// narrow the CA's trust in OpenSSH, and dropping them would widen it.
func parseCAKey(entry []byte) (ssh.PublicKey, error) {
	var line []byte
	for l := range bytes.Lines(entry) {
		l = bytes.TrimSpace(l)
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		if line != nil {
			return nil, errors.New("holds more than one key (give one CA per entry, one line each)")
		}
		line = l
	}
	// ParseAuthorizedKey would take a known_hosts marker for an option:
	// "@revoked KEY" would make a revoked key a CA.
	if f := bytes.Fields(line); len(f) > 0 && f[0][0] == '@' {
		return nil, fmt.Errorf("is a known_hosts %s line; give the CA key alone, in authorized_keys format (\"ssh-ed25519 AAAA... ca\"); known_hosts host patterns are not honoured here (canonical_domain restricts the hosts)", clipText(string(f[0])))
	}
	key, _, options, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return nil, fmt.Errorf("not an authorized_keys line with a public key: %w", err)
	}
	for _, o := range options {
		if !strings.EqualFold(o, "cert-authority") {
			return nil, fmt.Errorf("option %s is not supported (only cert-authority is; give the CA key without options)", clipText(o))
		}
	}
	if key.Type() == ssh.KeyAlgoDSA {
		return nil, errors.New("ssh-dss CA keys sign with SHA-1, which is not accepted (as OpenSSH no longer does): use an Ed25519, ECDSA or RSA CA")
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, errors.New("is a certificate, not a CA's public key")
	}
	return key, nil
}

// ParseSSHPoPPayload reads an agent's payload: the certificate and the
// signature. It checks the shape only.
func ParseSSHPoPPayload(payload []byte) (*ssh.Certificate, *ssh.Signature, error) {
	if len(payload) > maxSSHPoPPayload {
		return nil, nil, fmt.Errorf("%w: %d bytes; the limit is %d", ErrSSHPoPMalformed, len(payload), maxSSHPoPPayload)
	}
	var in sshpop.Payload
	if err := json.Unmarshal(payload, &in); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrSSHPoPMalformed, err)
	}
	if len(in.Certificate) == 0 {
		return nil, nil, fmt.Errorf("%w: certificate is empty", ErrSSHPoPMalformed)
	}
	if len(in.Signature) == 0 {
		return nil, nil, fmt.Errorf("%w: signature is empty", ErrSSHPoPMalformed)
	}
	key, err := ssh.ParsePublicKey(in.Certificate)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: certificate: %v", ErrSSHPoPMalformed, err)
	}
	cert, ok := key.(*ssh.Certificate)
	if !ok {
		return nil, nil, fmt.Errorf("%w: a plain %s public key, not a certificate (send the host's -cert.pub)", ErrSSHPoPMalformed, key.Type())
	}
	sig, err := sshpop.ParseSignature(in.Signature)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: signature: %v", ErrSSHPoPMalformed, err)
	}
	return cert, sig, nil
}

// Attest checks payload, presented with the agent key agentKey (the DER
// SubjectPublicKeyInfo of the CSR the server will sign), at time now, and
// names the agent.
func (p *SSHPoP) Attest(_ context.Context, payload, agentKey []byte, now time.Time) (Result, error) {
	cert, sig, err := ParseSSHPoPPayload(payload)
	if err != nil {
		return Result{}, err
	}
	cas, err := p.authorities()
	if err != nil {
		return Result{}, err
	}
	what := describeSSHCert(cert)
	refuse := func(format string, args ...any) (Result, error) {
		return Result{}, fmt.Errorf("%w: host certificate %s: %s", ErrSSHPoPRefused, what, fmt.Sprintf(format, args...))
	}
	if cert.CertType != ssh.HostCert {
		return refuse("is a user certificate, not a host certificate (sign it with ssh-keygen -h)")
	}
	checker := ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool { return cas[ssh.FingerprintSHA256(auth)] },
		Clock:           func() time.Time { return now },
	}
	caFP := ssh.FingerprintSHA256(cert.SignatureKey)
	if !checker.IsHostAuthority(cert.SignatureKey, "") {
		return refuse("signed by CA %s, which is not in cert_authorities or cert_authorities_path", caFP)
	}
	// OpenSSH (CASignatureAlgorithms) no longer accepts SHA-1 CA
	// signatures either.
	if cert.Signature != nil && cert.Signature.Format == ssh.KeyAlgoRSA {
		return refuse("its CA signed it with ssh-rsa (SHA-1); sign with rsa-sha2-256 or rsa-sha2-512")
	}
	hostname, principal, err := p.hostname(cert)
	if err != nil {
		return refuse("%v", err)
	}
	// The type and CA again, then validity, critical options (a host
	// certificate has none) and the CA's signature, as ssh does for a host.
	if err := checker.CheckHostKey(net.JoinHostPort(principal, "22"), nil, cert); err != nil {
		return refuse("%v", err)
	}
	if err := sshpop.Verify(cert.Key, sshpop.Message(p.td, agentKey), sig); err != nil {
		return refuse("%v (it must sign this agent key for trust domain %s)", err, p.td.Name())
	}
	data := SSHPoPTemplateData{
		Certificate: cert,
		PluginName:  SSHPoPType,
		Fingerprint: sshpop.Fingerprint(cert),
		Hostname:    hostname,
		TrustDomain: p.td.Name(),
	}
	id, err := renderAgentID(p.tmpl, p.td, SSHPoPType, data, ErrSSHPoPRefused, "host certificate "+what)
	if err != nil {
		return Result{}, err
	}
	return Result{AgentID: id, Type: SSHPoPType, Selectors: sshpopSelectors(cert, caFP), CanReattest: true}, nil
}

// hostname picks the principal that names the host: without a canonical
// domain the first (as SPIRE), with one the first in that domain, whose
// name less the domain is the hostname. A certificate without principals
// is valid for any host in OpenSSH, so it names none and is refused.
func (p *SSHPoP) hostname(cert *ssh.Certificate) (hostname, principal string, err error) {
	if len(cert.ValidPrincipals) == 0 {
		return "", "", errors.New("it has no principals (ssh-keygen -n host.example.org)")
	}
	if p.domain == "" {
		return cert.ValidPrincipals[0], cert.ValidPrincipals[0], nil
	}
	for _, pr := range cert.ValidPrincipals {
		if h, ok := strings.CutSuffix(pr, "."+p.domain); ok && h != "" {
			return h, pr, nil
		}
	}
	return "", "", fmt.Errorf("no principal is <hostname>.%s (canonical_domain); it names %s", p.domain, clipText(strings.Join(cert.ValidPrincipals, ",")))
}

// sshpopSelectors are Signet's node selectors for sshpop agents (SPIRE's
// sshpop has none): every principal, and the CA's fingerprint as
// `ssh-keygen -l` prints it. Values no entry could hold are left out.
func sshpopSelectors(cert *ssh.Certificate, caFP string) []selector.Selector {
	var out []selector.Selector
	add := func(v string) {
		s := selector.Selector{Type: SSHPoPType, Value: v}
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	for _, pr := range cert.ValidPrincipals {
		add("principal:" + pr)
	}
	add("ca:fingerprint:" + caFP)
	return selector.Sort(out)
}

// describeSSHCert names a certificate in messages by its key ID and serial
// (never key material).
func describeSSHCert(c *ssh.Certificate) string {
	return fmt.Sprintf("%q (serial %d)", clipText(c.KeyId), c.Serial)
}
