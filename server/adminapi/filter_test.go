package adminapi

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/store"
)

func TestMatch(t *testing.T) {
	have := []string{"a", "b"}
	for _, tc := range []struct {
		want []string
		mode api.MatchMode
		ok   bool
	}{
		{nil, api.MatchMode_MATCH_EXACT, true}, // no filter
		{[]string{"a"}, api.MatchMode_MATCH_SUPERSET, true},
		{[]string{"a", "b"}, api.MatchMode_MATCH_SUPERSET, true},
		{[]string{"a", "c"}, api.MatchMode_MATCH_SUPERSET, false},
		{[]string{"a", "b"}, api.MatchMode_MATCH_EXACT, true},
		{[]string{"b", "a", "a"}, api.MatchMode_MATCH_EXACT, true},
		{[]string{"a"}, api.MatchMode_MATCH_EXACT, false},
		{[]string{"a", "b", "c"}, api.MatchMode_MATCH_EXACT, false},
		{[]string{"a", "b", "c"}, api.MatchMode_MATCH_SUBSET, true},
		{[]string{"a", "c"}, api.MatchMode_MATCH_SUBSET, false},
		{[]string{"c", "b"}, api.MatchMode_MATCH_ANY, true},
		{[]string{"c", "d"}, api.MatchMode_MATCH_ANY, false},
	} {
		if got := match(have, tc.want, tc.mode); got != tc.ok {
			t.Errorf("match(%v, %v, %s) = %v, want %v", have, tc.want, tc.mode, got, tc.ok)
		}
	}
	// Nothing (an entry federating with no one) matches no filter that is
	// on: SPIRE's subset needs one in common, as its any does.
	for mode := range api.MatchMode_name {
		if match(nil, []string{"a"}, api.MatchMode(mode)) {
			t.Errorf("match(nil, [a], %s) = true, want false", api.MatchMode(mode))
		}
	}
}

