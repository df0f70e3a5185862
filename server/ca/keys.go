package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/signetid/signet/internal/atomicfile"
	"github.com/signetid/signet/internal/pemkey"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// File layout under DataDir. Key files are named by their public ID so a
// rotation only ever adds files; the state file says which one is which.
const (
	stateFile = "ca-state.json"
	caPrefix  = "ca-"
	jwtPrefix = "jwt-"
	certExt   = ".crt"
	keyExt    = ".key"
	// rootsExt holds the upstream roots of a CA an upstream authority
	// signed; a self-signed CA has no such file.
	rootsExt = ".roots.crt"
)

// rootBackdate lets agents with a slightly slow clock accept a fresh root,
// and covers the backdated NotBefore of the first SVIDs it signs.
const rootBackdate = time.Minute

// caKey is one CA, self-signed or signed by an upstream authority, with
// what leaf signing needs precomputed.
type caKey struct {
	id        string // hex SHA-256 of cert.Raw
	cert      *x509.Certificate
	key       *ecdsa.PrivateKey
	published time.Time
	akidExt   []byte // the AuthorityKeyIdentifier extension of its leaves, DER
	// chain is the CA certificate, then any upstream intermediates.
	chain []*x509.Certificate
	// roots are the trust anchors it chains to: itself when self-signed,
	// else the upstream authority's.
	roots []*x509.Certificate
	// tail follows the leaf in every SVID it signs: nil when self-signed
	// (roots travel only in the bundle), else chain as DER.
	tail [][]byte
	// tainted is set by an operator on a retired CA; keys are copied, not
	// changed, when tainted (signers read them without a lock).
	tainted bool
}

// jwtKey is one JWT signing key.
type jwtKey struct {
	kid       string
	key       crypto.Signer
	typ       JWTKeyType
	pubDER    []byte // PKIX
	published time.Time
	notAfter  time.Time
	signer    jose.Signer
	tainted   bool
}

// newCA creates a self-signed root CA.
func newCA(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*caKey, error) {
	key, tmpl, err := caTemplate(td, now, ttl)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return newCAKey(cert, key, now)
}

func newCAKey(cert *x509.Certificate, key *ecdsa.PrivateKey, published time.Time) (*caKey, error) {
	if len(cert.SubjectKeyId) == 0 {
		return nil, errors.New("CA certificate has no subject key ID")
	}
	oid, err := asn1.Marshal(oidExtAuthorityKeyID)
	if err != nil {
		return nil, fmt.Errorf("encode authority key ID: %w", err)
	}
	// AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
	keyID := appendTLV(nil, 0x80, cert.SubjectKeyId)
	akid := appendExtension(nil, oid, false, appendTLV(nil, tagSequence, keyID))
	sum := sha256.Sum256(cert.Raw)
	self := []*x509.Certificate{cert}
	return &caKey{id: hex.EncodeToString(sum[:]), cert: cert, key: key, published: published, akidExt: akid, chain: self, roots: self}, nil
}

// setUpstream records that the CA is an intermediate: chain is its
// certificate and the upstream intermediates, roots what they chain to.
func (k *caKey) setUpstream(chain, roots []*x509.Certificate) {
	k.chain, k.roots = chain, roots
	k.tail = make([][]byte, len(chain))
	for i, c := range chain {
		k.tail[i] = c.Raw
	}
}

// upstream reports whether an upstream authority signed the CA.
func (k *caKey) upstream() bool { return k.tail != nil }

// intermediates are the certificates between an SVID and the roots.
func (k *caKey) intermediates() []*x509.Certificate { return k.chain }

func newJWTKey(typ JWTKeyType, now time.Time, life time.Duration) (*jwtKey, error) {
	key, err := typ.generate()
	if err != nil {
		return nil, fmt.Errorf("generate %s JWT key: %w", typ, err)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("generate kid: %w", err)
	}
	return newJWTKeyFrom(hex.EncodeToString(b[:]), key, now, now.Add(life))
}

