package nodeattest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/x509pop"
)

// X509PoPType is the attestation type of machine certificates an existing
// PKI gave the host (SPIRE's x509pop).
const X509PoPType = x509pop.Type

// DefaultX509PoPPathTemplate renders the agent ID's path under
// spiffe://TD/agent/, as SPIRE's default does under /spire/agent/.
const DefaultX509PoPPathTemplate = "{{ .PluginName }}/{{ .Fingerprint }}"

// Limits on a payload, far above real chains: Attest needs no
// authentication, so a caller must not make the server parse megabytes.
const (
	maxX509PoPPayload = 64 << 10
	maxX509PoPChain   = 8
)

var (
	// ErrX509PoPRefused: the certificate does not chain to the node CA
	// bundle (or has expired, or is not for client authentication), or the
	// signature does not prove its key. The agent API answers
	// PermissionDenied.
	ErrX509PoPRefused = errors.New("x509pop attestation refused")
	// ErrX509PoPMalformed: the payload cannot be read; InvalidArgument.
	ErrX509PoPMalformed = errors.New("malformed x509pop attestation data")
)

// X509PoPConfig is the server's `x509pop { ... }` block.
type X509PoPConfig struct {
	// CABundlePaths hold the PEM roots node certificates must chain to
	// (SPIRE's ca_bundle_paths; ca_bundle_path is one of them). They are
	// read at every attestation, so a renewed node CA needs no restart.
	CABundlePaths []string
	// AgentPathTemplate renders the agent ID's path under
	// spiffe://TD/agent/ (text/template over X509PoPTemplateData); default
	// DefaultX509PoPPathTemplate.
	AgentPathTemplate string
}

// X509PoPTemplateData is what AgentPathTemplate sees: the leaf certificate's
// fields (.Subject.CommonName, ...) and SPIRE's names for the rest.
type X509PoPTemplateData struct {
	*x509.Certificate
	PluginName      string
	Fingerprint     string
	TrustDomain     string
	SerialNumberHex string
	// URISanSelectors are the leaf's x509pop://TD/<key>/<value> URI SANs.
	URISanSelectors map[string]string
}

// X509PoP attests agents by their host's machine certificate. The agent
// may attest again with the same certificate at any time (after an
// eviction, or with its data dir lost) and takes the same ID.
type X509PoP struct {
	td          spiffeid.TrustDomain
	bundlePaths []string
	tmpl        *template.Template
}

// NewX509PoP checks cfg: the template parses and the bundle can be read now
// (a typo is reported at start, not at the first agent's attestation).
func NewX509PoP(td spiffeid.TrustDomain, cfg X509PoPConfig) (*X509PoP, error) {
	if len(cfg.CABundlePaths) == 0 {
		return nil, errNoBundle
	}
	tmpl, err := parseAgentPathTemplate(X509PoPType, cfg.AgentPathTemplate)
	if err != nil {
		return nil, err
	}
	p := &X509PoP{td: td, bundlePaths: cfg.CABundlePaths, tmpl: tmpl}
	if _, err := p.roots(); err != nil {
		return nil, err
	}
	return p, nil
}

// errNoBundle is the message for a block without roots.
var errNoBundle = errors.New(`x509pop: ca_bundle_path or ca_bundle_paths is required (the PEM roots of your node certificates, e.g. ca_bundle_path = "/etc/signet/node-ca.pem")`)

// roots reads the node CA bundles; every file must hold a certificate.
func (p *X509PoP) roots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, path := range p.bundlePaths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("x509pop: read CA bundle: %w", err)
		}
		n := 0
		for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
			if block.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("x509pop: CA bundle %s: certificate %d: %w", path, n+1, err)
			}
			pool.AddCert(cert)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("x509pop: CA bundle %s holds no PEM certificate", path)
		}
	}
	return pool, nil
}

// ParseX509PoPPayload reads an agent's payload: the leaf, the
// intermediates it sent, and the signature. It checks the shape only.
func ParseX509PoPPayload(payload []byte) (leaf *x509.Certificate, intermediates []*x509.Certificate, sig []byte, err error) {
	if len(payload) > maxX509PoPPayload {
		return nil, nil, nil, fmt.Errorf("%w: %d bytes; the limit is %d", ErrX509PoPMalformed, len(payload), maxX509PoPPayload)
	}
	var in x509pop.Payload
	if err := json.Unmarshal(payload, &in); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrX509PoPMalformed, err)
	}
	switch {
	case len(in.Chain) == 0:
		return nil, nil, nil, fmt.Errorf("%w: chain is empty (want the node certificate, then its intermediates)", ErrX509PoPMalformed)
	case len(in.Chain) > maxX509PoPChain:
		return nil, nil, nil, fmt.Errorf("%w: chain has %d certificates; the limit is %d", ErrX509PoPMalformed, len(in.Chain), maxX509PoPChain)
	case len(in.Signature) == 0:
		return nil, nil, nil, fmt.Errorf("%w: signature is empty", ErrX509PoPMalformed)
	}
	certs := make([]*x509.Certificate, len(in.Chain))
	for i, der := range in.Chain {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, nil, nil, fmt.Errorf("%w: chain certificate %d: %v", ErrX509PoPMalformed, i, err)
		}
	}
	return certs[0], certs[1:], in.Signature, nil
}

