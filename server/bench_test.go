package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
)

// benchAgents is how many agents sign at once: a server serves many agents,
// and a single caller would leave the cores idle while its RPC is on the wire.
const benchAgents = 4

// BenchmarkBatchSignX509SVID measures X509-SVID signings per second through
// the real batch RPC (mutual TLS 1.3, SQLite store, CSR proof-of-possession
// check and signing), reported as svids/s, with benchAgents agents calling at
// once. Compare with BenchmarkRawECDSASign (the bare ecdsa.Sign rate of the
// same machine) and BenchmarkRawVerifyAndSign (the crypto every SVID needs).
func BenchmarkBatchSignX509SVID(b *testing.B) {
	benchBatchSign(b, func(b *testing.B) *testServer { return startServer(b, nil) })
}

// BenchmarkBatchSignX509SVIDAudited is BenchmarkBatchSignX509SVID with the
// audit log on: one JSON record per SVID, written to io.Discard.
func BenchmarkBatchSignX509SVIDAudited(b *testing.B) {
	benchBatchSign(b, func(b *testing.B) *testServer {
		return runServerLogging(b, testConfig(b, func(c *server.Config) { c.AuditLog = true }), slog.New(slog.NewJSONHandler(io.Discard, nil)))
	})
}

func benchBatchSign(b *testing.B, start func(*testing.B) *testServer) {
	for _, batch := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			ts := start(b)
			_, csr := newCSR(b)
			clients := make([]api.AgentServiceClient, benchAgents)
			reqs := make([]*api.BatchSignX509SVIDRequest, benchAgents)
			for i := range clients {
				a := mustAttest(b, ts, ts.token(b, fmt.Sprintf("spiffe://example.org/agent/bench%d", i), 0))
				e := ts.createEntry(b, fmt.Sprintf("spiffe://example.org/bench%d", i), a.ID.String(), "unix:uid:1")
				clients[i], reqs[i] = a.Client, &api.BatchSignX509SVIDRequest{}
				for range batch {
					reqs[i].Requests = append(reqs[i].Requests, &api.X509SVIDRequest{EntryId: e.Id, Csr: csr})
				}
			}
			var next atomic.Int32
			ctx := context.Background()
			b.SetParallelism((benchAgents + 1) / 2) // GOMAXPROCS x this goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)-1) % benchAgents
				for pb.Next() {
					if _, err := clients[i].BatchSignX509SVID(ctx, reqs[i]); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "svids/s")
		})
	}
}

// BenchmarkRawECDSASign is the raw P-256 signing rate on all cores (the
// batch RPC signs on all cores too), reported as signs/s.
func BenchmarkRawECDSASign(b *testing.B) {
	key, digest := rawSigner(b)
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

// BenchmarkRawVerifyAndSign is the least crypto an X509-SVID costs, on all
// cores: verify the CSR's signature (proof of possession of the key), then
// one ecdsa.Sign. No encoding, no RPC. Reported as svids/s.
func BenchmarkRawVerifyAndSign(b *testing.B) {
	_, csrDER := newCSR(b)
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		b.Fatal(err)
	}
	key, digest := rawSigner(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := csr.CheckSignature(); err != nil {
				b.Error(err)
				return
			}
			if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "svids/s")
}

// rawSigner is a P-256 key and a SHA-256 digest for the raw baselines.
func rawSigner(b *testing.B) (*ecdsa.PrivateKey, [sha256.Size]byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return key, sha256.Sum256([]byte("signet"))
}
