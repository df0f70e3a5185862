package nodeattest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/api/x509pop"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
)

// x509popPKI is a node CA (root -> intermediate) whose bundle (the root
// alone) is on disk, and another CA the server does not trust.
type x509popPKI struct {
	root, issuing, other *x509poptest.CA
	bundlePath           string
}

func newX509PoPPKI(t *testing.T) *x509popPKI {
	t.Helper()
	root := x509poptest.NewRoot(t, "Example Node Root")
	p := &x509popPKI{root: root, issuing: root.Intermediate(t, "Example Node Issuing"),
		other: x509poptest.NewRoot(t, "Other Root"), bundlePath: filepath.Join(t.TempDir(), "node-ca.pem")}
	x509poptest.WritePEM(t, p.bundlePath, root.Cert)
	return p
}

// agentKey is the SubjectPublicKeyInfo of a fresh agent key, as in a CSR.
func agentKey(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return spki
}

// x509popPayload is what an agent sends: chain and the node key's
// signature over the message for (signTD, signedKey).
func x509popPayload(t testing.TB, chain []*x509.Certificate, key crypto.Signer, signTD spiffeid.TrustDomain, signedKey []byte) []byte {
	t.Helper()
	sig, err := x509pop.Sign(key, x509pop.Message(signTD, signedKey))
	if err != nil {
		t.Fatal(err)
	}
	p := x509pop.Payload{Signature: sig}
	for _, c := range chain {
		p.Chain = append(p.Chain, c.Raw)
	}
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestX509PoPAttest(t *testing.T) {
	pki := newX509PoPPKI(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	otherTD := spiffeid.RequireTrustDomainFromString("other.org")
	type attempt struct {
		chain     []*x509.Certificate
		key       crypto.Signer
		signTD    spiffeid.TrustDomain
		signedKey []byte // nil: the presented agent key
	}
	// issue makes a leaf under the issuing CA and its usual chain.
	issue := func(l x509poptest.Leaf) attempt {
		cert, key := pki.issuing.Issue(t, l)
		return attempt{chain: append([]*x509.Certificate{cert}, pki.issuing.Chain...), key: key, signTD: td}
	}
	tests := []struct {
		name    string
		in      attempt
		wantErr error
		reason  string
	}{
		{name: "ECDSA P-256", in: issue(x509poptest.Leaf{CommonName: "node-1"})},
		{name: "ECDSA P-384", in: issue(x509poptest.Leaf{CommonName: "node-1", Key: p384})},
		{name: "RSA", in: issue(x509poptest.Leaf{CommonName: "node-1", Key: rsaKey})},
		{name: "Ed25519", in: issue(x509poptest.Leaf{CommonName: "node-1", Key: edKey})},
		{name: "no EKU", in: issue(x509poptest.Leaf{ExtKeyUsage: []x509.ExtKeyUsage{}})},
		{name: "any EKU", in: issue(x509poptest.Leaf{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})},
		{name: "expired leaf", in: issue(x509poptest.Leaf{NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Minute)}),
			wantErr: ErrX509PoPRefused, reason: "expired"},
		{name: "leaf not yet valid", in: issue(x509poptest.Leaf{NotBefore: now.Add(time.Hour), NotAfter: now.Add(2 * time.Hour)}),
			wantErr: ErrX509PoPRefused, reason: "expired or is not yet valid"},
		{name: "leaf from another CA", in: func() attempt {
			cert, key := pki.other.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
			return attempt{chain: []*x509.Certificate{cert}, key: key, signTD: td}
		}(), wantErr: ErrX509PoPRefused, reason: "unknown authority"},
		{name: "intermediate missing", in: func() attempt {
			a := issue(x509poptest.Leaf{})
			a.chain = a.chain[:1]
			return a
		}(), wantErr: ErrX509PoPRefused, reason: "unknown authority"},
		{name: "serverAuth only", in: issue(x509poptest.Leaf{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}),
			wantErr: ErrX509PoPRefused, reason: "incompatible key usage"},
		{name: "key not for signatures", in: issue(x509poptest.Leaf{KeyUsage: x509.KeyUsageKeyEncipherment}),
			wantErr: ErrX509PoPRefused, reason: "digitalSignature"},
		{name: "signature over another agent key (replayed payload, other CSR)", in: func() attempt {
			a := issue(x509poptest.Leaf{})
			a.signedKey = agentKey(t)
			return a
		}(), wantErr: ErrX509PoPRefused, reason: "must sign this agent key"},
		{name: "signature for another trust domain", in: func() attempt {
			a := issue(x509poptest.Leaf{})
			a.signTD = otherTD
			return a
		}(), wantErr: ErrX509PoPRefused, reason: "for trust domain example.org"},
		{name: "signed by another key than the certificate's", in: func() attempt {
			a := issue(x509poptest.Leaf{})
			_, a.key = pki.issuing.Issue(t, x509poptest.Leaf{})
			return a
		}(), wantErr: ErrX509PoPRefused, reason: "signature does not verify"},
	}
	p, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			presented := agentKey(t)
			signed := tc.in.signedKey
			if signed == nil {
				signed = presented
			}
			res, err := p.Attest(context.Background(), x509popPayload(t, tc.in.chain, tc.in.key, tc.in.signTD, signed), presented, now)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("err = %v, want %v saying %q", err, tc.wantErr, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := "spiffe://example.org/agent/x509pop/" + x509pop.Fingerprint(tc.in.chain[0])
			if res.AgentID.String() != want || res.Type != X509PoPType || !res.CanReattest {
				t.Fatalf("agent %s (%s, can reattest %v), want %s, reattestable", res.AgentID, res.Type, res.CanReattest, want)
			}
		})
	}
}