func newJWTKeyFrom(kid string, key crypto.Signer, published, notAfter time.Time) (*jwtKey, error) {
	typ, err := jwtKeyTypeOf(key)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("encode JWT public key: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: typ.Algorithm(), Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("JWT signer: %w", err)
	}
	return &jwtKey{kid: kid, key: key, typ: typ, pubDER: pub, published: published, notAfter: notAfter, signer: signer}, nil
}

func randomSerial() (*big.Int, error) {
	// 128 random bits; asn1 adds a leading zero when the top bit is set.
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	b[0] &= 0x7f // keep it 16 bytes on the wire
	b[0] |= 0x40 // and never short or zero
	return new(big.Int).SetBytes(b[:]), nil
}

// subjectKeyID is RFC 7093 method 1: leftmost 160 bits of the SHA-256 of
// the subjectPublicKey bits.
func subjectKeyID(pub any) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return subjectKeyIDFromSPKI(der)
}

func subjectKeyIDFromSPKI(spki []byte) ([]byte, error) {
	bits, err := spkiKeyBits(spki)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(bits)
	return sum[:20], nil
}

// --- persistence ---

type stateDoc struct {
	Version int          `json:"version"`
	X509    []stateEntry `json:"x509"`
	JWT     []stateEntry `json:"jwt"`
	// Upstream holds the operator's marks on upstream roots (slot tainted
	// or revoked).
	Upstream []stateEntry `json:"upstream,omitempty"`
}

type stateEntry struct {
	ID          string    `json:"id"`   // CA key ID, JWT kid or upstream root ID
	Slot        string    `json:"slot"` // active, next, retired or revoked; tainted or revoked for an upstream root
	PublishedAt time.Time `json:"published_at"`
	NotAfter    time.Time `json:"not_after"`
	Tainted     bool      `json:"tainted,omitempty"`
}

const (
	slotActive  = "active"
	slotNext    = "next"
	slotRetired = "retired"
	// slotRevoked entries have no key files.
	slotRevoked = "revoked"
)

func slotEntries[K any](s slots[K], entry func(*K) stateEntry) []stateEntry {
	var out []stateEntry
	add := func(k *K, slot string) {
		e := entry(k)
		e.Slot = slot
		out = append(out, e)
	}
	if s.active != nil {
		add(s.active, slotActive)
	}
	if s.next != nil {
		add(s.next, slotNext)
	}
	for _, r := range s.retired {
		add(r, slotRetired)
	}
	for _, t := range s.revoked {
		out = append(out, stateEntry{ID: t.id, Slot: slotRevoked, NotAfter: t.notAfter})
	}
	return out
}

func caEntry(k *caKey) stateEntry {
	return stateEntry{ID: k.id, PublishedAt: k.published, NotAfter: k.cert.NotAfter, Tainted: k.tainted}
}

func jwtEntry(k *jwtKey) stateEntry {
	return stateEntry{ID: k.kid, PublishedAt: k.published, NotAfter: k.notAfter, Tainted: k.tainted}
}

func (m *Manager) path(name string) string { return filepath.Join(m.dir, name) }

