package ca

import (
	"context"
	"fmt"
	"time"
)

const (
	// maxWait bounds Run's sleep so a wall-clock jump or a suspended host
	// delays a rotation step by at most this much.
	maxWait = time.Minute
	// retryWait is how long Run waits after a failed rotation step.
	retryWait = 5 * time.Second
)

// window is the part of an authority's life the rotation schedule reads.
type window struct {
	published time.Time // when it entered the published set
	notAfter  time.Time // nothing it signed is valid after this
}

func (w window) life() time.Duration { return w.notAfter.Sub(w.published) }

// prepareAt is when the successor of an active authority is created and
// published: half way through its life.
func (w window) prepareAt() time.Time { return w.published.Add(w.life() / 2) }

// activateAt is when next replaces active: at 1/6 of active's life left, but
// never before next has been published for 1/12 of that life (at least half
// an SVID TTL, so agents and file writers hold the new root before any SVID
// signed by it appears), and never after active expires.
func activateAt(active, next window) time.Time {
	life := active.life()
	t := active.notAfter.Add(-life / 6)
	if earliest := next.published.Add(life / 12); earliest.After(t) {
		t = earliest
	}
	if t.After(active.notAfter) {
		t = active.notAfter
	}
	return t
}

// slots are the authorities of one kind: the one that signs, the published
// successor, retired ones kept until they expire, and those an operator
// revoked, remembered until they would have expired.
type slots[K any] struct {
	active  *K
	next    *K
	retired []*K
	revoked []tombstone
}

// tombstone is a revoked authority: its key is deleted, and the server
// keeps removing it from the store until it would have expired anyway.
type tombstone struct {
	id       string
	notAfter time.Time
}

func (s slots[K]) all() []*K {
	var out []*K
	if s.active != nil {
		out = append(out, s.active)
	}
	if s.next != nil {
		out = append(out, s.next)
	}
	return append(out, s.retired...)
}

// event records one rotation step for the log.
type event[K any] struct {
	what string
	key  *K
}

// rotateSlots returns s advanced to now, creating keys with create. It never
// modifies s, so a failed persist leaves the Manager as it was.
func rotateSlots[K any](s slots[K], now time.Time, win func(*K) window, create func() (*K, error)) (slots[K], []event[K], error) {
	var events []event[K]
	out := slots[K]{active: s.active, next: s.next}
	for _, t := range s.revoked {
		if t.notAfter.After(now) {
			out.revoked = append(out.revoked, t)
		}
	}
	for _, r := range s.retired {
		if win(r).notAfter.After(now) {
			out.retired = append(out.retired, r)
		} else {
			events = append(events, event[K]{"dropped expired", r})
		}
	}
	// A few passes cover a server that was down across several steps.
	for range 3 {
		stepped := false
		switch {
		case out.active == nil || !win(out.active).notAfter.After(now):
			if out.active != nil {
				events = append(events, event[K]{"dropped expired active", out.active})
			}
			if out.next != nil && win(out.next).notAfter.After(now) {
				out.active, out.next = out.next, nil
			} else {
				k, err := create()
				if err != nil {
					return s, nil, err
				}
				out.active, out.next = k, nil
			}
			events = append(events, event[K]{"activated without notice", out.active})
			stepped = true
		case out.next == nil && !now.Before(win(out.active).prepareAt()):
			k, err := create()
			if err != nil {
				return s, nil, err
			}
			out.next = k
			events = append(events, event[K]{"published next", k})
			stepped = true
		case out.next != nil && !now.Before(activateAt(win(out.active), win(out.next))):
			out.retired = append(out.retired, out.active)
			events = append(events, event[K]{"retired", out.active})
			out.active, out.next = out.next, nil
			events = append(events, event[K]{"activated", out.active})
			stepped = true
		}
		if !stepped {
			break
		}
	}
	return out, events, nil
}

