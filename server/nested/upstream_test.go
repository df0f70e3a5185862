package nested

import (
	"testing"
	"time"
)

// A bundle older than the last one applied (a lagging upstream peer) is
// skipped for staleBundleWait, then taken (the upstream's store went back).
func TestUpstreamSkipsStaleBundles(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	u := &Upstream{}
	for _, step := range []struct {
		seq      uint64
		at       time.Duration
		wantSkip bool
	}{
		{5, 0, false},
		{7, time.Second, false},
		{6, 2 * time.Second, true}, // a peer that has not reloaded
		{7, 3 * time.Second, false},
		{6, 4 * time.Second, true}, // a new lag starts its own wait
		{6, 4*time.Second + staleBundleWait - time.Millisecond, true},
		{6, 4*time.Second + staleBundleWait, false}, // older for that long: taken
		{6, 40 * time.Second, false},
		{8, 41 * time.Second, false},
	} {
		if got := u.stale(step.seq, t0.Add(step.at)); got != step.wantSkip {
			t.Errorf("sequence %d at +%v: skipped %v, want %v", step.seq, step.at, got, step.wantSkip)
		}
	}
}
