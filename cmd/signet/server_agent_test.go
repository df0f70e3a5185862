package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/adminapi"
	"github.com/signetid/signet/server/servertest"
	"github.com/signetid/signet/server/store"
)

// TestAgentListShowCount runs `signet server agent list|show|count`
// against a real server whose store holds three agents: SPIRE's filters,
// the JSON output, and refusals of bad flags.
func TestAgentListShowCount(t *testing.T) {
	s := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), nil)
	ctx := context.Background()
	st, err := store.Open(ctx, s.Config.Datastore, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	cn, _ := selector.Parse("x509pop:subject:cn:b")
	for _, n := range []store.Node{
		{SPIFFEID: "spiffe://example.org/agent/join_token/a", AttestationType: "join_token", SerialNumber: "0a", ExpiresAt: now.Add(time.Hour)},
		{SPIFFEID: "spiffe://example.org/agent/x509pop/b", AttestationType: "x509pop", SerialNumber: "0b", ExpiresAt: now.Add(-time.Minute),
			CanReattest: true, Selectors: []selector.Selector{cn}},
		{SPIFFEID: "spiffe://example.org/agent/join_token/c", AttestationType: "join_token", SerialNumber: "0c", ExpiresAt: now.Add(time.Hour)},
	} {
		if err := st.UpsertNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.BanNode(ctx, "spiffe://example.org/agent/join_token/c"); err != nil {
		t.Fatal(err)
	}
	agent := func(args ...string) (string, error) {
		return signet(t, append(append([]string{"server", "agent"}, args...), "--admin-socket", s.Config.AdminSocket)...)
	}
	list := func(args ...string) []string {
		t.Helper()
		out, err := agent(append([]string{"list", "--output", "json"}, args...)...)
		var doc struct{ Agents []adminapi.AgentJSON }
		if err != nil || json.Unmarshal([]byte(out), &doc) != nil {
			t.Fatalf("agent list --output json %v: %v\n%s", args, err, out)
		}
		var got []string
		for _, a := range doc.Agents {
			got = append(got, a.SPIFFEID[strings.LastIndex(a.SPIFFEID, "/")+1:])
		}
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"a", "b", "c"}},
		{[]string{"--attestation-type", "join_token"}, []string{"a", "c"}},
		{[]string{"--banned"}, []string{"c"}},
		{[]string{"--banned=false", "--can-reattest=false"}, []string{"a"}},
		{[]string{"--can-reattest"}, []string{"b"}},
		{[]string{"--selector", "x509pop:subject:cn:b"}, []string{"b"}},
		{[]string{"--expires-before", now.UTC().Format(time.RFC3339)}, []string{"b"}},
	} {
		if got := list(tc.args...); !slices.Equal(got, tc.want) {
			t.Errorf("agent list %v: %v, want %v", tc.args, got, tc.want)
		}
	}
	if out, err := agent("count", "--attestation-type", "join_token"); err != nil || out != "2 attested agents\n" {
		t.Errorf("agent count: %q, %v", out, err)
	}

	out, err := agent("show", "--spiffe-id", "spiffe://example.org/agent/x509pop/b", "--output", "json")
	var shown struct{ Agents []adminapi.AgentJSON }
	if err != nil || json.Unmarshal([]byte(out), &shown) != nil || len(shown.Agents) != 1 {
		t.Fatalf("agent show --output json: %v\n%s", err, out)
	}
	if a := shown.Agents[0]; a.AttestationType != "x509pop" || a.SerialNumber != "0b" || !a.CanReattest || a.Banned ||
		len(a.Selectors) != 1 || a.Selectors[0].Value != "subject:cn:b" || a.ExpiresAt != now.Add(-time.Minute).Unix() {
		t.Errorf("agent show: %+v", a)
	}
	if out, err := agent("show", "--spiffe-id", "spiffe://example.org/agent/x509pop/b"); err != nil ||
		!strings.Contains(out, "Attestation type: x509pop\nCan re-attest: true\nSelector: x509pop:subject:cn:b\nSerial: 0b\n") {
		t.Errorf("agent show: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"show", "--spiffe-id", "spiffe://example.org/agent/nobody"}, "not found"},
		{[]string{"show", "--spiffe-id", "not-an-id"}, "--spiffe-id"},
		{[]string{"list", "--expires-before", "tomorrow"}, "--expires-before"},
		{[]string{"list", "--selector", "nosuchtype:x"}, "--selector"},
		{[]string{"list", "--match-selectors-on", "all"}, "--match-selectors-on"},
		{[]string{"count", "--output", "xml"}, "--output"},
	} {
		if out, err := agent(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent %v: %v\n%s; want an error naming %q", tc.args, err, out, tc.want)
		}
	}
}

