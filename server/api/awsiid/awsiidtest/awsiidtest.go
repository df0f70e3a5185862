// Package awsiidtest stands in for AWS in aws_iid tests: a signer with an
// RSA-2048 key and a self-signed certificate shaped like AWS's regional
// ones, which signs instance identity documents as EC2 does (PKCS #7
// SignedData, SHA-256, the document attached, served as base64 without PEM
// armour), and a fake instance metadata service on 127.0.0.1 that speaks
// IMDSv2 (the PUT for a session token, GETs that must present it).
package awsiidtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/signetid/signet/server/api/awsiid"
)

// Signer signs instance identity documents as one AWS region's key does.
type Signer struct {
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
}

// NewSigner makes a signer with a new RSA-2048 key and a self-signed
// certificate valid for a year from now (AWS's are valid until 2195).
func NewSigner(t testing.TB) *Signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return newSigner(t, key, serial, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
}

// Fixed certificate fields of NewSignerWithKey.
var (
	fixedSerial    = big.NewInt(0x5167_4e37)
	fixedNotBefore = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	fixedNotAfter  = time.Date(2195, 1, 1, 0, 0, 0, 0, time.UTC)
)

// NewSignerWithKey is a signer with a given key (fuzz targets: generating
// one under the fuzzer's instrumentation takes long) and a certificate
// with a fixed serial and validity (2025 to 2195, as AWS's): the same key
// gives the same certificate in every run, so a fuzz input stored in one
// run is signed by the certificate the next run trusts and reaches
// signature verification.
func NewSignerWithKey(t testing.TB, key *rsa.PrivateKey) *Signer {
	t.Helper()
	return newSigner(t, key, fixedSerial, fixedNotBefore, fixedNotAfter)
}

func newSigner(t testing.TB, key *rsa.PrivateKey, serial *big.Int, notBefore, notAfter time.Time) *Signer {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{Country: []string{"US"}, Province: []string{"Washington State"}, Locality: []string{"Seattle"},
			Organization: []string{"Test Web Services LLC"}},
		NotBefore: notBefore,
		NotAfter:  notAfter,
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{Key: key, Cert: cert}
}

// CertPEM is the signer's certificate in PEM, as the server's
// aws_certificates_path holds it.
func (s *Signer) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw})
}

// WriteCert writes CertPEM to path.
func (s *Signer) WriteCert(t testing.TB, path string) {
	t.Helper()
	if err := os.WriteFile(path, s.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Sign is EC2's rsa2048 signature of doc: a PKCS #7 SignedData with SHA-256
// and the document attached, base64 in 64-character lines, without the
// PEM header and footer.
func (s *Signer) Sign(t testing.TB, doc []byte) string {
	t.Helper()
	sd, err := pkcs7.NewSignedData(doc)
	if err != nil {
		t.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(s.Cert, s.Key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	armoured := string(pem.EncodeToMemory(&pem.Block{Type: "PKCS7", Bytes: der}))
	body := strings.TrimPrefix(armoured, "-----BEGIN PKCS7-----\n")
	return strings.TrimSuffix(body, "\n-----END PKCS7-----\n")
}

// Doc returns an instance identity document for instance id in account,
// in region (zone <region>a), as EC2 formats it (indented JSON with a
// space before each colon).
func Doc(account, region, id string) []byte {
	d := awsiid.Document{
		AccountID:        account,
		InstanceID:       id,
		Region:           region,
		AvailabilityZone: region + "a",
		ImageID:          "ami-0abcdef1234567890",
		InstanceType:     "t3.micro",
		PrivateIP:        "10.0.1.23",
		PendingTime:      "2026-01-02T03:04:05Z",
		Architecture:     "x86_64",
		Version:          "2017-09-30",
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		panic(err)
	}
	return []byte(strings.ReplaceAll(string(b), `": `, `" : `))
}

// Payload is the agent's payload for doc signed by s.
func (s *Signer) Payload(t testing.TB, doc []byte) []byte {
	t.Helper()
	b, err := json.Marshal(awsiid.Payload{Document: string(doc), RSA2048: s.Sign(t, doc)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// IMDS is a fake EC2 instance metadata service serving one document and
// its rsa2048 signature.
type IMDS struct {
	*httptest.Server
	// URL is the endpoint, as ec2_metadata_endpoint takes it (with a
	// trailing slash).
	URL string

	mu       sync.Mutex
	doc, sig string
	tokens   map[string]bool
	// AllowV1 serves GETs without a token (an instance whose
	// HttpTokens is "optional"); TokenStatus, when set, answers the token
	// PUT with it (403: IMDSv2 turned off by a proxy, say).
	allowV1     bool
	tokenStatus int
	// Requests lists "METHOD path token?" for each request, for tests
	// that check the protocol (token shown as "token" or "no-token").
	requests []string
}

// NewIMDS starts an IMDS on 127.0.0.1 serving doc and sig; it requires
// IMDSv2 tokens, as instances launched with HttpTokens "required" do.
func NewIMDS(t testing.TB, doc []byte, sig string) *IMDS {
	t.Helper()
	m := &IMDS{doc: string(doc), sig: sig, tokens: map[string]bool{}}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	m.URL = m.Server.URL + "/"
	return m
}

// AllowV1 makes the service answer GETs without a token too.
func (m *IMDS) AllowV1() {
	m.mu.Lock()
	m.allowV1 = true
	m.mu.Unlock()
}

// FailTokens makes the token PUT answer status.
func (m *IMDS) FailTokens(status int) {
	m.mu.Lock()
	m.tokenStatus = status
	m.mu.Unlock()
}

// Requests returns the requests served so far.
func (m *IMDS) Requests() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.requests...)
}

func (m *IMDS) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tok := r.Header.Get(awsiid.TokenHeader)
	shown := "no-token"
	if tok != "" {
		shown = "token"
	}
	m.requests = append(m.requests, r.Method+" "+r.URL.Path+" "+shown)
	switch r.URL.Path {
	case "/" + awsiid.TokenPath:
		if r.Method != http.MethodPut {
			http.Error(w, "", http.StatusMethodNotAllowed)
			return
		}
		if m.tokenStatus != 0 {
			http.Error(w, "", m.tokenStatus)
			return
		}
		// IMDS wants a TTL of 1 to 21600 seconds.
		ttl, err := strconv.Atoi(r.Header.Get(awsiid.TokenTTLHeader))
		if err != nil || ttl < 1 || ttl > 21600 {
			http.Error(w, "", http.StatusBadRequest)
			return
		}
		token := rand.Text()
		m.tokens[token] = true
		w.Header().Set(awsiid.TokenTTLHeader, strconv.Itoa(ttl))
		fmt.Fprint(w, token)
		return
	case "/" + awsiid.DocumentPath, "/" + awsiid.RSA2048Path:
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "", http.StatusMethodNotAllowed)
		return
	}
	if (tok == "" && !m.allowV1) || (tok != "" && !m.tokens[tok]) {
		http.Error(w, "", http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	if r.URL.Path == "/"+awsiid.DocumentPath {
		fmt.Fprint(w, m.doc)
		return
	}
	fmt.Fprint(w, m.sig)
}
