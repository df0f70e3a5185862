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

// Files in the data directory. The key is 0600; the directory 0700.
const (
	SVIDFile   = "agent_svid.pem"
	KeyFile    = "agent_key.pem"
	BundleFile = "server_bundle.pem"
	TokenFile  = "agent_token.sha256"
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

// saveSVID writes the agent SVID chain and key (key first: a chain on disk
// without its key would be useless).
func (s store) saveSVID(svid *x509svid.SVID) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return fmt.Errorf("encode agent key: %w", err)
	}
	if err := s.writeFile(KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return s.writeFile(SVIDFile, encodeCerts(svid.Certificates), 0o600)
}

// loadSVID reads the persisted agent SVID; (nil, nil) when there is none.
func (s store) loadSVID() (*x509svid.SVID, error) {
	certPEM, err := os.ReadFile(s.path(SVIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent SVID: %w", err)
	}
	keyPEM, err := os.ReadFile(s.path(KeyFile))
	if err != nil {
		return nil, fmt.Errorf("read agent key: %w", err)
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
