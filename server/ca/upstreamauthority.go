package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// UpstreamRoot is one root of the upstream authority in the trust domain's
// bundle, as an operator sees it: the anchor that every CA the upstream
// signed chains to. Replacing a compromised upstream root is a forced
// rotation one level up: new upstream files, a new CA under the new root
// (localauthority prepare, activate), then TaintUpstream and RevokeUpstream
// on the old root.
type UpstreamRoot struct {
	// ID is the hex SHA-256 of the root certificate: its key ID in the
	// bundle (and in the store).
	ID string
	// SubjectKeyID is the root's subject key identifier in hex (SPIRE
	// names upstream authorities by it); empty when it has none.
	SubjectKeyID string
	Subject      string // empty for a revoked root
	ExpiresAt    time.Time
	Tainted      bool
	Revoked      bool
	// CAs are this server's X.509 CAs that chain to the root.
	CAs []LocalAuthority
}

// upstreamMark is an operator's mark on one upstream root: tainted, and
// later revoked. It is kept until the root expires, so a CA the upstream
// still signs under that root is refused, and a revoked root never
// returns to the bundle.
type upstreamMark struct {
	id       string
	notAfter time.Time
	revoked  bool
}

const (
	markTainted = "tainted"
	markRevoked = "revoked"
)

func rootID(r *x509.Certificate) string {
	sum := sha256.Sum256(r.Raw)
	return hex.EncodeToString(sum[:])
}

// rootOf returns the root among k's roots that issued the top of its
// chain, nil when none did (or k is self-signed).
func (k *caKey) rootOf() *x509.Certificate {
	if !k.upstream() {
		return nil
	}
	for _, r := range k.roots {
		if k.issuedUnder(r) {
			return r
		}
	}
	return nil
}

// issuedUnder reports whether root issued the top of k's chain, by the
// agents' rule (agent/client Taint.IssuerOf): key identifiers when both
// have one, else the signature; never the subject name, which a
// replacement root shares. A root re-issued with the same key counts.
func (k *caKey) issuedUnder(root *x509.Certificate) bool {
	top := k.chain[len(k.chain)-1]
	if len(top.AuthorityKeyId) > 0 && len(root.SubjectKeyId) > 0 {
		return bytes.Equal(top.AuthorityKeyId, root.SubjectKeyId)
	}
	return top.CheckSignatureFrom(root) == nil
}

// chainsTo reports whether k is an upstream CA under the root with id.
func (k *caKey) chainsTo(id string) bool {
	r := k.rootOf()
	return r != nil && rootID(r) == id
}

// markOf returns the operator's mark on the root id, nil when none.
func (m *Manager) markOf(id string) *upstreamMark {
	for i := range m.upMarks {
		if m.upMarks[i].id == id {
			return &m.upMarks[i]
		}
	}
	return nil
}

// checkUpstreamRoot refuses a new CA the upstream signed under a root an
// operator tainted or revoked: the upstream's files still name the old
// root, and SVIDs under it would be re-signed (or fail to verify) at once.
func (m *Manager) checkUpstreamRoot(k *caKey) error {
	r := k.rootOf()
	if r == nil {
		return nil
	}
	if mk := m.markOf(rootID(r)); mk != nil {
		state := markTainted
		if mk.revoked {
			state = markRevoked
		}
		return fmt.Errorf("%w: the upstream authority signed the new CA under root %s (%s), which an operator %s; replace the upstream authority's certificate and bundle with ones under another root first",
			ErrAuthorityState, rootID(r), r.Subject, state)
	}
	return nil
}

// UpstreamRoots lists the unexpired upstream roots of this server's CAs,
// and the roots an operator marked, until they expire.
func (m *Manager) UpstreamRoots() []UpstreamRoot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.upstreamRootsLocked()
}

