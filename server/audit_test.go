package server_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit/audittest"
)

// agentAPICalls attests two agents, has one ask for an SVID of the
// other's entry, sign and mint its own, and renew; plus attestations with
// a spent and a made-up token. It returns the tokens used and the errors
// of the refused calls, by name.
type agentAPICalls struct {
	tokens  []string
	a, b    *testAgent
	mine    *api.Entry
	theirs  *api.Entry
	refused map[string]error
}

const bannedAgent = "spiffe://example.org/agent/c"

func runAgentAPICalls(t *testing.T, ts *testServer) agentAPICalls {
	t.Helper()
	ctx := context.Background()
	c := agentAPICalls{refused: map[string]error{}}
	tokA := ts.token(t, "", 0)
	tokB := ts.token(t, "spiffe://example.org/agent/b", 0)
	c.tokens = []string{tokA, tokB}
	c.a = mustAttest(t, ts, tokA)
	c.b = mustAttest(t, ts, tokB)
	_, c.refused["spent token"] = attest(t, ts, tokA)
	_, c.refused["made-up token"] = attest(t, ts, strings.Repeat("ab", 20))
	// A banned agent's second token: refused with the agent named.
	tokC1, tokC2 := ts.token(t, bannedAgent, 0), ts.token(t, bannedAgent, 0)
	c.tokens = append(c.tokens, tokC1, tokC2)
	mustAttest(t, ts, tokC1)
	if _, err := ts.admin.BanAgent(ctx, &api.BanAgentRequest{SpiffeId: bannedAgent}); err != nil {
		t.Fatal(err)
	}
	_, c.refused["banned"] = attest(t, ts, tokC2)
	c.mine = ts.createEntry(t, "spiffe://example.org/web", c.a.ID.String(), "unix:uid:1000")
	c.theirs = ts.createEntry(t, "spiffe://example.org/db", c.b.ID.String(), "unix:uid:1000")
	_, csr := newCSR(t)
	_, c.refused["sign"] = c.a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{
		{EntryId: c.mine.Id, Csr: csr}, {EntryId: c.theirs.Id, Csr: csr}}})
	if _, err := c.a.Client.BatchSignX509SVID(ctx, &api.BatchSignX509SVIDRequest{Requests: []*api.X509SVIDRequest{{EntryId: c.mine.Id, Csr: csr}}}); err != nil {
		t.Fatal(err)
	}
	_, c.refused["mint"] = c.a.Client.MintJWTSVID(ctx, &api.MintJWTSVIDRequest{EntryId: c.theirs.Id, Audience: []string{"db"}})
	if _, err := c.a.Client.MintJWTSVID(ctx, &api.MintJWTSVIDRequest{EntryId: c.mine.Id, Audience: []string{"web"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.a.Client.RenewAgent(ctx, &api.RenewAgentRequest{Csr: csr}); err != nil {
		t.Fatal(err)
	}
	for name, err := range c.refused {
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s: %v, want PermissionDenied", name, err)
		}
	}
	return c
}

// TestAuditLogAgentAPI runs the agent API calls on a real server with the
// audit log on, and checks their records: the caller's address and agent
// ID, what was attested or signed, and each refusal.
func TestAuditLogAgentAPI(t *testing.T) {
	var log logtest.Buffer
	ts := runServerLogging(t, testConfig(t, func(c *server.Config) { c.AuditLog = true }), audittest.Logger(&log))
	c := runAgentAPICalls(t, ts)
	records := audittest.Records(t, log.String())
	one := func(name string, want map[string]string) audittest.Record {
		t.Helper()
		r := audittest.One(t, log.String(), want)
		if addr := r.Get("caller_addr"); !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("%s: caller_addr %q", name, addr)
		}
		return r
	}
	msg := func(err error) string { return status.Convert(err).Message() }

	attested := one("attestation", map[string]string{"method": api.AgentService_Attest_FullMethodName, "attestation_type": "join_token",
		"agent_id": c.a.ID.String(), "status": "success", "status_code": "OK"})
	if attested.Get("serial") != c.a.SVID.Certificates[0].SerialNumber.Text(16) || attested.Get("expires_at") == "" {
		t.Errorf("attestation record names another SVID: %v", attested)
	}
	// The spent and the made-up token are refused alike, on purpose.
	if msg(c.refused["spent token"]) != msg(c.refused["made-up token"]) {
		t.Fatalf("refusals differ: %v, %v", c.refused["spent token"], c.refused["made-up token"])
	}
	if got := audittest.Filter(records, map[string]string{"method": api.AgentService_Attest_FullMethodName, "attestation_type": "join_token",
		"agent_id": "", "status": "error", "status_code": "PermissionDenied", "status_message": msg(c.refused["spent token"])}); len(got) != 2 ||
		got[0].Get("caller_addr") == "" {
		t.Errorf("refused attestations: %v", got)
	}
	one("banned agent", map[string]string{"method": api.AgentService_Attest_FullMethodName, "attestation_type": "join_token",
		"agent_id": bannedAgent, "status": "error", "status_code": "PermissionDenied", "status_message": msg(c.refused["banned"])})
	signed := api.AgentService_BatchSignX509SVID_FullMethodName
	own := one("refused batch: own entry", map[string]string{"method": signed, "caller_id": c.a.ID.String(), "entry_id": c.mine.Id,
		"spiffe_id": "spiffe://example.org/web", "status": "error", "status_code": "PermissionDenied",
		"status_message": "the call failed: " + msg(c.refused["sign"])})
	other := one("refused batch: the other's entry", map[string]string{"method": signed, "caller_id": c.a.ID.String(), "entry_id": c.theirs.Id,
		"spiffe_id": "spiffe://example.org/db", "status": "error", "status_code": "PermissionDenied", "status_message": msg(c.refused["sign"])})
	if own.Get("request_id") != other.Get("request_id") {
		t.Errorf("one batch, two request IDs: %v, %v", own, other)
	}
	if one("signed", map[string]string{"method": signed, "caller_id": c.a.ID.String(), "entry_id": c.mine.Id,
		"spiffe_id": "spiffe://example.org/web", "status": "success"}).Get("expires_at") == "" {
		t.Error("signed record without the SVID's expiry")
	}
	minted := api.AgentService_MintJWTSVID_FullMethodName
	one("refused JWT", map[string]string{"method": minted, "caller_id": c.a.ID.String(), "entry_id": c.theirs.Id,
		"spiffe_id": "spiffe://example.org/db", "audience": "db", "status": "error", "status_code": "PermissionDenied", "status_message": msg(c.refused["mint"])})
	one("JWT", map[string]string{"method": minted, "caller_id": c.a.ID.String(), "entry_id": c.mine.Id,
		"spiffe_id": "spiffe://example.org/web", "audience": "web", "status": "success"})
	if one("renewal", map[string]string{"method": api.AgentService_RenewAgent_FullMethodName, "caller_id": c.a.ID.String(),
		"status": "success"}).Get("serial") == "" {
		t.Error("renewal record without the new SVID's serial")
	}
	// The admin calls made on the way are audited too; Sync is not.
	if n := len(audittest.Filter(records, map[string]string{"method": api.AdminService_CreateJoinToken_FullMethodName, "status": "success"})); n != len(c.tokens) {
		t.Errorf("%d join token records, want %d", n, len(c.tokens))
	}
	if n := len(audittest.Filter(records, map[string]string{"method": api.AgentService_Sync_FullMethodName})); n != 0 {
		t.Errorf("%d Sync records", n)
	}
	// The refusals are in the audit records, not in warnings besides.
	if strings.Contains(log.String(), "for an entry the agent may not serve") {
		t.Errorf("refusal logged besides its audit record:\n%s", log.String())
	}
	for _, tok := range c.tokens {
		if strings.Contains(log.String(), tok) {
			t.Fatalf("join token %s is in the log:\n%s", tok, log.String())
		}
	}
}

