package cache

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/signetid/signet/internal/atomicfile"
	"github.com/signetid/signet/internal/selector"
)

// FileName is the cache file inside the data directory. It holds private
// keys: 0600 in a 0700 directory.
const FileName = "workload_cache.json"

const diskVersion = 1

// diskState is the persisted cache.
type diskState struct {
	Version     int                        `json:"version"`
	TrustDomain string                     `json:"trust_domain"`
	Bundle      json.RawMessage            `json:"bundle,omitempty"`
	Federated   map[string]json.RawMessage `json:"federated_bundles,omitempty"`
	Entries     []diskEntry                `json:"entries"`
}

type diskEntry struct {
	ID            string   `json:"id"`
	SPIFFEID      string   `json:"spiffe_id"`
	Selectors     []string `json:"selectors"`
	X509TTL       int64    `json:"x509_ttl_seconds,omitempty"`
	JWTTTL        int64    `json:"jwt_ttl_seconds,omitempty"`
	DNSNames      []string `json:"dns_names,omitempty"`
	Hint          string   `json:"hint,omitempty"`
	FederatesWith []string `json:"federates_with,omitempty"`
	Admin         bool     `json:"admin,omitempty"`
	CreatedAt     int64    `json:"created_at"`
	Revision      int64    `json:"revision"`
	ExpiresAt     int64    `json:"expires_at,omitempty"` // Unix seconds; 0: never
	// SVIDChain is DER, leaf first; SVIDKey is PKCS#8 DER.
	SVIDChain [][]byte `json:"svid_chain,omitempty"`
	SVIDKey   []byte   `json:"svid_key,omitempty"`
}

// persister writes the cache in the background, coalescing bursts of
// changes into one atomic write.
type persister struct {
	path     string
	snapshot func() *snapshot
	logger   *slog.Logger

	dirty chan struct{}
	done  chan struct{}
	quit  chan struct{}
	mu    sync.Mutex // serializes writes
}

// snapshot is what the cache hands the writer, taken under its lock; the
// (slower) encoding happens outside it.
type snapshot struct {
	td        spiffeid.TrustDomain
	own       *spiffebundle.Bundle
	federated []*spiffebundle.Bundle
	records   []record
}

func newPersister(dir string, snap func() *snapshot, logger *slog.Logger) *persister {
	return &persister{
		path:     filepath.Join(dir, FileName),
		snapshot: snap,
		logger:   logger,
		dirty:    make(chan struct{}, 1),
		done:     make(chan struct{}),
		quit:     make(chan struct{}),
	}
}

func (p *persister) start() { go p.loop() }

func (p *persister) markDirty() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

func (p *persister) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.quit:
			return
		case <-p.dirty:
		}
		if err := p.flush(); err != nil {
			p.logger.Error("persist workload SVID cache", "path", p.path, "error", err)
		}
	}
}

func (p *persister) stop() error {
	close(p.quit)
	<-p.done
	return p.flush()
}

func (p *persister) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := encodeSnapshot(p.snapshot())
	if err != nil {
		return err
	}
	dir := filepath.Dir(p.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create cache dir %s: %w", dir, err)
	}
	if err := atomicfile.Write(p.path, data, 0o600); err != nil {
		return fmt.Errorf("write cache %s: %w", p.path, err)
	}
	return nil
}

func encodeSnapshot(s *snapshot) ([]byte, error) {
	st := diskState{Version: diskVersion, TrustDomain: s.td.Name()}
	if s.own != nil {
		b, err := s.own.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode bundle: %w", err)
		}
		st.Bundle = b
	}
	for _, fb := range s.federated {
		b, err := fb.Marshal()
		if err != nil {
			return nil, fmt.Errorf("encode bundle of %s: %w", fb.TrustDomain(), err)
		}
		if st.Federated == nil {
			st.Federated = make(map[string]json.RawMessage)
		}
		st.Federated[fb.TrustDomain().Name()] = b
	}
	st.Entries = make([]diskEntry, 0, len(s.records))
	for _, r := range s.records {
		e := r.entry
		de := diskEntry{
			ID: e.ID, SPIFFEID: e.SPIFFEID.String(), Selectors: selector.Strings(e.Selectors),
			X509TTL: int64(e.X509TTL / time.Second), JWTTTL: int64(e.JWTTTL / time.Second),
			DNSNames: e.DNSNames, Hint: e.Hint, Admin: e.Admin,
			CreatedAt: e.CreatedAt.Unix(), Revision: e.Revision,
		}
		if !e.ExpiresAt.IsZero() {
			de.ExpiresAt = e.ExpiresAt.Unix()
		}
		for _, td := range e.FederatesWith {
			de.FederatesWith = append(de.FederatesWith, td.Name())
		}
		if r.svid != nil {
			de.SVIDKey = r.keyDER
			for _, c := range r.svid.Certificates {
				de.SVIDChain = append(de.SVIDChain, c.Raw)
			}
		}
		st.Entries = append(st.Entries, de)
	}
	return json.Marshal(st)
}