func (m *Manager) upstreamRootsLocked() []UpstreamRoot {
	var out []UpstreamRoot
	index := map[string]int{}
	now := m.now()
	add := func(r *x509.Certificate) int {
		id := rootID(r)
		if i, ok := index[id]; ok {
			return i
		}
		u := UpstreamRoot{ID: id, SubjectKeyID: hex.EncodeToString(r.SubjectKeyId), Subject: r.Subject.String(), ExpiresAt: r.NotAfter}
		if mk := m.markOf(id); mk != nil {
			u.Tainted, u.Revoked = true, mk.revoked
		}
		index[id] = len(out)
		out = append(out, u)
		return index[id]
	}
	for _, a := range m.x509.list(caOps) {
		k, _ := m.x509.find(caOps, a.ID)
		if k == nil || !k.upstream() {
			continue
		}
		for _, r := range k.roots {
			if r.NotAfter.After(now) {
				add(r)
			}
		}
		if r := k.rootOf(); r != nil {
			i := add(r)
			out[i].CAs = append(out[i].CAs, a)
		}
	}
	for _, mk := range m.upMarks {
		if _, ok := index[mk.id]; !ok {
			index[mk.id] = len(out)
			out = append(out, UpstreamRoot{ID: mk.id, ExpiresAt: mk.notAfter, Tainted: true, Revoked: mk.revoked})
		}
	}
	return out
}

// FindUpstreamRoot resolves ref, an upstream root's ID or subject key ID.
func (m *Manager) FindUpstreamRoot(ref string) (UpstreamRoot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.findUpstreamRoot(ref)
}

