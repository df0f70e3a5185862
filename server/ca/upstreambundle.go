package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
)

// UpstreamBundle is the trust domain's bundle as an upstream server reports
// it, when this server is a downstream one (nested servers): the roots the
// whole trust domain trusts, and every JWT key published there, this
// server's and other downstream servers' among them.
type UpstreamBundle struct {
	X509 []UpstreamX509
	JWT  []Authority // Kind KindJWT
}

// UpstreamX509 is one root of an UpstreamBundle.
type UpstreamX509 struct {
	Cert *x509.Certificate
	// Tainted is the upstream operator's mark: what chains to it must be
	// re-signed under another root.
	Tainted bool
}

// SetUpstreamBundle makes b this server's view of the upstream's bundle.
// From now on the published X.509 roots are b's (less those an operator
// revoked here), not the roots the upstream named when it signed a CA:
// roots the upstream adds (its next CA) reach agents before anything
// chains to them, and roots it drops (revoked there) leave the bundle. JWT
// keys in b join this server's own; one b no longer lists leaves the bundle
// too. Changed fires when the published set changes. b is saved in the
// data dir, so a restart while the upstream is down publishes it again.
func (m *Manager) SetUpstreamBundle(b UpstreamBundle) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Never withdrawn: this server's JWT keys and self-signed roots.
	own := map[string]bool{}
	for _, k := range m.jwt.all() {
		own[withdrawnKey(KindJWT, k.kid)] = true
	}
	for _, t := range m.jwt.revoked {
		own[withdrawnKey(KindJWT, t.id)] = true
	}
	for _, k := range m.x509.all() {
		if !k.upstream() {
			own[withdrawnKey(KindX509, k.id)] = true
		}
	}
	listed := map[string]bool{}
	for _, a := range b.JWT {
		listed[withdrawnKey(KindJWT, a.KeyID)] = true
	}
	for _, r := range b.X509 {
		listed[withdrawnKey(KindX509, rootID(r.Cert))] = true
	}
	if m.upBundle != nil {
		// Roots too: one the upstream listed and then revoked was in the
		// store here, though no CA of this server chains to it.
		var before []Authority
		for _, a := range m.upBundle.JWT {
			before = append(before, Authority{Kind: KindJWT, KeyID: a.KeyID, ExpiresAt: a.ExpiresAt})
		}
		for _, r := range m.upBundle.X509 {
			before = append(before, Authority{Kind: KindX509, KeyID: rootID(r.Cert), ExpiresAt: r.Cert.NotAfter})
		}
		for _, a := range before {
			if k := withdrawnKey(a.Kind, a.KeyID); !listed[k] && !own[k] {
				m.upWithdrawn[k] = a
			}
		}
	}
	now := m.now()
	for k, a := range m.upWithdrawn {
		if listed[k] || (!a.ExpiresAt.IsZero() && now.After(a.ExpiresAt)) {
			delete(m.upWithdrawn, k)
		}
	}
	m.upBundle, m.upBundleAt = &b, now
	before := m.auths
	m.refreshLocked()
	if !sameAuthorities(before, m.auths) {
		m.notify()
	}
	// In use even when it cannot be saved: a restart then publishes the
	// bundle saved before, until the upstream answers again.
	if err := m.saveUpstreamBundleLocked(); err != nil {
		return fmt.Errorf("ca: keep the upstream bundle: %w", err)
	}
	return nil
}

// upstreamAuthoritiesLocked is what an upstream bundle adds to the
// published set: its roots and the JWT keys that are not this server's.
func (m *Manager) upstreamAuthoritiesLocked(own map[string]bool) []Authority {
	var out []Authority
	for _, r := range m.upBundle.X509 {
		id := rootID(r.Cert)
		mark := m.markOf(id)
		if mark != nil && mark.revoked {
			continue
		}
		out = append(out, Authority{Kind: KindX509, KeyID: id, Data: r.Cert.Raw, ExpiresAt: r.Cert.NotAfter, Tainted: r.Tainted || mark != nil})
	}
	// This server's self-signed CAs (it became a downstream server later)
	// keep their roots until they expire: what they signed, the active one
	// among them maybe, must still verify.
	for _, k := range m.x509.all() {
		if !k.upstream() {
			out = append(out, Authority{Kind: KindX509, KeyID: k.id, Data: k.cert.Raw, ExpiresAt: k.cert.NotAfter, Tainted: k.tainted})
		}
	}
	for _, a := range m.upBundle.JWT {
		if !own[a.KeyID] {
			out = append(out, a)
		}
	}
	return out
}

