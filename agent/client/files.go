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
	"slices"
	"strings"

	"github.com/signetid/signet/internal/atomicfile"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Files in the data directory (0700). SVIDFile holds the agent SVID's chain,
// its key and how it renews together, 0600, so that one rename replaces
// them all: two files could be torn by a crash between their renames, and a
// key that does not match its certificate would force a new join token.
const (
	SVIDFile   = "agent_svid.pem"
	BundleFile = "server_bundle.pem"
	TokenFile  = "agent_token.sha256"
	// legacyKeyFile is where earlier versions kept the key; it is read when
	// SVIDFile has none and removed on the next save.
	legacyKeyFile = "agent_key.pem"
)

// SVIDFile's PEM block whose header records that the agent renews by
// attesting again. It is written only for such an agent: a file without it
// (a join-token agent's, or one an earlier version wrote) renews in place,
// and an earlier version still reads a join-token agent's file.
const (
	stateBlockType     = "SIGNET AGENT STATE"
	reattestableHeader = "Reattestable"
)

// identity is the agent SVID and how the agent renews it.
type identity struct {
	svid *x509svid.SVID
	// reattestable: the server renews the agent only when it attests again
	// with fresh evidence (x509pop, k8s_psat); else it renews in place.
	reattestable bool
}

// errNoKey means an SVID file holds no private key.
var errNoKey = errors.New("no PRIVATE KEY block")

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
	if err := atomicfile.Write(s.path(name), data, perm); err != nil {
		return fmt.Errorf("write %s: %w", s.path(name), err)
	}
	return nil
}

// encodeSVIDFile is SVIDFile's content for id.
func encodeSVIDFile(id identity) ([]byte, error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(id.svid.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encode agent key: %w", err)
	}
	data := encodeCerts(id.svid.Certificates)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if id.reattestable {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: stateBlockType, Headers: map[string]string{reattestableHeader: "true"}})...)
	}
	return data, nil
}

// parseSVIDFile reads SVIDFile's content: the chain, the key (errNoKey when
// there is none) and the state block, if any.
func parseSVIDFile(data []byte) (identity, error) {
	var certPEM, keyPEM []byte
	var id identity
	states := 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		switch block.Type {
		case "PRIVATE KEY":
			if keyPEM != nil {
				return identity{}, errors.New("two PRIVATE KEY blocks")
			}
			keyPEM = pem.EncodeToMemory(block)
		case stateBlockType:
			if states++; states > 1 {
				return identity{}, fmt.Errorf("two %s blocks", stateBlockType)
			}
			switch v := block.Headers[reattestableHeader]; v {
			case "true":
				id.reattestable = true
			case "false", "":
			default:
				return identity{}, fmt.Errorf("%s header %s is %q, want true or false", stateBlockType, reattestableHeader, v)
			}
		default:
			certPEM = append(certPEM, pem.EncodeToMemory(block)...)
		}
	}
	if keyPEM == nil {
		return identity{}, errNoKey
	}
	svid, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		return identity{}, err
	}
	id.svid = svid
	return id, nil
}

// saveSVID writes the agent SVID chain, its key and how it renews in one
// atomic replace.
func (s store) saveSVID(id identity) error {
	data, err := encodeSVIDFile(id)
	if err != nil {
		return err
	}
	if err := s.writeFile(SVIDFile, data, 0o600); err != nil {
		return err
	}
	if err := os.Remove(s.path(legacyKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", s.path(legacyKeyFile), err)
	}
	return nil
}

// loadSVID reads the persisted agent SVID and how it renews; a zero
// identity when there is none.
func (s store) loadSVID() (identity, error) {
	data, err := os.ReadFile(s.path(SVIDFile))
	if errors.Is(err, fs.ErrNotExist) {
		return identity{}, nil
	}
	if err != nil {
		return identity{}, fmt.Errorf("read agent SVID: %w", err)
	}
	id, err := parseSVIDFile(data)
	if errors.Is(err, errNoKey) {
		legacy, lerr := os.ReadFile(s.path(legacyKeyFile))
		if lerr != nil {
			return identity{}, fmt.Errorf("agent SVID %s holds no key: %w", s.path(SVIDFile), lerr)
		}
		id, err = parseSVIDFile(slices.Concat(data, []byte("\n"), legacy))
	}
	if err != nil {
		return identity{}, fmt.Errorf("parse agent SVID %s: %w", s.path(SVIDFile), err)
	}
	return id, nil
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
