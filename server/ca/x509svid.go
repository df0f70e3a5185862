package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// svidBackdate absorbs clock skew between the server and relying parties.
const svidBackdate = 10 * time.Second

// ServerPath is the path of the server's own SPIFFE ID.
const ServerPath = "/signet/server"

var (
	oidECDSAWithSHA256     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidExtSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidServerAuth          = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth          = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// The RFC 5280 structures, encoded directly: x509.CreateCertificate would
// re-verify its own signature, which doubles the cost of every SVID.
type tbsCertificate struct {
	Version            int `asn1:"optional,explicit,default:0,tag:0"`
	SerialNumber       *big.Int
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Issuer             asn1.RawValue
	Validity           validity
	Subject            asn1.RawValue
	PublicKey          asn1.RawValue
	Extensions         []pkix.Extension `asn1:"optional,explicit,tag:3"`
}

type validity struct {
	NotBefore, NotAfter time.Time
}

type certificate struct {
	TBSCertificate     asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
}

// leafParts are the fixed pieces of every X509-SVID, encoded once.
type leafParts struct {
	subject          []byte // O=Signet
	basicConstraints []byte // cA false
	keyUsage         []byte // digitalSignature
	extKeyUsage      []byte // serverAuth, clientAuth
}

func newLeafParts() (leafParts, error) {
	var p leafParts
	var err error
	if p.subject, err = asn1.Marshal(pkix.Name{Organization: []string{"Signet"}}.ToRDNSequence()); err != nil {
		return p, err
	}
	p.basicConstraints = []byte{0x30, 0x00}     // SEQUENCE {}: cA defaults to false
	p.keyUsage = []byte{0x03, 0x02, 0x07, 0x80} // BIT STRING, bit 0 = digitalSignature
	if p.extKeyUsage, err = asn1.Marshal([]asn1.ObjectIdentifier{oidServerAuth, oidClientAuth}); err != nil {
		return p, err
	}
	return p, nil
}

// SignX509SVID signs an X509-SVID for id with the public key of the
// PKCS#10 csrDER, after checking the CSR's signature and key type. The CSR's
// subject and SANs are ignored: the SVID's only URI SAN is id, dnsNames
// become DNS SANs (the first also the CN). ttl 0 means the default SVID
// TTL; NotAfter never passes the signing CA's. It returns the chain, leaf
// first (no intermediates).
func (m *Manager) SignX509SVID(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) ([]*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("ca: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: CSR signature: %w", err)
	}
	return m.signLeaf(ctx, csr.RawSubjectPublicKeyInfo, id, ttl, dnsNames)
}

// ServerID is the SPIFFE ID of the server's own TLS certificate.
func (m *Manager) ServerID() spiffeid.ID {
	id, err := spiffeid.FromPath(m.td, ServerPath)
	if err != nil {
		panic(err) // ServerPath is a constant valid path
	}
	return id
}

// SignServerSVID creates a fresh P-256 key and an X509-SVID for ServerID()
// with the default SVID TTL, for the server's agent-facing TLS listener.
// Call it again after Changed() fires so the certificate chains to the
// active CA.
func (m *Manager) SignServerSVID(ctx context.Context, dnsNames []string) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate server key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("ca: encode server key: %w", err)
	}
	id := m.ServerID()
	certs, err := m.signLeaf(ctx, spki, id, 0, dnsNames)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, nil
}

// checkPublicKey admits the key types SPIFFE peers can be expected to use.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("unsupported ECDSA curve %s: want P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small: want at least 2048", k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported key type %T: want ECDSA P-256/P-384, RSA >= 2048 or Ed25519", pub)
	}
	return nil
}

func (m *Manager) signLeaf(ctx context.Context, spki []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) ([]*x509.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if id.IsZero() || !id.MemberOf(m.td) {
		return nil, fmt.Errorf("ca: SPIFFE ID %q is not in trust domain %q", id, m.td)
	}
	if id.Path() == "" {
		return nil, errors.New("ca: an X509-SVID cannot carry the bare trust domain ID")
	}
	if ttl < 0 {
		return nil, fmt.Errorf("ca: negative TTL %v", ttl)
	}
	if ttl == 0 {
		ttl = m.svidTTL
	}
	ca := m.activeCA.Load()
	now := m.now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	notBefore := now.Add(-svidBackdate)
	if !notAfter.After(now) {
		return nil, errors.New("ca: the active CA has expired")
	}

	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	skid, err := subjectKeyIDFromSPKI(spki)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	skidExt, err := asn1.Marshal(skid)
	if err != nil {
		return nil, fmt.Errorf("ca: encode subject key ID: %w", err)
	}
	san, err := encodeSAN(id, dnsNames)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	subject := m.leaf.subject
	if len(dnsNames) > 0 {
		if subject, err = asn1.Marshal(pkix.Name{Organization: []string{"Signet"}, CommonName: dnsNames[0]}.ToRDNSequence()); err != nil {
			return nil, fmt.Errorf("ca: encode subject: %w", err)
		}
	}
	sigAlg := pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}
	tbs := tbsCertificate{
		Version:            2,
		SerialNumber:       serial,
		SignatureAlgorithm: sigAlg,
		Issuer:             asn1.RawValue{FullBytes: ca.cert.RawSubject},
		Validity:           validity{NotBefore: notBefore.UTC().Truncate(time.Second), NotAfter: notAfter.UTC().Truncate(time.Second)},
		Subject:            asn1.RawValue{FullBytes: subject},
		PublicKey:          asn1.RawValue{FullBytes: spki},
		Extensions: []pkix.Extension{
			{Id: oidExtKeyUsage, Critical: true, Value: m.leaf.keyUsage},
			{Id: oidExtExtKeyUsage, Value: m.leaf.extKeyUsage},
			{Id: oidExtBasicConstraints, Critical: true, Value: m.leaf.basicConstraints},
			{Id: oidExtSubjectKeyID, Value: skidExt},
			{Id: oidExtAuthorityKeyID, Value: ca.akid},
			{Id: oidExtSubjectAltName, Value: san},
		},
	}
	tbsDER, err := asn1.Marshal(tbs)
	if err != nil {
		return nil, fmt.Errorf("ca: encode certificate: %w", err)
	}
	digest := sha256.Sum256(tbsDER)
	sig, err := ecdsa.SignASN1(rand.Reader, ca.key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate: %w", err)
	}
	der, err := asn1.Marshal(certificate{
		TBSCertificate:     asn1.RawValue{FullBytes: tbsDER},
		SignatureAlgorithm: sigAlg,
		Signature:          asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, fmt.Errorf("ca: encode certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse signed certificate: %w", err)
	}
	return []*x509.Certificate{leaf}, nil
}

// encodeSAN encodes GeneralNames: the SPIFFE ID as the one URI, then the
// DNS names.
func encodeSAN(id spiffeid.ID, dnsNames []string) ([]byte, error) {
	names := make([]asn1.RawValue, 0, 1+len(dnsNames))
	names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(id.String())})
	for _, n := range dnsNames {
		if !isIA5DNS(n) {
			return nil, fmt.Errorf("invalid DNS name %q", n)
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(n)})
	}
	b, err := asn1.Marshal(names)
	if err != nil {
		return nil, fmt.Errorf("encode subject alt names: %w", err)
	}
	return b, nil
}

// isIA5DNS accepts what x509 would encode as a DNS SAN: non-empty printable
// ASCII without spaces, at most 253 bytes (wildcards allowed).
func isIA5DNS(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
