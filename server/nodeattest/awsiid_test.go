package nodeattest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/signetid/signet/internal/pemkey"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/awsiid"
	"github.com/signetid/signet/server/api/awsiid/awsiidtest"
)

const testAccount = "111122223333"

// newAWSIID is an aws_iid attestor that trusts signer's certificate (for
// every region, through aws_certificates_path) and instances of
// testAccount.
func newAWSIID(t testing.TB, signer *awsiidtest.Signer, template string) *AWSIID {
	t.Helper()
	path := filepath.Join(t.TempDir(), "aws-certs.pem")
	signer.WriteCert(t, path)
	p, err := NewAWSIID(td, AWSIIDConfig{AccountIDs: []string{testAccount, "444455556666"}, CertificatesPath: path, AgentPathTemplate: template})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A document signed as EC2 signs it names the agent by account, region and
// instance, with SPIRE's selectors from the document, trusted on first use
// (never reattestable). The signature may come with or without PEM
// armour.
func TestAWSIIDAttest(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	p := newAWSIID(t, signer, "")
	doc := awsiidtest.Doc(testAccount, "us-test-1", "i-0123456789abcdef0")
	sig := signer.Sign(t, doc)
	for name, s := range map[string]string{
		"as IMDS serves it": sig,
		"on one line":       strings.ReplaceAll(sig, "\n", ""),
		"with PEM armour":   "-----BEGIN PKCS7-----\n" + sig + "\n-----END PKCS7-----\n",
	} {
		t.Run(name, func(t *testing.T) {
			payload, _ := json.Marshal(awsiid.Payload{Document: string(doc), RSA2048: s, Signature: "c2lnbmF0dXJl"})
			res, err := p.Attest(context.Background(), payload, time.Now())
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if res.AgentID.String() != "spiffe://example.org/agent/aws_iid/111122223333/us-test-1/i-0123456789abcdef0" || res.Type != "aws_iid" ||
				!res.TrustOnFirstUse || res.CanReattest {
				t.Fatalf("result %+v", res)
			}
			want := []string{"aws_iid:account_id:111122223333", "aws_iid:az:us-test-1a", "aws_iid:image:id:ami-0abcdef1234567890",
				"aws_iid:instance:id:i-0123456789abcdef0", "aws_iid:region:us-test-1"}
			if got := selector.Strings(res.Selectors); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("selectors %v, want %v", got, want)
			}
			for _, s := range res.Selectors {
				if err := s.Validate(); err != nil {
					t.Fatalf("selector %s cannot be written in an entry: %v", s, err)
				}
			}
		})
	}
}

// Everything that is not AWS's signature of this document, for an allowed
// account, is refused with ErrAWSIIDRefused naming what failed.
func TestAWSIIDRefused(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	p := newAWSIID(t, signer, "")
	attacker := awsiidtest.NewSigner(t)
	doc := awsiidtest.Doc(testAccount, "us-test-1", "i-1")
	other := awsiidtest.Doc(testAccount, "us-test-1", "i-2")

	expiredSigner := awsiidtest.NewSigner(t)
	expired := newAWSIID(t, expiredSigner, "")

	sha1Payload := func(t *testing.T) []byte {
		sd, err := pkcs7.NewSignedData(doc)
		if err != nil {
			t.Fatal(err)
		}
		sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA1)
		if err := sd.AddSigner(signer.Cert, signer.Key, pkcs7.SignerInfoConfig{}); err != nil {
			t.Fatal(err)
		}
		der, err := sd.Finish()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(awsiid.Payload{Document: string(doc), RSA2048: string(pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der}))})
		return b
	}
	builtinOnly, err := NewAWSIID(td, AWSIIDConfig{AccountIDs: []string{testAccount}})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		p       *AWSIID
		payload func(t *testing.T) []byte
		now     time.Time
		want    string
	}{
		{"signed by another key, its certificate enclosed", p, func(t *testing.T) []byte { return attacker.Payload(t, doc) }, time.Now(),
			"not signed by AWS's certificate for region us-test-1"},
		{"a genuine signature of another instance's document", p, func(t *testing.T) []byte {
			b, _ := json.Marshal(awsiid.Payload{Document: string(doc), RSA2048: signer.Sign(t, other)})
			return b
		}, time.Now(), "the rsa2048 signature is not of this document"},
		{"the document re-indented", p, func(t *testing.T) []byte {
			b, _ := json.Marshal(awsiid.Payload{Document: string(bytes.ReplaceAll(doc, []byte(" : "), []byte(": "))), RSA2048: signer.Sign(t, doc)})
			return b
		}, time.Now(), "not of this document"},
		{"account not allowed", p, func(t *testing.T) []byte {
			return signer.Payload(t, awsiidtest.Doc("999988887777", "us-test-1", "i-1"))
		}, time.Now(),
			"account 999988887777 is not in account_ids_for_local_validation"},
		{"region with no built-in certificate", builtinOnly, func(t *testing.T) []byte { return signer.Payload(t, doc) }, time.Now(),
			"no AWS certificate for region us-test-1 is built in; add it to aws_certificates_path"},
		{"a real region, not signed by AWS", builtinOnly, func(t *testing.T) []byte {
			return signer.Payload(t, awsiidtest.Doc(testAccount, "us-east-1", "i-1"))
		}, time.Now(), "not signed by AWS's certificate for region us-east-1"},
		{"signer certificate expired", expired, func(t *testing.T) []byte { return expiredSigner.Payload(t, doc) }, time.Now().Add(2 * 365 * 24 * time.Hour),
			"valid from"},
		{"SHA-1 signature", p, sha1Payload, time.Now(), "uses digest 1.3.14.3.2.26; only SHA-256, SHA-384 and SHA-512 are accepted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Attest(context.Background(), tc.payload(t), tc.now)
			if !errors.Is(err, ErrAWSIIDRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest: %v; want ErrAWSIIDRefused containing %q", err, tc.want)
			}
		})
	}
}