// TestListEntriesFilters: each filter of ListEntries, SPIRE's, alone and
// combined, over entries in a real store; bad filters are refused.
func TestListEntriesFilters(t *testing.T) {
	env := startAdmin(t, false, nil)
	ctx := context.Background()
	parent := "spiffe://example.org/agent/a"
	mk := func(id string, edit func(*api.Entry), sels ...string) {
		e := entry("spiffe://example.org/"+id, parent, sels...)
		e.Id = id
		if edit != nil {
			edit(e)
		}
		if _, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: e}); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	mk("web", func(e *api.Entry) { e.Hint = "blue"; e.FederatesWith = []string{"partner.org"} }, "unix:uid:1000", "unix:gid:1000")
	mk("db", func(e *api.Entry) { e.FederatesWith = []string{"partner.org", "other.org"} }, "unix:uid:1000")
	mk("east", func(e *api.Entry) { e.Downstream = true; e.ParentId = "spiffe://example.org/agent/b" }, "unix:uid:0")

	sels := func(ss ...string) []*api.Selector {
		out := make([]*api.Selector, len(ss))
		for i, s := range ss {
			typ, val, _ := strings.Cut(s, ":")
			out[i] = &api.Selector{Type: typ, Value: val}
		}
		return out
	}
	for name, tc := range map[string]struct {
		req  *api.ListEntriesRequest
		want []string
	}{
		"none":                 {&api.ListEntriesRequest{}, []string{"db", "east", "web"}},
		"parent":               {&api.ListEntriesRequest{ParentId: parent}, []string{"db", "web"}},
		"spiffe id":            {&api.ListEntriesRequest{SpiffeId: "spiffe://example.org/web"}, []string{"web"}},
		"selector superset":    {&api.ListEntriesRequest{Selectors: sels("unix:uid:1000")}, []string{"db", "web"}},
		"selector exact":       {&api.ListEntriesRequest{Selectors: sels("unix:uid:1000"), MatchSelectorsOn: api.MatchMode_MATCH_EXACT}, []string{"db"}},
		"selector subset":      {&api.ListEntriesRequest{Selectors: sels("unix:uid:1000", "unix:uid:0"), MatchSelectorsOn: api.MatchMode_MATCH_SUBSET}, []string{"db", "east"}},
		"selector any":         {&api.ListEntriesRequest{Selectors: sels("unix:gid:1000", "unix:uid:0"), MatchSelectorsOn: api.MatchMode_MATCH_ANY}, []string{"east", "web"}},
		"federates superset":   {&api.ListEntriesRequest{FederatesWith: []string{"spiffe://partner.org"}}, []string{"db", "web"}},
		"federates exact":      {&api.ListEntriesRequest{FederatesWith: []string{"partner.org"}, MatchFederatesWithOn: api.MatchMode_MATCH_EXACT}, []string{"web"}},
		"federates any":        {&api.ListEntriesRequest{FederatesWith: []string{"other.org", "nobody.org"}, MatchFederatesWithOn: api.MatchMode_MATCH_ANY}, []string{"db"}},
		"hint":                 {&api.ListEntriesRequest{Hint: "blue"}, []string{"web"}},
		"downstream":           {&api.ListEntriesRequest{Downstream: proto.Bool(true)}, []string{"east"}},
		"not downstream":       {&api.ListEntriesRequest{Downstream: proto.Bool(false)}, []string{"db", "web"}},
		"combined":             {&api.ListEntriesRequest{ParentId: parent, Selectors: sels("unix:gid:1000")}, []string{"web"}},
		"combined, none match": {&api.ListEntriesRequest{Hint: "blue", Downstream: proto.Bool(true)}, nil},
	} {
		resp, err := env.admin.ListEntries(ctx, tc.req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var got []string
		for _, e := range resp.Entries {
			got = append(got, e.Id)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", name, got, tc.want)
		}
	}
	for name, req := range map[string]*api.ListEntriesRequest{
		"bad parent":    {ParentId: "spiffe://example.org/a/../b"},
		"bad selector":  {Selectors: sels("nosuchtype:x")},
		"bad federates": {FederatesWith: []string{"Not A Domain"}},
		"bad mode":      {MatchSelectorsOn: api.MatchMode(9)},
	} {
		if _, err := env.admin.ListEntries(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// TestEntryCustomID: a caller-chosen ID is kept (SPIRE's custom entry IDs,
// what a restore needs); a malformed one, one of the Kubernetes
// controller's, or one already taken is refused and nothing is stored.
func TestEntryCustomID(t *testing.T) {
	env := startAdmin(t, false, nil)
	ctx := context.Background()
	e := entry("spiffe://example.org/web", "spiffe://example.org/agent/a", "unix:uid:1000")
	e.Id = "web-entry_1.v2~x"
	got, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: e})
	if err != nil || got.Id != e.Id {
		t.Fatalf("create with ID %q: %v, %v", e.Id, got, err)
	}
	// A generated ID when none is given.
	e2 := entry("spiffe://example.org/db", "spiffe://example.org/agent/a", "unix:uid:1001")
	if got, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: e2}); err != nil || len(got.Id) != 36 {
		t.Fatalf("create without ID: %v, %v; want a UUID", got, err)
	}
	for name, tc := range map[string]struct {
		id   string
		code codes.Code
		msg  string
	}{
		"taken":        {"web-entry_1.v2~x", codes.AlreadyExists, "ID web-entry_1.v2~x is taken"},
		"space":        {"web entry", codes.InvalidArgument, "letters, digits"},
		"slash":        {"a/b", codes.InvalidArgument, "letters, digits"},
		"too long":     {strings.Repeat("a", 256), codes.InvalidArgument, "255"},
		"controller's": {"k8s.main.0123", codes.InvalidArgument, "Kubernetes controller"},
		"non-ASCII":    {"entrée", codes.InvalidArgument, "letters, digits"},
	} {
		in := entry("spiffe://example.org/other-"+name[:1], "spiffe://example.org/agent/a", "unix:uid:2000")
		in.Id = tc.id
		_, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: in})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %s naming %q", name, err, tc.code, tc.msg)
		}
		// A batch with one bad ID stores nothing.
		ok := entry("spiffe://example.org/batch-ok", "spiffe://example.org/agent/a", "unix:uid:3000")
		ok.Id = "batch-ok"
		if _, err := env.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: []*api.Entry{ok, in}}); status.Code(err) != tc.code {
			t.Errorf("%s in a batch: %v, want %s", name, err, tc.code)
		}
		if _, err := env.admin.GetEntry(ctx, &api.GetEntryRequest{Id: "batch-ok"}); status.Code(err) != codes.NotFound {
			t.Errorf("%s in a batch: the good entry was stored: %v", name, err)
		}
	}
	resp, err := env.admin.ListEntries(ctx, &api.ListEntriesRequest{})
	if err != nil || len(resp.Entries) != 2 {
		t.Fatalf("after the refusals: %v, %v; want the 2 entries created", resp, err)
	}
}

