package nodeattest

import (
	"context"
	"crypto"
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api/sshpop"
	"github.com/signetid/signet/server/api/sshpop/sshpoptest"
	"github.com/signetid/signet/server/api/x509pop"
)

// sshpopPKI is an SSH CA whose public key is in a cert_authorities_path
// file, and another CA the server does not trust.
type sshpopPKI struct {
	ca, other *sshpoptest.CA
	caPath    string
}

func newSSHPoPPKI(t *testing.T) *sshpopPKI {
	t.Helper()
	p := &sshpopPKI{ca: sshpoptest.NewCA(t), other: sshpoptest.NewCA(t), caPath: filepath.Join(t.TempDir(), "ssh-ca.pub")}
	writeCAs(t, p.caPath, p.ca)
	return p
}

// writeCAs writes the CAs' public keys to path as an operator would, with
// a comment and a blank line.
func writeCAs(t testing.TB, path string, cas ...*sshpoptest.CA) {
	t.Helper()
	text := "# host CAs\n\n"
	for _, ca := range cas {
		text += ca.AuthorizedKey()
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sshpopPayload is what an agent sends: cert and sig, or, when sig is
// nil, the host key's signature over the message for (signTD, signedKey).
func sshpopPayload(t testing.TB, cert *ssh.Certificate, key ssh.Signer, sig *ssh.Signature, signTD spiffeid.TrustDomain, signedKey []byte) []byte {
	t.Helper()
	if sig == nil {
		var err error
		if sig, err = sshpop.Sign(key, sshpop.Message(signTD, signedKey)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := json.Marshal(sshpop.Payload{Certificate: cert.Marshal(), Signature: sshpop.MarshalSignature(sig)})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSSHPoPAttest(t *testing.T) {
	pki := newSSHPoPPKI(t)
	newKey := func(k crypto.Signer, err error) crypto.Signer {
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := newKey(rsa.GenerateKey(rand.Reader, 2048))
	rsaCAKey := newKey(rsa.GenerateKey(rand.Reader, 2048))
	sha1CASigner, err := ssh.NewSignerWithAlgorithms(sshpoptest.Signer(t, rsaCAKey).(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSA})
	if err != nil {
		t.Fatal(err)
	}
	sha1CA := &sshpoptest.CA{Signer: sha1CASigner}
	sha256CASigner, err := ssh.NewSignerWithAlgorithms(sshpoptest.Signer(t, rsaCAKey).(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA256})
	if err != nil {
		t.Fatal(err)
	}
	rsaCA := &sshpoptest.CA{Signer: sha256CASigner}
	writeCAs(t, pki.caPath, pki.ca, rsaCA)
	now := time.Now()
	presentedKey := agentKey(t)
	type attempt struct {
		cert      *ssh.Certificate
		key       ssh.Signer
		signTD    spiffeid.TrustDomain
		signedKey []byte                                   // nil: the presented agent key
		sign      func(msg []byte) (*ssh.Signature, error) // nil: sshpop.Sign with key
	}
	issue := func(ca *sshpoptest.CA, h sshpoptest.Host) attempt {
		cert, key := ca.Issue(t, h)
		return attempt{cert: cert, key: key, signTD: td}
	}
	tests := []struct {
		name   string
		in     attempt
		domain string
		reason string // "": accepted
	}{
		{name: "ECDSA P-256", in: issue(pki.ca, sshpoptest.Host{})},
		{name: "ECDSA P-384", in: issue(pki.ca, sshpoptest.Host{Key: newKey(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))})},
		{name: "RSA (rsa-sha2-512)", in: issue(pki.ca, sshpoptest.Host{Key: rsaKey})},
		{name: "RSA host key signing rsa-sha2-256", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{Key: rsaKey})
			a.sign = func(m []byte) (*ssh.Signature, error) {
				return a.key.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, m, ssh.KeyAlgoRSASHA256)
			}
			return a
		}()},
		{name: "Ed25519", in: issue(pki.ca, sshpoptest.Host{Key: edKey})},
		{name: "RSA CA (rsa-sha2-256)", in: issue(rsaCA, sshpoptest.Host{})},
		{name: "valid for ever", in: issue(pki.ca, sshpoptest.Host{Forever: true})},
		{name: "in the canonical domain, not first", domain: "example.org",
			in: issue(pki.ca, sshpoptest.Host{Principals: []string{"host-1", "10.0.0.5", "host-1.example.org"}})},
		{name: "user certificate", in: issue(pki.ca, sshpoptest.Host{CertType: ssh.UserCert}),
			reason: "is a user certificate, not a host certificate"},
		{name: "unknown CA", in: issue(pki.other, sshpoptest.Host{}),
			reason: "signed by CA " + ssh.FingerprintSHA256(pki.other.Signer.PublicKey()) + ", which is not in cert_authorities"},
		{name: "expired", in: issue(pki.ca, sshpoptest.Host{ValidAfter: now.Add(-2 * time.Hour), ValidBefore: now.Add(-time.Minute)}),
			reason: "cert has expired"},
		{name: "not yet valid", in: issue(pki.ca, sshpoptest.Host{ValidAfter: now.Add(time.Hour), ValidBefore: now.Add(2 * time.Hour)}),
			reason: "cert is not yet valid"},
		{name: "no principals (valid for any host)", in: issue(pki.ca, sshpoptest.Host{Principals: []string{}}),
			reason: "it has no principals"},
		{name: "outside the canonical domain", domain: "example.org",
			in:     issue(pki.ca, sshpoptest.Host{Principals: []string{"host-1.example.com", "example.org", "host-1.example.org.evil"}}),
			reason: "no principal is <hostname>.example.org (canonical_domain); it names host-1.example.com,example.org,host-1.example.org.evil"},
		{name: "critical option", in: issue(pki.ca, sshpoptest.Host{CriticalOptions: map[string]string{"source-address": "10.0.0.0/8"}}),
			reason: `unsupported critical option "source-address"`},
		{name: "CA signature does not verify (principals changed after signing)", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{})
			a.cert.ValidPrincipals = []string{"db-1.example.org"}
			return a
		}(), reason: "certificate signature does not verify"},
		{name: "CA signed with ssh-rsa (SHA-1)", in: issue(sha1CA, sshpoptest.Host{}), reason: "ssh-rsa (SHA-1)"},
		{name: "host key signing ssh-rsa (SHA-1)", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{Key: rsaKey})
			a.sign = func(m []byte) (*ssh.Signature, error) {
				return a.key.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, m, ssh.KeyAlgoRSA)
			}
			return a
		}(), reason: `a "ssh-rsa" signature from a ssh-rsa key is not accepted`},
		{name: "RSA host key of 1024 bits", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{Key: newKey(rsa.GenerateKey(rand.Reader, 1024))})
			a.sign = func(m []byte) (*ssh.Signature, error) {
				return a.key.(ssh.AlgorithmSigner).SignWithAlgorithm(rand.Reader, m, ssh.KeyAlgoRSASHA512)
			}
			return a
		}(), reason: "RSA key of 1024 bits is too short"},
		{name: "signature over another agent key (replayed payload, other CSR)", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{})
			a.signedKey = agentKey(t)
			return a
		}(), reason: "signature does not verify with the certificate's key (it must sign this agent key for trust domain example.org)"},
		{name: "signature for another trust domain", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{})
			a.signTD = spiffeid.RequireTrustDomainFromString("other.org")
			return a
		}(), reason: "must sign this agent key for trust domain example.org"},
		{name: "signed by another key than the certificate's", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{})
			_, a.key = pki.ca.Issue(t, sshpoptest.Host{})
			return a
		}(), reason: "signature does not verify"},
		{name: "an x509pop signature by the same key", in: func() attempt {
			a := issue(pki.ca, sshpoptest.Host{Key: edKey})
			a.sign = func([]byte) (*ssh.Signature, error) {
				// x509pop's message for the same trust domain and agent key.
				blob, err := x509pop.Sign(edKey, x509pop.Message(td, presentedKey))
				return &ssh.Signature{Format: ssh.KeyAlgoED25519, Blob: blob}, err
			}
			return a
		}(), reason: "signature does not verify"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewSSHPoP(td, SSHPoPConfig{CertAuthoritiesPath: pki.caPath, CanonicalDomain: tc.domain})
			if err != nil {
				t.Fatal(err)
			}
			presented := presentedKey
			signed := tc.in.signedKey
			if signed == nil {
				signed = presented
			}
			var sig *ssh.Signature
			if tc.in.sign != nil {
				if sig, err = tc.in.sign(sshpop.Message(tc.in.signTD, signed)); err != nil {
					t.Fatal(err)
				}
			}
			res, err := p.Attest(context.Background(), sshpopPayload(t, tc.in.cert, tc.in.key, sig, tc.in.signTD, signed), presented, now)
			if tc.reason != "" {
				if !errors.Is(err, ErrSSHPoPRefused) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := "spiffe://example.org/agent/sshpop/" + sshpop.Fingerprint(tc.in.cert)
			if res.AgentID.String() != want || res.Type != SSHPoPType || !res.CanReattest {
				t.Fatalf("agent %s (%s, can reattest %v), want %s, reattestable", res.AgentID, res.Type, res.CanReattest, want)
			}
		})
	}
}

