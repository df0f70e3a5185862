package x509pop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Type is the attestation type (and node selector type) of x509pop.
const Type = "x509pop"

// minRSABits is the smallest RSA node key accepted.
const minRSABits = 2048

// Payload is what the agent sends: the node's certificate chain (DER, leaf
// first, then intermediates; never needed: the root) and the node key's
// signature over Message.
type Payload struct {
	Chain     [][]byte `json:"chain"`
	Signature []byte   `json:"signature"`
}

// Message is what the node key signs: a domain-separation prefix, the trust
// domain and the DER SubjectPublicKeyInfo of the agent key the server is
// asked to certify (the CSR's).
//
// No challenge round trip is needed: the server certifies only the agent
// key the node key signed, so a payload replayed by whoever saw it (a
// rogue server during an insecure bootstrap, a log) yields an SVID for a
// key the replayer does not hold; and the trust domain in the message
// keeps a payload for one trust domain from attesting in another that
// trusts the same node CA. The prefix keeps the signature from being
// mistaken for one over any other protocol's data.
func Message(td spiffeid.TrustDomain, agentKey []byte) []byte {
	const prefix = "signet x509pop v1\x00"
	msg := make([]byte, 0, len(prefix)+len(td.Name())+1+len(agentKey))
	msg = append(msg, prefix...)
	msg = append(msg, td.Name()...)
	msg = append(msg, 0)
	return append(msg, agentKey...)
}

// Sign signs msg with a node key: ECDSA (ASN.1) and RSA (PKCS #1 v1.5)
// over its SHA-256, Ed25519 over msg itself.
func Sign(key crypto.Signer, msg []byte) ([]byte, error) {
	if err := CheckPublicKey(key.Public()); err != nil {
		return nil, err
	}
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	}
	digest := sha256.Sum256(msg)
	return key.Sign(rand.Reader, digest[:], crypto.SHA256)
}

// Verify checks Sign's signature sig of msg with the node's public key.
func Verify(pub crypto.PublicKey, msg, sig []byte) error {
	if err := CheckPublicKey(pub); err != nil {
		return err
	}
	digest := sha256.Sum256(msg)
	ok := false
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest[:], sig)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(k, msg, sig)
	}
	if !ok {
		return errors.New("signature does not verify with the certificate's key")
	}
	return nil
}

// CheckPublicKey refuses node keys that Sign and Verify do not handle.
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if c := k.Curve; c != elliptic.P256() && c != elliptic.P384() && c != elliptic.P521() {
			return fmt.Errorf("ECDSA curve %s is not supported (want P-256, P-384 or P-521)", c.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits is too short (want at least %d)", k.N.BitLen(), minRSABits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%T keys are not supported (want ECDSA, RSA or Ed25519)", pub)
	}
	return nil
}

// Fingerprint is the hex SHA-1 of a certificate's DER, as in SPIRE's agent
// IDs and ca:fingerprint selectors.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha1.Sum(cert.Raw)
	return hex.EncodeToString(sum[:])
}
