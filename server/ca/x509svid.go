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
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrInvalidRequest marks signing errors caused by the request (CSR, ID,
// TTL, DNS names) rather than by the CA, so callers can answer
// InvalidArgument for those and Internal for the rest.
var ErrInvalidRequest = errors.New("invalid signing request")

// invalidRequest is an error the caller caused; its message is unchanged.
type invalidRequest struct{ error }

func (e invalidRequest) Unwrap() []error { return []error{e.error, ErrInvalidRequest} }

func invalid(format string, args ...any) error { return invalidRequest{fmt.Errorf(format, args...)} }

// maxBackdate absorbs clock skew between the server and relying parties.
// The backdate is at most a tenth of the TTL: agents rotate at half of
// NotAfter-NotBefore, so a fixed 10 s on a 10 s SVID would put that half
// at the moment of signing and rotate forever.
const maxBackdate = 10 * time.Second

// backdate is how far before now an SVID with ttl starts, in whole seconds
// as certificates carry them: a fraction would round to a whole second
// anyway and, for TTLs of a few seconds, eat the first half of the life.
func backdate(ttl time.Duration) time.Duration {
	return min(maxBackdate, ttl/10).Truncate(time.Second)
}

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

// leafParts are the fixed pieces of every X509-SVID, DER-encoded once.
type leafParts struct {
	version   []byte // [0] EXPLICIT INTEGER 2 (v3)
	sigAlg    []byte // ecdsa-with-SHA256 AlgorithmIdentifier
	subject   []byte // O=Signet
	fixedExts []byte // key usage, extended key usage, basic constraints
	oidSKID   []byte
	oidSAN    []byte
}

func newLeafParts() (leafParts, error) {
	p := leafParts{version: []byte{0xa0, 0x03, 0x02, 0x01, 0x02}}
	var err error
	if p.sigAlg, err = asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: oidECDSAWithSHA256}); err != nil {
		return p, err
	}
	if p.subject, err = asn1.Marshal(pkix.Name{Organization: []string{"Signet"}}.ToRDNSequence()); err != nil {
		return p, err
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidServerAuth, oidClientAuth})
	if err != nil {
		return p, err
	}
	oid := func(o asn1.ObjectIdentifier) []byte {
		b, e := asn1.Marshal(o)
		if e != nil {
			err = e
		}
		return b
	}
	p.fixedExts = appendExtension(nil, oid(oidExtKeyUsage), true, []byte{0x03, 0x02, 0x07, 0x80}) // digitalSignature only
	p.fixedExts = appendExtension(p.fixedExts, oid(oidExtExtKeyUsage), false, eku)
	p.fixedExts = appendExtension(p.fixedExts, oid(oidExtBasicConstraints), true, []byte{0x30, 0x00}) // cA defaults to false
	p.oidSKID = oid(oidExtSubjectKeyID)
	p.oidSAN = oid(oidExtSubjectAltName)
	return p, err
}

// SignX509SVID signs an X509-SVID for id with the public key of the
// PKCS#10 csrDER, after checking the CSR's signature and key type. The CSR's
// subject and SANs are ignored: the SVID's only URI SAN is id, dnsNames
// become DNS SANs (the first also the CN, when it fits its 64 characters). ttl 0 means the default SVID
// TTL; NotAfter never passes the signing CA's. It returns the chain, leaf
// first, then the CA and upstream intermediates when an upstream authority
// signed the CA (never a root).
func (m *Manager) SignX509SVID(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) ([]*x509.Certificate, error) {
	s, err := m.SignX509SVIDDER(ctx, csrDER, id, ttl, dnsNames)
	if err != nil {
		return nil, err
	}
	return parseChain(s.Chain)
}

// SignedX509 is an X509-SVID as DER, for callers that only send it on.
type SignedX509 struct {
	Chain    [][]byte // leaf first
	NotAfter time.Time
}

// SignX509SVIDDER is SignX509SVID without parsing the new certificate: the
// hot path of the agent API sends the DER on, and a parse would cost a tenth
// of a signing.
func (m *Manager) SignX509SVIDDER(ctx context.Context, csrDER []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) (SignedX509, error) {
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return SignedX509{}, err
	}
	return m.signLeaf(ctx, csr.RawSubjectPublicKeyInfo, id, ttl, dnsNames)
}

// CheckCSR parses a PKCS#10 CSR and checks what signing needs: a key type
// SPIFFE peers accept, and the CSR's signature by that key (proof that the
// requester holds it). Its errors wrap ErrInvalidRequest. Callers that must
// not spend anything on a bad CSR (a join token) check it first.
func CheckCSR(der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, invalid("ca: CSR is empty")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, invalid("ca: parse CSR: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, invalid("ca: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalid("ca: CSR signature: %w", err)
	}
	return csr, nil
}

func parseChain(raw [][]byte) ([]*x509.Certificate, error) {
	certs := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("ca: parse signed certificate: %w", err)
		}
		certs[i] = c
	}
	return certs, nil
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
	signed, err := m.signLeaf(ctx, spki, id, 0, dnsNames)
	if err != nil {
		return nil, err
	}
	certs, err := parseChain(signed.Chain)
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

