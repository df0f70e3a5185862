package ca

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Status is where a local authority stands in its rotation.
type Status string

const (
	// StatusActive signs.
	StatusActive Status = "active"
	// StatusPrepared is published and signs once activated.
	StatusPrepared Status = "prepared"
	// StatusOld was active; it stays published until it expires.
	StatusOld Status = "old"
	// StatusRevoked was removed from the bundle by an operator.
	StatusRevoked Status = "revoked"
)

var (
	// ErrUnknownAuthority: no authority of that kind has that ID.
	ErrUnknownAuthority = errors.New("unknown authority")
	// ErrAuthorityState: the authority's status does not allow the step.
	ErrAuthorityState = errors.New("authority state does not allow this")
)

// LocalAuthority is one of this server's own X.509 CAs or JWT keys, as an
// operator sees it.
type LocalAuthority struct {
	Kind AuthorityKind
	// ID is the hex SHA-256 of the CA certificate (for a self-signed CA
	// also its bundle key ID), or the JWT kid.
	ID          string
	Status      Status
	Tainted     bool
	PublishedAt time.Time // zero for a revoked authority
	ExpiresAt   time.Time
	// UpstreamIssuer is the subject of the upstream certificate that signed
	// an X.509 CA; empty when self-signed.
	UpstreamIssuer string
	// UpstreamRootID is the ID of the upstream root an X.509 CA chains to
	// (what upstreamauthority taint takes); empty when self-signed.
	UpstreamRootID string
	// KeyType is a JWT key's type (its JWS algorithm is KeyType.Algorithm).
	KeyType JWTKeyType
	// SubjectKeyID is an X.509 CA's subject key ID in hex: the
	// AuthorityKeyId of what it signs. Empty for JWT keys and revoked CAs.
	SubjectKeyID string
}

// kindOps is what the operator steps need to know of one kind of key.
type kindOps[K any] struct {
	kind     AuthorityKind
	noun     string // for messages: "X.509 CA", "JWT key"
	id       func(*K) string
	notAfter func(*K) time.Time
	tainted  func(*K) bool
	// withTaint returns a tainted copy: keys are never changed in place
	// because signers read the active one without the lock.
	withTaint func(*K) *K
	// taintable refuses a taint that could not protect anyone.
	taintable func(*K) error
	describe  func(*K, Status) LocalAuthority
}

var caOps = kindOps[caKey]{
	kind:     KindX509,
	noun:     "X.509 CA",
	id:       func(k *caKey) string { return k.id },
	notAfter: func(k *caKey) time.Time { return k.cert.NotAfter },
	tainted:  func(k *caKey) bool { return k.tainted },
	withTaint: func(k *caKey) *caKey {
		c := *k
		c.tainted = true
		return &c
	},
	taintable: func(k *caKey) error {
		if k.upstream() {
			return fmt.Errorf("%w: X.509 CA %s was signed by the upstream authority (%s) and the bundle holds the upstream's roots, not this CA, so it cannot be taken out of the bundle by itself: what it signed verifies until it expires at %s (the CA lifetime); being old, it signs nothing more. To take its root out, replace the upstream root, then signet server upstreamauthority taint --authority-id %s",
				ErrAuthorityState, k.id, k.cert.Issuer, k.cert.NotAfter.UTC().Format(time.RFC3339), upstreamRootRef(k))
		}
		return nil
	},
	describe: func(k *caKey, st Status) LocalAuthority {
		a := LocalAuthority{Kind: KindX509, ID: k.id, Status: st, Tainted: k.tainted, PublishedAt: k.published, ExpiresAt: k.cert.NotAfter,
			SubjectKeyID: hex.EncodeToString(k.cert.SubjectKeyId)}
		if k.upstream() {
			a.UpstreamIssuer = k.cert.Issuer.String()
			a.UpstreamRootID = upstreamRootRef(k)
		}
		return a
	},
}

// upstreamRootRef is the ID of the root k chains to, or "UPSTREAM_ROOT_ID"
// when none of its roots issued its chain.
func upstreamRootRef(k *caKey) string {
	if r := k.rootOf(); r != nil {
		return rootID(r)
	}
	return "UPSTREAM_ROOT_ID"
}

var jwtOps = kindOps[jwtKey]{
	kind:     KindJWT,
	noun:     "JWT key",
	id:       func(k *jwtKey) string { return k.kid },
	notAfter: func(k *jwtKey) time.Time { return k.notAfter },
	tainted:  func(k *jwtKey) bool { return k.tainted },
	withTaint: func(k *jwtKey) *jwtKey {
		c := *k
		c.tainted = true
		return &c
	},
	taintable: func(*jwtKey) error { return nil },
	describe: func(k *jwtKey, st Status) LocalAuthority {
		return LocalAuthority{Kind: KindJWT, ID: k.kid, Status: st, Tainted: k.tainted, PublishedAt: k.published, ExpiresAt: k.notAfter, KeyType: k.typ}
	},
}

