// Package gcpiittest stands in for Google in gcp_iit tests: a signer with
// an RSA key and a self-signed certificate that mints instance identity
// tokens as Google does (RS256 JWTs with a kid), a certificates endpoint
// serving its certificate as https://www.googleapis.com/oauth2/v1/certs
// does (a JSON map of kid to PEM certificate, with an Expires header),
// and a fake GCE metadata server on 127.0.0.1 that answers the identity
// request only with the Metadata-Flavor: Google header.
package gcpiittest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/signetid/signet/server/api/gcpiit"
)

// Issuer is the iss of Google's tokens.
const Issuer = "https://accounts.google.com"

// ServiceAccountEmail is the fake instance's service account (its
// "default" one), whose identity the metadata server also serves by name.
const ServiceAccountEmail = "123456789012-compute@developer.gserviceaccount.com"

// Signer mints tokens as Google does.
type Signer struct {
	KeyID string
	Key   *rsa.PrivateKey
	Cert  *x509.Certificate
}

// NewSigner makes a signer with a new RSA-2048 key, a random kid and a
// self-signed certificate valid for a day.
func NewSigner(t testing.TB) *Signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	kid := make([]byte, 20)
	if _, err := rand.Read(kid); err != nil {
		t.Fatal(err)
	}
	return newSigner(t, key, hex.EncodeToString(kid), big.NewInt(time.Now().UnixNano()), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// NewSignerWithKey is a signer with a given key (fuzz targets: generating
// one under the fuzzer's instrumentation takes long) whose kid (the SHA-1
// of the public key, 40 hex digits as Google's) and certificate (a fixed
// serial, valid 2025 to 2195) follow from the key: a fuzz input stored in
// one run names the kid the next run serves, and reaches signature
// verification.
func NewSignerWithKey(t testing.TB, key *rsa.PrivateKey) *Signer {
	t.Helper()
	kid := sha1.Sum(x509.MarshalPKCS1PublicKey(&key.PublicKey))
	return newSigner(t, key, hex.EncodeToString(kid[:]), big.NewInt(0x6763_7069),
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2195, 1, 1, 0, 0, 0, 0, time.UTC))
}

func newSigner(t testing.TB, key *rsa.PrivateKey, kid string, serial *big.Int, notBefore, notAfter time.Time) *Signer {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: kid},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Signer{KeyID: kid, Key: key, Cert: cert}
}

// Instance is a GCE instance, as the token's Compute Engine claims name it.
func Instance(project, zone, name, id string) gcpiit.ComputeEngine {
	return gcpiit.ComputeEngine{ProjectID: project, ProjectNumber: 123456789012, Zone: zone, InstanceID: id, InstanceName: name,
		InstanceCreationTimestamp: 1767322800}
}

// Claims are a token's claims for instance, for audience, issued now and
// valid an hour, as Google's metadata server issues them with format=full.
func Claims(instance gcpiit.ComputeEngine, audience string) gcpiit.Claims {
	now := time.Now()
	return gcpiit.Claims{
		Claims: jwt.Claims{Issuer: Issuer, Subject: "109876543210987654321", Audience: jwt.Audience{audience},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))},
		AuthorizedParty: "109876543210987654321",
		Email:           ServiceAccountEmail,
		Google:          gcpiit.Google{ComputeEngine: instance},
	}
}

// Token signs claims (RS256, with the signer's kid).
func (s *Signer) Token(t testing.TB, claims any) string {
	t.Helper()
	return s.TokenWith(t, jose.RS256, claims)
}

// TokenWith signs claims with alg (RS256, or another to test refusals).
func (s *Signer) TokenWith(t testing.TB, alg jose.SignatureAlgorithm, claims any) string {
	t.Helper()
	tok, err := s.sign(alg, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (s *Signer) sign(alg jose.SignatureAlgorithm, claims any) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: s.Key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), s.KeyID))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(claims).Serialize()
}

// CertsJSON is the certificates document Google serves: kid to PEM.
func CertsJSON(signers ...*Signer) []byte {
	m := map[string]string{}
	for _, s := range signers {
		m[s.KeyID] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Cert.Raw}))
	}
	b, _ := json.Marshal(m)
	return b
}

// Certs is a fake Google certificates endpoint.
type Certs struct {
	*httptest.Server
	// URL is the certificates document's URL (google_certificates_url).
	URL string

	mu      sync.Mutex
	signers []*Signer
	fetches int
}

// NewCerts serves the certificates of signers at /oauth2/v1/certs on
// 127.0.0.1, with an Expires header an hour ahead.
func NewCerts(t testing.TB, signers ...*Signer) *Certs {
	t.Helper()
	c := &Certs{signers: signers}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth2/v1/certs" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		c.mu.Lock()
		c.fetches++
		body := CertsJSON(c.signers...)
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.Header().Set("Expires", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		w.Write(body)
	}))
	t.Cleanup(c.Close)
	c.URL = c.Server.URL + "/oauth2/v1/certs"
	return c
}

// SetSigners replaces the certificates served (Google rotating its keys).
func (c *Certs) SetSigners(signers ...*Signer) {
	c.mu.Lock()
	c.signers = signers
	c.mu.Unlock()
}

// Fetches is how many times the document was fetched.
func (c *Certs) Fetches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches
}

// Metadata is a fake GCE metadata server: it mints a fresh token for
// instance at every identity request, for the audience asked.
type Metadata struct {
	*httptest.Server
	// Host is the server's host:port, as identity_token_host takes it.
	Host string

	signer   *Signer
	instance gcpiit.ComputeEngine
	mu       sync.Mutex
	requests []string
}

// NewMetadata starts a metadata server on 127.0.0.1 for instance, whose
// service accounts are "default" and the compute default account.
func NewMetadata(t testing.TB, signer *Signer, instance gcpiit.ComputeEngine) *Metadata {
	t.Helper()
	m := &Metadata{signer: signer, instance: instance}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	m.Host = strings.TrimPrefix(m.Server.URL, "http://")
	return m
}

// Requests lists the requests served ("GET path?query flavor?").
func (m *Metadata) Requests() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.requests...)
}

func (m *Metadata) serve(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.requests = append(m.requests, fmt.Sprintf("%s %s flavor=%s", r.Method, r.URL.RequestURI(), r.Header.Get(gcpiit.MetadataFlavorHeader)))
	m.mu.Unlock()
	w.Header().Set(gcpiit.MetadataFlavorHeader, gcpiit.MetadataFlavor)
	// The metadata server refuses requests without the header, and those
	// a proxy forwarded.
	if r.Header.Get(gcpiit.MetadataFlavorHeader) != gcpiit.MetadataFlavor || r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
		return
	}
	var sa string
	for _, name := range []string{gcpiit.DefaultServiceAccount, ServiceAccountEmail} {
		if r.URL.EscapedPath() == gcpiit.IdentityPath(name) {
			sa = name
		}
	}
	if sa == "" || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	audience := r.URL.Query().Get("audience")
	if audience == "" {
		http.Error(w, "non-empty audience parameter required", http.StatusBadRequest)
		return
	}
	claims := Claims(m.instance, audience)
	if r.URL.Query().Get("format") != "full" {
		// format=standard (the default): no Compute Engine claims.
		claims.Google = gcpiit.Google{}
	}
	tok, err := m.signer.sign(jose.RS256, claims)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html")
	fmt.Fprint(w, tok)
}