// withdrawnLocked are the authorities the upstream no longer lists: roots
// of this server's upstream-signed CAs that left its bundle, and roots and
// JWT keys it listed before.
func (m *Manager) withdrawnLocked() []Authority {
	if m.upBundle == nil {
		return nil
	}
	listed := map[string]bool{}
	for _, r := range m.upBundle.X509 {
		listed[rootID(r.Cert)] = true
	}
	var out []Authority
	for _, k := range m.x509.all() {
		// A CA signed since the last bundle may name a root that bundle
		// predates (an HA peer's fresh one): the next bundle decides.
		if !k.upstream() || k.published.After(m.upBundleAt) {
			continue // its own root, published until it expires
		}
		for _, r := range k.roots {
			if id := rootID(r); !listed[id] {
				listed[id] = true // once
				out = append(out, Authority{Kind: KindX509, KeyID: id, ExpiresAt: r.NotAfter})
			}
		}
	}
	for _, a := range m.upWithdrawn {
		if a.Kind == KindX509 && listed[a.KeyID] {
			continue // a root of a CA here too, listed above
		}
		out = append(out, Authority{Kind: a.Kind, KeyID: a.KeyID, ExpiresAt: a.ExpiresAt})
	}
	return out
}

// withdrawnKey keys Manager.upWithdrawn: a kid and a root ID never clash.
func withdrawnKey(kind AuthorityKind, id string) string { return string(kind) + " " + id }

func sameAuthorities(a, b []Authority) bool {
	return slices.EqualFunc(a, b, func(x, y Authority) bool {
		return x.Kind == y.Kind && x.KeyID == y.KeyID && x.Tainted == y.Tainted && x.ExpiresAt.Equal(y.ExpiresAt)
	})
}

// OwnJWTAuthorities are this server's JWT keys (not those an upstream
// server lists): what a downstream server publishes upstream.
func (m *Manager) OwnJWTAuthorities() []Authority {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Authority
	for _, k := range m.jwt.all() {
		out = append(out, Authority{Kind: KindJWT, KeyID: k.kid, Data: k.pubDER, ExpiresAt: k.notAfter, Tainted: k.tainted})
	}
	return out
}

// ReplaceTaintedCA replaces the active CA when the upstream server tainted
// the root it chains to (nested servers): agents re-sign at once whatever
// chains to a tainted root, so until this server signs under another root,
// they would re-sign in a loop. The upstream signs a new CA now, which
// becomes active at once; no agent has to learn a new root first, since
// the roots are the upstream's and its new one is published already. A
// prepared CA under the tainted root is dropped (it signed no SVID, and
// the downstream CAs it signed carry it in their chains); one under
// another root is activated instead of signing a new one. It reports
// whether it replaced the CA.
func (m *Manager) ReplaceTaintedCA(ctx context.Context) (bool, error) {
	m.mu.Lock()
	need := m.taintedUpstreamLocked(m.x509.active)
	m.mu.Unlock()
	if !need {
		return false, nil
	}
	replaced := false
	_, err := apply(ctx, m, &m.x509, caOps, "activated at once: the upstream server tainted the root the active CA chains to",
		func(s slots[caKey]) (slots[caKey], LocalAuthority, bool, error) {
			if !m.taintedUpstreamLocked(s.active) { // replaced meanwhile
				return s, LocalAuthority{}, false, nil
			}
			k := s.next
			if k == nil || m.taintedUpstreamLocked(k) {
				var err error
				if k, err = m.newCA(ctx, m.now()); err != nil {
					return s, LocalAuthority{}, false, err
				}
				if m.taintedUpstreamLocked(k) {
					return s, LocalAuthority{}, false, fmt.Errorf("%w: the upstream server still signs CAs under the root it tainted (%s); it must activate a CA under another root first",
						ErrAuthorityState, k.cert.Issuer)
				}
			}
			s.retired = append(slices.Clone(s.retired), s.active)
			s.active, s.next = k, nil
			replaced = true
			return s, caOps.describe(k, StatusActive), true, nil
		})
	return replaced, err
}

// taintedUpstreamLocked reports whether the upstream's bundle marks tainted
// the root k chains to.
func (m *Manager) taintedUpstreamLocked(k *caKey) bool {
	if m.upBundle == nil || k == nil || !k.upstream() {
		return false
	}
	for _, r := range m.upBundle.X509 {
		if r.Tainted && k.issuedUnder(r.Cert) {
			return true
		}
	}
	return false
}
