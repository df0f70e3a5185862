package nodeattest

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/smallstep/pkcs7"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/awsiid"
)

// AWSIIDType is the attestation type of EC2 instance identity documents
// (SPIRE's aws_iid).
const AWSIIDType = awsiid.Type

// DefaultAWSIIDPathTemplate renders the agent ID's path under
// spiffe://TD/agent/, as SPIRE's default does under /spire/agent/.
const DefaultAWSIIDPathTemplate = "{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}/{{ .InstanceID }}"

// maxAWSIIDPayload bounds a payload, far above real ones (a document and
// its signature make about 3 KiB): Attest needs no authentication.
const maxAWSIIDPayload = 32 << 10

var (
	// ErrAWSIIDRefused: the document is not signed by AWS's certificate
	// for its region, or its account is not allowed. The agent API
	// answers PermissionDenied.
	ErrAWSIIDRefused = errors.New("aws_iid attestation refused")
	// ErrAWSIIDMalformed: the payload cannot be read; InvalidArgument.
	ErrAWSIIDMalformed = errors.New("malformed aws_iid attestation data")
)

// awsCertsPEM are AWS's RSA-2048 certificates, one per region (PEM blocks
// with a Region header).
//
//go:embed awsiid_certs.pem
var awsCertsPEM []byte

// builtinAWSCerts are awsCertsPEM by region, parsed once.
var builtinAWSCerts = sync.OnceValues(func() (map[string][]*x509.Certificate, error) {
	certs, err := parseAWSCerts(awsCertsPEM, true)
	if err != nil {
		return nil, err
	}
	out := map[string][]*x509.Certificate{}
	for _, c := range certs {
		out[c.region] = append(out[c.region], c.cert)
	}
	return out, nil
})

// AWSIIDConfig is the server's `aws_iid { ... }` block.
type AWSIIDConfig struct {
	// AccountIDs are the AWS accounts whose instances may attest (SPIRE's
	// account_ids_for_local_validation: Signet validates every document
	// locally, from its signature alone, so it takes these accounts and
	// refuses the others). Required: any AWS customer can get a signed
	// document from an instance of their own.
	AccountIDs []string
	// CertificatesPath is a PEM file of further AWS signing certificates
	// (the RSA-2048 ones), besides the built-in ones: for a region or
	// partition Signet does not embed yet. A block with a `Region: <region>`
	// header (as in the built-in file) signs only that region's documents;
	// a block without one is trusted for documents of every region, so
	// whoever holds its key can attest an instance of any region: pin
	// each certificate. Read at start.
	CertificatesPath string
	// AgentPathTemplate renders the agent ID's path under
	// spiffe://TD/agent/ (text/template over AWSIIDTemplateData); default
	// DefaultAWSIIDPathTemplate.
	AgentPathTemplate string
}

// AWSIIDTemplateData is what AgentPathTemplate sees: the document's fields
// (.AccountID, .Region, .InstanceID, .AvailabilityZone, .ImageID, ...)
// and SPIRE's names for the rest.
type AWSIIDTemplateData struct {
	awsiid.Document
	PluginName  string
	TrustDomain string
}

// AWSIID attests agents by their EC2 instance identity document. The
// document is not bound to a secret the agent holds (anyone who read it
// from the instance can present it), so the server trusts it on first
// use: an instance attests once, and again only for its agent's key or
// after its agent is evicted (Result.TrustOnFirstUse).
type AWSIID struct {
	td       spiffeid.TrustDomain
	accounts map[string]bool
	builtin  map[string][]*x509.Certificate
	extra    []awsCert // region "" signs for every region
	tmpl     *template.Template
}

// NewAWSIID checks cfg (Check) and reads CertificatesPath now.
func NewAWSIID(td spiffeid.TrustDomain, cfg AWSIIDConfig) (*AWSIID, error) {
	tmpl, err := cfg.compile()
	if err != nil {
		return nil, err
	}
	builtin, err := builtinAWSCerts()
	if err != nil {
		return nil, fmt.Errorf("aws_iid: built-in AWS certificates: %w", err)
	}
	p := &AWSIID{td: td, accounts: map[string]bool{}, builtin: builtin, tmpl: tmpl}
	for _, a := range cfg.AccountIDs {
		p.accounts[a] = true
	}
	if cfg.CertificatesPath != "" {
		data, err := os.ReadFile(cfg.CertificatesPath)
		if err != nil {
			return nil, fmt.Errorf("aws_iid: read aws_certificates_path: %w", err)
		}
		certs, err := parseAWSCerts(data, false)
		if err != nil {
			return nil, fmt.Errorf("aws_iid: %s: %w", cfg.CertificatesPath, err)
		}
		p.extra = certs
	}
	return p, nil
}

var awsAccountRE = regexp.MustCompile(`^[0-9]{12}$`)

