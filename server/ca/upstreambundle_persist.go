package ca

import (
	"cmp"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"
)

// upstreamBundleFile keeps the upstream server's bundle as last seen
// (nested servers): a downstream restarting while the upstream is down
// publishes that, not the roots each CA was signed with, among which may
// be one the upstream has revoked since.
const upstreamBundleFile = "upstream-bundle.json"

type upstreamBundleDoc struct {
	X509 []upstreamRootDoc `json:"x509"`
	JWT  []authorityDoc    `json:"jwt,omitempty"`
	// Withdrawn are authorities the upstream listed and dropped: they are
	// removed from the store until they expire.
	Withdrawn []authorityDoc `json:"withdrawn,omitempty"`
}

type upstreamRootDoc struct {
	DER     []byte `json:"der"`
	Tainted bool   `json:"tainted,omitempty"`
}

type authorityDoc struct {
	Kind      AuthorityKind `json:"kind"`
	KeyID     string        `json:"key_id"`
	Data      []byte        `json:"data,omitempty"`
	ExpiresAt time.Time     `json:"expires_at,omitzero"`
	Tainted   bool          `json:"tainted,omitempty"`
}

func toDoc(a Authority) authorityDoc {
	return authorityDoc{Kind: a.Kind, KeyID: a.KeyID, Data: a.Data, ExpiresAt: a.ExpiresAt, Tainted: a.Tainted}
}

func (d authorityDoc) authority() Authority {
	return Authority{Kind: d.Kind, KeyID: d.KeyID, Data: d.Data, ExpiresAt: d.ExpiresAt, Tainted: d.Tainted}
}

// saveUpstreamBundleLocked writes m.upBundle and m.upWithdrawn, atomically,
// when they differ from what the file holds.
func (m *Manager) saveUpstreamBundleLocked() error {
	doc := upstreamBundleDoc{}
	for _, r := range m.upBundle.X509 {
		doc.X509 = append(doc.X509, upstreamRootDoc{DER: r.Cert.Raw, Tainted: r.Tainted})
	}
	for _, a := range m.upBundle.JWT {
		doc.JWT = append(doc.JWT, toDoc(a))
	}
	for _, a := range m.upWithdrawn {
		doc.Withdrawn = append(doc.Withdrawn, toDoc(a))
	}
	// Map order varies; the file changes only when its content does.
	slices.SortFunc(doc.Withdrawn, func(a, b authorityDoc) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.KeyID, b.KeyID))
	})
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encode upstream bundle: %w", err)
	}
	data = append(data, '\n')
	if string(data) == string(m.upSaved) {
		return nil
	}
	if err := m.writeFile(upstreamBundleFile, data); err != nil {
		return err
	}
	m.upSaved = data
	return nil
}

// loadUpstreamBundle reads the file saveUpstreamBundleLocked writes; a
// missing file means no upstream bundle was seen yet. Without an upstream
// server (no longer nested) the file is stale and removed.
func (m *Manager) loadUpstreamBundle(nested bool) error {
	p := m.path(upstreamBundleFile)
	if !nested {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		return nil
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	var doc upstreamBundleDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parse %s: %w", p, err)
	}
	b := &UpstreamBundle{}
	for i, r := range doc.X509 {
		cert, err := x509.ParseCertificate(r.DER)
		if err != nil {
			return fmt.Errorf("%s: root %d: %w", p, i, err)
		}
		b.X509 = append(b.X509, UpstreamX509{Cert: cert, Tainted: r.Tainted})
	}
	if len(b.X509) == 0 {
		return fmt.Errorf("%s holds no roots", p)
	}
	for _, a := range doc.JWT {
		b.JWT = append(b.JWT, a.authority())
	}
	for _, a := range doc.Withdrawn {
		m.upWithdrawn[withdrawnKey(a.Kind, a.KeyID)] = a.authority()
	}
	// upBundleAt stays zero: until the next fetch, roots of this server's
	// CAs count as withdrawn only when the file says so.
	m.upBundle, m.upSaved = b, data
	m.refreshLocked()
	return nil
}
