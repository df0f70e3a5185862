package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// downstreamIssuer is the CA that signs downstream CAs: the prepared one
// once it has been published for preparedSettle and outlives the active
// one, else the active one. Signed by the active CA late in its life, a
// downstream's next CA would end with its current one. The prepared root
// is in every bundle of the nest well before a downstream activates a CA
// under it: the downstream waits 1/12 of its CA's life first.
func (m *Manager) downstreamIssuer(now time.Time) *caKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	active, next := m.x509.active, m.x509.next
	if next == nil || next.tainted || !next.cert.NotAfter.After(active.cert.NotAfter) || now.Before(next.published.Add(preparedSettle)) {
		return active
	}
	return next
}

// preparedSettle is how long a prepared CA is published before it signs
// downstream CAs: a few of the downstreams' bundle polls, so the servers
// sharing this one's store publish its root too.
const preparedSettle = 30 * time.Second

// SignDownstreamCA signs an intermediate CA certificate for a downstream
// server of this trust domain (nested servers), for the public key of the
// PKCS#10 csrDER after checking the CSR's signature: the downstream then
// signs SVIDs of this trust domain that chain to this server's roots. The
// CSR's subject and extensions are ignored. ttl 0 means this server's own
// CA lifetime; NotAfter never passes the signing CA's (the active one, or
// the prepared one once agents hold its root). It returns the new
// certificate followed by the intermediates up to, not including, the root.
func (m *Manager) SignDownstreamCA(ctx context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if ttl < 0 {
		return nil, invalid("ca: negative downstream CA TTL %v", ttl)
	}
	if ttl == 0 {
		ttl = m.caTTL
	}
	now := m.now()
	issuer := m.downstreamIssuer(now)
	notAfter := now.Add(ttl).Truncate(time.Second)
	if notAfter.After(issuer.cert.NotAfter) {
		notAfter = issuer.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, errors.New("ca: the active CA has expired")
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(csr.PublicKey)
	if err != nil {
		return nil, invalid("ca: CSR: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Signet"}, CommonName: "Signet downstream CA"},
		// Backdated like a root, so SVIDs the downstream backdates at once
		// still fall inside it.
		NotBefore:             now.Add(-rootBackdate).Truncate(time.Second),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: m.td.Name()}},
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer.cert, csr.PublicKey, issuer.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign downstream CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse downstream CA certificate: %w", err)
	}
	chain := []*x509.Certificate{cert}
	if issuer.upstream() {
		chain = append(chain, issuer.chain...)
	}
	return chain, nil
}
