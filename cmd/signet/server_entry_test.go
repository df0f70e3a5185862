package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

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