// TestTokenGenerateJSON: --output json gives the token with the agent ID
// it attests as and its expiry, as one document.
func TestTokenGenerateJSON(t *testing.T) {
	s := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), nil)
	out, err := signet(t, "server", "token", "generate", "--spiffe-id", "spiffe://example.org/agent/web-1", "--ttl", "5m",
		"--output", "json", "--admin-socket", s.Config.AdminSocket)
	var tok struct {
		Value     string `json:"value"`
		AgentID   string `json:"agent_id"`
		ExpiresAt int64  `json:"expires_at"`
	}
	if err != nil || json.Unmarshal([]byte(out), &tok) != nil {
		t.Fatalf("token generate --output json: %v\n%s", err, out)
	}
	if len(tok.Value) < 20 || tok.AgentID != "spiffe://example.org/agent/web-1" || time.Until(time.Unix(tok.ExpiresAt, 0)) > 5*time.Minute || time.Until(time.Unix(tok.ExpiresAt, 0)) < 4*time.Minute {
		t.Fatalf("token generate --output json: %+v", tok)
	}
}

// TestAgentPurge runs `signet server agent purge` (SPIRE's) against a real
// server: a dry run removes nothing; re-attesting agents expired longer ago
// than --expired-for go; join-token ones only with
// --include-non-reattestable; banned ones and recent ones stay.
func TestAgentPurge(t *testing.T) {
	s := servertest.Start(t, spiffeid.RequireTrustDomainFromString("example.org"), nil)
	ctx := context.Background()
	st, err := store.Open(ctx, s.Config.Datastore, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	long, recent := time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	for _, n := range []store.Node{
		{SPIFFEID: "spiffe://example.org/agent/x509pop/old", AttestationType: "x509pop", ExpiresAt: long, CanReattest: true},
		{SPIFFEID: "spiffe://example.org/agent/x509pop/recent", AttestationType: "x509pop", ExpiresAt: recent, CanReattest: true},
		{SPIFFEID: "spiffe://example.org/agent/join_token/old", AttestationType: "join_token", ExpiresAt: long},
		{SPIFFEID: "spiffe://example.org/agent/k8s_psat/c/banned", AttestationType: "k8s_psat", ExpiresAt: long},
	} {
		if err := st.UpsertNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.BanNode(ctx, "spiffe://example.org/agent/k8s_psat/c/banned"); err != nil {
		t.Fatal(err)
	}
	purge := func(args ...string) string {
		t.Helper()
		out, err := signet(t, append(append([]string{"server", "agent", "purge"}, args...), "--admin-socket", s.Config.AdminSocket)...)
		if err != nil {
			t.Fatalf("agent purge %v: %v\n%s", args, err, out)
		}
		return out
	}
	left := func() []string {
		ns, _ := st.ListNodes(ctx)
		var ids []string
		for _, n := range ns {
			ids = append(ids, n.SPIFFEID[strings.LastIndex(n.SPIFFEID, "agent/")+6:])
		}
		slices.Sort(ids)
		return ids
	}
	all := []string{"join_token/old", "k8s_psat/c/banned", "x509pop/old", "x509pop/recent"}

	if out := purge("--dry-run"); out != "1 agents would be purged:\nSPIFFE ID: spiffe://example.org/agent/x509pop/old\n" {
		t.Fatalf("dry run: %q", out)
	}
	if out := purge("--dry-run", "--include-non-reattestable", "--output", "json"); !strings.Contains(out, `"agent_id": "spiffe://example.org/agent/join_token/old",`+"\n      \"deleted\": false") ||
		strings.Contains(out, "banned") || strings.Contains(out, "recent") {
		t.Fatalf("dry run, JSON: %s", out)
	}
	if got := left(); !slices.Equal(got, all) {
		t.Fatalf("a dry run removed agents: %v", got)
	}
	if out := purge("--expired-for", "72h"); out != "No agents to purge (join-token agents are left out: --include-non-reattestable adds them).\n" {
		t.Fatalf("--expired-for 72h: %q", out)
	}
	if out := purge(); out != "Purged 1 agents:\nSPIFFE ID: spiffe://example.org/agent/x509pop/old\n" {
		t.Fatalf("purge: %q", out)
	}
	if got := left(); !slices.Equal(got, []string{"join_token/old", "k8s_psat/c/banned", "x509pop/recent"}) {
		t.Fatalf("after purge: %v", got)
	}
	purge("--include-non-reattestable", "--expired-for", "30m")
	if got := left(); !slices.Equal(got, []string{"k8s_psat/c/banned"}) {
		t.Fatalf("after purge --include-non-reattestable --expired-for 30m: %v; want only the banned agent", got)
	}
	if out, err := signet(t, "server", "agent", "purge", "--expired-for", "-1h", "--admin-socket", s.Config.AdminSocket); err == nil || !strings.Contains(err.Error(), "--expired-for") {
		t.Fatalf("--expired-for -1h: %v\n%s", err, out)
	}
}
