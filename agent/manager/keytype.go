package manager

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
)

// KeyType is the type of the keys the agent makes for workload
// X509-SVIDs (SPIRE's workload_x509_svid_key_type, with its values).
type KeyType string

const (
	// KeyECP256 is ECDSA on P-256, the default.
	KeyECP256 KeyType = "ec-p256"
	// KeyRSA2048 is RSA with a 2048-bit modulus, for apps and appliances
	// that take no EC keys. Making one costs tens of milliseconds.
	KeyRSA2048 KeyType = "rsa-2048"
)

// ParseKeyType parses a key type; "" is the default, KeyECP256.
func ParseKeyType(s string) (KeyType, error) {
	switch k := KeyType(s); k {
	case "":
		return KeyECP256, nil
	case KeyECP256, KeyRSA2048:
		return k, nil
	}
	return "", fmt.Errorf("workload X509-SVID key type %q: want %s or %s", s, KeyECP256, KeyRSA2048)
}

// generate makes a private key of type k.
func (k KeyType) generate() (crypto.Signer, error) {
	switch k {
	case KeyECP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return nil, fmt.Errorf("unknown key type %q", k)
}
