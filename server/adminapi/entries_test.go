package adminapi

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit/audittest"
)

// TestEntryDownstream: the downstream flag is stored on create, set and
// cleared by an update that names it and kept by one that does not, shown
// by PrintEntry, audited, and what the catalog's Downstream lookup (the
// nested servers' check) answers from; a node alias cannot have it.
func TestEntryDownstream(t *testing.T) {
	env := startAdmin(t, true, nil)
	ctx := context.Background()
	id := spiffeid.RequireFromString("spiffe://example.org/signet-east")
	isDownstream := func() bool {
		snap, _ := env.cat.Current()
		_, ok := snap.Entries.Downstream(id, time.Now())
		return ok
	}
	in := entry(id.String(), "spiffe://example.org/agent/a", "unix:uid:1000")
	in.Downstream, in.Admin = true, true
	created, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: in})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := env.admin.GetEntry(ctx, &api.GetEntryRequest{Id: created.Id}); err != nil || !got.Downstream || !got.Admin || !created.Downstream {
		t.Fatalf("created %v; GetEntry = %v, %v; want downstream and admin", created, got, err)
	}
	if !isDownstream() {
		t.Fatal("the catalog does not know the created entry as downstream")
	}
	audittest.One(t, env.log.String(), map[string]string{"method": api.AdminService_CreateEntry_FullMethodName,
		"entry_id": created.Id, "downstream": "true", "admin": "true"})

	var out bytes.Buffer
	PrintEntry(&out, created)
	if !strings.Contains(out.String(), "\nAdmin: true\nDownstream: true\n") {
		t.Fatalf("PrintEntry of a downstream entry:\n%s", out.String())
	}

	update := func(e *api.Entry, mask ...string) (*api.Entry, error) {
		e.Id = created.Id
		return env.admin.UpdateEntry(ctx, &api.UpdateEntryRequest{Entry: e, UpdateMask: mask})
	}
	// An update of other fields keeps the flag.
	if got, err := update(&api.Entry{Hint: "east"}, "hint"); err != nil || !got.Downstream || got.Hint != "east" {
		t.Fatalf("update of the hint = %v, %v; want downstream kept", got, err)
	}
	for _, want := range []bool{false, true, false} {
		got, err := update(&api.Entry{Downstream: want}, "downstream")
		if err != nil || got.Downstream != want || !got.Admin || got.Hint != "east" {
			t.Fatalf("update downstream to %v = %v, %v; want it so, the rest kept", want, got, err)
		}
		if isDownstream() != want {
			t.Fatalf("after the update to %v, the catalog's lookup says %v", want, !want)
		}
		out.Reset()
		PrintEntry(&out, got)
		if strings.Contains(out.String(), "Downstream") != want {
			t.Fatalf("PrintEntry with downstream %v:\n%s", want, out.String())
		}
	}

	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "downstream cannot be set on a node-alias entry") {
			t.Fatalf("%s: %v, want InvalidArgument naming downstream and the node alias", what, err)
		}
	}
	alias := entry("spiffe://example.org/nodes/east", "", "join_token:t1")
	alias.Node, alias.Downstream = true, true
	_, err = env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: alias})
	refused("create a downstream node alias", err)
	_, err = env.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: []*api.Entry{alias}})
	refused("batch create a downstream node alias", err)
	if _, err := update(&api.Entry{Downstream: true}, "downstream"); err != nil {
		t.Fatal(err)
	}
	_, err = update(&api.Entry{Node: true}, "node", "parent_id")
	refused("make a downstream entry a node alias", err)
	if got, err := env.admin.GetEntry(ctx, &api.GetEntryRequest{Id: created.Id}); err != nil || got.Node || !got.Downstream {
		t.Fatalf("after the refused update: %v, %v; want it unchanged", got, err)
	}
}

// TestCreateDuplicateNamed: a create the store refuses as a duplicate says
// which entry of the call is at fault and what it collides with, another
// entry of the same call or a stored one, so that a restore of many
// entries can be fixed; nothing is stored.
func TestCreateDuplicateNamed(t *testing.T) {
	env := startAdmin(t, false, nil)
	ctx := context.Background()
	stored := entry("spiffe://example.org/stored", "spiffe://example.org/agent/a", "unix:uid:1")
	stored.Id = "stored-id"
	if _, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: stored}); err != nil {
		t.Fatal(err)
	}
	withID := func(e *api.Entry, id string) *api.Entry { e.Id = id; return e }
	fresh := func(n string) *api.Entry {
		return entry("spiffe://example.org/fresh-"+n, "spiffe://example.org/agent/a", "unix:uid:2")
	}
	for name, tc := range map[string]struct {
		batch []*api.Entry
		want  []string
	}{
		"same ID in the call": {[]*api.Entry{withID(fresh("a"), "x"), withID(fresh("b"), "x")},
			[]string{"entry 1 (spiffe://example.org/fresh-b)", "entry 0 has the same ID x"}},
		"same entry in the call": {[]*api.Entry{fresh("a"), fresh("b"), fresh("a")},
			[]string{"entry 2 (spiffe://example.org/fresh-a)", "entry 0 has the same SPIFFE ID, parent and selectors"}},
		"ID taken": {[]*api.Entry{fresh("a"), withID(fresh("b"), "stored-id")},
			[]string{"entry 1 (spiffe://example.org/fresh-b)", "ID stored-id is taken (by the entry for spiffe://example.org/stored)"}},
		"entry stored": {[]*api.Entry{fresh("a"), entry("spiffe://example.org/stored", "spiffe://example.org/agent/a", "unix:uid:1")},
			[]string{"entry 1 (spiffe://example.org/stored)", "entry stored-id already has this SPIFFE ID"}},
	} {
		_, err := env.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: tc.batch})
		if status.Code(err) != codes.AlreadyExists {
			t.Fatalf("%s: %v, want AlreadyExists", name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to say %q", name, err, w)
			}
		}
	}
	_, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry("spiffe://example.org/stored", "spiffe://example.org/agent/a", "unix:uid:1")})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "create entry spiffe://example.org/stored: entry stored-id already has") {
		t.Errorf("single create of a stored entry: %v", err)
	}
	if resp, err := env.admin.ListEntries(ctx, &api.ListEntriesRequest{}); err != nil || len(resp.Entries) != 1 {
		t.Errorf("after the refusals: %v, %v; want only the stored entry", resp, err)
	}
}
