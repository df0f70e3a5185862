package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
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

// benchNode is a real in-process server and agent, and a workload (every
// caller is uid 4242) with one identity and its X509 context stream open.
type benchNode struct {
	server  *realServer
	ctx     context.Context
	updates chan *workloadapi.X509Context
}

func startBenchNode(b *testing.B) *benchNode {
	s := startServer(b)
	tok, err := s.Admin().CreateJoinToken(context.Background(), &api.CreateJoinTokenRequest{SpiffeId: agentID, TtlSeconds: 600})
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sgb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	ready := make(chan struct{})
	cfg := agent.Config{
		ServerAddress: s.Addr(), TrustDomain: td.Name(), DataDir: filepath.Join(dir, "data"),
		JoinToken: tok.Token, TrustBundlePEM: s.BundlePEM(), SocketPath: filepath.Join(dir, "agent.sock"),
		Attestor: attestor.Func(func(context.Context, int32) ([]selector.Selector, error) {
			return []selector.Selector{{Type: "unix", Value: "uid:4242"}}, nil
		}),
		OnReady: func(agent.ReadyInfo) { close(ready) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	b.Cleanup(func() { cancel(); <-done; s.Stop() })
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
	b.Cleanup(func() { wl.Close() })
	n := &benchNode{server: s, ctx: ctx, updates: make(chan *workloadapi.X509Context, 64)}
	go func() { _ = wl.WatchX509Context(ctx, watcherFunc(func(x *workloadapi.X509Context) { n.updates <- x })) }()
	n.waitFor(b, "the first identity", func(x *workloadapi.X509Context) bool { return len(x.SVIDs) >= 1 })
	return n
}

// waitFor reads stream updates until one satisfies done.
func (n *benchNode) waitFor(b *testing.B, what string, done func(*workloadapi.X509Context) bool) {
	for {
		select {
		case x := <-n.updates:
			if done(x) {
				return
			}
		case <-n.ctx.Done():
			b.Fatalf("the workload never got %s", what)
		}
	}
}

func entries1000() []*api.Entry {
	entries := make([]*api.Entry, 1000)
	for i := range entries {
		entries[i] = &api.Entry{SpiffeId: fmt.Sprintf("spiffe://example.org/svc/%d", i), ParentId: agentID,
			Selectors: []*api.Selector{{Type: "unix", Value: "uid:4242"}}}
	}
	return entries
}

func propagate1000(b *testing.B, batch bool) {
	n := startBenchNode(b)
	admin := n.server.Admin()
	b.StartTimer()
	start := time.Now()
	entries := entries1000()
	if batch {
		if _, err := admin.BatchCreateEntries(n.ctx, &api.BatchCreateEntriesRequest{Entries: entries}); err != nil {
			b.Fatal(err)
		}
	} else {
		for _, e := range entries {
			if _, err := admin.CreateEntry(n.ctx, &api.CreateEntryRequest{Entry: e}); err != nil {
				b.Fatal(err)
			}
		}
	}
	created := time.Now()
	n.waitFor(b, "all 1001 SVIDs", func(x *workloadapi.X509Context) bool { return len(x.SVIDs) == 1001 })
	visible := time.Now()
	b.StopTimer()
	b.ReportMetric(float64(created.Sub(start).Milliseconds()), "create-1000-ms")
	b.ReportMetric(float64(visible.Sub(created).Milliseconds()), "visible-after-last-create-ms")
	b.ReportMetric(float64(visible.Sub(start).Milliseconds()), "total-ms")
}

// BenchmarkTaintResign1000 measures a forced rotation against a real
// in-process server and agent: with 1001 SVIDs held by one workload, the
// time from tainting the old CA (after prepare and activate) until the
// workload's stream carries all 1001 re-signed by the new CA.
func BenchmarkTaintResign1000(b *testing.B) {
	b.StopTimer()
	n := startBenchNode(b)
	admin := n.server.Admin()
	if _, err := admin.BatchCreateEntries(n.ctx, &api.BatchCreateEntriesRequest{Entries: entries1000()}); err != nil {
		b.Fatal(err)
	}
	n.waitFor(b, "all 1001 SVIDs", func(x *workloadapi.X509Context) bool { return len(x.SVIDs) == 1001 })
	for range b.N {
		list, err := admin.GetLocalAuthorities(n.ctx, &api.GetLocalAuthoritiesRequest{Kind: "x509"})
		if err != nil {
			b.Fatal(err)
		}
		var old string
		for _, a := range list.Authorities {
			if a.Status == "active" {
				old = a.AuthorityId
			}
		}
		p, err := admin.PrepareLocalAuthority(n.ctx, &api.PrepareLocalAuthorityRequest{Kind: "x509"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := admin.ActivateLocalAuthority(n.ctx, &api.ActivateLocalAuthorityRequest{Kind: "x509", AuthorityId: p.AuthorityId}); err != nil {
			b.Fatal(err)
		}
		newCA := caSubjectKeyID(b, n.server, p.AuthorityId)
		b.StartTimer()
		if _, err := admin.TaintLocalAuthority(n.ctx, &api.TaintLocalAuthorityRequest{Kind: "x509", AuthorityId: old}); err != nil {
			b.Fatal(err)
		}
		n.waitFor(b, "1001 SVIDs under the new CA", func(x *workloadapi.X509Context) bool {
			for _, svid := range x.SVIDs {
				if !bytes.Equal(svid.Certificates[0].AuthorityKeyId, newCA) {
					return false
				}
			}
			return len(x.SVIDs) == 1001
		})
		b.StopTimer()
	}
}

// caSubjectKeyID is the subject key ID of the bundle root with key ID id.
func caSubjectKeyID(b *testing.B, s *realServer, id string) []byte {
	bundle, err := s.Admin().GetBundle(context.Background(), &api.GetBundleRequest{})
	if err != nil {
		b.Fatal(err)
	}
	for _, der := range bundle.X509Authorities {
		if sum := sha256.Sum256(der); hex.EncodeToString(sum[:]) == id {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				b.Fatal(err)
			}
			return c.SubjectKeyId
		}
	}
	b.Fatalf("root %s is not in the bundle", id)
	return nil
}

type watcherFunc func(*workloadapi.X509Context)

func (f watcherFunc) OnX509ContextUpdate(x *workloadapi.X509Context) { f(x) }
func (watcherFunc) OnX509ContextWatchError(error)                    {}