func TestSSHPoPSelectors(t *testing.T) {
	pki := newSSHPoPPKI(t)
	p, err := NewSSHPoP(td, SSHPoPConfig{CertAuthoritiesPath: pki.caPath})
	if err != nil {
		t.Fatal(err)
	}
	cert, key := pki.ca.Issue(t, sshpoptest.Host{Principals: []string{"web-1.example.org", "web-1", "bad principal\x00"}})
	spki := agentKey(t)
	res, err := p.Attest(context.Background(), sshpopPayload(t, cert, key, nil, td, spki), spki, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	checkNodeSelectors(t, res.Selectors, []string{
		"sshpop:ca:fingerprint:" + ssh.FingerprintSHA256(pki.ca.Signer.PublicKey()),
		"sshpop:principal:web-1",
		"sshpop:principal:web-1.example.org",
	})
}

// checkNodeSelectors checks an attestor's node selectors are want (in any
// order), each one a selector a node-alias entry can be written with.
func checkNodeSelectors(t *testing.T, got []selector.Selector, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	if got := selector.Strings(got); !slices.Equal(got, want) {
		t.Fatalf("selectors\n%q\nwant\n%q", got, want)
	}
	for _, s := range want {
		if _, err := selector.Parse(s); err != nil {
			t.Errorf("entry selector %s: %v", s, err)
		}
	}
}

func TestSSHPoPAgentPathTemplate(t *testing.T) {
	pki := newSSHPoPPKI(t)
	tests := []struct {
		name, template, domain string
		principals             []string
		want, wantErr          string
	}{
		{name: "default", want: "spiffe://example.org/agent/sshpop/<fp>"},
		{name: "hostname in the canonical domain", template: "{{ .PluginName }}/{{ .Hostname }}", domain: "example.org",
			principals: []string{"web-1.example.org"}, want: "spiffe://example.org/agent/sshpop/web-1"},
		{name: "hostname without a canonical domain", template: "/host/{{ .Hostname }}",
			principals: []string{"web-1.example.org", "web-1"}, want: "spiffe://example.org/agent/host/web-1.example.org"},
		{name: "SPIRE's example: first principal", template: "static/{{ index .ValidPrincipals 0 }}",
			principals: []string{"web-1.example.org"}, want: "spiffe://example.org/agent/static/web-1.example.org"},
		{name: "key ID and trust domain", template: "{{ .TrustDomain }}/{{ .KeyId }}", want: "spiffe://example.org/agent/example.org/web-1-key"},
		{name: "rendered ID invalid", template: "h/{{ .Hostname }}", principals: []string{"web 1"}, wantErr: `agent_path_template rendered "h/web 1" for host certificate "web-1-key"`},
		{name: "climbs out", template: "{{ .Hostname }}", principals: []string{".."}, wantErr: "not a valid agent ID path"},
		{name: "x509pop's namespace", template: "{{ .Hostname }}", principals: []string{"x509pop/0123"},
			wantErr: "IDs under spiffe://example.org/agent/x509pop/ belong to x509pop agents, never to sshpop ones"},
		{name: "k8s_psat's namespace", template: "{{ .Hostname }}", principals: []string{"k8s_psat/prod/uid"},
			wantErr: "IDs under spiffe://example.org/agent/k8s_psat/ belong to k8s_psat agents"},
		{name: "join_token's namespace", template: "/{{ .Hostname }}", principals: []string{"join_token/0123"},
			wantErr: "IDs under spiffe://example.org/agent/join_token/ belong to join_token agents"},
		{name: "unknown field", template: "{{ .Subject }}", wantErr: "unknown field .Subject; the fields are "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewSSHPoP(td, SSHPoPConfig{CertAuthoritiesPath: pki.caPath, CanonicalDomain: tc.domain, AgentPathTemplate: tc.template})
			if err != nil {
				t.Fatal(err)
			}
			cert, key := pki.ca.Issue(t, sshpoptest.Host{Principals: tc.principals, KeyID: "web-1-key"})
			spki := agentKey(t)
			res, err := p.Attest(context.Background(), sshpopPayload(t, cert, key, nil, td, spki), spki, time.Now())
			if tc.wantErr != "" {
				if !errors.Is(err, ErrSSHPoPRefused) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(tc.want, "<fp>", sshpop.Fingerprint(cert)); res.AgentID.String() != want {
				t.Fatalf("agent ID %s, want %s", res.AgentID, want)
			}
		})
	}
}

// x509pop refuses sshpop's namespace as sshpop refuses x509pop's.
func TestX509PoPRefusesSSHPoPNamespace(t *testing.T) {
	if _, err := renderAgentID(mustTemplate(t, "{{ . }}"), td, X509PoPType, "sshpop/abc", ErrX509PoPRefused, "node certificate"); !errors.Is(err, ErrX509PoPRefused) ||
		!strings.Contains(err.Error(), "belong to sshpop agents, never to x509pop ones") {
		t.Fatalf("x509pop agent ID under sshpop/: %v", err)
	}
}

func mustTemplate(t *testing.T, text string) *template.Template {
	t.Helper()
	tmpl, err := parseAgentPathTemplate("test", text)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

// The CA file is read at every attestation: a CA added is trusted, one
// removed no longer, without a restart; cert_authorities stay trusted.
func TestSSHPoPCAFileReread(t *testing.T) {
	pki := newSSHPoPPKI(t)
	inline := sshpoptest.NewCA(t)
	p, err := NewSSHPoP(td, SSHPoPConfig{CertAuthorities: []string{inline.AuthorizedKey()}, CertAuthoritiesPath: pki.caPath})
	if err != nil {
		t.Fatal(err)
	}
	attest := func(ca *sshpoptest.CA) error {
		cert, key := ca.Issue(t, sshpoptest.Host{})
		spki := agentKey(t)
		_, err := p.Attest(context.Background(), sshpopPayload(t, cert, key, nil, td, spki), spki, time.Now())
		return err
	}
	for _, ca := range []*sshpoptest.CA{pki.ca, inline} {
		if err := attest(ca); err != nil {
			t.Fatalf("trusted CA: %v", err)
		}
	}
	if err := attest(pki.other); !errors.Is(err, ErrSSHPoPRefused) {
		t.Fatalf("other CA before it is added: %v, want refused", err)
	}
	writeCAs(t, pki.caPath, pki.other)
	if err := attest(pki.other); err != nil {
		t.Fatalf("other CA once in the file: %v", err)
	}
	if err := attest(pki.ca); !errors.Is(err, ErrSSHPoPRefused) {
		t.Fatalf("CA removed from the file: %v, want refused", err)
	}
	if err := attest(inline); err != nil {
		t.Fatalf("cert_authorities CA after the file changed: %v", err)
	}
	// A broken file is an error about the file (the agent retries), not a
	// refusal of the host.
	for content, want := range map[string]string{
		"# all CAs removed\n": "holds no CA public key",
		pki.other.AuthorizedKey() + "ssh-ed25519 AAAA-truncated\n": "ssh-ca.pub line 2: not an authorized_keys line",
		"# revoked\n@revoked " + pki.other.AuthorizedKey():         "ssh-ca.pub line 2: is a known_hosts @revoked line",
	} {
		if err := os.WriteFile(pki.caPath, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := attest(pki.other); err == nil || errors.Is(err, ErrSSHPoPRefused) || !strings.Contains(err.Error(), want) {
			t.Fatalf("CA file %q: %v, want an error saying %q (not a refusal)", content, err, want)
		}
	}
}

func TestNewSSHPoP(t *testing.T) {
	pki := newSSHPoPPKI(t)
	cert, _ := pki.ca.Issue(t, sshpoptest.Host{})
	tests := []struct {
		name    string
		cfg     SSHPoPConfig
		wantErr string
	}{
		{name: "inline CAs only", cfg: SSHPoPConfig{CertAuthorities: []string{pki.ca.AuthorizedKey(), "cert-authority " + pki.other.AuthorizedKey()}}},
		{name: "file only", cfg: SSHPoPConfig{CertAuthoritiesPath: pki.caPath, CanonicalDomain: "example.org"}},
		{name: "no CA", cfg: SSHPoPConfig{}, wantErr: "sshpop: cert_authorities or cert_authorities_path is required"},
		{name: "bad inline CA", cfg: SSHPoPConfig{CertAuthorities: []string{pki.ca.AuthorizedKey(), "ssh-ed25519 nope"}},
			wantErr: "sshpop: cert_authorities[1]: not an authorized_keys line"},
		{name: "two keys in one entry", cfg: SSHPoPConfig{CertAuthorities: []string{pki.ca.AuthorizedKey() + pki.other.AuthorizedKey()}},
			wantErr: "sshpop: cert_authorities[0]: holds more than one key"},
		{name: "a certificate as CA", cfg: SSHPoPConfig{CertAuthorities: []string{string(ssh.MarshalAuthorizedKey(cert))}},
			wantErr: "sshpop: cert_authorities[0]: is a certificate, not a CA's public key"},
		// An option would narrow the CA's trust in OpenSSH (principals=,
		// from=, expiry-time=); ignoring it would widen it, so only
		// cert-authority is taken. known_hosts markers are not options:
		// @revoked names a key never to trust.
		{name: "principals option", cfg: SSHPoPConfig{CertAuthorities: []string{`cert-authority,principals="web-1" ` + pki.ca.AuthorizedKey()}},
			wantErr: `sshpop: cert_authorities[0]: option principals="web-1" is not supported`},
		{name: "from option", cfg: SSHPoPConfig{CertAuthorities: []string{`from="10.0.0.0/8" ` + pki.ca.AuthorizedKey()}},
			wantErr: `option from="10.0.0.0/8" is not supported`},
		{name: "known_hosts @revoked", cfg: SSHPoPConfig{CertAuthorities: []string{"@revoked " + pki.ca.AuthorizedKey()}},
			wantErr: "a known_hosts @revoked line"},
		{name: "known_hosts @cert-authority with a pattern", cfg: SSHPoPConfig{CertAuthorities: []string{"@cert-authority *.example.org " + pki.ca.AuthorizedKey()}},
			wantErr: "a known_hosts @cert-authority line"},
		{name: "a line that is no key before the key", cfg: SSHPoPConfig{CertAuthorities: []string{"not a key\n" + pki.ca.AuthorizedKey()}},
			wantErr: "holds more than one key"},
		{name: "DSA CA (SHA-1)", cfg: SSHPoPConfig{CertAuthorities: []string{dsaAuthorizedKey(t)}},
			wantErr: "ssh-dss CA keys sign with SHA-1"},
		{name: "cert-authority in capitals, a comment line", cfg: SSHPoPConfig{CertAuthorities: []string{"# the fleet CA\nCERT-AUTHORITY " + pki.ca.AuthorizedKey()}}},
		{name: "missing file", cfg: SSHPoPConfig{CertAuthoritiesPath: filepath.Join(t.TempDir(), "missing.pub")}, wantErr: "missing.pub"},
		{name: "canonical domain with a dot", cfg: SSHPoPConfig{CertAuthoritiesPath: pki.caPath, CanonicalDomain: ".example.org"},
			wantErr: `sshpop: canonical_domain ".example.org"`},
		{name: "bad template", cfg: SSHPoPConfig{CertAuthoritiesPath: pki.caPath, AgentPathTemplate: "{{ .Fingerprint"},
			wantErr: "sshpop: agent_path_template"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSSHPoP(td, tc.cfg)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseSSHPoPPayload(t *testing.T) {
	pki := newSSHPoPPKI(t)
	cert, key := pki.ca.Issue(t, sshpoptest.Host{})
	sig, err := sshpop.Sign(key, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	certB64, sigB64 := b64(cert.Marshal()), b64(sshpop.MarshalSignature(sig))
	tests := []struct{ name, payload, want string }{
		{"not JSON", "token", "invalid character"},
		{"no certificate", `{"signature":"` + sigB64 + `"}`, "certificate is empty"},
		{"no signature", `{"certificate":"` + certB64 + `"}`, "signature is empty"},
		{"not a key", `{"certificate":"AAAA","signature":"` + sigB64 + `"}`, "certificate: ssh:"},
		{"a plain key", `{"certificate":"` + b64(key.PublicKey().Marshal()) + `","signature":"` + sigB64 + `"}`, "a plain ecdsa-sha2-nistp256 public key, not a certificate"},
		{"signature not SSH", `{"certificate":"` + certB64 + `","signature":"c2ln"}`, "signature: ssh:"},
		{"too big", `{"certificate":"` + strings.Repeat("A", 40<<10) + `"}`, "the limit is 32768"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseSSHPoPPayload([]byte(tc.payload))
			if !errors.Is(err, ErrSSHPoPMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want malformed saying %q", err, tc.want)
			}
		})
	}
}

func FuzzSSHPoPPayload(f *testing.F) {
	ca := sshpoptest.NewCA(f)
	cert, key := ca.Issue(f, sshpoptest.Host{})
	f.Add(sshpopPayload(f, cert, key, nil, td, []byte("agent key")))
	f.Add([]byte(`{"certificate":"","signature":""}`))
	f.Add([]byte(`{"certificate":"AAAA","signature":"c2ln"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		cert, sig, err := ParseSSHPoPPayload(payload)
		if err != nil {
			if !errors.Is(err, ErrSSHPoPMalformed) {
				t.Fatalf("error %v is not ErrSSHPoPMalformed", err)
			}
			return
		}
		if cert == nil || sig == nil || sig.Format == "" || len(sig.Blob) == 0 {
			t.Fatalf("accepted %q: certificate %v, signature %v", payload, cert, sig)
		}
	})
}

// dsaAuthorizedKey is a DSA public key in authorized_keys format.
func dsaAuthorizedKey(t *testing.T) string {
	t.Helper()
	var k dsa.PrivateKey
	if err := dsa.GenerateParameters(&k.Parameters, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if err := dsa.GenerateKey(&k, rand.Reader); err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(pub))
}
