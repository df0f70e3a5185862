package sshpop

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/crypto/ssh"

	"github.com/signetid/signet/server/api/x509pop"
)

// Type is the attestation type (and node selector type) of sshpop.
const Type = "sshpop"

// Payload is what the agent sends: the host certificate in the SSH wire
// format (what follows the key type in a -cert.pub file, base64-decoded)
// and the host key's signature over Message, also in the SSH wire format
// (RFC 4253 section 6.6: format name, then blob).
type Payload struct {
	Certificate []byte `json:"certificate"`
	Signature   []byte `json:"signature"`
}

// Message is what the host key signs: a domain-separation prefix, the
// trust domain and the DER SubjectPublicKeyInfo of the agent key the
// server is asked to certify (the CSR's). It binds the proof to that key
// and trust domain as x509pop.Message does, for the same reasons; the
// prefix differs, so a signature made for one protocol is never taken for
// the other's.
func Message(td spiffeid.TrustDomain, agentKey []byte) []byte {
	const prefix = "signet sshpop v1\x00"
	msg := make([]byte, 0, len(prefix)+len(td.Name())+1+len(agentKey))
	msg = append(msg, prefix...)
	msg = append(msg, td.Name()...)
	msg = append(msg, 0)
	return append(msg, agentKey...)
}

// signatureFormats are the signature algorithms accepted for each host key
// type: for RSA the SHA-2 ones only (never ssh-rsa, which is SHA-1).
var signatureFormats = map[string][]string{
	ssh.KeyAlgoRSA:      {ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256},
	ssh.KeyAlgoECDSA256: {ssh.KeyAlgoECDSA256},
	ssh.KeyAlgoECDSA384: {ssh.KeyAlgoECDSA384},
	ssh.KeyAlgoECDSA521: {ssh.KeyAlgoECDSA521},
	ssh.KeyAlgoED25519:  {ssh.KeyAlgoED25519},
}

// Sign signs msg with a host key: RSA with rsa-sha2-512 (OpenSSH's
// choice), ECDSA and Ed25519 with their one algorithm.
func Sign(key ssh.Signer, msg []byte) (*ssh.Signature, error) {
	if err := CheckPublicKey(key.PublicKey()); err != nil {
		return nil, err
	}
	if key.PublicKey().Type() != ssh.KeyAlgoRSA {
		return key.Sign(rand.Reader, msg)
	}
	as, ok := key.(ssh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("this RSA host key cannot sign with rsa-sha2-512")
	}
	return as.SignWithAlgorithm(rand.Reader, msg, ssh.KeyAlgoRSASHA512)
}

// Verify checks Sign's signature sig of msg with the host's public key.
func Verify(pub ssh.PublicKey, msg []byte, sig *ssh.Signature) error {
	if err := CheckPublicKey(pub); err != nil {
		return err
	}
	if !slices.Contains(signatureFormats[pub.Type()], sig.Format) {
		return fmt.Errorf("a %s signature from a %s key is not accepted (want %v)", clip(sig.Format), pub.Type(), signatureFormats[pub.Type()])
	}
	if err := pub.Verify(msg, sig); err != nil {
		return errors.New("signature does not verify with the certificate's key")
	}
	return nil
}

// CheckPublicKey refuses host keys that Sign and Verify do not handle:
// DSA, security keys (sk-*), and the RSA and ECDSA keys x509pop refuses.
func CheckPublicKey(pub ssh.PublicKey) error {
	if _, ok := signatureFormats[pub.Type()]; !ok {
		return fmt.Errorf("%s keys are not supported (want RSA, ECDSA or Ed25519)", clip(pub.Type()))
	}
	cpk, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return fmt.Errorf("%s key has no crypto public key", pub.Type())
	}
	return x509pop.CheckPublicKey(cpk.CryptoPublicKey())
}

// MarshalSignature is sig in the SSH wire format, as Payload carries it.
func MarshalSignature(sig *ssh.Signature) []byte { return ssh.Marshal(sig) }

// ParseSignature reads MarshalSignature's output.
func ParseSignature(b []byte) (*ssh.Signature, error) {
	var sig ssh.Signature
	if err := ssh.Unmarshal(b, &sig); err != nil {
		return nil, err
	}
	if sig.Format == "" || len(sig.Blob) == 0 {
		return nil, errors.New("signature has no format or no blob")
	}
	return &sig, nil
}

// Fingerprint is SPIRE's sshpop fingerprint of a certificate: the
// unpadded URL-safe base64 of the SHA-256 of its SSH wire form. It names
// the agent by default and fits in a SPIFFE ID path segment.
func Fingerprint(cert *ssh.Certificate) string {
	sum := sha256.Sum256(cert.Marshal())
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// clip keeps a type name an attacker chose short in messages.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q...", s[:max])
}
