package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/servertest"
)

// TestEntryDownstream runs `signet server entry create|update|show|list`
// with --downstream against a real server: the flag is set, shown as a
// `Downstream: true` line only while set, kept by updates of other fields,
// cleared and set again by --downstream=false / --downstream, read from
// an entry file, and refused on a node alias.
func TestEntryDownstream(t *testing.T) {
	s := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), nil)
	entry := func(args ...string) string {
		t.Helper()
		out, err := signet(t, append([]string{"server", "entry"}, append(args, "--admin-socket", s.Config.AdminSocket)...)...)
		if err != nil {
			t.Fatalf("signet server entry %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	downstream := func(out string) bool { return strings.Contains(out, "\nDownstream: true\n") }

	out := entry("create", "--spiffe-id", "spiffe://example.org/signet-east", "--parent-id", "spiffe://example.org/agent/a",
		"--selector", "unix:uid:0", "--downstream")
	m := regexp.MustCompile(`(?m)^Entry ID: (\S+)$`).FindStringSubmatch(out)
	if m == nil || !downstream(out) {
		t.Fatalf("create --downstream printed:\n%s", out)
	}
	id := m[1]
	if out := entry("show", "--id", id); !downstream(out) {
		t.Fatalf("show of a downstream entry:\n%s", out)
	}
	if out := entry("update", "--id", id, "--hint", "east"); !downstream(out) || !strings.Contains(out, "\nHint: east\n") {
		t.Fatalf("update --hint dropped downstream:\n%s", out)
	}
	if out := entry("update", "--id", id, "--downstream=false"); downstream(out) || strings.Contains(out, "Downstream") || !strings.Contains(out, "\nHint: east\n") {
		t.Fatalf("update --downstream=false:\n%s", out)
	}
	if out := entry("list", "--spiffe-id", "spiffe://example.org/signet-east"); !strings.HasPrefix(out, "Found 1 entries\n") || strings.Contains(out, "Downstream") {
		t.Fatalf("list after clearing downstream:\n%s", out)
	}
	entry("update", "--id", id, "--downstream")
	if out := entry("list", "--spiffe-id", "spiffe://example.org/signet-east"); !downstream(out) {
		t.Fatalf("list after setting downstream again:\n%s", out)
	}

	file := filepath.Join(t.TempDir(), "entries.json")
	if err := os.WriteFile(file, []byte(`{"entries": [{"spiffe_id": "spiffe://example.org/signet-west",
		"parent_id": "spiffe://example.org/agent/b", "selectors": [{"type": "unix", "value": "uid:0"}], "downstream": true}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := entry("create", "--data", file); !downstream(out) || !strings.Contains(out, "signet-west") {
		t.Fatalf("create --data with \"downstream\": true:\n%s", out)
	}

	out, err := signet(t, "server", "entry", "create", "--admin-socket", s.Config.AdminSocket, "--spiffe-id", "spiffe://example.org/nodes/east",
		"--node", "--selector", "join_token:t1", "--downstream")
	if err == nil || !strings.Contains(err.Error(), "downstream cannot be set on a node-alias entry (--node)") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("create --node --downstream: %v\n%s; want a one-line refusal naming both", err, out)
	}
}

// TestEntryJSONExportImport: `entry list --output json` prints every field
// of every entry; `entry create --data` of that output on another server
// recreates them as they were, IDs included (a backup, a migration); the
// filters, count, show and delete speak JSON too; bad flags are refused
// before anything is sent.
func TestEntryJSONExportImport(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	a := servertest.Start(t, td, nil)
	b := servertest.Start(t, td, nil)
	run := func(s *servertest.Server, args ...string) string {
		t.Helper()
		out, err := signet(t, append([]string{"server", "entry"}, append(args, "--admin-socket", s.Config.AdminSocket)...)...)
		if err != nil {
			t.Fatalf("signet server entry %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	list := func(s *servertest.Server, args ...string) []adminapi.EntryJSON {
		t.Helper()
		var f adminapi.EntryFile
		out := run(s, append([]string{"list", "--output", "json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &f); err != nil {
			t.Fatalf("list --output json %v printed %q: %v", args, out, err)
		}
		return f.Entries
	}
	ids := func(es []adminapi.EntryJSON) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		slices.Sort(out)
		return out
	}

	run(a, "create", "--entry-id", "web", "--spiffe-id", "spiffe://example.org/web", "--parent-id", "spiffe://example.org/nodes",
		"--selector", "unix:uid:1000", "--selector", "unix:gid:1000", "--hint", "blue", "--dns", "web.internal",
		"--federates-with", "partner.org", "--x509-ttl", "10m", "--jwt-ttl", "1m", "--expires-at", "2099-01-02T03:04:05Z")
	run(a, "create", "--entry-id", "nodes", "--spiffe-id", "spiffe://example.org/nodes", "--node", "--selector", "join_token:t1")
	out := run(a, "create", "--spiffe-id", "spiffe://example.org/east", "--parent-id", "spiffe://example.org/agent/a",
		"--selector", "unix:uid:0", "--downstream", "--admin", "--output", "json")
	var created adminapi.EntryFile
	if err := json.Unmarshal([]byte(out), &created); err != nil || len(created.Entries) != 1 || len(created.Entries[0].ID) != 36 || !created.Entries[0].Downstream {
		t.Fatalf("create --output json printed %q (%v); want one downstream entry with a generated ID", out, err)
	}
	east := created.Entries[0].ID

	exported := list(a)
	if got := ids(exported); !slices.Equal(got, ids([]adminapi.EntryJSON{{ID: "web"}, {ID: "nodes"}, {ID: east}})) {
		t.Fatalf("list --output json: IDs %v", got)
	}
	web := exported[slices.IndexFunc(exported, func(e adminapi.EntryJSON) bool { return e.ID == "web" })]
	if web.Hint != "blue" || web.X509SVIDTTL != 600 || web.JWTSVIDTTL != 60 || int64(web.ExpiresAt) != time.Date(2099, 1, 2, 3, 4, 5, 0, time.UTC).Unix() ||
		!slices.Equal(web.DNSNames, []string{"web.internal"}) || !slices.Equal(web.FederatesWith, []string{"partner.org"}) ||
		len(web.Selectors) != 2 || web.RevisionNumber == 0 || web.CreatedAt == 0 {
		t.Fatalf("exported web entry: %+v", web)
	}

	// Filters and count.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--hint", "blue"}, []string{"web"}},
		{[]string{"--downstream"}, []string{east}},
		{[]string{"--downstream=false"}, []string{"nodes", "web"}},
		{[]string{"--selector", "unix:uid:1000"}, []string{"web"}},
		{[]string{"--selector", "unix:uid:1000", "--match-selectors-on", "exact"}, nil},
		{[]string{"--selector", "unix:uid:1000", "--selector", "unix:uid:0", "--match-selectors-on", "any"}, []string{east, "web"}},
		{[]string{"--federates-with", "spiffe://partner.org"}, []string{"web"}},
		{[]string{"--parent-id", "spiffe://example.org/nodes"}, []string{"web"}},
	} {
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if got := ids(list(a, tc.args...)); !slices.Equal(got, want) {
			t.Errorf("list %v: %v, want %v", tc.args, got, want)
		}
		if out := run(a, append([]string{"count", "--output", "json"}, tc.args...)...); out != fmt.Sprintf("{\n  \"count\": %d\n}\n", len(want)) {
			t.Errorf("count %v --output json: %q, want %d", tc.args, out, len(want))
		}
	}
	if out := run(a, "count"); out != "3 registration entries\n" {
		t.Errorf("count: %q", out)
	}

	// Import on b: the same entries, with their IDs.
	file := filepath.Join(t.TempDir(), "entries.json")
	if err := os.WriteFile(file, []byte(run(a, "list", "--output", "json")), 0o600); err != nil {
		t.Fatal(err)
	}
	run(b, "create", "--data", file)
	imported := list(b)
	strip := func(es []adminapi.EntryJSON) []adminapi.EntryJSON {
		out := slices.Clone(es)
		for i := range out {
			out[i].RevisionNumber, out[i].CreatedAt = 0, 0
		}
		slices.SortFunc(out, func(x, y adminapi.EntryJSON) int { return strings.Compare(x.ID, y.ID) })
		return out
	}
	if got, want := strip(imported), strip(exported); !reflect.DeepEqual(got, want) {
		t.Fatalf("imported on b:\n%+v\nwant\n%+v", got, want)
	}
	// Importing again is refused whole: the IDs are taken.
	if out, err := signet(t, "server", "entry", "create", "--data", file, "--admin-socket", b.Config.AdminSocket); err == nil || !strings.Contains(err.Error(), "is taken") {
		t.Fatalf("second import: %v\n%s", err, out)
	}

	var shown adminapi.EntryFile
	if err := json.Unmarshal([]byte(run(b, "show", "--id", "web", "--output", "json")), &shown); err != nil || len(shown.Entries) != 1 || shown.Entries[0].Hint != "blue" {
		t.Fatalf("show --output json: %+v, %v", shown, err)
	}
	if out := run(b, "delete", "--id", "web", "--output", "json"); out != "{\n  \"deleted\": [\n    \"web\"\n  ]\n}\n" {
		t.Fatalf("delete --output json: %q", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "--output", "yaml"}, `--output "yaml": want pretty or json`},
		{[]string{"list", "--selector", "unix:uid:1", "--match-selectors-on", "most"}, `--match-selectors-on "most"`},
		{[]string{"list", "--federates-with", "not a domain"}, "--federates-with"},
		{[]string{"create", "--entry-id", "a b", "--spiffe-id", "spiffe://example.org/x", "--parent-id", "spiffe://example.org/p", "--selector", "unix:uid:1"}, "--entry-id: entry ID"},
		{[]string{"create", "--entry-id", "k8s.c.1", "--spiffe-id", "spiffe://example.org/x", "--parent-id", "spiffe://example.org/p", "--selector", "unix:uid:1"}, "Kubernetes controller"},
		{[]string{"create", "--entry-id", "x", "--data", file}, "--data and --entry-id cannot be combined"},
	} {
		out, err := signet(t, append(append([]string{"server", "entry"}, tc.args...), "--admin-socket", b.Config.AdminSocket)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v\n%s; want an error naming %q", tc.args, err, out, tc.want)
		}
	}
	if got := len(list(b)); got != 2 {
		t.Fatalf("after the refusals b has %d entries, want 2", got)
	}

	// An entry that expired since the listing is left out of a restore,
	// said on stderr; a file of expired entries only creates nothing.
	old := filepath.Join(t.TempDir(), "old.json")
	past := time.Now().Add(-time.Minute).Unix()
	if err := os.WriteFile(old, []byte(fmt.Sprintf(`{"entries": [
	  {"id": "gone", "spiffe_id": "spiffe://example.org/gone", "parent_id": "spiffe://example.org/p", "selectors": [{"type": "unix", "value": "uid:7"}], "expires_at": %d},
	  {"id": "kept", "spiffe_id": "spiffe://example.org/kept", "parent_id": "spiffe://example.org/p", "selectors": [{"type": "unix", "value": "uid:8"}]}]}`, past)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(b, "create", "--data", old); !strings.Contains(out, "# skipped entry gone (spiffe://example.org/gone): it expired at ") || !strings.Contains(out, "Entry ID: kept") {
		t.Fatalf("restore with an expired entry:\n%s", out)
	}
	if got := ids(list(b)); !slices.Equal(got, []string{east, "kept", "nodes"}) {
		t.Fatalf("after the restore with an expired entry: %v", got)
	}
	if err := os.WriteFile(old, []byte(fmt.Sprintf(`{"entries": [{"spiffe_id": "spiffe://example.org/gone", "parent_id": "spiffe://example.org/p", "selectors": [{"type": "unix", "value": "uid:7"}], "expires_at": %d}]}`, past)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := signet(t, "server", "entry", "create", "--data", old, "--admin-socket", b.Config.AdminSocket); err == nil || !strings.Contains(err.Error(), "every entry has expired") {
		t.Fatalf("restore of expired entries only: %v\n%s", err, out)
	}
}

// TestEntryDeleteFile: `entry delete --file` deletes every entry of a
// listing (or SPIRE's {"ids": [...]}) in one transaction; one unknown ID
// deletes nothing and names it.
func TestEntryDeleteFile(t *testing.T) {
	s := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), nil)
	run := func(args ...string) (string, error) {
		return signet(t, append(append([]string{"server", "entry"}, args...), "--admin-socket", s.Config.AdminSocket)...)
	}
	for i, parent := range []string{"a", "a", "b"} {
		if out, err := run("create", "--entry-id", fmt.Sprintf("e%d", i), "--spiffe-id", fmt.Sprintf("spiffe://example.org/w%d", i),
			"--parent-id", "spiffe://example.org/agent/"+parent, "--selector", "unix:uid:1"); err != nil {
			t.Fatalf("create: %v\n%s", err, out)
		}
	}
	dir := t.TempDir()
	listing, err := run("list", "--parent-id", "spiffe://example.org/agent/a", "--output", "json")
	if err != nil {
		t.Fatal(err)
	}
	underA := filepath.Join(dir, "under-a.json")
	unknown := filepath.Join(dir, "unknown.json")
	if err := os.WriteFile(underA, []byte(listing), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unknown, []byte(`{"ids": ["e2", "nosuch"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("delete", "--file", unknown); err == nil || !strings.Contains(err.Error(), "nosuch") || !strings.Contains(err.Error(), "nothing deleted") {
		t.Fatalf("delete of a file with an unknown ID: %v\n%s", err, out)
	}
	if out, err := run("count"); err != nil || out != "3 registration entries\n" {
		t.Fatalf("after the refused delete: %q, %v", out, err)
	}
	if out, err := run("delete", "--file", underA); err != nil || out != "Deleted entry e0\nDeleted entry e1\n" {
		t.Fatalf("delete --file of a listing: %v\n%s", err, out)
	}
	if out, err := run("list", "--output", "json"); err != nil || !strings.Contains(out, `"id": "e2"`) || strings.Contains(out, `"id": "e0"`) {
		t.Fatalf("after delete --file: %v\n%s", err, out)
	}
	if out, err := run("delete", "--id", "e2", "--file", underA); err == nil || !strings.Contains(err.Error(), "give --id or --file, not both") {
		t.Fatalf("--id with --file: %v\n%s", err, out)
	}
}