// TestListAgentsFilters: each agent filter, SPIRE's, over a real store,
// and GetAgent.
func TestListAgentsFilters(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	s := New(Config{Store: st})
	now := time.Now()
	sel := func(s string) []selector.Selector {
		x, err := selector.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return []selector.Selector{x}
	}
	for _, n := range []store.Node{
		{SPIFFEID: "spiffe://example.org/agent/join_token/a", AttestationType: "join_token", SerialNumber: "01", ExpiresAt: now.Add(time.Hour)},
		{SPIFFEID: "spiffe://example.org/agent/x509pop/b", AttestationType: "x509pop", SerialNumber: "02", ExpiresAt: now.Add(10 * time.Minute), CanReattest: true,
			Selectors: sel("x509pop:subject:cn:b")},
		{SPIFFEID: "spiffe://example.org/agent/x509pop/c", AttestationType: "x509pop", SerialNumber: "03", ExpiresAt: now.Add(-time.Minute), CanReattest: true,
			Selectors: sel("x509pop:subject:cn:c")},
	} {
		if err := st.UpsertNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.BanNode(ctx, "spiffe://example.org/agent/join_token/a"); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		req  *api.ListAgentsRequest
		want []string
	}{
		"none":           {&api.ListAgentsRequest{}, []string{"a", "b", "c"}},
		"type":           {&api.ListAgentsRequest{AttestationType: "x509pop"}, []string{"b", "c"}},
		"banned":         {&api.ListAgentsRequest{Banned: proto.Bool(true)}, []string{"a"}},
		"not banned":     {&api.ListAgentsRequest{Banned: proto.Bool(false)}, []string{"b", "c"}},
		"can reattest":   {&api.ListAgentsRequest{CanReattest: proto.Bool(false)}, []string{"a"}},
		"expires before": {&api.ListAgentsRequest{ExpiresBefore: now.Add(30 * time.Minute).Unix(), AttestationType: "x509pop"}, []string{"b", "c"}},
		"expired":        {&api.ListAgentsRequest{ExpiresBefore: now.Unix()}, []string{"c"}},
		"selector":       {&api.ListAgentsRequest{Selectors: []*api.Selector{{Type: "x509pop", Value: "subject:cn:b"}}}, []string{"b"}},
		"selector any":   {&api.ListAgentsRequest{Selectors: []*api.Selector{{Type: "x509pop", Value: "subject:cn:b"}, {Type: "x509pop", Value: "subject:cn:c"}}, MatchSelectorsOn: api.MatchMode_MATCH_ANY}, []string{"b", "c"}},
	} {
		resp, err := s.ListAgents(ctx, tc.req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var got []string
		for _, a := range resp.Agents {
			got = append(got, a.SpiffeId[strings.LastIndex(a.SpiffeId, "/")+1:])
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", name, got, tc.want)
		}
	}
	for name, req := range map[string]*api.ListAgentsRequest{
		"bad selector":  {Selectors: []*api.Selector{{Type: "nosuchtype", Value: "x"}}},
		"bad mode":      {MatchSelectorsOn: api.MatchMode(-1)},
		"negative time": {ExpiresBefore: -1},
	} {
		if _, err := s.ListAgents(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}

	a, err := s.GetAgent(ctx, &api.GetAgentRequest{SpiffeId: "spiffe://example.org/agent/x509pop/b"})
	if err != nil || a.AttestationType != "x509pop" || a.SerialNumber != "02" || !a.CanReattest || len(a.Selectors) != 1 {
		t.Fatalf("GetAgent: %v, %v", a, err)
	}
	if _, err := s.GetAgent(ctx, &api.GetAgentRequest{SpiffeId: "spiffe://example.org/agent/nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetAgent of an unknown agent: %v, want NotFound", err)
	}
	if _, err := s.GetAgent(ctx, &api.GetAgentRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("GetAgent without an ID: %v, want InvalidArgument", err)
	}
}