// load reads the persisted cache. A missing file is not an error; a file
// for another trust domain or in an unknown format is ignored with a
// warning (the server's next sync rebuilds it). SVIDs expired at now, or
// whose key does not match, are dropped.
func (p *persister) load(td spiffeid.TrustDomain, now time.Time) (*diskState, error) {
	data, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cache %s: %w", p.path, err)
	}
	var st diskState
	if err := json.Unmarshal(data, &st); err != nil || st.Version != diskVersion {
		p.logger.Warn("ignoring unreadable workload SVID cache", "path", p.path, "error", err, "version", st.Version)
		return nil, nil
	}
	if st.TrustDomain != td.Name() {
		p.logger.Warn("ignoring workload SVID cache of another trust domain", "path", p.path, "trust_domain", st.TrustDomain)
		return nil, nil
	}
	return &st, nil
}

// restore fills an empty cache from a loaded disk state.
func (c *Cache) restore(st *diskState) {
	now := c.opts.Now()
	log := c.opts.Logger
	var own *spiffebundle.Bundle
	if len(st.Bundle) > 0 {
		b, err := spiffebundle.Parse(c.opts.TrustDomain, st.Bundle)
		if err != nil {
			log.Warn("ignoring persisted bundle", "error", err)
		} else {
			own = b
		}
	}
	var feds []*spiffebundle.Bundle
	for name, raw := range st.Federated {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			continue
		}
		if b, err := spiffebundle.Parse(td, raw); err == nil {
			feds = append(feds, b)
		}
	}
	var entries []Entry
	svids := make(map[string]*x509svid.SVID)
	expired := 0
	for _, de := range st.Entries {
		e, err := de.entry()
		if err != nil {
			log.Warn("ignoring persisted entry", "entry_id", de.ID, "error", err)
			continue
		}
		entries = append(entries, e)
		if len(de.SVIDChain) == 0 {
			continue
		}
		s, err := parseSVID(de.SVIDChain, de.SVIDKey)
		if err != nil {
			log.Warn("ignoring persisted SVID", "entry_id", de.ID, "error", err)
			continue
		}
		if !usable(s, now) {
			expired++
			continue
		}
		svids[e.ID] = s
	}
	c.SetBundles(own, feds)
	c.SetEntries(entries)
	c.PutSVIDs(svids)
	log.Info("loaded persisted workload SVID cache", "entries", len(entries), "svids", len(svids), "expired_dropped", expired)
}

func (de *diskEntry) entry() (Entry, error) {
	id, err := spiffeid.FromString(de.SPIFFEID)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{
		ID: de.ID, SPIFFEID: id, X509TTL: time.Duration(de.X509TTL) * time.Second,
		JWTTTL: time.Duration(de.JWTTTL) * time.Second, DNSNames: de.DNSNames, Hint: de.Hint,
		Admin: de.Admin, CreatedAt: time.Unix(de.CreatedAt, 0), Revision: de.Revision,
	}
	if de.ExpiresAt != 0 {
		e.ExpiresAt = time.Unix(de.ExpiresAt, 0)
	}
	for _, s := range de.Selectors {
		sel, err := selector.Parse(s)
		if err != nil {
			return Entry{}, err
		}
		e.Selectors = append(e.Selectors, sel)
	}
	for _, f := range de.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(f)
		if err != nil {
			return Entry{}, err
		}
		e.FederatesWith = append(e.FederatesWith, td)
	}
	return e, nil
}

// parseSVID rebuilds an SVID from DER certificates and a PKCS#8 key, and
// checks that the key belongs to the leaf.
func parseSVID(chain [][]byte, keyDER []byte) (*x509svid.SVID, error) {
	certs := make([]*x509.Certificate, 0, len(chain))
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("key is not a signer")
	}
	if !publicKeyEqual(signer.Public(), certs[0].PublicKey) {
		return nil, errors.New("key does not match the certificate")
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: signer}, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		pa, _ := x509.MarshalPKIXPublicKey(a)
		pb, _ := x509.MarshalPKIXPublicKey(b)
		return bytes.Equal(pa, pb)
	}
	return ea.Equal(b)
}

// snapshotForDisk is the persister's view of the cache.
func (c *Cache) snapshotForDisk() *snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &snapshot{td: c.opts.TrustDomain, own: c.own, records: make([]record, 0, len(c.records))}
	for _, b := range c.federated {
		s.federated = append(s.federated, b)
	}
	for _, r := range c.records {
		s.records = append(s.records, *r)
	}
	return s
}
