package adminapi

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
)

// TestBatchDeleteEntries: all or none; an empty, repeated, unknown or
// controller-owned ID fails the call and deletes nothing.
func TestBatchDeleteEntries(t *testing.T) {
	env := startAdmin(t, true, nil)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		e := entry("spiffe://example.org/"+id, "spiffe://example.org/agent/a", "unix:uid:1")
		e.Id = id
		if _, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: e}); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		ids  []string
		code codes.Code
		msg  string
	}{
		"none":         {nil, codes.InvalidArgument, "no entry IDs"},
		"repeated":     {[]string{"a", "a"}, codes.InvalidArgument, "repeated"},
		"empty":        {[]string{"a", ""}, codes.InvalidArgument, "empty"},
		"unknown":      {[]string{"a", "nosuch"}, codes.NotFound, "nosuch"},
		"controller's": {[]string{"a", "k8s.c.0123"}, codes.FailedPrecondition, "Kubernetes controller"},
	} {
		_, err := env.admin.BatchDeleteEntries(ctx, &api.BatchDeleteEntriesRequest{Ids: tc.ids})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %s naming %q", name, err, tc.code, tc.msg)
		}
	}
	if resp, _ := env.admin.ListEntries(ctx, &api.ListEntriesRequest{}); len(resp.GetEntries()) != 3 {
		t.Fatalf("refused batch deletes deleted entries: %v", resp)
	}
	if _, err := env.admin.BatchDeleteEntries(ctx, &api.BatchDeleteEntriesRequest{Ids: []string{"a", "c"}}); err != nil {
		t.Fatal(err)
	}
	resp, _ := env.admin.ListEntries(ctx, &api.ListEntriesRequest{})
	if len(resp.GetEntries()) != 1 || resp.Entries[0].Id != "b" {
		t.Fatalf("after deleting a and c: %v", resp)
	}
	if snap, _ := env.cat.Current(); snap.Entries.Len() != 1 {
		t.Errorf("the catalog still serves %d entries", snap.Entries.Len())
	}
}