func TestX509PoPSelectors(t *testing.T) {
	pki := newX509PoPPKI(t)
	cert, key := pki.issuing.Issue(t, x509poptest.Leaf{CommonName: "web-1.example.org", Serial: 0x0a1b2c,
		URIs: []string{"x509pop://example.org/datacenter/us-east-1", "x509pop://other.org/zone/a", "spiffe://example.org/x", "x509pop://example.org/novalue"}})
	p, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath}})
	if err != nil {
		t.Fatal(err)
	}
	spki := agentKey(t)
	res, err := p.Attest(context.Background(), x509popPayload(t, []*x509.Certificate{cert, pki.issuing.Cert}, key, td, spki), spki, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	checkNodeSelectors(t, res.Selectors, []string{
		"x509pop:ca:fingerprint:" + x509pop.Fingerprint(pki.issuing.Cert),
		"x509pop:ca:fingerprint:" + x509pop.Fingerprint(pki.root.Cert),
		"x509pop:san:datacenter:us-east-1",
		"x509pop:serialnumber:0a1b2c",
		"x509pop:subject:cn:web-1.example.org",
	})
}

func TestX509PoPAgentPathTemplate(t *testing.T) {
	pki := newX509PoPPKI(t)
	tests := []struct {
		name, template, cn string
		want, wantErr      string
	}{
		{name: "default", cn: "node-1", want: "spiffe://example.org/agent/x509pop/<fp>"},
		{name: "common name", template: "cn/{{ .Subject.CommonName }}", cn: "node-1", want: "spiffe://example.org/agent/cn/node-1"},
		{name: "SPIRE's leading slash", template: "/{{ .PluginName }}/{{ .TrustDomain }}/{{ .SerialNumberHex }}", cn: "node-1",
			want: "spiffe://example.org/agent/x509pop/example.org/2a"},
		{name: "SAN selector", template: "dc/{{ .URISanSelectors.datacenter }}/{{ .Fingerprint }}", cn: "node-1",
			want: "spiffe://example.org/agent/dc/us-east-1/<fp>"},
		{name: "rendered ID invalid", template: "cn/{{ .Subject.CommonName }}", cn: "node 1",
			wantErr: `agent_path_template rendered "cn/node 1"`},
		{name: "rendered ID climbs out", template: "{{ .Subject.CommonName }}", cn: "../signet",
			wantErr: "not a valid agent ID path"},
		{name: "empty path", template: "{{ .Subject.CommonName }}", cn: "",
			wantErr: "not a valid agent ID path"},
		{name: "k8s_psat's namespace", template: "{{ .Subject.CommonName }}", cn: "k8s_psat/prod/node-uid",
			wantErr: "IDs under spiffe://example.org/agent/k8s_psat/ belong to k8s_psat agents"},
		{name: "join_token's namespace", template: "/{{ .Subject.CommonName }}", cn: "join_token/0123456789abcdef",
			wantErr: "IDs under spiffe://example.org/agent/join_token/ belong to join_token agents"},
		{name: "a namespace's name deeper down", template: "cn/{{ .Subject.CommonName }}", cn: "k8s_psat",
			want: "spiffe://example.org/agent/cn/k8s_psat"},
		{name: "unknown field", template: "{{ .Foo }}", cn: "node-1", wantErr: "unknown field .Foo; the fields are "},
		{name: "missing SAN key", template: "{{ .URISanSelectors.rack }}", cn: "node-1", wantErr: `map has no entry for key "rack"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath}, AgentPathTemplate: tc.template})
			if err != nil {
				t.Fatal(err)
			}
			cert, key := pki.issuing.Issue(t, x509poptest.Leaf{CommonName: tc.cn, Serial: 42,
				URIs: []string{"x509pop://example.org/datacenter/us-east-1"}})
			spki := agentKey(t)
			res, err := p.Attest(context.Background(), x509popPayload(t, []*x509.Certificate{cert, pki.issuing.Cert}, key, td, spki), spki, time.Now())
			if tc.wantErr != "" {
				if !errors.Is(err, ErrX509PoPRefused) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a refusal saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.ReplaceAll(tc.want, "<fp>", x509pop.Fingerprint(cert)); res.AgentID.String() != want {
				t.Fatalf("agent ID %s, want %s", res.AgentID, want)
			}
		})
	}
	if _, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath}, AgentPathTemplate: "{{ .Fingerprint"}); err == nil || !strings.Contains(err.Error(), "agent_path_template") {
		t.Fatalf("unparsable template: %v", err)
	}
}

// The bundle is read at every attestation: a renewed node CA is trusted,
// and the old one no longer, without a restart.
func TestX509PoPBundleReread(t *testing.T) {
	pki := newX509PoPPKI(t)
	p, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath}})
	if err != nil {
		t.Fatal(err)
	}
	attest := func(ca *x509poptest.CA) error {
		cert, key := ca.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
		chain := append([]*x509.Certificate{cert}, ca.Chain...)
		spki := agentKey(t)
		_, err := p.Attest(context.Background(), x509popPayload(t, chain, key, td, spki), spki, time.Now())
		return err
	}
	if err := attest(pki.other); !errors.Is(err, ErrX509PoPRefused) {
		t.Fatalf("other CA before the renewal: %v, want refused", err)
	}
	x509poptest.WritePEM(t, pki.bundlePath, pki.other.Cert)
	if err := attest(pki.other); err != nil {
		t.Fatalf("other CA once in the bundle: %v", err)
	}
	if err := attest(pki.issuing); !errors.Is(err, ErrX509PoPRefused) {
		t.Fatalf("old CA after it left the bundle: %v, want refused", err)
	}
	x509poptest.WritePEM(t, pki.bundlePath)
	if err := attest(pki.other); err == nil || errors.Is(err, ErrX509PoPRefused) || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Fatalf("empty bundle: %v, want an error about the bundle (not a refusal of the node)", err)
	}
	if _, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{filepath.Join(t.TempDir(), "missing.pem")}}); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing bundle at start: %v", err)
	}
}

func TestParseX509PoPPayload(t *testing.T) {
	pki := newX509PoPPKI(t)
	cert, _ := pki.issuing.Issue(t, x509poptest.Leaf{})
	tests := []struct{ name, payload, want string }{
		{"not JSON", "token", "invalid character"},
		{"empty chain", `{"chain":[],"signature":"c2ln"}`, "chain is empty"},
		{"no signature", `{"chain":["` + b64(cert.Raw) + `"]}`, "signature is empty"},
		{"not a certificate", `{"chain":["AAAA"],"signature":"c2ln"}`, "chain certificate 0"},
		{"bad base64", `{"chain":["!"],"signature":"c2ln"}`, "illegal base64"},
		{"chain too long", `{"chain":[` + strings.Repeat(`"AA==",`, 8) + `"AA=="],"signature":"c2ln"}`, "the limit is 8"},
		{"too big", `{"chain":["` + strings.Repeat("A", 70<<10) + `"]}`, "the limit is 65536"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := ParseX509PoPPayload([]byte(tc.payload))
			if !errors.Is(err, ErrX509PoPMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want malformed saying %q", err, tc.want)
			}
		})
	}
}

func b64(b []byte) string {
	out, _ := json.Marshal(b)
	return strings.Trim(string(out), `"`)
}

func FuzzX509PoPPayload(f *testing.F) {
	root := x509poptest.NewRoot(f, "Fuzz Root")
	cert, key := root.Issue(f, x509poptest.Leaf{CommonName: "node-1"})
	f.Add(x509popPayload(f, []*x509.Certificate{cert}, key, td, []byte("agent key")))
	f.Add([]byte(`{"chain":[],"signature":""}`))
	f.Add([]byte(`{"chain":["AAAA"],"signature":"c2ln"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		leaf, intermediates, sig, err := ParseX509PoPPayload(payload)
		if err != nil {
			if !errors.Is(err, ErrX509PoPMalformed) {
				t.Fatalf("error %v is not ErrX509PoPMalformed", err)
			}
			return
		}
		if leaf == nil || len(sig) == 0 || len(intermediates) >= maxX509PoPChain {
			t.Fatalf("accepted %q: leaf %v, %d intermediates, %d-byte signature", payload, leaf, len(intermediates), len(sig))
		}
	})
}

// TestX509PoPSeveralBundles: with ca_bundle_paths, a node certificate
// under any of the bundles attests, and each file must hold a root.
func TestX509PoPSeveralBundles(t *testing.T) {
	pki := newX509PoPPKI(t)
	second := filepath.Join(t.TempDir(), "dc2.pem")
	x509poptest.WritePEM(t, second, pki.other.Cert)
	p, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath, second}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []*x509poptest.CA{pki.issuing, pki.other} {
		cert, key := ca.Issue(t, x509poptest.Leaf{CommonName: "node-1"})
		spki := agentKey(t)
		if _, err := p.Attest(context.Background(), x509popPayload(t, append([]*x509.Certificate{cert}, ca.Chain...), key, td, spki), spki, time.Now()); err != nil {
			t.Errorf("node under %s: %v", ca.Cert.Subject.CommonName, err)
		}
	}
	x509poptest.WritePEM(t, second)
	if _, err := NewX509PoP(td, X509PoPConfig{CABundlePaths: []string{pki.bundlePath, second}}); err == nil || !strings.Contains(err.Error(), second+" holds no PEM certificate") {
		t.Fatalf("an empty second bundle: %v, want an error naming it", err)
	}
	if _, err := NewX509PoP(td, X509PoPConfig{}); err == nil || !strings.Contains(err.Error(), "ca_bundle_paths is required") {
		t.Fatalf("no bundle: %v", err)
	}
}