// TestAuditLogOff: the same calls with the audit log off write no audit
// record, and the refusals are logged as warnings, as before.
func TestAuditLogOff(t *testing.T) {
	var log logtest.Buffer
	ts := runServerLogging(t, testConfig(t, nil), audittest.Logger(&log))
	c := runAgentAPICalls(t, ts)
	if got := audittest.Records(t, log.String()); len(got) != 0 {
		t.Fatalf("%d audit records with the audit log off: %v", len(got), got)
	}
	for _, kind := range []string{"X509-SVID", "JWT-SVID"} {
		if line := `"msg":"refused ` + kind + ` request for an entry the agent may not serve","agent_id":"` + c.a.ID.String() + `","entry_id":"` + c.theirs.Id + `"`; !strings.Contains(log.String(), line) {
			t.Errorf("no warning %s in:\n%s", line, log.String())
		}
	}
	for _, tok := range c.tokens {
		if strings.Contains(log.String(), tok) {
			t.Fatalf("join token %s is in the log:\n%s", tok, log.String())
		}
	}
}

// An audit log the log level would drop is refused at start.
func TestAuditLogNeedsInfo(t *testing.T) {
	cfg := testConfig(t, func(c *server.Config) { c.AuditLog = true })
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if _, err := server.New(context.Background(), cfg, logger); err == nil || !strings.Contains(err.Error(), "set log_level to info or debug") {
		t.Fatalf("audit log at level warn: %v", err)
	}
}
