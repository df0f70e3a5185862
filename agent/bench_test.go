package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
)

// BenchmarkEntryPropagation1000 measures, against a real in-process server,
// the time from creating 1000 entries (through the admin service) to all
// 1000 SVIDs arriving on one open Workload API stream; the workload matches
// every entry. It reports creation time and the propagation after the last
// entry was created.
func BenchmarkEntryPropagation1000(b *testing.B) {
	for range b.N {
		b.StopTimer()
		propagate1000(b)
	}
}

func propagate1000(b *testing.B) {
	s := startServer(b)
	tok, err := s.Admin().CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sgb")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ready := make(chan struct{})
	cfg := agent.Config{
		ServerAddress: s.Addr(), TrustDomain: td.Name(), DataDir: filepath.Join(dir, "data"),
		JoinToken: tok.Token, TrustBundlePEM: s.BundlePEM(), SocketPath: filepath.Join(dir, "agent.sock"),
		// Every caller is the benchmark workload.
		Attestor: attestor.Func(func(context.Context, int32) ([]selector.Selector, error) {
			return []selector.Selector{{Type: "unix", Value: "uid:4242"}}, nil
		}),
		OnReady: func(agent.ReadyInfo) { close(ready) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg, nil) }()
	defer func() { cancel(); <-done }()
	<-ready

	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		b.Fatal(err)
	}
	defer wl.Close()
	counts := make(chan int, 64)
	go func() { _ = wl.WatchX509Context(ctx, countWatcher(counts)) }()

	b.StartTimer()
	start := time.Now()
	for i := range 1000 {
		e := &api.Entry{SpiffeId: fmt.Sprintf("spiffe://example.org/svc/%d", i), ParentId: agentID,
			Selectors: []*api.Selector{{Type: "unix", Value: "uid:4242"}}}
		if _, err := s.Admin().CreateEntry(ctx, &api.CreateEntryRequest{Entry: e}); err != nil {
			b.Fatal(err)
		}
	}
	created := time.Now()
	for n := 0; n < 1000; {
		select {
		case n = <-counts:
		case <-ctx.Done():
			b.Fatalf("only %d of 1000 SVIDs arrived", n)
		}
	}
	visible := time.Now()
	b.StopTimer()
	b.ReportMetric(float64(created.Sub(start).Milliseconds()), "create-1000-ms")
	b.ReportMetric(float64(visible.Sub(created).Milliseconds()), "visible-after-last-create-ms")
	b.ReportMetric(float64(visible.Sub(start).Milliseconds()), "total-ms")
	s.stop()
}

type countWatcher chan int

func (w countWatcher) OnX509ContextUpdate(x *workloadapi.X509Context) { w <- len(x.SVIDs) }
func (w countWatcher) OnX509ContextWatchError(error)                  {}