// Payloads that cannot be read are ErrAWSIIDMalformed, saying why.
func TestAWSIIDMalformed(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	p := newAWSIID(t, signer, "")
	doc := awsiidtest.Doc(testAccount, "us-test-1", "i-1")
	sig := signer.Sign(t, doc)
	enc := func(pl awsiid.Payload) []byte { b, _ := json.Marshal(pl); return b }
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"not JSON", []byte("{"), "unexpected end of JSON input"},
		{"no document", enc(awsiid.Payload{RSA2048: sig}), "document is empty"},
		{"RSA-1024 signature only", enc(awsiid.Payload{Document: string(doc), Signature: "c2ln"}), "only the RSA-1024 signature was sent"},
		{"no signature", enc(awsiid.Payload{Document: string(doc)}), "rsa2048 is empty"},
		{"document not JSON", enc(awsiid.Payload{Document: "instance", RSA2048: sig}), "document: invalid character"},
		{"document without account", enc(awsiid.Payload{Document: `{"instanceId":"i-1","region":"r"}`, RSA2048: sig}), "document has no accountId"},
		{"document without instance", enc(awsiid.Payload{Document: `{"accountId":"111122223333","region":"r"}`, RSA2048: sig}), "document has no instanceId"},
		{"signature not base64", enc(awsiid.Payload{Document: string(doc), RSA2048: "%%%"}), "rsa2048: illegal base64"},
		{"signature not PKCS #7", enc(awsiid.Payload{Document: string(doc), RSA2048: "aGVsbG8="}), "rsa2048:"},
		{"PEM of another type", enc(awsiid.Payload{Document: string(doc), RSA2048: "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n"}), "not a PEM PKCS7 block"},
		{"too big", append([]byte(`{"document":"`), bytes.Repeat([]byte("a"), maxAWSIIDPayload)...), "the limit is"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Attest(context.Background(), tc.payload, time.Now())
			if !errors.Is(err, ErrAWSIIDMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Attest: %v; want ErrAWSIIDMalformed containing %q", err, tc.want)
			}
		})
	}
}

