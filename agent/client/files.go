package client

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/renameio/v2"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Files in the data directory (0700). SVIDFile holds the agent SVID's chain
// and its key together, 0600, so that one rename replaces both: two files
// could be torn by a crash between their renames, and a key that does not
// match its certificate would force a new join token.
const (
	SVIDFile   = "agent_svid.pem"
	BundleFile = "server_bundle.pem"
	TokenFile  = "agent_token.sha256"
	// legacyKeyFile is where earlier versions kept the key; it is read when
	// SVIDFile has none and removed on the next save.
	legacyKeyFile = "agent_key.pem"
)

// ParsePEMCertificates parses every CERTIFICATE block in data.
func ParsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return out, nil
}

func encodeCerts(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// store reads and writes the agent's files.
type store struct{ dir string }

func (s store) path(name string) string { return filepath.Join(s.dir, name) }

func (s store) ensureDir() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", s.dir, err)
	}
	return nil
}

func (s store) writeFile(name string, data []byte, perm os.FileMode) error {
	if err := s.ensureDir(); err != nil {
		return err
	}
	if err := renameio.WriteFile(s.path(name), data, perm); err != nil {
		return fmt.Errorf("write %s: %w", s.path(name), err)
	}
	return nil
}

// saveSVID writes the agent SVID chain and key in one atomic replace.
func (s store) saveSVID(svid *x509svid.SVID) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return fmt.Errorf("encode agent key: %w", err)
	}
	data := encodeCerts(svid.Certificates)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := s.writeFile(SVIDFile, data, 0o600); err != nil {
		return err
	}
	if err := os.Remove(s.path(legacyKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.path(legacyKeyFile), err)
	}
	return nil
}

// loadSVID reads the persisted agent SVID; (nil, nil) when there is none.
func (s store) loadSVID() (*x509svid.SVID, error) {
	data, err := os.ReadFile(s.path(SVIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent SVID: %w", err)
	}
	var certPEM, keyPEM []byte
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type == "PRIVATE KEY" {
			keyPEM = pem.EncodeToMemory(block)
		} else {
			certPEM = append(certPEM, pem.EncodeToMemory(block)...)
		}
	}
	if keyPEM == nil {
		if keyPEM, err = os.ReadFile(s.path(legacyKeyFile)); err != nil {
			return nil, fmt.Errorf("agent SVID %s holds no key: %w", s.path(SVIDFile), err)
		}
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse agent SVID %s: %w", s.path(SVIDFile), err)
	}
	return svid, nil
}

func (s store) saveBundle(certs []*x509.Certificate) error {
	return s.writeFile(BundleFile, encodeCerts(certs), 0o644)
}

func (s store) loadBundle() ([]*x509.Certificate, error) {
	data, err := os.ReadFile(s.path(BundleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read server bundle: %w", err)
	}
	return ParsePEMCertificates(data)
}

// tokenHash identifies a join token without storing it.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (s store) saveUsedToken(hash string) error {
	return s.writeFile(TokenFile, []byte(hash+"\n"), 0o600)
}

func (s store) loadUsedToken() string {
	b, err := os.ReadFile(s.path(TokenFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
