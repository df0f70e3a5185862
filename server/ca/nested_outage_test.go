package ca_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/signetid/signet/server/ca"
)

// inProcessUpstream is an upstream server's Manager called in-process, as
// the nested service would call it.
type inProcessUpstream struct {
	up  *ca.Manager
	now func() time.Time
}

func (u inProcessUpstream) ServerAddress() string       { return "in-process" }
func (u inProcessUpstream) Ready(context.Context) error { return nil }

func (u inProcessUpstream) MintX509CA(ctx context.Context, tmpl *x509.Certificate, key crypto.Signer) ([]*x509.Certificate, []*x509.Certificate, error) {
	csr, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{URIs: tmpl.URIs}, key)
	if err != nil {
		return nil, nil, err
	}
	chain, err := u.up.SignDownstreamCA(ctx, csr, tmpl.NotAfter.Sub(u.now()))
	if err != nil {
		return nil, nil, err
	}
	var roots []*x509.Certificate
	for _, a := range u.up.Authorities() {
		if a.Kind == ca.KindX509 {
			c, err := x509.ParseCertificate(a.Data)
			if err != nil {
				return nil, nil, err
			}
			roots = append(roots, c)
		}
	}
	return chain, roots, nil
}

// From any minute, a downstream server rides out an outage of its upstream
// of close to half its own CA lifetime (more than 2/5 of it, depending on
// how the two schedules fall): at every moment it holds a CA (active or
// prepared) that lives that long. Its first CA, signed when the upstream's
// own CA may have little life left, can be short: in the first lifetime
// a quarter is what holds. Both run on one clock for four CA lifetimes in
// one-minute steps, the downstream starting at several offsets, with SVID
// TTL 1 h and the default CA lifetime (6 h) or 24 h.
func TestNestedOutageTolerance(t *testing.T) {
	for _, caTTL := range []time.Duration{6 * time.Hour, 24 * time.Hour} {
		for _, offset := range []time.Duration{0, 17 * time.Minute, 80 * time.Minute, 3 * time.Hour, 5*time.Hour + 59*time.Minute} {
			first, steady := simulateOutageTolerance(t, caTTL, offset)
			// Less the phase of the two schedules, the minute steps and
			// the backdating.
			if want := caTTL * 2 / 5; steady < want {
				t.Errorf("CA TTL %v, downstream %v after the upstream: it rides out only a %v upstream outage after its first CA lifetime; want at least %v", caTTL, offset, steady, want)
			}
			if want := caTTL/4 - 5*time.Minute; first < want {
				t.Errorf("CA TTL %v, downstream %v after the upstream: it rides out only a %v upstream outage in its first CA lifetime; want at least %v", caTTL, offset, first, want)
			}
		}
	}
}

// simulateOutageTolerance returns the shortest time, over every minute,
// for which the downstream could go on signing without its upstream: in
// its first CA lifetime, and after.
func simulateOutageTolerance(t *testing.T, caTTL, offset time.Duration) (first, steady time.Duration) {
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Minute)
	clk := newFakeClock(t0)
	up := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, CATTL: caTTL})
	for d := time.Duration(0); d <= offset; d += time.Minute {
		clk.Set(t0.Add(d))
		if err := up.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	down := newManager(t, ca.Config{Clock: clk.Now, SVIDTTL: svidTTL, CATTL: caTTL, Upstream: inProcessUpstream{up, clk.Now}})
	first, steady = 4*caTTL, 4*caTTL
	for d := offset; d < offset+4*caTTL; d += time.Minute {
		now := t0.Add(d)
		clk.Set(now)
		if err := up.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		// A CA the upstream signed too early is refused and asked for
		// again: Rotate reports it, and the next step retries.
		_ = down.Rotate(ctx)
		var last time.Time
		cas, _ := down.LocalAuthorities(ca.KindX509)
		for _, a := range cas {
			if (a.Status == ca.StatusActive || a.Status == ca.StatusPrepared) && a.ExpiresAt.After(last) {
				last = a.ExpiresAt
			}
		}
		worst := &steady
		if d < offset+caTTL {
			worst = &first
		}
		*worst = min(*worst, last.Sub(now))
	}
	t.Logf("CA TTL %v, downstream %v after the upstream: worst-case upstream outage ridden out %v in the first CA lifetime, %v after", caTTL, offset, first, steady)
	return first, steady
}
