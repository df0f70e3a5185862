package agentapi

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
)

// An entry deleted and re-created under the same ID (the Kubernetes
// controller's IDs are deterministic) with other content: when the agent's
// Sync stream sees both writes in one catalog snapshot, it must still push
// the new content.
func TestSyncPushesEntryRecreatedWithSameID(t *testing.T) {
	h := newHarness(t)
	for i, tc := range []struct {
		name   string
		change func(*registry.Entry)
	}{
		{"dns names", func(e *registry.Entry) { e.DNSNames = []string{"new.example"} }},
		{"x509 ttl", func(e *registry.Entry) { e.X509TTL = 2 * time.Hour }},
		{"jwt ttl", func(e *registry.Entry) { e.JWTTTL = 10 * time.Minute }},
		{"hint", func(e *registry.Entry) { e.Hint = "internal" }},
		{"admin", func(e *registry.Entry) { e.Admin = true }},
		{"expiry", func(e *registry.Entry) { e.ExpiresAt = time.Now().Add(24 * time.Hour).Truncate(time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			agentID, client := h.attest(t, fmt.Sprintf("spiffe://example.org/agent/%d", i))
			e := registry.Entry{
				ID:        fmt.Sprintf("k8s.c.%032x", i),
				SPIFFEID:  spiffeid.RequireFromString("spiffe://example.org/web"),
				ParentID:  agentID,
				Selectors: []selector.Selector{{Type: "unix", Value: "uid:1"}},
				DNSNames:  []string{"old.example"},
			}
			if _, err := h.store.CreateEntry(ctx, e); err != nil {
				t.Fatal(err)
			}
			if err := h.cat.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			stream, err := client.Sync(ctx, &api.SyncRequest{})
			if err != nil {
				t.Fatal(err)
			}
			first, err := stream.Recv()
			if err != nil {
				t.Fatalf("first sync message: %v", err)
			}
			if len(first.Entries) != 1 || first.Entries[0].Id != e.ID {
				t.Fatalf("first message entries %v, want %s", first.Entries, e.ID)
			}
			// Both writes land in the one snapshot the stream wakes up to.
			if err := h.store.DeleteEntry(ctx, e.ID); err != nil {
				t.Fatal(err)
			}
			tc.change(&e)
			created, err := h.store.CreateEntry(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.cat.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			next, err := stream.Recv()
			if err != nil {
				t.Fatalf("no message after the entry was re-created with new content: %v", err)
			}
			want := registry.ToProto(&created)
			if len(next.Entries) != 1 || !proto.Equal(next.Entries[0], want) {
				t.Fatalf("pushed entries %v, want %v", next.Entries, want)
			}
		})
	}
}