// find returns the authority of s with id and its status ("" if none; k
// is nil for a revoked one).
func (s slots[K]) find(o kindOps[K], id string) (k *K, st Status) {
	switch {
	case s.active != nil && o.id(s.active) == id:
		return s.active, StatusActive
	case s.next != nil && o.id(s.next) == id:
		return s.next, StatusPrepared
	}
	for _, r := range s.retired {
		if o.id(r) == id {
			return r, StatusOld
		}
	}
	for _, t := range s.revoked {
		if t.id == id {
			return nil, StatusRevoked
		}
	}
	return nil, ""
}

func (s slots[K]) list(o kindOps[K]) []LocalAuthority {
	var out []LocalAuthority
	if s.active != nil {
		out = append(out, o.describe(s.active, StatusActive))
	}
	if s.next != nil {
		out = append(out, o.describe(s.next, StatusPrepared))
	}
	for _, r := range s.retired {
		out = append(out, o.describe(r, StatusOld))
	}
	for _, t := range s.revoked {
		out = append(out, LocalAuthority{Kind: o.kind, ID: t.id, Status: StatusRevoked, Tainted: true, ExpiresAt: t.notAfter})
	}
	return out
}

// step is one operator step on the slots of one kind: it returns the new
// slots, what to report, and whether anything changed (a repeated step
// changes nothing, so a retry after a lost answer succeeds).
type step[K any] func(s slots[K]) (slots[K], LocalAuthority, bool, error)

func prepareStep[K any](o kindOps[K], create func() (*K, error)) step[K] {
	return func(s slots[K]) (slots[K], LocalAuthority, bool, error) {
		if s.next != nil {
			id := o.id(s.next)
			return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is already prepared; activate it (signet server localauthority %s activate --authority-id %s)",
				ErrAuthorityState, o.noun, id, o.kind, id)
		}
		k, err := create()
		if err != nil {
			return s, LocalAuthority{}, false, err
		}
		s.next = k
		return s, o.describe(k, StatusPrepared), true, nil
	}
}

func activateStep[K any](o kindOps[K], id string) step[K] {
	return func(s slots[K]) (slots[K], LocalAuthority, bool, error) {
		k, st := s.find(o, id)
		switch st {
		case StatusActive:
			return s, o.describe(k, st), false, nil
		case StatusPrepared:
			s.retired = append(slices.Clone(s.retired), s.active)
			s.active, s.next = k, nil
			return s, o.describe(k, StatusActive), true, nil
		case "":
			return s, LocalAuthority{}, false, fmt.Errorf("%w: no %s has ID %q", ErrUnknownAuthority, o.noun, id)
		}
		return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is %s; only the prepared one can be activated (signet server localauthority %s prepare)",
			ErrAuthorityState, o.noun, id, st, o.kind)
	}
}

func taintStep[K any](o kindOps[K], id string) step[K] {
	return func(s slots[K]) (slots[K], LocalAuthority, bool, error) {
		k, st := s.find(o, id)
		switch st {
		case StatusActive:
			return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is active; prepare and activate a new one first, then taint this one",
				ErrAuthorityState, o.noun, id)
		case StatusPrepared:
			return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is prepared and has signed nothing, so there is nothing to taint",
				ErrAuthorityState, o.noun, id)
		case StatusRevoked:
			return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is already revoked", ErrAuthorityState, o.noun, id)
		case "":
			return s, LocalAuthority{}, false, fmt.Errorf("%w: no %s has ID %q", ErrUnknownAuthority, o.noun, id)
		}
		if o.tainted(k) {
			return s, o.describe(k, st), false, nil
		}
		if err := o.taintable(k); err != nil {
			return s, LocalAuthority{}, false, err
		}
		t := o.withTaint(k)
		s.retired = slices.Clone(s.retired)
		s.retired[slices.Index(s.retired, k)] = t
		return s, o.describe(t, st), true, nil
	}
}

func revokeStep[K any](o kindOps[K], id string) step[K] {
	return func(s slots[K]) (slots[K], LocalAuthority, bool, error) {
		k, st := s.find(o, id)
		switch {
		case st == StatusRevoked:
			i := slices.IndexFunc(s.revoked, func(t tombstone) bool { return t.id == id })
			return s, LocalAuthority{Kind: o.kind, ID: id, Status: st, Tainted: true, ExpiresAt: s.revoked[i].notAfter}, false, nil
		case st == "":
			return s, LocalAuthority{}, false, fmt.Errorf("%w: no %s has ID %q", ErrUnknownAuthority, o.noun, id)
		case st != StatusOld:
			return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is %s; only an old, tainted one can be revoked",
				ErrAuthorityState, o.noun, id, st)
		case !o.tainted(k):
			return s, LocalAuthority{}, false, fmt.Errorf("%w: %s %s is not tainted; taint it first (signet server localauthority %s taint --authority-id %s), so agents re-sign what it issued, and revoke it once they have",
				ErrAuthorityState, o.noun, id, o.kind, id)
		}
		s.retired = slices.DeleteFunc(slices.Clone(s.retired), func(r *K) bool { return r == k })
		t := tombstone{id: id, notAfter: o.notAfter(k)}
		s.revoked = append(slices.Clone(s.revoked), t)
		return s, LocalAuthority{Kind: o.kind, ID: id, Status: StatusRevoked, Tainted: true, ExpiresAt: t.notAfter}, true, nil
	}
}