// persist writes the key files new in (x, j) and then the state file (with
// m.upMarks), so a
// crash at any point leaves the previous state (plus unused key files) or
// the new one. Files no longer referenced are removed last.
func (m *Manager) persist(oldX slots[caKey], oldJ slots[jwtKey], x slots[caKey], j slots[jwtKey]) error {
	oldFiles := fileNames(oldX, oldJ)
	keep := map[string]bool{}
	for _, k := range x.all() {
		for _, f := range caFiles(k) {
			keep[f.name] = true
			if oldFiles[f.name] {
				continue
			}
			write := func() error { return m.writeFile(f.name, f.data) }
			if f.data == nil {
				write = func() error { return m.writeKey(f.name, k.key) }
			}
			if err := write(); err != nil {
				return err
			}
		}
	}
	for _, k := range j.all() {
		kn := jwtPrefix + k.kid + keyExt
		keep[kn] = true
		if oldFiles[kn] {
			continue
		}
		if err := m.writeKey(kn, k.key); err != nil {
			return err
		}
	}
	doc := stateDoc{Version: 1, X509: slotEntries(x, caEntry), JWT: slotEntries(j, jwtEntry)}
	for _, mk := range m.upMarks {
		slot := markTainted
		if mk.revoked {
			slot = markRevoked
		}
		doc.Upstream = append(doc.Upstream, stateEntry{ID: mk.id, Slot: slot, NotAfter: mk.notAfter})
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := m.writeFile(stateFile, append(data, '\n')); err != nil {
		return err
	}
	if err := syncDir(m.dir); err != nil {
		return err
	}
	for name := range oldFiles {
		if !keep[name] {
			if err := os.Remove(m.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				m.log.Warn("could not remove retired key file", "file", m.path(name), "error", err)
			}
		}
	}
	return nil
}

// caFile is one file of a CA under DataDir; data nil means the key.
type caFile struct {
	name string
	data []byte
}

// caFiles are the files that hold k: its certificate with any upstream
// intermediates after it, its key, and its upstream roots.
func caFiles(k *caKey) []caFile {
	files := []caFile{{name: caPrefix + k.id + certExt, data: pemCerts(k.chain)}, {name: caPrefix + k.id + keyExt}}
	if k.upstream() {
		files = append(files, caFile{name: caPrefix + k.id + rootsExt, data: pemCerts(k.roots)})
	}
	return files
}

func pemCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func (m *Manager) writeKey(name string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", m.path(name), err)
	}
	return m.writeFile(name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (m *Manager) writeFile(name string, data []byte) error {
	p := m.path(name)
	if err := atomicfile.Write(p, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// load reads the state file and every key it names. A missing state file
// with key files present is an error: regenerating would silently replace
// the trust domain's roots.
func (m *Manager) load() error {
	sp := m.path(stateFile)
	data, err := os.ReadFile(sp)
	if errors.Is(err, fs.ErrNotExist) {
		entries, err := os.ReadDir(m.dir)
		if err != nil {
			return fmt.Errorf("read data dir %s: %w", m.dir, err)
		}
		for _, e := range entries {
			n := e.Name()
			if strings.HasSuffix(n, keyExt) && (strings.HasPrefix(n, caPrefix) || strings.HasPrefix(n, jwtPrefix)) {
				return fmt.Errorf("state file %s is missing but key file %s exists; refusing to create new keys over it", sp, m.path(n))
			}
		}
		return nil // first start
	}
	if err != nil {
		return fmt.Errorf("read state file %s: %w", sp, err)
	}
	var doc stateDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse state file %s: %w", sp, err)
	}
	if doc.Version != 1 {
		return fmt.Errorf("state file %s: unsupported version %d", sp, doc.Version)
	}
	x, err := loadSlots(sp, "x509", doc.X509, m.loadCA)
	if err != nil {
		return err
	}
	j, err := loadSlots(sp, "jwt", doc.JWT, m.loadJWT)
	if err != nil {
		return err
	}
	for _, e := range doc.Upstream {
		if !isHexID(e.ID) || e.Slot != markTainted && e.Slot != markRevoked {
			return fmt.Errorf("state file %s: bad upstream root mark %q (slot %q)", sp, e.ID, e.Slot)
		}
		m.upMarks = append(m.upMarks, upstreamMark{id: e.ID, notAfter: e.NotAfter, revoked: e.Slot == markRevoked})
	}
	m.x509, m.jwt = x, j
	m.refreshLocked()
	m.sweep()
	return nil
}

// fileNames are the files under DataDir that hold the keys of x and j.
func fileNames(x slots[caKey], j slots[jwtKey]) map[string]bool {
	names := map[string]bool{}
	for _, k := range x.all() {
		for _, f := range caFiles(k) {
			names[f.name] = true
		}
	}
	for _, k := range j.all() {
		names[jwtPrefix+k.kid+keyExt] = true
	}
	return names
}

// sweep removes key and certificate files the state does not name: those
// of a revoked or expired authority whose removal a crash interrupted, or
// of one created by a step whose state write never happened. A revoked key
// must not linger on disk.
func (m *Manager) sweep() {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		m.log.Warn("could not list the data dir for stale key files", "dir", m.dir, "error", err)
		return
	}
	named := fileNames(m.x509, m.jwt)
	for _, e := range entries {
		n := e.Name()
		ours := strings.HasPrefix(n, caPrefix) && (strings.HasSuffix(n, keyExt) || strings.HasSuffix(n, certExt)) ||
			strings.HasPrefix(n, jwtPrefix) && strings.HasSuffix(n, keyExt)
		if !ours || named[n] || e.IsDir() {
			continue
		}
		if err := os.Remove(m.path(n)); err != nil {
			m.log.Warn("could not remove a key file the state does not name", "file", m.path(n), "error", err)
			continue
		}
		m.log.Warn("removed a key file the state does not name", "file", m.path(n))
	}
}

func loadSlots[K any](statePath, kind string, entries []stateEntry, load func(stateEntry) (*K, error)) (slots[K], error) {
	var s slots[K]
	for _, e := range entries {
		if !isHexID(e.ID) {
			return s, fmt.Errorf("state file %s: bad %s key ID %q", statePath, kind, e.ID)
		}
		if e.Slot == slotRevoked {
			s.revoked = append(s.revoked, tombstone{id: e.ID, notAfter: e.NotAfter})
			continue
		}
		k, err := load(e)
		if err != nil {
			return s, err
		}
		switch e.Slot {
		case slotActive:
			if s.active != nil {
				return s, fmt.Errorf("state file %s: two active %s keys", statePath, kind)
			}
			s.active = k
		case slotNext:
			if s.next != nil {
				return s, fmt.Errorf("state file %s: two next %s keys", statePath, kind)
			}
			s.next = k
		case slotRetired:
			s.retired = append(s.retired, k)
		default:
			return s, fmt.Errorf("state file %s: unknown slot %q", statePath, e.Slot)
		}
	}
	if s.active == nil {
		return s, fmt.Errorf("state file %s: no active %s key", statePath, kind)
	}
	return s, nil
}

func isHexID(id string) bool {
	if len(id) < 16 || len(id) > 64 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

func (m *Manager) loadCA(e stateEntry) (*caKey, error) {
	cp := m.path(caPrefix + e.ID + certExt)
	chain, err := readCerts(cp)
	if err != nil {
		return nil, err
	}
	cert := chain[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s is not a CA", cp)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != m.td.IDString() {
		return nil, fmt.Errorf("CA certificate %s is not for trust domain %q (its URI SANs: %v): the data dir belongs to another trust domain; use that trust domain or another --data-dir", cp, m.td.Name(), cert.URIs)
	}
	kp := m.path(caPrefix + e.ID + keyExt)
	key, err := readECKey(kp)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match certificate %s", kp, cp)
	}
	k, err := newCAKey(cert, key, e.PublishedAt)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", cp, err)
	}
	if k.id != e.ID {
		return nil, fmt.Errorf("CA certificate %s does not match its ID in the state file", cp)
	}
	k.tainted = e.Tainted
	rp := m.path(caPrefix + e.ID + rootsExt)
	roots, err := readCerts(rp)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if len(chain) > 1 || !isSelfSigned(cert) {
			return nil, fmt.Errorf("CA certificate %s was signed by an upstream authority but its roots file %s is missing", cp, rp)
		}
	case err != nil:
		return nil, err
	default:
		k.setUpstream(chain, roots)
	}
	return k, nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

func (m *Manager) loadJWT(e stateEntry) (*jwtKey, error) {
	kp := m.path(jwtPrefix + e.ID + keyExt)
	key, err := pemkey.Read(kp)
	if err != nil {
		return nil, err
	}
	k, err := newJWTKeyFrom(e.ID, key, e.PublishedAt, e.NotAfter)
	if err != nil {
		return nil, fmt.Errorf("load JWT key %s: %w", kp, err)
	}
	k.tainted = e.Tainted
	return k, nil
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("read %s: no %s PEM block", path, typ)
	}
	return b.Bytes, nil
}

// readCerts reads every certificate of a PEM file, in order.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("read %s: PEM block %d is a %s, want CERTIFICATE", path, n, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("read %s: certificate %d: %w", path, n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("read %s: no CERTIFICATE PEM block", path)
	}
	return certs, nil
}

func readECKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse key %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key %s: want an ECDSA P-256 key", path)
	}
	return ek, nil
}
