package adminapi

import (
	"strings"
	"testing"
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
		`{"entries": [{"spiffe_id": "spiffe://example.org/w/", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]}`: "entry 0",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "selectors": [{"type":"unix","value":"uid:1"}]}]}`:                                         "parent_id is required",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": []}]}`:                                 "selector",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:x"}]}]}`:  "numeric",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "ttl": 5}]}`:                                        "unknown field",
		`{"entries": [}`: "parse entries JSON",
		`{"entries": [{"spiffe_id": "spiffe://example.org/w", "parent_id": "spiffe://example.org/a", "selectors": [{"type":"unix","value":"uid:1"}]}]} {}`: "trailing",
	}
	for in, want := range bad {
		if _, err := ParseEntryFile(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseEntryFile(%.60q) = %v, want error containing %q", in, err, want)
		}
	}
}

func FuzzParseEntryFile(f *testing.F) {
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
