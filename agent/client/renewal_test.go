package client

import (
	"context"
	"crypto/x509"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The agent SVID is renewed at a point drawn uniformly between 50% and 60%
// of its lifetime, so agents attested together drift apart instead of
// renewing in lockstep for good.
func TestRenewalTime(t *testing.T) {
	nb := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(time.Hour)}
	lo, hi := nb.Add(30*time.Minute), nb.Add(36*time.Minute)
	bounds := []struct {
		name string
		draw func(time.Duration) time.Duration
		want time.Time
	}{
		{"lowest draw", func(time.Duration) time.Duration { return 0 }, lo},
		{"highest draw", func(n time.Duration) time.Duration { return n - 1 }, hi.Add(-1)},
	}
	for _, b := range bounds {
		if got := renewalTime(leaf, b.draw); !got.Equal(b.want) {
			t.Errorf("%s: renewal at %s, want %s", b.name, got, b.want)
		}
	}
	first, last := hi, lo
	for range 2000 {
		at := renewalTime(leaf, mrand.N[time.Duration])
		if at.Before(lo) || !at.Before(hi) {
			t.Fatalf("renewal at %s, outside [%s, %s)", at, lo, hi)
		}
		first, last = minTime(first, at), maxTime(last, at)
	}
	// Each end's 1% of the window is missed by 2000 draws with a
	// probability of 2e-9.
	if slack := 36 * time.Second; first.After(lo.Add(slack)) || last.Before(hi.Add(-slack)) {
		t.Fatalf("2000 draws between %s and %s; want them spread over [%s, %s)", first, last, lo, hi)
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// A renewal asked for by a refusal (or a taint) waits a random delay of at
// most a few seconds first: a refusal or taint reaching every agent at once
// must not bring all their renewals to the server in the same instant.
// Against a real server, with the draw fixed.
func TestRequestedRenewalWaitsRandomDelay(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	renewed := make(chan struct{}, 4)
	c := newClient(t, s, t.TempDir(), static(s.token(t, "")), func(cfg *Config) {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithUnaryInterceptor(signalRenewals(renewed)))
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const delay = 400 * time.Millisecond
	var mu sync.Mutex
	var asked []time.Duration
	c.randN = func(n time.Duration) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, n)
		return min(delay, n-1)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	start := time.Now()
	c.ReportAuthFailure(status.Error(codes.PermissionDenied, "refused"))
	select {
	case <-renewed:
	case <-time.After(20 * time.Second):
		t.Fatal("the requested renewal did not happen")
	}
	elapsed := time.Since(start)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) == 0 || asked[0] <= 0 || asked[0] > 5*time.Second {
		t.Fatalf("random delays asked for: %v; want the first, the request's, drawn from at most a few seconds", asked)
	}
	if elapsed < delay {
		t.Fatalf("renewed %s after the request, before the drawn delay of %s", elapsed, delay)
	}
}
