package server_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestHousekeepingAtStart: a server prunes at start what has expired for
// good: entries past their expiry (always), and, with
// prune_attested_nodes_expired_for, agents whose SVID expired longer ago:
// re-attesting ones, join-token ones only with prune_tofu_nodes, banned
// ones never.
func TestHousekeepingAtStart(t *testing.T) {
	for _, tofu := range []bool{false, true} {
		cfg := testConfig(t, func(c *server.Config) {
			c.PruneAgentsExpiredFor = 24 * time.Hour
			c.PruneNonReattestable = tofu
		})
		ctx := context.Background()
		st, err := store.Open(ctx, cfg.Datastore, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for id, exp := range map[string]time.Time{"expired": now.Add(-time.Minute), "live": now.Add(time.Hour), "forever": {}} {
			uid, _ := selector.Parse("unix:uid:1000")
			e := registry.Entry{ID: id, SPIFFEID: spiffeid.RequireFromPath(td, "/"+id), ParentID: spiffeid.RequireFromPath(td, "/agent/a"),
				Selectors: []selector.Selector{uid}, ExpiresAt: exp}
			if _, err := st.CreateEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
		long, recent := now.Add(-48*time.Hour), now.Add(-time.Hour)
		for _, n := range []store.Node{
			{SPIFFEID: "spiffe://example.org/agent/x509pop/old", AttestationType: "x509pop", ExpiresAt: long},
			{SPIFFEID: "spiffe://example.org/agent/x509pop/recent", AttestationType: "x509pop", ExpiresAt: recent},
			{SPIFFEID: "spiffe://example.org/agent/join_token/old", AttestationType: "join_token", ExpiresAt: long},
			{SPIFFEID: "spiffe://example.org/agent/aws_iid/111122223333/us-east-1/i-old", AttestationType: "aws_iid", ExpiresAt: long},
			{SPIFFEID: "spiffe://example.org/agent/k8s_psat/c/banned", AttestationType: "k8s_psat", ExpiresAt: long},
		} {
			if err := st.UpsertNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.BanNode(ctx, "spiffe://example.org/agent/k8s_psat/c/banned"); err != nil {
			t.Fatal(err)
		}
		st.Close()

		ts := runServer(t, cfg)
		st, err = store.Open(ctx, cfg.Datastore, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		// Join-token and aws_iid agents (trusted on first use) go with
		// prune_tofu_nodes only.
		wantNodes := []string{"spiffe://example.org/agent/aws_iid/111122223333/us-east-1/i-old", "spiffe://example.org/agent/join_token/old",
			"spiffe://example.org/agent/k8s_psat/c/banned", "spiffe://example.org/agent/x509pop/recent"}
		if tofu {
			wantNodes = wantNodes[2:]
		}
		var entries, nodes []string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			es, _ := st.ListEntries(ctx)
			ns, _ := st.ListNodes(ctx)
			entries, nodes = nil, nil
			for _, e := range es {
				entries = append(entries, e.ID)
			}
			for _, n := range ns {
				nodes = append(nodes, n.SPIFFEID)
			}
			slices.Sort(entries)
			slices.Sort(nodes)
			if slices.Equal(entries, []string{"forever", "live"}) && slices.Equal(nodes, wantNodes) {
				break
			}
		}
		if !slices.Equal(entries, []string{"forever", "live"}) || !slices.Equal(nodes, wantNodes) {
			t.Errorf("prune_tofu_nodes=%v: entries %v, agents %v; want forever and live, and %v", tofu, entries, nodes, wantNodes)
		}
		st.Close()
		ts.stop(t)
	}
}
