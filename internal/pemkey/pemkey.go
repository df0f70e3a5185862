// Package pemkey reads the private keys operators hand Signet (an upstream
// CA's key, a machine certificate's key) in the PEM encodings tools write
// them in.
package pemkey

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// Read returns the first private key in the PEM file at path: PKCS#8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
// Other blocks before it (openssl's "EC PARAMETERS", certificates) are
// skipped; encrypted keys are not supported.
func Read(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		var key any
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %s: %s: %w", path, block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key %s: %T cannot sign", path, key)
		}
		return signer, nil
	}
	return nil, fmt.Errorf("key %s holds no PEM private key (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY; encrypted keys are not supported)", path)
}

// Matches reports whether key is the private half of pub.
func Matches(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(pub)
}