func (m *Manager) signLeaf(ctx context.Context, spki []byte, id spiffeid.ID, ttl time.Duration, dnsNames []string) (SignedX509, error) {
	if err := ctx.Err(); err != nil {
		return SignedX509{}, err
	}
	if id.IsZero() || !id.MemberOf(m.td) {
		return SignedX509{}, invalid("ca: SPIFFE ID %q is not in trust domain %q", id, m.td)
	}
	if id.Path() == "" {
		return SignedX509{}, invalid("ca: an X509-SVID cannot carry the bare trust domain ID")
	}
	if ttl < 0 {
		return SignedX509{}, invalid("ca: negative TTL %v", ttl)
	}
	if ttl == 0 {
		ttl = m.svidTTL
	}
	issuer := m.activeCA.Load()
	now := m.now()
	// Certificates carry whole seconds. Rounding NotBefore down and NotAfter
	// up keeps the half-life, where agents rotate, after now even for a 1 s
	// TTL; truncating both could put it at now and make agents re-sign in a
	// loop.
	notAfter := now.Add(ttl)
	if r := notAfter.Truncate(time.Second); !r.Equal(notAfter) {
		notAfter = r.Add(time.Second)
	}
	if notAfter.After(issuer.cert.NotAfter) {
		notAfter = issuer.cert.NotAfter
	}
	notBefore := now.Add(-backdate(ttl))
	if !notAfter.After(now) {
		return SignedX509{}, errors.New("ca: the active CA has expired")
	}

	var serial [16]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return SignedX509{}, fmt.Errorf("ca: generate serial: %w", err)
	}
	serial[0] = serial[0]&0x7f | 0x40 // positive, and exactly 16 bytes on the wire
	keyBits, err := spkiKeyBits(spki)
	if err != nil {
		return SignedX509{}, invalid("ca: %w", err)
	}
	skid := sha256.Sum256(keyBits) // RFC 7093 method 1: leftmost 160 bits
	subject := m.leaf.subject
	// X.520 caps a CN at 64 characters; longer names stay SAN-only.
	if len(dnsNames) > 0 && len(dnsNames[0]) <= 64 {
		if subject, err = asn1.Marshal(pkix.Name{Organization: []string{"Signet"}, CommonName: dnsNames[0]}.ToRDNSequence()); err != nil {
			return SignedX509{}, fmt.Errorf("ca: encode subject: %w", err)
		}
	}
	san, err := encodeSAN(id, dnsNames)
	if err != nil {
		return SignedX509{}, invalid("ca: %w", err)
	}

	exts := make([]byte, 0, 256+len(san))
	exts = append(exts, m.leaf.fixedExts...)
	exts = appendExtension(exts, m.leaf.oidSKID, false, appendTLV(make([]byte, 0, 22), tagOctetString, skid[:20]))
	exts = append(exts, issuer.akidExt...)
	exts = appendExtension(exts, m.leaf.oidSAN, false, san)

	body := make([]byte, 0, 512+len(spki)+len(exts))
	body = append(body, m.leaf.version...)
	body = appendTLV(body, tagInteger, serial[:])
	body = append(body, m.leaf.sigAlg...)
	body = append(body, issuer.cert.RawSubject...)
	var validity [2 + 2*17]byte
	v := appendTime(validity[:2:2], notBefore.Truncate(time.Second))
	v = appendTime(v, notAfter)
	v[0], v[1] = tagSequence, byte(len(v)-2)
	body = append(body, v...)
	body = append(body, subject...)
	body = append(body, spki...)
	body = appendHeader(body, tagExplicit3, headerLen(len(exts))+len(exts))
	body = appendTLV(body, tagSequence, exts)
	tbs := appendTLV(make([]byte, 0, len(body)+5), tagSequence, body)

	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, issuer.key, digest[:])
	if err != nil {
		return SignedX509{}, fmt.Errorf("ca: sign certificate: %w", err)
	}
	n := len(tbs) + len(m.leaf.sigAlg) + headerLen(len(sig)+1) + 1 + len(sig)
	der := appendHeader(make([]byte, 0, n+5), tagSequence, n)
	der = append(der, tbs...)
	der = append(der, m.leaf.sigAlg...)
	der = appendHeader(der, tagBitString, len(sig)+1)
	der = append(der, 0) // no unused bits
	der = append(der, sig...)
	chain := make([][]byte, 1, 1+len(issuer.tail))
	chain[0] = der
	return SignedX509{Chain: append(chain, issuer.tail...), NotAfter: notAfter}, nil
}

// encodeSAN encodes GeneralNames: the SPIFFE ID as the one URI, then the
// DNS names.
func encodeSAN(id spiffeid.ID, dnsNames []string) ([]byte, error) {
	uri := id.String()
	n := headerLen(len(uri)) + len(uri)
	for _, d := range dnsNames {
		if !isIA5DNS(d) {
			return nil, fmt.Errorf("invalid DNS name %q", d)
		}
		n += headerLen(len(d)) + len(d)
	}
	b := appendHeader(make([]byte, 0, n+5), tagSequence, n)
	b = append(appendHeader(b, tagURI, len(uri)), uri...)
	for _, d := range dnsNames {
		b = append(appendHeader(b, tagDNSName, len(d)), d...)
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
