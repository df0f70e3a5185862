package workloadapi_test

import (
	"slices"
	"testing"
	"time"

	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
)

// BenchmarkFetchX509SVIDFreshConnection measures what a workload starting up
// sees: dial, attest (executable digest cached), first FetchX509SVID message.
func BenchmarkFetchX509SVIDFreshConnection(b *testing.B) {
	e := start(b)
	fetch := func() time.Duration {
		t0 := time.Now()
		c, err := spiffewl.New(b.Context(), spiffewl.WithAddr(e.addr))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.FetchX509SVID(b.Context()); err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		c.Close()
		return d
	}
	fetch() // warm the executable digest cache
	var lat []time.Duration
	for b.Loop() {
		lat = append(lat, fetch())
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