// findUpstreamRoot resolves ref, a root's ID or subject key ID, among the
// upstream roots this server knows. A self-signed CA of this server is
// refused with the command that handles it, and a subject key ID two roots
// share with the IDs to choose from.
func (m *Manager) findUpstreamRoot(ref string) (UpstreamRoot, error) {
	ref = strings.ToLower(strings.ReplaceAll(ref, ":", ""))
	var found []UpstreamRoot
	for _, u := range m.upstreamRootsLocked() {
		if u.ID == ref {
			return u, nil
		}
		if u.SubjectKeyID != "" && u.SubjectKeyID == ref {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
	default:
		var ids []string
		for _, u := range found {
			ids = append(ids, u.ID)
		}
		return UpstreamRoot{}, fmt.Errorf("%w: %d upstream roots have subject key ID %s (one key, several certificates); name one by its authority ID: %s",
			ErrAuthorityState, len(found), ref, strings.Join(ids, ", "))
	}
	for _, k := range m.x509.all() {
		if !k.upstream() && k.id == ref {
			return UpstreamRoot{}, fmt.Errorf("%w: %s is this server's own X.509 CA, not an upstream root; use signet server localauthority x509 taint|revoke",
				ErrAuthorityState, ref)
		}
	}
	return UpstreamRoot{}, fmt.Errorf("%w: no upstream root has ID or subject key ID %q (signet server upstreamauthority list)", ErrUnknownAuthority, ref)
}

// rootCert returns the certificate of the upstream root id among this
// server's CAs' roots, nil when none lists it.
func (m *Manager) rootCert(id string) *x509.Certificate {
	for _, k := range m.x509.all() {
		for _, r := range k.roots {
			if k.upstream() && rootID(r) == id {
				return r
			}
		}
	}
	return nil
}

// refuseIfSigning refuses a step on the upstream root u while the active or
// prepared CA is under it, by the agents' rule: they would re-sign under the
// root they are leaving, again and again.
func (m *Manager) refuseIfSigning(u UpstreamRoot, what string) error {
	r := m.rootCert(u.ID)
	for _, s := range []struct {
		k  *caKey
		st Status
	}{{m.x509.active, StatusActive}, {m.x509.next, StatusPrepared}} {
		if s.k == nil || !s.k.upstream() || r == nil || !s.k.issuedUnder(r) {
			continue
		}
		return fmt.Errorf("%w: the %s X.509 CA %s chains to upstream root %s (or a certificate of the same key), so it cannot be %s yet: replace the upstream authority's certificate with one under another root, then signet server localauthority x509 prepare and activate, and %s the old root after",
			ErrAuthorityState, s.st, s.k.id, u.ID, what, strings.TrimSuffix(what, "ed"))
	}
	return nil
}

// TaintUpstream marks the upstream root ref (its ID or subject key ID)
// tainted: it stays in the bundle, but agents re-sign at once every SVID
// issued under it. Refused while the active or prepared CA chains to it.
// Tainting a tainted root changes nothing.
func (m *Manager) TaintUpstream(ctx context.Context, ref string) (UpstreamRoot, error) {
	return m.upstreamStep(ctx, ref, "tainted", func(u UpstreamRoot) (bool, error) {
		if u.Revoked {
			return false, fmt.Errorf("%w: upstream root %s is already revoked", ErrAuthorityState, u.ID)
		}
		if u.Tainted {
			return false, nil
		}
		if len(u.CAs) == 0 {
			// Most likely the new root, listed next to the old one: a taint
			// would refuse every CA under it, with no way back.
			return false, fmt.Errorf("%w: none of this server's X.509 CAs chains to upstream root %s (%s), so it has issued nothing here to taint; signet server upstreamauthority list shows the roots the CAs chain to",
				ErrAuthorityState, u.ID, u.Subject)
		}
		if err := m.refuseIfSigning(u, "tainted"); err != nil {
			return false, err
		}
		m.upMarks = append(slices.Clone(m.upMarks), upstreamMark{id: u.ID, notAfter: u.ExpiresAt})
		return true, nil
	})
}

// RevokeUpstream removes the tainted upstream root ref from the bundle:
// whatever was issued under it stops verifying. This server's old CAs
// under it are revoked with it (their keys deleted). Revoking a revoked
// root changes nothing. refuse, when not nil, may veto the step under the
// lock (the admin API refuses while an old CA under the root still signs
// the agent API's certificate).
func (m *Manager) RevokeUpstream(ctx context.Context, ref string, refuse func(UpstreamRoot) error) (UpstreamRoot, error) {
	return m.upstreamStep(ctx, ref, "revoked", func(u UpstreamRoot) (bool, error) {
		switch {
		case u.Revoked:
			return false, nil
		case !u.Tainted:
			return false, fmt.Errorf("%w: upstream root %s is not tainted; taint it first (signet server upstreamauthority taint --authority-id %s), so agents re-sign what was issued under it, and revoke it once they have",
				ErrAuthorityState, u.ID, u.ID)
		}
		if err := m.refuseIfSigning(u, "revoked"); err != nil {
			return false, err
		}
		if refuse != nil {
			if err := refuse(u); err != nil {
				return false, err
			}
		}
		x := m.x509
		x.retired = nil
		x.revoked = slices.Clone(x.revoked)
		for _, k := range m.x509.retired {
			if k.chainsTo(u.ID) {
				x.revoked = append(x.revoked, tombstone{id: k.id, notAfter: k.cert.NotAfter})
				continue
			}
			x.retired = append(x.retired, k)
		}
		m.x509 = x
		marks := slices.Clone(m.upMarks)
		marks[slices.IndexFunc(marks, func(mk upstreamMark) bool { return mk.id == u.ID })].revoked = true
		m.upMarks = marks
		return true, nil
	})
}

// upstreamStep runs change on the root ref under the lock. change edits
// m.x509 and m.upMarks (copies, never in place) and reports whether it
// changed anything; the result is persisted before it is used, and a
// failed persist restores the previous state.
func (m *Manager) upstreamStep(ctx context.Context, ref, what string, change func(UpstreamRoot) (bool, error)) (UpstreamRoot, error) {
	if err := ctx.Err(); err != nil {
		return UpstreamRoot{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u, err := m.findUpstreamRoot(ref)
	if err != nil {
		return UpstreamRoot{}, err
	}
	prevX, prevMarks := m.x509, m.upMarks
	changed, err := change(u)
	if err != nil || !changed {
		m.x509, m.upMarks = prevX, prevMarks
		return u, err
	}
	if err := m.persist(prevX, m.jwt, m.x509, m.jwt); err != nil {
		m.x509, m.upMarks = prevX, prevMarks
		return UpstreamRoot{}, fmt.Errorf("ca: %s upstream root %s: %w", what, u.ID, err)
	}
	m.refreshLocked()
	m.log.Warn("upstream root "+what+" by an operator", "root_id", u.ID, "subject", u.Subject, "expires_at", u.ExpiresAt)
	m.notify()
	after, err := m.findUpstreamRoot(u.ID)
	if err != nil {
		return UpstreamRoot{}, err
	}
	return after, nil
}

// pruneMarks drops the marks of roots that have expired: nothing issued
// under them verifies any more.
func pruneMarks(marks []upstreamMark, now time.Time) []upstreamMark {
	return slices.DeleteFunc(slices.Clone(marks), func(mk upstreamMark) bool { return !mk.notAfter.After(now) })
}
