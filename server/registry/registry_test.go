package registry

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func id(p string) spiffeid.ID { return spiffeid.RequireFromPath(td, p) }

func sel(s string) []selector.Selector {
	out, err := selector.ParseAll(strings.Split(s, ","))
	if err != nil {
		panic(err)
	}
	return out
}

func TestValidate(t *testing.T) {
	ok := Entry{SPIFFEID: id("/w"), ParentID: id("/agent/a"), Selectors: sel("unix:uid:1")}
	tests := []struct {
		name    string
		mutate  func(*Entry)
		wantErr string
	}{
		{"valid", func(*Entry) {}, ""},
		{"valid node alias", func(e *Entry) { e.ParentID = spiffeid.ID{}; e.Node = true }, ""},
		{"no spiffe id", func(e *Entry) { e.SPIFFEID = spiffeid.ID{} }, "spiffe_id is required"},
		{"foreign trust domain", func(e *Entry) { e.SPIFFEID = spiffeid.RequireFromString("spiffe://other.org/w") }, "not in trust domain"},
		{"bare trust domain", func(e *Entry) { e.SPIFFEID = spiffeid.RequireFromString("spiffe://example.org") }, "path"},
		{"no parent", func(e *Entry) { e.ParentID = spiffeid.ID{} }, "parent_id is required"},
		{"node alias with parent", func(e *Entry) { e.Node = true }, "takes no parent_id"},
		{"parent is self", func(e *Entry) { e.ParentID = e.SPIFFEID }, "the same"},
		{"no selectors", func(e *Entry) { e.Selectors = nil }, "at least one selector"},
		{"ttl too short", func(e *Entry) { e.X509TTL = time.Millisecond }, "x509_ttl"},
		{"ttl too long", func(e *Entry) { e.JWTTTL = 365 * 24 * time.Hour }, "jwt_ttl"},
		{"bad dns", func(e *Entry) { e.DNSNames = []string{"a..b"} }, "dns name"},
		{"wildcard not first", func(e *Entry) { e.DNSNames = []string{"a.*.b"} }, "dns name"},
		{"wildcard first", func(e *Entry) { e.DNSNames = []string{"*.example.org"} }, ""},
		{"bare wildcard", func(e *Entry) { e.DNSNames = []string{"*"} }, "not a valid DNS label"},
		{"bad hint", func(e *Entry) { e.Hint = "a b" }, "hint"},
		{"server's own ID", func(e *Entry) { e.SPIFFEID = id("/signet/server") }, "reserved"},
		{"under the reserved prefix", func(e *Entry) { e.SPIFFEID = id("/signet") }, "reserved"},
		{"prefix lookalike is fine", func(e *Entry) { e.SPIFFEID = id("/signetx/a") }, ""},
		{"federates with self", func(e *Entry) { e.FederatesWith = []spiffeid.TrustDomain{td} }, "own trust domain"},
		{"downstream", func(e *Entry) { e.Downstream = true }, ""},
		{"downstream admin", func(e *Entry) { e.Downstream, e.Admin = true, true }, ""},
		{"downstream node alias", func(e *Entry) { e.ParentID, e.Node, e.Downstream = spiffeid.ID{}, true, true }, "downstream cannot be set on a node-alias entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.mutate(&e)
			err := e.Validate(td)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAuthorized(t *testing.T) {
	now := time.Now()
	agentA, agentB := id("/agent/a"), id("/agent/b")
	entries := []Entry{
		{ID: "direct", SPIFFEID: id("/web"), ParentID: agentA, Selectors: sel("unix:uid:1")},
		// Parented to a workload entry: DESIGN.md gives it to no agent.
		{ID: "downstream", SPIFFEID: id("/web/child"), ParentID: id("/web"), Selectors: sel("unix:uid:2")},
		{ID: "other-agent", SPIFFEID: id("/db"), ParentID: agentB, Selectors: sel("unix:uid:3")},
		{ID: "alias", SPIFFEID: id("/nodes/k8s"), Node: true, Selectors: sel("k8s_psat:cluster:c1")},
		{ID: "via-alias", SPIFFEID: id("/cluster-wide"), ParentID: id("/nodes/k8s"), Selectors: sel("k8s:ns:x")},
		{ID: "expired", SPIFFEID: id("/old"), ParentID: agentA, Selectors: sel("unix:uid:4"), ExpiresAt: now.Add(-time.Second)},
		// A workload entry carrying agent B's ID, served by A, must not hand A
		// agent B's entries.
		{ID: "impostor", SPIFFEID: agentB, ParentID: agentA, Selectors: sel("unix:uid:5")},
	}
	ix := NewIndex(entries)
	got := func(agent spiffeid.ID, nodeSels []selector.Selector) map[string]bool {
		out := map[string]bool{}
		for _, e := range ix.Authorized(agent, nodeSels, now) {
			if out[e.ID] {
				t.Fatalf("entry %s returned twice", e.ID)
			}
			out[e.ID] = true
		}
		return out
	}
	want := func(name string, got map[string]bool, ids ...string) {
		t.Helper()
		if len(got) != len(ids) {
			t.Fatalf("%s: got %v, want exactly %v", name, got, ids)
		}
		for _, id := range ids {
			if !got[id] {
				t.Fatalf("%s: got %v, want exactly %v", name, got, ids)
			}
		}
	}
	want("agent A", got(agentA, nil), "direct", "impostor")
	want("agent A matching the alias", got(agentA, sel("k8s_psat:cluster:c1,k8s_psat:agent_node_name:n1")), "direct", "impostor", "via-alias")
	want("agent A, other cluster", got(agentA, sel("k8s_psat:cluster:c2")), "direct", "impostor")
	want("agent B", got(agentB, nil), "other-agent")
}

// AuthorizedUntil tells a Sync stream when to wake by itself: when a served
// entry expires, or a node alias that grants entries does (the entries it
// granted are refused from then on, so the agent must hear of it).
func TestAuthorizedUntil(t *testing.T) {
	now := time.Now()
	agent := id("/agent/a")
	aliasEnds, entryEnds := now.Add(time.Minute), now.Add(time.Hour)
	ix := NewIndex([]Entry{
		{ID: "alias", SPIFFEID: id("/nodes/n"), Node: true, Selectors: sel("join_token:t1"), ExpiresAt: aliasEnds},
		{ID: "via-alias", SPIFFEID: id("/shared"), ParentID: id("/nodes/n"), Selectors: sel("unix:uid:1")},
		{ID: "direct", SPIFFEID: id("/web"), ParentID: agent, Selectors: sel("unix:uid:1"), ExpiresAt: entryEnds},
		{ID: "never", SPIFFEID: id("/db"), ParentID: agent, Selectors: sel("unix:uid:2")},
	})
	tests := []struct {
		name    string
		nodeSel []selector.Selector
		at      time.Time
		want    int
		until   time.Time
	}{
		{"alias matches: wake when it ends", sel("join_token:t1"), now, 3, aliasEnds},
		{"alias does not match: wake when the entry ends", nil, now, 2, entryEnds},
		{"alias ended", sel("join_token:t1"), aliasEnds, 2, entryEnds},
		{"nothing left that expires", nil, entryEnds, 1, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, until := ix.AuthorizedUntil(agent, tt.nodeSel, tt.at)
			if len(got) != tt.want || !until.Equal(tt.until) {
				t.Fatalf("AuthorizedUntil = %d entries until %v, want %d until %v", len(got), until, tt.want, tt.until)
			}
		})
	}
}

// Downstream answers the nested servers' check: is the caller's ID that of
// an unexpired entry with downstream set?
func TestDownstream(t *testing.T) {
	now := time.Now()
	agent := id("/agent/a")
	ix := NewIndex([]Entry{
		{ID: "ds", SPIFFEID: id("/signet-east"), ParentID: agent, Selectors: sel("unix:uid:1"), Downstream: true},
		{ID: "plain", SPIFFEID: id("/web"), ParentID: agent, Selectors: sel("unix:uid:2")},
		{ID: "ended", SPIFFEID: id("/old-ds"), ParentID: agent, Selectors: sel("unix:uid:3"), Downstream: true, ExpiresAt: now},
		{ID: "ending", SPIFFEID: id("/later-ds"), ParentID: agent, Selectors: sel("unix:uid:4"), Downstream: true, ExpiresAt: now.Add(time.Minute)},
		// Two entries for one ID, only the second downstream.
		{ID: "shared-plain", SPIFFEID: id("/shared"), ParentID: agent, Selectors: sel("unix:uid:5")},
		{ID: "shared-ds", SPIFFEID: id("/shared"), ParentID: id("/agent/b"), Selectors: sel("unix:uid:5"), Downstream: true},
		// Two downstream entries for one ID, the first expired.
		{ID: "twice-ended", SPIFFEID: id("/twice"), ParentID: agent, Selectors: sel("unix:uid:6"), Downstream: true, ExpiresAt: now.Add(-time.Hour)},
		{ID: "twice-live", SPIFFEID: id("/twice"), ParentID: id("/agent/b"), Selectors: sel("unix:uid:6"), Downstream: true},
		// Refused by Validate; one in the store regardless grants nothing.
		{ID: "alias", SPIFFEID: id("/nodes/n"), Node: true, Selectors: sel("join_token:t1"), Downstream: true},
	})
	tests := []struct {
		name   string
		id     spiffeid.ID
		at     time.Time
		wantID string // "" for none
	}{
		{"downstream entry", id("/signet-east"), now, "ds"},
		{"entry without the flag", id("/web"), now, ""},
		{"no entry for the ID", id("/signet-west"), now, ""},
		{"ID of another trust domain", spiffeid.RequireFromString("spiffe://other.org/signet-east"), now, ""},
		{"expired at its ExpiresAt", id("/old-ds"), now, ""},
		{"not yet expired", id("/later-ds"), now, "ending"},
		{"expired later", id("/later-ds"), now.Add(time.Minute), ""},
		{"same ID, only one downstream", id("/shared"), now, "shared-ds"},
		{"same ID, one expired", id("/twice"), now, "twice-live"},
		{"node alias", id("/nodes/n"), now, ""},
		{"the parent agent", agent, now, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := ix.Downstream(tt.id, tt.at)
			if tt.wantID == "" {
				if ok || e != nil {
					t.Fatalf("Downstream(%s) = %+v, %v; want none", tt.id, e, ok)
				}
				return
			}
			if !ok || e == nil || e.ID != tt.wantID {
				t.Fatalf("Downstream(%s) = %+v, %v; want entry %s", tt.id, e, ok, tt.wantID)
			}
		})
	}
}

// The API conversion carries every field both ways, downstream and admin
// included.
func TestProtoRoundTrip(t *testing.T) {
	for _, in := range []Entry{
		{ID: "e1", SPIFFEID: id("/signet-east"), ParentID: id("/agent/a"), Selectors: sel("unix:uid:1,unix:gid:2"),
			X509TTL: time.Hour, JWTTTL: 5 * time.Minute, DNSNames: []string{"east.internal"}, Hint: "east", Admin: true, Downstream: true,
			FederatesWith: []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("partner.org")}, Revision: 7,
			ExpiresAt: time.Unix(1900000000, 0), CreatedAt: time.Unix(1700000000, 0)},
		{ID: "e2", SPIFFEID: id("/web"), ParentID: id("/agent/a"), Selectors: sel("unix:uid:1"), Downstream: true},
		{ID: "e3", SPIFFEID: id("/nodes/n"), Node: true, Selectors: sel("join_token:t1")},
	} {
		got, err := FromProto(ToProto(&in))
		if err != nil {
			t.Fatalf("%s: FromProto: %v", in.ID, err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("%s: round trip\n%+v\nwant\n%+v", in.ID, got, in)
		}
	}
}

// BenchmarkDownstream: the nested servers' check on every request costs
// the same whatever the number of entries.
func BenchmarkDownstream(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			entries := make([]Entry, n)
			for i := range entries {
				entries[i] = Entry{ID: fmt.Sprint(i), SPIFFEID: id(fmt.Sprintf("/w/%d", i)), ParentID: id("/agent/a"),
					Selectors: sel("unix:uid:1"), Downstream: i%10 == 0}
			}
			ix, want, now := NewIndex(entries), id(fmt.Sprintf("/w/%d", n/2)), time.Now()
			for b.Loop() {
				if _, ok := ix.Downstream(want, now); !ok {
					b.Fatal("downstream entry not found")
				}
			}
		})
	}
}

// TestCheckEntryID: caller-chosen IDs are kept to characters safe in a
// command line, a log line and a URL path segment.
func TestCheckEntryID(t *testing.T) {
	for id, ok := range map[string]bool{
		"web":                                  true,
		"5d2b3c1e-0000-4000-8000-000000000001": true,
		"a.b_c~d-e":                            true,
		"...":                                  true,
		strings.Repeat("a", 255):               true,
		"":                                     false,
		".":                                    false,
		"..":                                   false,
		"a/b":                                  false,
		"a b":                                  false,
		"a:b":                                  false,
		"entrée":                               false,
		strings.Repeat("a", 256):               false,
	} {
		if err := CheckEntryID(id); (err == nil) != ok {
			t.Errorf("CheckEntryID(%.20q) = %v, want ok %t", id, err, ok)
		}
	}
}
