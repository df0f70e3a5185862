package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/signetid/signet/server/api"
)

// BenchmarkBatchSignX509SVID measures X509-SVID signings per second through
// the real batch RPC (mutual TLS 1.3, SQLite store, CSR verification and
// signing), reported as svids/s. Compare with BenchmarkRawECDSASign, the bare
// ecdsa.Sign rate of the same machine in the same run: the goal is >= 80%.
func BenchmarkBatchSignX509SVID(b *testing.B) {
	for _, batch := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ts := startServer(b, nil)
			a := mustAttest(b, ts, ts.token(b, "spiffe://example.org/agent/bench", 0))
			e := ts.createEntry(b, "spiffe://example.org/bench", a.ID.String(), "unix:uid:1")
			_, csr := newCSR(b)
			req := &api.BatchSignX509SVIDRequest{}
			for i := 0; i < batch; i++ {
				req.Requests = append(req.Requests, &api.X509SVIDRequest{EntryId: e.Id, Csr: csr})
			}
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := a.Client.BatchSignX509SVID(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "svids/s")
		})
	}
}

// BenchmarkRawECDSASign is the raw P-256 signing rate on all cores (the
// batch RPC signs on all cores too), reported as signs/s.
func BenchmarkRawECDSASign(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("signet"))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}
