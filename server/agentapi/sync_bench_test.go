package agentapi

import (
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// BenchmarkSyncWakeUp is what a Sync stream does for each catalog change:
// build the agent's message and compare its digest with the last one sent.
func BenchmarkSyncWakeUp(b *testing.B) {
	agent := spiffeid.RequireFromString("spiffe://example.org/agent/a")
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			entries := make([]registry.Entry, n)
			for i := range entries {
				entries[i] = registry.Entry{
					ID:        fmt.Sprintf("k8s.c.%032x", i),
					SPIFFEID:  spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/ns/default/sa/app-%d", i)),
					ParentID:  agent,
					Selectors: []selector.Selector{{Type: "k8s", Value: "ns:default"}, {Type: "k8s", Value: fmt.Sprintf("pod-uid:%032x", i)}},
					DNSNames:  []string{fmt.Sprintf("app-%d.default.svc.cluster.local", i)},
					X509TTL:   time.Hour, Revision: 1, CreatedAt: time.Now(),
				}
			}
			snap := &catalog.Snapshot{Entries: registry.NewIndex(entries), Bundles: map[string]catalog.Bundle{
				td.Name(): {TrustDomain: td.Name(), Sequence: 3, Authorities: []store.Authority{{Kind: store.X509Authority, Data: make([]byte, 500)}}},
			}}
			s := New(Config{TrustDomain: td})
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				got, _ := snap.Entries.AuthorizedUntil(agent, nil, now)
				resp := s.syncResponse(snap, got)
				if digest(resp) == ([32]byte{}) {
					b.Fatal("zero digest")
				}
			}
		})
	}
}