// apply runs one operator step on the slots at *s (m.x509 or m.jwt) under
// the lock: the new state is persisted before it is used, and a failed
// persist leaves the Manager as it was.
func apply[K any](ctx context.Context, m *Manager, s *slots[K], o kindOps[K], what string, st step[K]) (LocalAuthority, error) {
	if err := ctx.Err(); err != nil {
		return LocalAuthority{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := *s
	next, a, changed, err := st(prev)
	if err != nil || !changed {
		return a, err
	}
	oldX, oldJ := m.x509, m.jwt
	*s = next
	if err := m.persist(oldX, oldJ, m.x509, m.jwt); err != nil {
		*s = prev
		return LocalAuthority{}, fmt.Errorf("ca: %s %s %s: %w", what, o.noun, a.ID, err)
	}
	m.refreshLocked()
	m.log.Warn(o.noun+" "+what, "key_id", a.ID, "status", a.Status, "expires_at", a.ExpiresAt)
	m.notify()
	return a, nil
}

// LocalAuthorities lists this server's authorities of kind: the active
// one, any prepared one, old ones and revoked ones not yet expired.
func (m *Manager) LocalAuthorities(kind AuthorityKind) ([]LocalAuthority, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch kind {
	case KindX509:
		return m.x509.list(caOps), nil
	case KindJWT:
		return m.jwt.list(jwtOps), nil
	}
	return nil, badKind(kind)
}

// run applies the step of kind's slots: x for X.509 CAs, j for JWT keys.
func (m *Manager) run(ctx context.Context, kind AuthorityKind, what string, x step[caKey], j step[jwtKey]) (LocalAuthority, error) {
	switch kind {
	case KindX509:
		return apply(ctx, m, &m.x509, caOps, what+" by an operator", x)
	case KindJWT:
		return apply(ctx, m, &m.jwt, jwtOps, what+" by an operator", j)
	}
	return LocalAuthority{}, badKind(kind)
}

// Prepare creates and publishes a new authority of kind ahead of its
// schedule; Activate makes it sign. Refused while one is prepared.
func (m *Manager) Prepare(ctx context.Context, kind AuthorityKind) (LocalAuthority, error) {
	return m.run(ctx, kind, "prepared",
		prepareStep(caOps, func() (*caKey, error) { return m.newCA(ctx, m.now()) }),
		prepareStep(jwtOps, func() (*jwtKey, error) { return newJWTKey(m.jwtType, m.now(), m.jwtLife) }))
}

// Activate makes the prepared authority id the one that signs; the active
// one becomes old and stays published until it expires. Activating the
// active one again changes nothing.
func (m *Manager) Activate(ctx context.Context, kind AuthorityKind, id string) (LocalAuthority, error) {
	return m.run(ctx, kind, "activated", activateStep(caOps, id), activateStep(jwtOps, id))
}

// Taint marks the old authority id tainted: it stays in the bundle, but
// the bundle tells agents to re-sign what it issued. An X.509 CA signed by
// an upstream authority cannot be tainted.
func (m *Manager) Taint(ctx context.Context, kind AuthorityKind, id string) (LocalAuthority, error) {
	return m.run(ctx, kind, "tainted", taintStep(caOps, id), taintStep(jwtOps, id))
}

// Revoke removes the tainted old authority id from this server's published
// set and deletes its key; Revoked lists it until it would have expired, so
// the server removes it from the store.
func (m *Manager) Revoke(ctx context.Context, kind AuthorityKind, id string) (LocalAuthority, error) {
	return m.run(ctx, kind, "revoked", revokeStep(caOps, id), revokeStep(jwtOps, id))
}

// Revoked returns the revoked authorities not yet expired, this server's
// and upstream roots, and (nested) those the upstream server withdrew
// (Kind and KeyID only): they must not be in the store's bundle.
func (m *Manager) Revoked() []Authority {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Authority
	for _, t := range m.x509.revoked {
		out = append(out, Authority{Kind: KindX509, KeyID: t.id, ExpiresAt: t.notAfter})
	}
	for _, t := range m.jwt.revoked {
		out = append(out, Authority{Kind: KindJWT, KeyID: t.id, ExpiresAt: t.notAfter})
	}
	for _, mk := range m.upMarks {
		if mk.revoked {
			out = append(out, Authority{Kind: KindX509, KeyID: mk.id, ExpiresAt: mk.notAfter})
		}
	}
	return append(out, m.withdrawnLocked()...)
}

// ActiveCAID is the ID of the X.509 CA that signs now.
func (m *Manager) ActiveCAID() string { return m.activeCA.Load().id }

func badKind(kind AuthorityKind) error {
	return fmt.Errorf("unknown authority kind %q: want %q or %q", kind, KindX509, KindJWT)
}
