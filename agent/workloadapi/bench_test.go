package workloadapi_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	spiffewl "github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"

	"github.com/signetid/signet/agent/cache"
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

// BenchmarkSDSRotationPush measures what an SVID rotation costs Envoy
// sidecars: from the cache's new state to every open StreamSecrets stream
// holding the new secrets (default + ROOTCA), for 1 and 100 streams.
func BenchmarkSDSRotationPush(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			e := start(b)
			client := e.sds(b)
			var streams []grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
			for range n {
				s, err := client.StreamSecrets(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Send(&discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30, nil), ResourceNames: []string{"default", "ROOTCA"}}); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Recv(); err != nil {
					b.Fatal(err)
				}
				streams = append(streams, s)
			}
			// Distinct states, made before the clock runs: each push is a
			// real change (a new SVID).
			states := make([]*cache.WorkloadState, 8)
			for i := range states {
				states[i] = state(b, e.ca, e.fed, e.ca.X509SVID(b, "/app", "internal"))
			}
			i := 0
			for b.Loop() {
				e.provider.SetState(states[i%len(states)])
				i++
				for _, s := range streams {
					if _, err := s.Recv(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkSDSFetchSecrets is one FetchSecrets call on an open connection
// (attestation included).
func BenchmarkSDSFetchSecrets(b *testing.B) {
	e := start(b)
	client := e.sds(b)
	req := &discoveryv3.DiscoveryRequest{Node: envoyNode(1, 30, nil), ResourceNames: []string{"default", "ROOTCA"}}
	for b.Loop() {
		if _, err := client.FetchSecrets(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