// Attest checks payload, presented with the agent key agentKey (the DER
// SubjectPublicKeyInfo of the CSR the server will sign), at time now, and
// names the agent.
func (p *X509PoP) Attest(_ context.Context, payload, agentKey []byte, now time.Time) (Result, error) {
	leaf, intermediates, sig, err := ParseX509PoPPayload(payload)
	if err != nil {
		return Result{}, err
	}
	roots, err := p.roots()
	if err != nil {
		return Result{}, err
	}
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		pool.AddCert(c)
	}
	// Client authentication, as the node certificate authenticates the
	// node (a certificate with no EKU, or anyExtendedKeyUsage, passes).
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: pool, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return Result{}, fmt.Errorf("%w: node certificate %s (serial %s): %v", ErrX509PoPRefused, describe(leaf), serialHex(leaf.SerialNumber), err)
	}
	// As SPIRE: the key must be meant for signatures.
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return Result{}, fmt.Errorf("%w: node certificate %s: its key usage does not include digitalSignature", ErrX509PoPRefused, describe(leaf))
	}
	if err := x509pop.Verify(leaf.PublicKey, x509pop.Message(p.td, agentKey), sig); err != nil {
		return Result{}, fmt.Errorf("%w: node certificate %s: %v (it must sign this agent key for trust domain %s)", ErrX509PoPRefused, describe(leaf), err, p.td.Name())
	}
	data := X509PoPTemplateData{
		Certificate:     leaf,
		PluginName:      X509PoPType,
		Fingerprint:     x509pop.Fingerprint(leaf),
		TrustDomain:     p.td.Name(),
		SerialNumberHex: serialHex(leaf.SerialNumber),
		URISanSelectors: p.uriSANs(leaf),
	}
	id, err := p.agentID(data)
	if err != nil {
		return Result{}, err
	}
	return Result{AgentID: id, Type: X509PoPType, Selectors: x509popSelectors(data, chains), CanReattest: true}, nil
}

// agentID renders the template; the result must be a valid agent ID, or
// the attestation fails saying what was rendered.
func (p *X509PoP) agentID(data X509PoPTemplateData) (spiffeid.ID, error) {
	return renderAgentID(p.tmpl, p.td, X509PoPType, data, ErrX509PoPRefused, "node certificate "+describe(data.Certificate))
}

// parseAgentPathTemplate parses an attestor's agent_path_template (""
// gives the default, "{{ .PluginName }}/{{ .Fingerprint }}"); a field
// the data lacks fails the attestation rather than rendering "<no value>".
func parseAgentPathTemplate(attestor, text string) (*template.Template, error) {
	if text == "" {
		text = DefaultX509PoPPathTemplate
	}
	tmpl, err := template.New("agent_path_template").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: agent_path_template: %w", attestor, err)
	}
	return tmpl, nil
}

// renderAgentID renders an attestor's agent_path_template over data into an
// agent ID under spiffe://TD/agent/; the result must be a valid agent ID,
// or the attestation fails with refused, saying what was rendered for
// subject (the evidence, described).
func renderAgentID(tmpl *template.Template, td spiffeid.TrustDomain, attestor string, data any, refused error, subject string) (spiffeid.ID, error) {
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: agent_path_template: %v", refused, templateError(err, data))
	}
	// SPIRE's templates may start with a slash ("/cn/{{ ... }}").
	path := strings.TrimPrefix(b.String(), "/")
	id, err := ids.ParseWorkloadIDIn("spiffe://"+td.Name()+"/agent/"+path, td)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: agent_path_template rendered %q for %s, which is not a valid agent ID path: %v", refused, clipText(path), subject, err)
	}
	// The template joins evidence fields under /agent/: a certificate
	// named "k8s_psat/<cluster>/<node-uid>" must not name a Kubernetes
	// node's agent, nor one of another attestor's.
	first, _, _ := strings.Cut(strings.TrimPrefix(id.Path(), "/agent/"), "/")
	if first != attestor && slices.Contains(attestationTypes, first) {
		return spiffeid.ID{}, fmt.Errorf("%w: agent_path_template rendered %q for %s: agent IDs under %s/agent/%s/ belong to %s agents, never to %s ones (change the template, e.g. to start with %s/)",
			refused, clipText(path), subject, td.IDString(), first, first, attestor, attestor)
	}
	return id, nil
}

// attestationTypes are the attestors whose agent IDs live under
// spiffe://TD/agent/<type>/.
var attestationTypes = []string{JoinTokenType, K8sPSATType, X509PoPType, SSHPoPType, AWSIIDType, GCPIITType}

// uriSANs are SPIRE's san selectors: URI SANs x509pop://TD/<key>/<value>.
func (p *X509PoP) uriSANs(leaf *x509.Certificate) map[string]string {
	out := map[string]string{}
	for _, u := range leaf.URIs {
		if u.Scheme != X509PoPType || u.Host != p.td.Name() {
			continue
		}
		if key, value, ok := strings.Cut(strings.Trim(u.Path, "/"), "/"); ok && key != "" && value != "" {
			out[key] = value
		}
	}
	return out
}

// x509popSelectors are the node selectors node-alias entries match, with
// SPIRE's names. Values no entry could hold (a control character in a
// common name, say) are left out: they could never match.
func x509popSelectors(data X509PoPTemplateData, chains [][]*x509.Certificate) []selector.Selector {
	var out []selector.Selector
	add := func(v string) {
		s := selector.Selector{Type: X509PoPType, Value: v}
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	if cn := data.Subject.CommonName; cn != "" {
		add("subject:cn:" + cn)
	}
	for _, chain := range chains {
		for _, c := range chain[1:] {
			add("ca:fingerprint:" + x509pop.Fingerprint(c))
		}
	}
	add("serialnumber:" + data.SerialNumberHex)
	for k, v := range data.URISanSelectors {
		add("san:" + k + ":" + v)
	}
	return selector.Sort(out)
}

// serialHex is SPIRE's form of a serial number: lower-case hex of its
// bytes (an even number of digits).
func serialHex(n *big.Int) string {
	if n == nil || n.Sign() == 0 {
		return "00"
	}
	return hex.EncodeToString(n.Bytes())
}

func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q", clipText(c.Subject.String()))
}

func clipText(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