// agent_path_template renders over the document as SPIRE's does; one that
// names another attestor's namespace is refused at attestation, one SPIRE
// fills from the EC2 API (.Tags) or naming no document field at start.
func TestAWSIIDTemplate(t *testing.T) {
	signer := awsiidtest.NewSigner(t)
	doc := awsiidtest.Doc(testAccount, "us-test-1", "i-1")
	p := newAWSIID(t, signer, "/{{ .PluginName }}/{{ .Region }}/{{ .AvailabilityZone }}/{{ .InstanceID }}")
	res, err := p.Attest(context.Background(), signer.Payload(t, doc), time.Now())
	if err != nil || res.AgentID.String() != "spiffe://example.org/agent/aws_iid/us-test-1/us-test-1a/i-1" {
		t.Fatalf("Attest: %v, %v", res.AgentID, err)
	}
	p = newAWSIID(t, signer, "x509pop/{{ .InstanceID }}")
	if _, err := p.Attest(context.Background(), signer.Payload(t, doc), time.Now()); !errors.Is(err, ErrAWSIIDRefused) || !strings.Contains(err.Error(), "belong to x509pop agents") {
		t.Fatalf("template into x509pop's namespace: %v", err)
	}
	for tmpl, want := range map[string]string{
		"{{ .PluginName }}/{{ .Tags.name }}":               "uses .Tags",
		"{{ .PluginName }}/{{ .Hostname }}":                "unknown field .Hostname; the fields are .AccountID",
		"{{ .PluginName }":                                 "agent_path_template",
		"{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}": `agent_path_template "{{ .PluginName }}/{{ .AccountID }}/{{ .Region }}" does not use {{ .InstanceID }}: every instance would get the same agent ID`,
		"{{ .PluginName }}/{{ .ImageID }}":                 "does not use {{ .InstanceID }}",
		"{{ .PluginName }}/{{ slice .InstanceID 0 1 }}":    "does not use {{ .InstanceID }}",
	} {
		if err := (AWSIIDConfig{AccountIDs: []string{testAccount}, AgentPathTemplate: tmpl}).Check(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("template %q: %v, want an error containing %q", tmpl, err, want)
		}
	}
}

// A certificate of aws_certificates_path with a Region header signs only
// that region's documents; one without signs for every region.
func TestAWSIIDCertificateRegion(t *testing.T) {
	pinnedSigner, anySigner := awsiidtest.NewSigner(t), awsiidtest.NewSigner(t)
	pinned := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Region": "us-test-1"}, Bytes: pinnedSigner.Cert.Raw})
	path := filepath.Join(t.TempDir(), "aws-certs.pem")
	if err := os.WriteFile(path, append(pinned, anySigner.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := NewAWSIID(td, AWSIIDConfig{AccountIDs: []string{testAccount}, CertificatesPath: path})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		signer *awsiidtest.Signer
		region string
		want   string // "" for accepted
	}{
		{"pinned, its region", pinnedSigner, "us-test-1", ""},
		{"pinned, a region of no built-in certificate", pinnedSigner, "us-test-2", "not signed by AWS's certificate for region us-test-2"},
		{"pinned, a region with a built-in certificate", pinnedSigner, "us-east-1", "not signed by AWS's certificate for region us-east-1"},
		{"unpinned, one region", anySigner, "us-test-1", ""},
		{"unpinned, another", anySigner, "us-test-2", ""},
		{"unpinned, a region with a built-in certificate", anySigner, "us-east-1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Attest(context.Background(), tc.signer.Payload(t, awsiidtest.Doc(testAccount, tc.region, "i-1")), time.Now())
			if tc.want == "" && err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if tc.want != "" && (!errors.Is(err, ErrAWSIIDRefused) || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Attest: %v; want ErrAWSIIDRefused containing %q", err, tc.want)
			}
		})
	}
}

