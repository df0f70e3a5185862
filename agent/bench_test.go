package agent_test

import (
	"context"
	"fmt"
	"log/slog"
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
// every entry. "batch" creates them in one BatchCreateEntries call (what
// `entry create --data` does), "one-by-one" with 1000 CreateEntry calls. It
// reports creation time and the propagation after the last entry was created.
func BenchmarkEntryPropagation1000(b *testing.B) {
	for _, batch := range []bool{true, false} {
		name := map[bool]string{true: "batch", false: "one-by-one"}[batch]
		b.Run(name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				propagate1000(b, batch)
			}
		})
	}
}

func propagate1000(b *testing.B, batch bool) {
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
	go func() { done <- agent.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-done }()
	<-ready

	// The workload already holds one identity and has its stream open: with
	// none, the Workload API answers PermissionDenied and go-spiffe backs off
	// for about a second, which would measure the client's retry, not us.
	base := &api.Entry{SpiffeId: "spiffe://example.org/svc/base", ParentId: agentID, Selectors: []*api.Selector{{Type: "unix", Value: "uid:4242"}}}
	if _, err := s.Admin().CreateEntry(ctx, &api.CreateEntryRequest{Entry: base}); err != nil {
		b.Fatal(err)
	}
	wl, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		b.Fatal(err)
	}
	defer wl.Close()
	counts := make(chan int, 64)
	go func() { _ = wl.WatchX509Context(ctx, countWatcher(counts)) }()
	for n := 0; n < 1; {
		select {
		case n = <-counts:
		case <-ctx.Done():
			b.Fatal("the workload never got its first identity")
		}
	}

	b.StartTimer()
	start := time.Now()
	entries := make([]*api.Entry, 1000)
	for i := range entries {
		entries[i] = &api.Entry{SpiffeId: fmt.Sprintf("spiffe://example.org/svc/%d", i), ParentId: agentID,
			Selectors: []*api.Selector{{Type: "unix", Value: "uid:4242"}}}
	}
	if batch {
		if _, err := s.Admin().BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: entries}); err != nil {
			b.Fatal(err)
		}
	} else {
		for _, e := range entries {
			if _, err := s.Admin().CreateEntry(ctx, &api.CreateEntryRequest{Entry: e}); err != nil {
				b.Fatal(err)
			}
		}
	}
	created := time.Now()
	for n := 0; n < 1001; {
		select {
		case n = <-counts:
		case <-ctx.Done():
			b.Fatalf("only %d of 1001 SVIDs arrived", n)
		}
	}
	visible := time.Now()
	b.StopTimer()
	b.ReportMetric(float64(created.Sub(start).Milliseconds()), "create-1000-ms")
	b.ReportMetric(float64(visible.Sub(created).Milliseconds()), "visible-after-last-create-ms")
	b.ReportMetric(float64(visible.Sub(start).Milliseconds()), "total-ms")
	s.Stop()
}

type countWatcher chan int

func (w countWatcher) OnX509ContextUpdate(x *workloadapi.X509Context) { w <- len(x.SVIDs) }
func (w countWatcher) OnX509ContextWatchError(error)                  {}
