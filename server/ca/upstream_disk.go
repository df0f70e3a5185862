package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/signetid/signet/internal/pemkey"
)

// DiskUpstream is an UpstreamAuthority whose CA certificate and key are
// files, like SPIRE's "disk" UpstreamAuthority: an intermediate CA of the
// organisation's PKI, or a cert-manager CA Secret mounted into the pod.
// The files are read again for every CA certificate it signs, so a
// replaced certificate takes effect at the next rotation, with no restart.
type DiskUpstream struct {
	// CertFile holds the upstream CA certificate (PEM), optionally followed
	// by the intermediates between it and its root.
	CertFile string
	// KeyFile holds the upstream CA's private key: PEM, PKCS#8, SEC 1 or
	// PKCS#1.
	KeyFile string
	// BundleFile holds the roots the certificate chains to (PEM). Empty
	// means the certificate is self-signed and is itself the root.
	BundleFile string
	// Clock returns the current time (time.Now when nil).
	Clock func() time.Time
}

// diskCA is a DiskUpstream's files, read and checked.
type diskCA struct {
	key   crypto.Signer
	chain []*x509.Certificate // verified: the upstream CA first, its root last
	roots []*x509.Certificate
}

// MintX509CA signs tmpl with the upstream key, within the upstream chain's
// validity.
func (d *DiskUpstream) MintX509CA(ctx context.Context, tmpl *x509.Certificate, key crypto.Signer) ([]*x509.Certificate, []*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	up, err := d.load()
	if err != nil {
		return nil, nil, err
	}
	t := *tmpl
	for _, c := range up.chain {
		if c.NotBefore.After(t.NotBefore) {
			t.NotBefore = c.NotBefore
		}
		if c.NotAfter.Before(t.NotAfter) {
			t.NotAfter = c.NotAfter
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, up.chain[0], key.Public(), up.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA certificate with %s: %w", d.KeyFile, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	// The root ends the chain; roots travel only in bundles.
	return append([]*x509.Certificate{cert}, up.chain[:len(up.chain)-1]...), up.roots, nil
}

// Check reads the files and checks them as the server does at start,
// without minting anything.
func (d *DiskUpstream) Check() error {
	_, err := d.load()
	return err
}

// load reads the files and checks that they make a CA that chains to the
// roots now.
func (d *DiskUpstream) load() (*diskCA, error) {
	if d.CertFile == "" || d.KeyFile == "" {
		return nil, errors.New("disk upstream authority: cert_file_path and key_file_path are required")
	}
	certs, err := readCerts(d.CertFile)
	if err != nil {
		return nil, fmt.Errorf("upstream CA certificate: %w", err)
	}
	cert := certs[0]
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("upstream CA certificate %s is not a CA (basicConstraints cA is not set)", d.CertFile)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("upstream CA certificate %s may not sign certificates (its key usage lacks keyCertSign)", d.CertFile)
	}
	key, err := pemkey.Read(d.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("upstream CA key: %w", err)
	}
	if !pemkey.Matches(key, cert.PublicKey) {
		return nil, fmt.Errorf("upstream CA key %s does not match certificate %s", d.KeyFile, d.CertFile)
	}
	roots := certs[:1]
	if d.BundleFile != "" {
		if roots, err = readCerts(d.BundleFile); err != nil {
			return nil, fmt.Errorf("upstream bundle: %w", err)
		}
	} else if !isSelfSigned(cert) {
		return nil, fmt.Errorf("upstream CA certificate %s is not self-signed: set bundle_file_path to the roots it chains to", d.CertFile)
	}
	now := time.Now()
	if d.Clock != nil {
		now = d.Clock()
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := cert.Verify(opts)
	if err != nil {
		return nil, fmt.Errorf("upstream CA certificate %s does not chain to a root of %s now: %w", d.CertFile, or(d.BundleFile, "itself"), err)
	}
	return &diskCA{key: key, chain: chains[0], roots: roots}, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