// The block's settings are checked at start.
func TestAWSIIDConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	badRegion := filepath.Join(dir, "bad-region.pem")
	block := &pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Region": "us east"}, Bytes: awsiidtest.NewSigner(t).Cert.Raw}
	if err := os.WriteFile(badRegion, pem.EncodeToMemory(block), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		cfg  AWSIIDConfig
		want string
	}{
		{AWSIIDConfig{}, "account_ids_for_local_validation is required"},
		{AWSIIDConfig{AccountIDs: []string{"1234"}}, `"1234" is not an AWS account ID (12 digits)`},
		{AWSIIDConfig{AccountIDs: []string{testAccount}, CertificatesPath: filepath.Join(dir, "missing.pem")}, "read aws_certificates_path"},
		{AWSIIDConfig{AccountIDs: []string{testAccount}, CertificatesPath: notPEM}, "holds no PEM certificate"},
		{AWSIIDConfig{AccountIDs: []string{testAccount}, CertificatesPath: badRegion}, `Region header "us east" is not an AWS region name`},
	}
	for _, tc := range tests {
		if _, err := NewAWSIID(td, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewAWSIID(%+v): %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

// awsRegions are the 39 regions of SPIRE's list of RSA-2048 certificates
// (pkg/server/plugin/nodeattestor/awsiid/awsrsa2048/cacerts.go).
var awsRegions = []string{
	"af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1", "ap-south-2",
	"ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
	"ca-central-1", "ca-west-1", "cn-north-1", "cn-northwest-1", "eusc-de-east-1", "eu-central-1", "eu-central-2", "eu-north-1",
	"eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1",
	"mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-gov-west-1", "us-gov-east-1", "us-west-1", "us-west-2",
}

// The embedded certificates are AWS's: one RSA-2048 self-signed
// certificate per region, each of SPIRE's 39 regions once, no other.
func TestAWSIIDBuiltinCertificates(t *testing.T) {
	certs, err := builtinAWSCerts()
	if err != nil {
		t.Fatal(err)
	}
	for _, region := range awsRegions {
		if len(certs[region]) != 1 {
			t.Errorf("region %s has %d certificates, want 1", region, len(certs[region]))
		}
	}
	serials := map[string]string{}
	for region, cs := range certs {
		for _, c := range cs {
			if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
				t.Errorf("%s: self-signature: %v", region, err)
			}
			if k, ok := c.PublicKey.(interface{ Size() int }); !ok || k.Size() != 256 || c.Subject.Organization[0] != "Amazon Web Services LLC" {
				t.Errorf("%s: %v is not an RSA-2048 AWS certificate", region, c.Subject)
			}
			// A block pasted twice under two regions would trust one key for both.
			if other, dup := serials[c.SerialNumber.String()]; dup {
				t.Errorf("%s and %s have the same certificate", region, other)
			}
			serials[c.SerialNumber.String()] = region
		}
	}
	if len(certs) != len(awsRegions) {
		t.Errorf("%d regions, want %d", len(certs), len(awsRegions))
	}
}

// The fuzz target's signer is the same in every run (fixed serial and
// validity), so a payload stored by one run verifies in the next.
func TestAWSIIDFuzzSignerStable(t *testing.T) {
	key, err := pemkey.Read("testdata/fuzz-signer-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	earlier := awsiidtest.NewSignerWithKey(t, key.(*rsa.PrivateKey))
	stored := earlier.Payload(t, awsiidtest.Doc(testAccount, "us-test-1", "i-1"))
	later := awsiidtest.NewSignerWithKey(t, key.(*rsa.PrivateKey))
	if !bytes.Equal(earlier.Cert.Raw, later.Cert.Raw) {
		t.Fatal("NewSignerWithKey made two certificates for one key")
	}
	if _, err := newAWSIID(t, later, "").Attest(context.Background(), stored, time.Now()); err != nil {
		t.Fatalf("a payload of an earlier run: %v", err)
	}
}

// FuzzAWSIIDPayload feeds arbitrary payloads to a configured attestor: it
// never panics, and whatever it accepts is the configured signer's
// signature of exactly the document sent, for an allowed account.
func FuzzAWSIIDPayload(f *testing.F) {
	key, err := pemkey.Read("testdata/fuzz-signer-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	signer := awsiidtest.NewSignerWithKey(f, key.(*rsa.PrivateKey))
	p := newAWSIID(f, signer, "")
	doc := awsiidtest.Doc(testAccount, "us-test-1", "i-1")
	f.Add(signer.Payload(f, doc))
	f.Add(signer.Payload(f, awsiidtest.Doc("999988887777", "eu-west-1", "i-2")))
	f.Add([]byte(`{"document":"{\"accountId\":\"111122223333\",\"instanceId\":\"i\",\"region\":\"r\"}","rsa2048":"MAA="}`))
	f.Add([]byte(`{"document":"x","signature":"y"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		res, err := p.Attest(context.Background(), payload, time.Now())
		if err != nil {
			if !errors.Is(err, ErrAWSIIDRefused) && !errors.Is(err, ErrAWSIIDMalformed) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		ev, err := ParseAWSIIDPayload(payload)
		if err != nil || !bytes.Equal(ev.Signature.Content, ev.Raw) || !p.accounts[ev.Document.AccountID] || !res.TrustOnFirstUse {
			t.Fatalf("accepted %q as %v", payload, res.AgentID)
		}
	})
}
