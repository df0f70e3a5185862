package adminapi

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

// TestPurgeAgentsRefusals: a time not in the past is refused before
// anything is removed; an agent recorded without can_reattest by an older
// server still counts as re-attesting by its type.
func TestPurgeAgentsRefusals(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat, err := catalog.New(ctx, st, auditTD, discard)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Store: st, Catalog: cat, Logger: discard})
	old := time.Now().Add(-48 * time.Hour)
	if err := st.UpsertNode(ctx, store.Node{SPIFFEID: "spiffe://example.org/agent/x509pop/a", AttestationType: "x509pop", ExpiresAt: old}); err != nil {
		t.Fatal(err)
	}
	for name, before := range map[string]int64{"zero": 0, "negative": -5, "future": time.Now().Add(time.Hour).Unix()} {
		if _, err := s.PurgeAgents(ctx, &api.PurgeAgentsRequest{ExpiredBefore: before}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if ns, _ := st.ListNodes(ctx); len(ns) != 1 {
		t.Fatalf("a refused purge removed agents: %v", ns)
	}
	resp, err := s.PurgeAgents(ctx, &api.PurgeAgentsRequest{ExpiredBefore: time.Now().Add(-time.Hour).Unix()})
	if err != nil || len(resp.Agents) != 1 {
		t.Fatalf("purge of an x509pop agent recorded without can_reattest: %v, %v", resp, err)
	}
}
