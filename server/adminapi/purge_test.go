package adminapi

import (
	"context"
	"io"
	"log/slog"
	"strings"
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

// TestJoinTokenForAnotherTypesID: a token for the ID of an expired agent
// of another attestation type is refused when it is generated (its
// attestation would be refused), naming the type; after an eviction, or
// for an expired join-token agent, it is issued.
func TestJoinTokenForAnotherTypesID(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat, err := catalog.New(ctx, st, auditTD, discard)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{TrustDomain: auditTD, Store: st, Catalog: cat, Logger: discard})
	old := time.Now().Add(-time.Hour)
	const x509ID, tokenID = "spiffe://example.org/agent/x509pop/a", "spiffe://example.org/agent/b"
	for id, typ := range map[string]string{x509ID: "x509pop", tokenID: "join_token"} {
		if err := st.UpsertNode(ctx, store.Node{SPIFFEID: id, AttestationType: typ, ExpiresAt: old}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: x509ID})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "x509pop") || !strings.Contains(err.Error(), "evict") {
		t.Fatalf("token for an expired x509pop agent's ID: %v, want FailedPrecondition naming x509pop and eviction", err)
	}
	if _, err := s.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: tokenID}); err != nil {
		t.Fatalf("token for an expired join-token agent's ID: %v", err)
	}
	if err := st.DeleteNode(ctx, x509ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: x509ID}); err != nil {
		t.Fatalf("token after the eviction: %v", err)
	}
}