// awsRegionRE is the shape of an AWS region name (us-east-1,
// eusc-de-east-1, us-gov-west-1), for the Region header of a certificate.
var awsRegionRE = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+-[0-9]+$`)

// Check checks what can be checked without reading the certificates file:
// accounts are given, each an AWS account ID, and the template parses and
// names only fields the document has.
func (cfg AWSIIDConfig) Check() error {
	_, err := cfg.compile()
	return err
}

func (cfg AWSIIDConfig) compile() (*template.Template, error) {
	if len(cfg.AccountIDs) == 0 {
		return nil, errors.New(`aws_iid: account_ids_for_local_validation is required: the AWS accounts whose instances may attest, e.g. account_ids_for_local_validation = ["123456789012"] (Signet checks the signed document alone, without EC2 API calls, and any AWS customer can get one signed)`)
	}
	for _, a := range cfg.AccountIDs {
		if !awsAccountRE.MatchString(a) {
			return nil, fmt.Errorf("aws_iid: account_ids_for_local_validation: %q is not an AWS account ID (12 digits)", clipText(a))
		}
	}
	text := cfg.AgentPathTemplate
	if text == "" {
		text = DefaultAWSIIDPathTemplate
	}
	if strings.Contains(text, ".Tags") {
		return nil, errors.New("aws_iid: agent_path_template uses .Tags: SPIRE reads instance tags from the EC2 API, which Signet does not call; use the document's fields (.AccountID, .Region, .InstanceID, .AvailabilityZone, .ImageID)")
	}
	tmpl, err := parseAgentPathTemplate(AWSIIDType, text)
	if err != nil {
		return nil, err
	}
	// A field the document lacks fails here, not at the first attestation.
	sample := AWSIIDTemplateData{Document: awsiid.Document{AccountID: "123456789012", InstanceID: "i-0", Region: "r", AvailabilityZone: "z", ImageID: "ami-0"},
		PluginName: AWSIIDType, TrustDomain: "example.org"}
	other := sample
	other.InstanceID = "i-1"
	if err := requireInstanceID(AWSIIDType, text, tmpl, sample, other); err != nil {
		return nil, err
	}
	return tmpl, nil
}

// awsCert is a signing certificate and the region whose documents it
// signs (its PEM block's Region header); "" is every region, allowed only
// in aws_certificates_path.
type awsCert struct {
	region string
	cert   *x509.Certificate
}

// parseAWSCerts reads the CERTIFICATE blocks of a PEM file: each must be an
// RSA certificate; withRegion wants each to name its region (the Region
// header), which is optional otherwise.
func parseAWSCerts(data []byte, withRegion bool) ([]awsCert, error) {
	var out []awsCert
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		if cert.PublicKeyAlgorithm != x509.RSA {
			return nil, fmt.Errorf("certificate %d (%s) has a %s key; AWS signs instance identity documents with RSA", len(out)+1, describe(cert), cert.PublicKeyAlgorithm)
		}
		region, pinned := block.Headers["Region"]
		switch {
		case withRegion && region == "":
			return nil, fmt.Errorf("certificate %d names no Region", len(out)+1)
		case pinned && !awsRegionRE.MatchString(region):
			return nil, fmt.Errorf("certificate %d (%s): Region header %q is not an AWS region name (like us-east-1)", len(out)+1, describe(cert), clipText(region))
		}
		out = append(out, awsCert{region: region, cert: cert})
	}
	if len(out) == 0 {
		return nil, errors.New("holds no PEM certificate (want AWS's RSA-2048 instance identity certificates)")
	}
	return out, nil
}

// AWSIIDEvidence is a payload read: the document as signed, parsed, and
// the PKCS #7 signature, not yet verified.
type AWSIIDEvidence struct {
	Raw       []byte
	Document  awsiid.Document
	Signature *pkcs7.PKCS7
}

// ParseAWSIIDPayload reads an agent's payload: the document and its
// rsa2048 signature. It checks the shape only.
func ParseAWSIIDPayload(payload []byte) (AWSIIDEvidence, error) {
	malformed := func(format string, args ...any) (AWSIIDEvidence, error) {
		return AWSIIDEvidence{}, fmt.Errorf("%w: %s", ErrAWSIIDMalformed, fmt.Sprintf(format, args...))
	}
	if len(payload) > maxAWSIIDPayload {
		return malformed("%d bytes; the limit is %d", len(payload), maxAWSIIDPayload)
	}
	var in awsiid.Payload
	if err := json.Unmarshal(payload, &in); err != nil {
		return malformed("%v", err)
	}
	switch {
	case in.Document == "":
		return malformed("document is empty")
	case in.RSA2048 == "" && in.Signature != "":
		return malformed("only the RSA-1024 signature was sent; Signet verifies the RSA-2048 PKCS #7 one (rsa2048, from %s)", awsiid.RSA2048Path)
	case in.RSA2048 == "":
		return malformed("rsa2048 is empty (the PKCS #7 signature from %s)", awsiid.RSA2048Path)
	}
	var doc awsiid.Document
	if err := json.Unmarshal([]byte(in.Document), &doc); err != nil {
		return malformed("document: %v", err)
	}
	for _, f := range []struct{ name, value string }{{"accountId", doc.AccountID}, {"instanceId", doc.InstanceID}, {"region", doc.Region}} {
		if f.value == "" {
			return malformed("document has no %s", f.name)
		}
	}
	der, err := decodeRSA2048(in.RSA2048)
	if err != nil {
		return malformed("rsa2048: %v", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return malformed("rsa2048: %v", err)
	}
	return AWSIIDEvidence{Raw: []byte(in.Document), Document: doc, Signature: p7}, nil
}

// decodeRSA2048 is the DER of the rsa2048 signature: base64 as IMDS serves
// it (lines without PEM armour), or with the armour.
func decodeRSA2048(sig string) ([]byte, error) {
	if strings.Contains(sig, "-----BEGIN") {
		block, _ := pem.Decode([]byte(sig))
		if block == nil || block.Type != "PKCS7" {
			return nil, errors.New("not a PEM PKCS7 block")
		}
		return block.Bytes, nil
	}
	return base64.StdEncoding.DecodeString(strings.Join(strings.Fields(sig), ""))
}

// Attest checks payload at time now and names the agent. The caller
// records the node with store.ClaimNode (TrustOnFirstUse).
func (p *AWSIID) Attest(_ context.Context, payload []byte, now time.Time) (Result, error) {
	ev, err := ParseAWSIIDPayload(payload)
	if err != nil {
		return Result{}, err
	}
	doc := ev.Document
	what := fmt.Sprintf("instance %s of account %s in %s", clipText(doc.InstanceID), clipText(doc.AccountID), clipText(doc.Region))
	refuse := func(format string, args ...any) (Result, error) {
		return Result{}, fmt.Errorf("%w: %s: %s", ErrAWSIIDRefused, what, fmt.Sprintf(format, args...))
	}
	if err := p.verify(ev, now); err != nil {
		return refuse("%v", err)
	}
	if !p.accounts[doc.AccountID] {
		return refuse("account %s is not in account_ids_for_local_validation", clipText(doc.AccountID))
	}
	data := AWSIIDTemplateData{Document: doc, PluginName: AWSIIDType, TrustDomain: p.td.Name()}
	id, err := renderAgentID(p.tmpl, p.td, AWSIIDType, data, ErrAWSIIDRefused, what)
	if err != nil {
		return Result{}, err
	}
	return Result{AgentID: id, Type: AWSIIDType, Selectors: awsiidSelectors(doc), TrustOnFirstUse: true}, nil
}

// verify checks that AWS's certificate for the document's region (or one
// of aws_certificates_path) signed exactly this document. Certificates the
// signature carries are ignored: anyone can make one.
func (p *AWSIID) verify(ev AWSIIDEvidence, now time.Time) error {
	trusted := slices.Clone(p.builtin[ev.Document.Region])
	for _, c := range p.extra {
		if c.region == "" || c.region == ev.Document.Region {
			trusted = append(trusted, c.cert)
		}
	}
	if len(trusted) == 0 {
		return fmt.Errorf("no AWS certificate for region %s is built in; add it to aws_certificates_path with a \"Region: %s\" header", clipText(ev.Document.Region), clipText(ev.Document.Region))
	}
	p7 := ev.Signature
	// The document sent must be the one signed: a genuine signature of
	// another instance's document proves nothing about this one.
	if !bytes.Equal(p7.Content, ev.Raw) {
		return errors.New("the rsa2048 signature is not of this document")
	}
	// The library would take SHA-1 (x509's CheckSignature does); AWS signs
	// with SHA-256.
	for _, si := range p7.Signers {
		if d := si.DigestAlgorithm.Algorithm; !slices.ContainsFunc(awsDigests, d.Equal) {
			return fmt.Errorf("the rsa2048 signature uses digest %s; only SHA-256, SHA-384 and SHA-512 are accepted", d)
		}
	}
	p7.Certificates = trusted
	signer := p7.GetOnlySigner()
	if err := p7.Verify(); err != nil || signer == nil {
		if err == nil {
			err = errors.New("it has more than one signer")
		}
		return fmt.Errorf("not signed by AWS's certificate for region %s (built in or in aws_certificates_path): %v", clipText(ev.Document.Region), err)
	}
	if now.Before(signer.NotBefore) || now.After(signer.NotAfter) {
		return fmt.Errorf("signed with %s, valid from %s to %s only", describe(signer), signer.NotBefore.Format(time.RFC3339), signer.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// awsDigests are the digest algorithms accepted in rsa2048 signatures.
var awsDigests = []asn1.ObjectIdentifier{pkcs7.OIDDigestAlgorithmSHA256, pkcs7.OIDDigestAlgorithmSHA384, pkcs7.OIDDigestAlgorithmSHA512}

// awsiidSelectors are the node selectors node-alias entries match, with
// SPIRE's names, from the signed document. Values no entry could hold are
// left out.
func awsiidSelectors(doc awsiid.Document) []selector.Selector {
	var out []selector.Selector
	add := func(key, v string) {
		if v == "" {
			return
		}
		s := selector.Selector{Type: AWSIIDType, Value: key + ":" + v}
		if s.Validate() == nil {
			out = append(out, s)
		}
	}
	add("account_id", doc.AccountID)
	add("az", doc.AvailabilityZone)
	add("image:id", doc.ImageID)
	add("instance:id", doc.InstanceID)
	add("region", doc.Region)
	return selector.Sort(out)
}
