package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// JWTKeyType is the kind of key JWT-SVIDs are signed with, by SPIRE's
// jwt_key_type names. ES256 (ec-p256) is the default; RSA exists because
// some OIDC relying parties (Microsoft Entra ID workload identity
// federation, some AWS endpoints) accept only RS256.
type JWTKeyType string

const (
	JWTKeyECP256  JWTKeyType = "ec-p256"  // ES256
	JWTKeyECP384  JWTKeyType = "ec-p384"  // ES384
	JWTKeyRSA2048 JWTKeyType = "rsa-2048" // RS256
	JWTKeyRSA4096 JWTKeyType = "rsa-4096" // RS256
)

// JWTKeyTypes lists the accepted values, the default first.
var JWTKeyTypes = []JWTKeyType{JWTKeyECP256, JWTKeyECP384, JWTKeyRSA2048, JWTKeyRSA4096}

// ParseJWTKeyType accepts one of JWTKeyTypes; "" is the default, ec-p256.
func ParseJWTKeyType(s string) (JWTKeyType, error) {
	if s == "" {
		return JWTKeyECP256, nil
	}
	for _, t := range JWTKeyTypes {
		if string(t) == s {
			return t, nil
		}
	}
	names := make([]string, len(JWTKeyTypes))
	for i, t := range JWTKeyTypes {
		names[i] = string(t)
	}
	return "", fmt.Errorf("unknown JWT key type %q: want one of %s", s, strings.Join(names, ", "))
}

// Algorithm is the JWS algorithm keys of type t sign with.
func (t JWTKeyType) Algorithm() jose.SignatureAlgorithm {
	switch t {
	case JWTKeyECP384:
		return jose.ES384
	case JWTKeyRSA2048, JWTKeyRSA4096:
		return jose.RS256
	}
	return jose.ES256
}

func (t JWTKeyType) generate() (crypto.Signer, error) {
	switch t {
	case JWTKeyECP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case JWTKeyECP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case JWTKeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case JWTKeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown JWT key type %q", t)
}

// jwtKeyTypeOf is the type of a loaded key; keys of any supported type load,
// whatever is configured, so a change of jwt_key_type never strands a key
// that signed tokens still in use.
func jwtKeyTypeOf(key crypto.Signer) (JWTKeyType, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return JWTKeyECP256, nil
		case elliptic.P384():
			return JWTKeyECP384, nil
		}
		return "", fmt.Errorf("ECDSA key on curve %s: want P-256 or P-384", k.Curve.Params().Name)
	case *rsa.PrivateKey:
		switch k.N.BitLen() {
		case 2048:
			return JWTKeyRSA2048, nil
		case 4096:
			return JWTKeyRSA4096, nil
		}
		return "", fmt.Errorf("RSA key of %d bits: want 2048 or 4096", k.N.BitLen())
	}
	return "", fmt.Errorf("%T: want an ECDSA or RSA key", key)
}

// retypeJWT applies a changed jwt_key_type at start. A prepared key of
// another type has signed nothing yet: it retires (published until it
// expires, like any old key) so that Rotate, or an operator's prepare,
// makes one of the new type without waiting a whole key lifetime. The
// active key keeps signing until its successor is activated: tokens it
// signed are in use, and relying parties may not have fetched a new key.
func (m *Manager) retypeJWT() error {
	if m.jwt.active == nil {
		return nil // first start: Rotate creates the configured type
	}
	if n := m.jwt.next; n != nil && n.typ != m.jwtType {
		j := m.jwt
		j.retired = append(slices.Clone(j.retired), n)
		j.next = nil
		if err := m.persist(m.x509, m.jwt, m.x509, j); err != nil {
			return fmt.Errorf("retire the prepared %s JWT key: %w", n.typ, err)
		}
		m.jwt = j
		m.refreshLocked()
		m.log.Warn("the prepared JWT key is not of jwt_key_type: it is now old (published until it expires, never used) and its successor is of the configured type",
			"kid", n.kid, "key_type", n.typ, "jwt_key_type", m.jwtType)
	}
	if a := m.jwt.active; a.typ != m.jwtType {
		m.log.Warn("the active JWT key is not of jwt_key_type: it signs until its successor, of the configured type, is activated on schedule; to switch now run signet server localauthority jwt prepare, then activate",
			"kid", a.kid, "key_type", a.typ, "jwt_key_type", m.jwtType, "successor_prepared_at", jwtWindow(a).prepareAt())
	}
	return nil
}