// nextDue is the earliest time a rotation step of s falls due.
func nextDue[K any](s slots[K], win func(*K) window) time.Time {
	if s.active == nil {
		return time.Time{}
	}
	a := win(s.active)
	t := a.notAfter
	if s.next == nil {
		t = minTime(t, a.prepareAt())
	} else {
		t = minTime(t, activateAt(a, win(s.next)))
	}
	for _, r := range s.retired {
		t = minTime(t, win(r).notAfter)
	}
	return t
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func caWindow(k *caKey) window   { return window{k.published, k.cert.NotAfter} }
func jwtWindow(k *jwtKey) window { return window{k.published, k.notAfter} }

// Rotate performs every rotation step due at the clock's current time:
// publishing a next authority, activating it, dropping expired ones. The
// new state is persisted before it is used. Run calls it on schedule.
func (m *Manager) Rotate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	// JWT keys need no upstream: a CA step that fails (an upstream
	// server down) must not hold up theirs. It is reported after them.
	x, xev, caErr := rotateSlots(m.x509, now, caWindow, func() (*caKey, error) { return m.successorCA(ctx, now) })
	if caErr != nil {
		if m.x509.active == nil {
			return fmt.Errorf("ca: rotate CA: %w", caErr)
		}
		x, xev, caErr = m.x509, nil, fmt.Errorf("ca: rotate CA: %w", caErr)
	}
	jwt, dropped := m.jwt, (*jwtKey)(nil)
	if m.retype {
		jwt, dropped = retypeJWT(m.jwt, m.jwtType, now)
	}
	j, jev, err := rotateSlots(jwt, now, jwtWindow, func() (*jwtKey, error) { return newJWTKey(m.jwtType, now, m.jwtLife) })
	if err != nil {
		return fmt.Errorf("ca: rotate JWT key: %w", err)
	}
	marks := pruneMarks(m.upMarks, now)
	forgot := len(x.revoked) != len(m.x509.revoked) || len(j.revoked) != len(m.jwt.revoked) || len(marks) != len(m.upMarks)
	if len(xev) == 0 && len(jev) == 0 && !forgot && dropped == nil {
		m.retype = false
		return caErr
	}
	prevMarks := m.upMarks
	m.upMarks = marks
	if err := m.persist(m.x509, m.jwt, x, j); err != nil {
		m.upMarks = prevMarks
		return fmt.Errorf("ca: %w", err)
	}
	first := m.x509.active == nil
	m.x509, m.jwt = x, j
	m.retype = false
	m.refreshLocked()
	if dropped != nil {
		m.log.Warn("prepared JWT key dropped, unused: it is not of jwt_key_type, and one of that type takes its place in time for the scheduled activation",
			"kid", dropped.kid, "key_type", dropped.typ, "jwt_key_type", m.jwtType)
	}
	for _, e := range xev {
		if first && e.what == "activated without notice" {
			e.what = "created"
		}
		attrs := []any{"key_id", e.key.id, "not_after", e.key.cert.NotAfter}
		if e.key.upstream() {
			attrs = append(attrs, "upstream_issuer", e.key.cert.Issuer.String())
		}
		m.log.Info("X.509 CA "+e.what, attrs...)
	}
	for _, e := range jev {
		if first && e.what == "activated without notice" {
			e.what = "created"
		}
		m.log.Info("JWT key "+e.what, "kid", e.key.kid, "not_after", e.key.notAfter)
	}
	m.notify()
	return caErr
}

// successorCA is newCA for the rotation schedule. An upstream server may
// sign a CA that ends with (or barely after) the active one, its own CA
// signing both; that one would extend nothing, so it is refused and asked
// for again at the next retry, by when the upstream signs with its next
// CA. A successor must outlive the active CA by its activation window.
func (m *Manager) successorCA(ctx context.Context, now time.Time) (*caKey, error) {
	k, err := m.newCA(ctx, now)
	if err != nil {
		return nil, err
	}
	if _, remote := m.up.(UpstreamServer); remote {
		if a := m.x509.active; a != nil && k.cert.NotAfter.Before(a.cert.NotAfter.Add(caWindow(a).life()/caLifeFactor)) {
			return nil, fmt.Errorf("the upstream server signed a CA that ends at %s, hardly after the active one (%s); asking again shortly",
				k.cert.NotAfter.UTC().Format(time.RFC3339), a.cert.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return k, nil
}

// newCA creates the next X.509 CA: self-signed, or signed by the upstream.
func (m *Manager) newCA(ctx context.Context, now time.Time) (*caKey, error) {
	if m.up == nil {
		return newCA(m.td, now, m.caTTL)
	}
	k, err := newUpstreamCA(ctx, m.up, m.td, now, m.caTTL)
	if err != nil {
		return nil, err
	}
	if err := m.checkUpstreamRoot(k); err != nil {
		return nil, err
	}
	if _, remote := m.up.(UpstreamServer); !remote && k.cert.NotAfter.Before(now.Add(m.caTTL)) {
		m.log.Warn("the upstream authority's certificate expires before the CA TTL, so the new CA expires with it; replace the upstream certificate",
			"ca_not_after", k.cert.NotAfter, "ca_ttl", m.caTTL)
	}
	return k, nil
}

// nextDue is when Rotate next has work to do.
func (m *Manager) nextDue() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return minTime(nextDue(m.x509, caWindow), nextDue(m.jwt, jwtWindow))
}

// Run rotates the CA and JWT keys on schedule until ctx ends, then returns
// nil. Failed steps are logged and retried.
func (m *Manager) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		var wait time.Duration
		if err := m.Rotate(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Error("rotation step failed; will retry", "error", err, "retry_in", retryWait)
			wait = retryWait
		} else {
			wait = m.nextDue().Sub(m.now())
		}
		timer.Reset(min(max(wait, 10*time.Millisecond), maxWait))
	}
}
