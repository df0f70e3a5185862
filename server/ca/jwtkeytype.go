package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// JWTKeyType is the kind of key JWT-SVIDs are signed with, by SPIRE's
// jwt_key_type names. ES256 (ec-p256) is the default; RSA exists because
// some OIDC relying parties (Microsoft Entra ID workload identity
// federation) accept only RSA signatures.
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

// Algorithm is the JWS algorithm keys of type t sign with; "" for a type
// this version does not know.
func (t JWTKeyType) Algorithm() jose.SignatureAlgorithm {
	switch t {
	case JWTKeyECP256:
		return jose.ES256
	case JWTKeyECP384:
		return jose.ES384
	case JWTKeyRSA2048, JWTKeyRSA4096:
		return jose.RS256
	}
	return ""
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

// PublicJWTKeyType is the type of the JWT key whose PKIX DER public key is
// der (as Authority.Data holds it); "" for none Signet makes.
func PublicJWTKeyType(der []byte) JWTKeyType {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return ""
	}
	typ, _ := publicKeyType(pub)
	return typ
}

// jwtKeyTypeOf is the type of a loaded key; keys of any supported type load,
// whatever is configured, so a change of jwt_key_type never strands a key
// that signed tokens still in use.
func jwtKeyTypeOf(key crypto.Signer) (JWTKeyType, error) {
	return publicKeyType(key.Public())
}

// publicKeyType is the JWTKeyType of pub, or an error naming what it is.
func publicKeyType(pub crypto.PublicKey) (JWTKeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return JWTKeyECP256, nil
		case elliptic.P384():
			return JWTKeyECP384, nil
		}
		return "", fmt.Errorf("ECDSA key on curve %s: want P-256 or P-384", k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return JWTKeyRSA2048, nil
		case 4096:
			return JWTKeyRSA4096, nil
		}
		return "", fmt.Errorf("RSA key of %d bits: want 2048 or 4096", k.N.BitLen())
	}
	return "", fmt.Errorf("%T: want an ECDSA or RSA key", pub)
}

// retypeJWT is the first Rotate's part in a change of jwt_key_type. A
// prepared key of another type has signed nothing: when a key of the new
// type prepared now still gets its full notice before the active key's
// scheduled end, the prepared one is dropped (a tombstone takes it out of
// the bundle, as a revoked key) and Rotate prepares one of the new type.
// Any later, its successor would sign with a key relying parties have not
// fetched yet: it is kept, and the type changes with the key after it. The
// active key signs until its successor is activated on schedule: tokens it
// signed are in use.
func retypeJWT(s slots[jwtKey], typ JWTKeyType, now time.Time) (slots[jwtKey], *jwtKey) {
	n := s.next
	if s.active == nil || n == nil || n.typ == typ {
		return s, nil
	}
	a := jwtWindow(s.active)
	if now.Add(a.life() / 12).After(a.notAfter.Add(-a.life() / 6)) {
		return s, nil
	}
	out := s
	out.next = nil
	out.revoked = append(slices.Clone(s.revoked), tombstone{id: n.kid, notAfter: n.notAfter})
	return out, n
}

// warnJWTType says when the configured jwt_key_type takes over, if the
// active key is of another type.
func (m *Manager) warnJWTType() {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, n := m.jwt.active, m.jwt.next
	if a == nil || a.typ == m.jwtType {
		return
	}
	attrs := []any{"kid", a.kid, "key_type", a.typ, "jwt_key_type", m.jwtType}
	switch {
	case n == nil:
		attrs = append(attrs, "successor_prepared_at", jwtWindow(a).prepareAt())
	case n.typ == m.jwtType:
		attrs = append(attrs, "successor_kid", n.kid, "successor_activated_at", activateAt(jwtWindow(a), jwtWindow(n)))
	default:
		attrs = append(attrs, "successor_kid", n.kid, "successor_key_type", n.typ, "successor_activated_at", activateAt(jwtWindow(a), jwtWindow(n)))
		m.log.Warn("the active JWT key and its prepared successor, too close to activation to be replaced, are not of jwt_key_type: the configured type comes with the key after them", attrs...)
		return
	}
	m.log.Warn("the active JWT key is not of jwt_key_type: it signs until its successor, of the configured type, is activated on schedule", attrs...)
}
