package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// seedEntries inserts n entries (3 selectors, 2 DNS names each) in one
// transaction: committing them one by one would benchmark fsync, not reads.
func seedEntries(b *testing.B, s Store, n int) {
	b.Helper()
	ctx := context.Background()
	err := s.(*sqlStore).write(ctx, func(t *tx) error {
		for i := range n {
			e := workload(b, fmt.Sprintf("/ns/%d/sa/%d", i%100, i), "k8s:ns:payments", fmt.Sprintf("k8s:sa:sa-%d", i), "k8s:pod-label:app:web")
			e.DNSNames = []string{fmt.Sprintf("svc-%d.payments.svc", i), "web.example"}
			e.X509TTL = time.Hour
			e = normalizeEntry(e)
			e.ID, e.Revision, e.CreatedAt = uuid.NewString(), 1, roundTrip(time.Now())
			if err := insertEntry(ctx, t, e); err != nil {
				return err
			}
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		b.Fatalf("seed %d entries: %v", n, err)
	}
}

func BenchmarkListEntries10k(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := openStore(b, be.newURL(b))
			seedEntries(b, s, 10_000)
			ctx := context.Background()
			for b.Loop() {
				list, err := s.ListEntries(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if len(list) != 10_000 || len(list[0].Selectors) != 3 {
					b.Fatalf("listed %d entries", len(list))
				}
			}
		})
	}
}

// BenchmarkCreateEntry measures one durable (synced) write.
func BenchmarkCreateEntry(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			s := openStore(b, be.newURL(b))
			ctx := context.Background()
			i := 0
			for b.Loop() {
				i++
				if _, err := s.CreateEntry(ctx, workload(b, fmt.Sprintf("/w/%d", i), "unix:uid:1", "unix:gid:1")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
