package adminapi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
)

func TestParseEntryFile(t *testing.T) {
	good := `{"entries": [
	  {"spiffe_id": "spiffe://example.org/web", "parent_id": "spiffe://example.org/agent/a",
	   "selectors": [{"type": "unix", "value": "uid:1000"}, {"type": "k8s", "value": "ns:web"}],
	   "x509_svid_ttl": 600, "dns_names": ["web.internal"], "hint": "web"},
	  {"spiffe_id": "spiffe://example.org/nodes", "node": true, "selectors": [{"type": "k8s_psat", "value": "cluster:c1"}]},
	  {"spiffe_id": "spiffe://example.org/signet-east", "parent_id": "spiffe://example.org/agent/a",
	   "selectors": [{"type": "unix", "value": "uid:0"}], "admin": true, "downstream": true}
	]}`
	got, err := ParseEntryFile(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].X509TtlSeconds != 600 || got[0].Selectors[0].Type != "k8s" || !got[1].Node || got[0].DnsNames[0] != "web.internal" {
		t.Fatalf("parsed %v", got)
	}
	if got[0].Downstream || got[1].Downstream || !got[2].Downstream || !got[2].Admin {
		t.Fatalf("downstream parsed as %v %v %v, want only the third (SPIRE's \"downstream\": true)", got[0].Downstream, got[1].Downstream, got[2].Downstream)
	}
	bad := map[string]string{
		`{"entries": []}`: "no entries",
		`[{"spiffe_id": "spiffe://example.org/w"}]`: "want an object {\"entries\": [...]}, not a JSON array",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}, {"foo": 1}]}`: `entry 1: json: unknown field "foo"`,
		`{"entries": [{"spiffe_id": "spiffe://example.org/w/", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:            "entry 0",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:                                                    "parent_id is required",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": []}]}`:                                            "selector",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:x"}]}]}`:             "numeric",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "x509_ttl": 5}]}`:                                              "unknown field",
		`{"entries": [}`: "parse entries JSON",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]} {}`:                           "trailing",
		`{"entries": [{"id": "a b", "spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:                 "id: entry ID",
		`{"entries": [{"spiffe_id": {"trust_domain": "example.org", "path": "/w", "x": 1}, "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`: "want a SPIFFE ID",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "x509_svid_ttl": "ten", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:      "want an integer",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "x509_svid_ttl": 4294967296, "selectors": [{"type":"unix","value":"uid:1"}]}]}`: "too large",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "store_svid": true, "selectors": [{"type":"unix","value":"uid:1"}]}]}`:          "SVIDStore",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "node": true, "selectors": [{"type":"unix","value":"uid:1"}]}]}`:                "has no parent_id",
	}
	for in, want := range bad {
		if _, err := ParseEntryFile(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEntryFile(%.60q) = %v, want error containing %q", in, err, want)
		}
	}
}

// TestParseSPIREListing: what `spire-server entry show -output json`
// prints loads: SPIFFE IDs as objects, int64s as strings, a node alias as
// an entry parented to spiffe://TD/spire/server, the entry ID kept.
func TestParseSPIREListing(t *testing.T) {
	spire := `{"entries": [
	  {"id": "5d2b3c1e-0000-4000-8000-000000000001",
	   "spiffe_id": {"trust_domain": "example.org", "path": "/web"},
	   "parent_id": {"trust_domain": "example.org", "path": "/k8s-nodes"},
	   "selectors": [{"type": "k8s", "value": "ns:web"}], "x509_svid_ttl": 3600, "federates_with": ["partner.org"],
	   "admin": false, "downstream": false, "expires_at": "1999999999", "dns_names": ["web"], "revision_number": "3",
	   "store_svid": false, "jwt_svid_ttl": 300, "hint": "h", "created_at": "1700000000"},
	  {"id": "5d2b3c1e-0000-4000-8000-000000000002",
	   "spiffe_id": {"trust_domain": "example.org", "path": "/k8s-nodes"},
	   "parent_id": {"trust_domain": "example.org", "path": "/spire/server"},
	   "selectors": [{"type": "k8s_psat", "value": "cluster:c1"}], "x509_svid_ttl": 0, "jwt_svid_ttl": 0,
	   "expires_at": "0", "revision_number": "0", "created_at": "1700000000"}
	], "next_page_token": ""}`
	got, err := ParseEntryFile(strings.NewReader(spire))
	if err != nil {
		t.Fatal(err)
	}
	want := []*api.Entry{
		{Id: "5d2b3c1e-0000-4000-8000-000000000001", SpiffeId: "spiffe://example.org/web", ParentId: "spiffe://example.org/k8s-nodes",
			Selectors: []*api.Selector{{Type: "k8s", Value: "ns:web"}}, X509TtlSeconds: 3600, JwtTtlSeconds: 300, FederatesWith: []string{"partner.org"},
			ExpiresAt: 1999999999, DnsNames: []string{"web"}, Hint: "h"},
		{Id: "5d2b3c1e-0000-4000-8000-000000000002", SpiffeId: "spiffe://example.org/k8s-nodes", Node: true,
			Selectors: []*api.Selector{{Type: "k8s_psat", Value: "cluster:c1"}}},
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("entry %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

// TestEntryJSONRoundTrip: an entry printed by the CLI (EntryToJSON) reads
// back as the same entry, but for what the server sets itself.
func TestEntryJSONRoundTrip(t *testing.T) {
	for _, e := range []*api.Entry{
		{Id: "web", SpiffeId: "spiffe://example.org/web", ParentId: "spiffe://example.org/agent/a",
			Selectors: []*api.Selector{{Type: "k8s", Value: "ns:web"}, {Type: "unix", Value: "uid:1000"}}, X509TtlSeconds: 600, JwtTtlSeconds: 60,
			DnsNames: []string{"web.internal"}, Hint: "blue", FederatesWith: []string{"partner.org"}, Admin: true, Downstream: true,
			ExpiresAt: 2000000000, Revision: 7, CreatedAt: 1700000000},
		{Id: "nodes", SpiffeId: "spiffe://example.org/nodes", Node: true, Selectors: []*api.Selector{{Type: "k8s_psat", Value: "cluster:c1"}}},
		// Parented to a Signet node alias that happens to be named
		// spire/server (as after a move from SPIRE): still a workload
		// entry, not SPIRE's mark of a node alias.
		{Id: "under-spire-server", SpiffeId: "spiffe://example.org/wl", ParentId: "spiffe://example.org/spire/server",
			Selectors: []*api.Selector{{Type: "unix", Value: "uid:9"}}},
	} {
		b, err := json.Marshal(EntryFile{Entries: []EntryJSON{EntryToJSON(e)}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseEntryFile(strings.NewReader(string(b)))
		if err != nil {
			t.Fatalf("read back %s: %v", b, err)
		}
		want := proto.Clone(e).(*api.Entry)
		want.Revision, want.CreatedAt = 0, 0
		if len(want.DnsNames) == 0 {
			want.DnsNames = []string{}
		}
		if len(want.FederatesWith) == 0 {
			want.FederatesWith = []string{}
		}
		if !proto.Equal(got[0], want) {
			t.Errorf("round trip of %v via %s gave %v", e, b, got[0])
		}
	}
}

// TestParseSPIREDataFile: a SPIRE `entry create -data` file loads, with
// its own names for the entry ID, the expiry and the TTL.
func TestParseSPIREDataFile(t *testing.T) {
	got, err := ParseEntryFile(strings.NewReader(`{"entries": [
	  {"entry_id": "blog", "spiffe_id": "spiffe://example.org/blog", "parent_id": "spiffe://example.org/host",
	   "selectors": [{"type": "unix", "value": "uid:501"}], "ttl": 200, "entryExpiry": 2000000000, "admin": true},
	  {"spiffe_id": "spiffe://example.org/db", "parent_id": "spiffe://example.org/host",
	   "selectors": [{"type": "unix", "value": "uid:502"}], "ttl": 200, "x509_svid_ttl": 300}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []*api.Entry{
		{Id: "blog", SpiffeId: "spiffe://example.org/blog", ParentId: "spiffe://example.org/host", Selectors: []*api.Selector{{Type: "unix", Value: "uid:501"}},
			X509TtlSeconds: 200, ExpiresAt: 2000000000, Admin: true},
		{SpiffeId: "spiffe://example.org/db", ParentId: "spiffe://example.org/host", Selectors: []*api.Selector{{Type: "unix", Value: "uid:502"}},
			X509TtlSeconds: 300},
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("entry %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	for in, msg := range map[string]string{
		`{"entries": [{"id": "a", "entry_id": "b", "spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:        "differ",
		`{"entries": [{"expires_at": 5, "entryExpiry": 6, "spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`: "differ",
		`{"entries": [{"ttl": -1, "spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:                         "negative",
	} {
		if _, err := ParseEntryFile(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseEntryFile(%.70q) = %v, want %q", in, err, msg)
		}
	}
}

func FuzzParseEntryFile(f *testing.F) {
	f.Add([]byte(`{"entries": [{"entry_id": "x", "entryExpiry": 9, "ttl": 60, "spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`))
	f.Add([]byte(`{"entries": [{"id": "x", "spiffe_id": {"trust_domain": "example.org", "path": "/w"}, "parent_id": {"trust_domain": "example.org", "path": "/spire/server"}, "expires_at": "12", "selectors": [{"type":"unix","value":"uid:1"}]}]}`))
	f.Add([]byte(`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`))
	f.Add([]byte(`{"entries": [{"spiffe_id": "spiffe://example.org/n", "node": true, "selectors": [{"type":"x","value":"y"}]}]}`))
	f.Add([]byte(`{"entries": [{"spiffe_id": "spiffe://example.org/d", "parent_id": "spiffe://example.org/a", "downstream": true, "selectors": [{"type":"unix","value":"uid:0"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseEntryFile(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.SpiffeId == "" || len(e.Selectors) == 0 || (e.ParentId == "" && !e.Node) {
				t.Fatalf("accepted an incomplete entry: %v", e)
			}
		}
	})
}

func TestParseEntryIDs(t *testing.T) {
	for in, want := range map[string][]string{
		`{"ids": ["a", "b"]}`: {"a", "b"},
		`{"entries": [{"id": "a", "spiffe_id": "spiffe://example.org/x", "selectors": []}, {"id": "c"}], "next_page_token": ""}`: {"a", "c"},
	} {
		got, err := ParseEntryIDs(strings.NewReader(in))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseEntryIDs(%s) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		`{"ids": []}`: "no entries",
		`{}`:          "no entries",
		`{"ids": ["a"], "entries": [{"id": "b"}]}`:               "not both",
		`{"entries": [{"spiffe_id": "spiffe://example.org/x"}]}`: `entry 0 has no "id"`,
		`{"ids": ["a b"]}`: "ID 0: entry ID",
		`{"ids": ["a"]} x`: "trailing",
		`{"ids": "a"}`:     "parse entry IDs JSON",
	} {
		if _, err := ParseEntryIDs(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseEntryIDs(%s) = %v, want an error naming %q", in, err, msg)
		}
	}
}

func FuzzParseEntryIDs(f *testing.F) {
	f.Add([]byte(`{"ids": ["a", "b"]}`))
	f.Add([]byte(`{"entries": [{"id": "a", "spiffe_id": "spiffe://example.org/x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := ParseEntryIDs(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		if len(ids) == 0 {
			t.Fatal("accepted no IDs")
		}
		for _, id := range ids {
			if registry.CheckEntryID(id) != nil {
				t.Fatalf("accepted a malformed ID %q", id)
			}
		}
	})
}
