package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// UpstreamAuthority signs the trust domain's X.509 CA certificates, so the
// CA is an intermediate of an existing PKI instead of a self-signed root.
// The Manager then publishes the upstream's roots as the trust domain's
// X.509 authorities and sends its CA certificate, and any upstream
// intermediates, in every SVID's chain.
type UpstreamAuthority interface {
	// MintX509CA signs tmpl, a CA certificate for the trust domain, for
	// key's public key; key is there to prove possession (a CSR) to an
	// upstream that asks. It may shorten tmpl's validity to fit its own.
	// It returns the new certificate followed by the upstream
	// intermediates a verifier needs (never a root), and the roots they
	// chain to.
	MintX509CA(ctx context.Context, tmpl *x509.Certificate, key crypto.Signer) (chain, roots []*x509.Certificate, err error)
}

// UpstreamServer is implemented by an UpstreamAuthority that is another
// server of the trust domain (nested servers). Such an upstream may be
// down when this server starts, which then runs on its stored CA and
// retries; and the CAs it signs end with its own rotating CA, which is no
// misconfiguration.
type UpstreamServer interface {
	UpstreamAuthority
	// ServerAddress names the upstream server for logs.
	ServerAddress() string
	// Ready waits, for a bounded time, until the upstream can be called.
	// The first start waits for it; a rotation step, under the CA's
	// lock, does not, and fails soon to be retried.
	Ready(ctx context.Context) error
}

// newUpstreamCA creates a CA key and has up sign its certificate, then
// checks that the SVIDs it will sign verify against the upstream's roots.
func newUpstreamCA(ctx context.Context, up UpstreamAuthority, td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*caKey, error) {
	key, tmpl, err := caTemplate(td, now, ttl)
	if err != nil {
		return nil, err
	}
	chain, roots, err := up.MintX509CA(ctx, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("upstream authority: %w", err)
	}
	if len(chain) == 0 || len(roots) == 0 {
		return nil, errors.New("upstream authority returned no certificate or no roots")
	}
	cert := chain[0]
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("upstream authority signed another key than the CA's")
	}
	if err := checkCACert(td, cert); err != nil {
		return nil, fmt.Errorf("upstream authority's CA certificate: %w", err)
	}
	k, err := newCAKey(cert, key, now)
	if err != nil {
		return nil, err
	}
	k.setUpstream(chain, roots)
	if err := k.checkIssues(td, now); err != nil {
		return nil, err
	}
	return k, nil
}

// caTemplate is a new CA key and the certificate template for it.
func caTemplate(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	skid, err := subjectKeyID(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return key, &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Signet"}, CommonName: "Signet CA"},
		NotBefore:             now.Add(-rootBackdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: td.Name()}},
		SubjectKeyId:          skid,
	}, nil
}

// checkCACert checks what every CA certificate of the trust domain must be.
func checkCACert(td spiffeid.TrustDomain, cert *x509.Certificate) error {
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return errors.New("not a CA (basicConstraints cA is not set)")
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("its key usage lacks keyCertSign")
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != td.IDString() {
		return fmt.Errorf("not for trust domain %q (its URI SANs: %v)", td.Name(), cert.URIs)
	}
	return nil
}

// checkIssues signs a throwaway SVID and verifies it the way TLS peers
// will, once for each extended key usage an SVID carries, so an upstream
// whose path length, name or key-usage constraints forbid SPIFFE IDs of
// this trust domain is refused before any SVID depends on it.
func (k *caKey) checkIssues(td spiffeid.TrustDomain, now time.Time) error {
	probeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate probe key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	id := &url.URL{Scheme: "spiffe", Host: td.Name(), Path: "/signet/probe"}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    k.cert.NotBefore,
		NotAfter:     k.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.cert, &probeKey.PublicKey, k.key)
	if err != nil {
		return fmt.Errorf("sign probe SVID: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse probe SVID: %w", err)
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now}
	for _, r := range k.roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range k.intermediates() {
		opts.Intermediates.AddCert(c)
	}
	for _, eku := range tmpl.ExtKeyUsage {
		opts.KeyUsages = []x509.ExtKeyUsage{eku}
		if _, err := leaf.Verify(opts); err != nil {
			return fmt.Errorf("SVIDs signed under the upstream authority would not verify against its roots: %w", err)
		}
	}
	return nil
}
