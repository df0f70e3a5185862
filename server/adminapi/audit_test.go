package adminapi

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/audit/audittest"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

var auditTD = spiffeid.RequireTrustDomainFromString("example.org")

// adminEnv is the admin service over its real socket, on a real SQLite
// store, catalog and CA, logging JSON to log.
type adminEnv struct {
	admin  api.AdminServiceClient
	cat    *catalog.Catalog
	conn   *grpc.ClientConn
	log    *logtest.Buffer
	socket string
}

// startAdmin serves the admin API with the audit log on (or off), for the
// caller uids allowed (nil: root and ours).
func startAdmin(t *testing.T, auditOn bool, allowed []uint32) *adminEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(dir, "signet.db"), discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat, err := catalog.New(ctx, st, auditTD, discard)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ca.New(ctx, ca.Config{TrustDomain: auditTD, DataDir: dir, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	env := &adminEnv{log: &logtest.Buffer{}, cat: cat, socket: filepath.Join(dir, "admin.sock")}
	logger := audittest.Logger(env.log)
	cfg := Config{TrustDomain: auditTD, Store: st, Catalog: cat, CA: m, Logger: logger, AllowedUIDs: allowed,
		PublishAuthorities: func(context.Context) error { return nil }}
	if auditOn {
		cfg.Audit = audit.New(logger)
	}
	g := New(cfg).NewGRPCServer()
	// A streaming service behind the same interceptors.
	reflection.Register(g)
	ln, err := Listen(env.socket)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	if env.conn, err = grpc.NewClient("unix://"+env.socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.conn.Close() })
	env.admin = api.NewAdminServiceClient(env.conn)
	return env
}

func entry(spiffeID, parentID string, sels ...string) *api.Entry {
	e := &api.Entry{SpiffeId: spiffeID, ParentId: parentID}
	for _, s := range sels {
		typ, val, _ := strings.Cut(s, ":")
		e.Selectors = append(e.Selectors, &api.Selector{Type: typ, Value: val})
	}
	return e
}

// reflect opens a reflection stream and lists the services: a streaming
// admin call.
func (env *adminEnv) reflect(ctx context.Context) error {
	s, err := reflectionpb.NewServerReflectionClient(env.conn).ServerReflectionInfo(ctx)
	if err != nil {
		return err
	}
	// A stream refused at once ends Send with io.EOF; Recv says why.
	if err := s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
		return err
	}
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.CloseSend()
}

// TestAuditAdminCalls runs admin calls and checks each one's audit
// record: its method, status, the caller's credentials and what it named.
func TestAuditAdminCalls(t *testing.T) {
	env := startAdmin(t, true, nil)
	ctx := context.Background()
	created, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry("spiffe://example.org/web", "spiffe://example.org/agent/a", "unix:uid:1000")})
	if err != nil {
		t.Fatal(err)
	}
	named, err := env.admin.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{SpiffeId: "spiffe://example.org/agent/b", TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := env.admin.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	batch := []*api.Entry{
		entry("spiffe://example.org/b0", "spiffe://example.org/agent/a", "unix:uid:1"),
		entry("spiffe://example.org/b1/..", "spiffe://example.org/agent/a", "unix:uid:1"),
		entry("spiffe://example.org/b2", "spiffe://example.org/agent/a", "unix:uid:1"),
	}
	good := []*api.Entry{batch[0], batch[2]}
	var goodResp *api.BatchCreateEntriesResponse
	var prepared *api.LocalAuthority
	method := func(m string) string { return "/" + api.AdminService_ServiceDesc.ServiceName + "/" + m }
	tests := []struct {
		name   string
		method string
		call   func() error
		code   codes.Code
		want   map[string]string // besides method, status and status_code
	}{
		{"update entry", method("UpdateEntry"), func() error {
			_, err := env.admin.UpdateEntry(ctx, &api.UpdateEntryRequest{Entry: &api.Entry{Id: created.Id, Selectors: entry("", "", "unix:uid:1001").Selectors},
				UpdateMask: []string{"selectors"}})
			return err
		}, codes.OK, map[string]string{"entry_id": created.Id, "selectors": "unix:uid:1001", "update_mask": "selectors"}},
		{"get entry", method("GetEntry"), func() error { _, err := env.admin.GetEntry(ctx, &api.GetEntryRequest{Id: created.Id}); return err },
			codes.OK, map[string]string{"entry_id": created.Id}},
		{"list entries", method("ListEntries"), func() error {
			_, err := env.admin.ListEntries(ctx, &api.ListEntriesRequest{ParentId: "spiffe://example.org/agent/a"})
			return err
		}, codes.OK, map[string]string{"parent_id": "spiffe://example.org/agent/a"}},
		{"batch create", method("BatchCreateEntries"), func() (err error) {
			goodResp, err = env.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: good})
			return err
		}, codes.OK, nil}, // one record per entry: checked below
		{"evict unknown agent", method("EvictAgent"), func() error {
			_, err := env.admin.EvictAgent(ctx, &api.EvictAgentRequest{SpiffeId: "spiffe://example.org/agent/gone"})
			return err
		}, codes.NotFound, map[string]string{"agent_id": "spiffe://example.org/agent/gone", "status_message": "evict agent spiffe://example.org/agent/gone: not found"}},
		{"ban unknown agent", method("BanAgent"), func() error {
			_, err := env.admin.BanAgent(ctx, &api.BanAgentRequest{SpiffeId: "spiffe://example.org/agent/gone"})
			return err
		}, codes.NotFound, map[string]string{"agent_id": "spiffe://example.org/agent/gone"}},
		{"delete unknown federated bundle", method("DeleteFederatedBundle"), func() error {
			_, err := env.admin.DeleteFederatedBundle(ctx, &api.DeleteFederatedBundleRequest{TrustDomain: "other.org"})
			return err
		}, codes.NotFound, map[string]string{"trust_domain": "other.org", "mode": "BUNDLE_DELETE_MODE_RESTRICT"}},
		{"get unknown relationship", method("GetFederationRelationship"), func() error {
			_, err := env.admin.GetFederationRelationship(ctx, &api.GetFederationRelationshipRequest{TrustDomain: "other.org"})
			return err
		}, codes.NotFound, map[string]string{"trust_domain": "other.org"}},
		{"create relationship", method("CreateFederationRelationship"), func() error {
			_, err := env.admin.CreateFederationRelationship(ctx, &api.CreateFederationRelationshipRequest{Relationship: &api.FederationRelationship{
				TrustDomain: "other.org", BundleEndpointUrl: "https://other.org:8443", BundleEndpointProfile: "https_spiffe"}})
			return err
		}, codes.OK, map[string]string{"trust_domain": "other.org", "bundle_endpoint_url": "https://other.org:8443",
			"bundle_endpoint_profile": "https_spiffe", "bootstrap_bundle": "false"}},
		{"list local authorities", method("GetLocalAuthorities"), func() error {
			_, err := env.admin.GetLocalAuthorities(ctx, &api.GetLocalAuthoritiesRequest{Kind: "x509"})
			return err
		}, codes.OK, map[string]string{"kind": "x509"}},
		{"prepare local authority", method("PrepareLocalAuthority"), func() (err error) {
			prepared, err = env.admin.PrepareLocalAuthority(ctx, &api.PrepareLocalAuthorityRequest{Kind: "jwt"})
			return err
		}, codes.OK, map[string]string{"kind": "jwt"}}, // and the new authority_id, below
		{"get bundle", method("GetBundle"), func() error { _, err := env.admin.GetBundle(ctx, &api.GetBundleRequest{}); return err }, codes.OK, nil},
		{"delete entry", method("DeleteEntry"), func() error {
			_, err := env.admin.DeleteEntry(ctx, &api.DeleteEntryRequest{Id: created.Id})
			return err
		},
			codes.OK, map[string]string{"entry_id": created.Id}},
		{"stream", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", func() error { return env.reflect(ctx) }, codes.OK, nil},
	}
	for _, tt := range tests {
		if err := tt.call(); status.Code(err) != tt.code {
			t.Fatalf("%s: %v, want %s", tt.name, err, tt.code)
		}
	}
	// The batch with one bad entry: nothing is created.
	_, err = env.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: batch})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("batch with a bad entry: %v", err)
	}
	// Health checks are not audited.
	if _, err := healthpb.NewHealthClient(env.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	records := audittest.Records(t, env.log.String())
	one := func(name string, want map[string]string) audittest.Record {
		t.Helper()
		want["caller_uid"] = strconv.Itoa(os.Getuid())
		want["caller_gid"] = strconv.Itoa(os.Getgid())
		want["caller_pid"] = strconv.Itoa(os.Getpid())
		r := audittest.One(t, env.log.String(), want)
		if r.Get("request_id") == "" || r.Get("caller_path") == "" {
			t.Errorf("%s: no request_id or caller_path: %v", name, r)
		}
		return r
	}
	one("create entry", map[string]string{"method": method("CreateEntry"), "status": "success", "status_code": "OK",
		"entry_id": created.Id, "spiffe_id": "spiffe://example.org/web", "parent_id": "spiffe://example.org/agent/a", "selectors": "unix:uid:1000"})
	one("token with an ID", map[string]string{"method": method("CreateJoinToken"), "status": "success", "spiffe_id": "spiffe://example.org/agent/b",
		"ttl_seconds": "600", "agent_id": "spiffe://example.org/agent/b", "expires_at": time.Unix(named.ExpiresAt, 0).UTC().Format(time.RFC3339)})
	one("token", map[string]string{"method": method("CreateJoinToken"), "status": "success", "agent_id": anon.AgentId})
	for _, tt := range tests {
		want := map[string]string{"method": tt.method, "status_code": tt.code.String()}
		for k, v := range tt.want {
			want[k] = v
		}
		switch {
		case tt.name == "batch create":
			for i, e := range goodResp.Entries {
				one("batch item", map[string]string{"method": tt.method, "status": "success", "status_code": "OK",
					"batch_index": strconv.Itoa(i), "entry_id": e.Id, "spiffe_id": good[i].SpiffeId})
			}
			continue
		case tt.name == "prepare local authority":
			want["authority_id"] = prepared.AuthorityId
		}
		if tt.code == codes.OK {
			want["status"] = "success"
		} else {
			want["status"] = "error"
		}
		one(tt.name, want)
	}
	// One record per entry of the refused batch, each with its own verdict.
	bad := one("refused batch: the bad entry", map[string]string{"method": method("BatchCreateEntries"), "batch_index": "1",
		"spiffe_id": "spiffe://example.org/b1/..", "status": "error", "status_code": "InvalidArgument"})
	if msg := bad.Get("status_message"); !strings.HasPrefix(msg, "batch create: entry 1 (spiffe://example.org/b1/..): ") {
		t.Errorf("bad entry's status_message %q", msg)
	}
	for _, i := range []string{"0", "2"} {
		r := one("refused batch: a good entry", map[string]string{"method": method("BatchCreateEntries"), "batch_index": i,
			"status": "error", "status_code": "InvalidArgument", "status_message": "the call failed: " + bad.Get("status_message")})
		if r.Get("request_id") != bad.Get("request_id") || r.Get("entry_id") != "" {
			t.Errorf("batch item %s: request_id %s (the bad one's: %s), entry_id %q", i, r.Get("request_id"), bad.Get("request_id"), r.Get("entry_id"))
		}
	}
	if n := len(audittest.Filter(records, map[string]string{"method": "/grpc.health.v1.Health/Check"})); n != 0 {
		t.Errorf("%d records of health checks", n)
	}
	if want := 3 + len(tests) - 1 + len(good) + len(batch); len(records) != want {
		t.Errorf("%d records, want %d (one per call, one per batch entry):\n%s", len(records), want, env.log)
	}
	for _, tok := range []string{named.Token, anon.Token} {
		if strings.Contains(env.log.String(), tok) {
			t.Fatalf("a join token is in the log:\n%s", env.log)
		}
	}
}

// TestAuditRefusedCaller: a caller whose uid may not use the API is
// refused and audited, on unary and streaming calls alike; the health
// service answers anyone who reaches the socket.
func TestAuditRefusedCaller(t *testing.T) {
	env := startAdmin(t, true, []uint32{uint32(os.Getuid()) + 4242})
	ctx := context.Background()
	_, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry("spiffe://example.org/web", "spiffe://example.org/agent/a", "unix:uid:0")})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("create entry as a refused uid: %v", err)
	}
	if err := env.reflect(ctx); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("stream as a refused uid: %v", err)
	}
	h, err := healthpb.NewHealthClient(env.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check as another uid: %v %v", h, err)
	}
	records := audittest.Records(t, env.log.String())
	uid := strconv.Itoa(os.Getuid())
	for _, want := range []map[string]string{
		{"method": api.AdminService_CreateEntry_FullMethodName, "spiffe_id": "spiffe://example.org/web", "selectors": "unix:uid:0"},
		{"method": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"},
	} {
		want["caller_uid"], want["status"], want["status_code"] = uid, "error", "PermissionDenied"
		want["status_message"] = "admin API: uid " + uid + " may not call it (only root and the server's uid)"
		audittest.One(t, env.log.String(), want)
	}
	if len(records) != 2 {
		t.Errorf("%d records, want 2:\n%s", len(records), env.log)
	}
}

// TestAuditOff: without the audit log, the same calls write no record.
func TestAuditOff(t *testing.T) {
	env := startAdmin(t, false, nil)
	ctx := context.Background()
	if _, err := env.admin.CreateEntry(ctx, &api.CreateEntryRequest{Entry: entry("spiffe://example.org/web", "spiffe://example.org/agent/a", "unix:uid:0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.admin.BatchCreateEntries(ctx, &api.BatchCreateEntriesRequest{Entries: []*api.Entry{entry("spiffe://example.org/x/..", "spiffe://example.org/agent/a", "unix:uid:0")}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad batch: %v", err)
	}
	tok, err := env.admin.CreateJoinToken(ctx, &api.CreateJoinTokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.reflect(ctx); err != nil {
		t.Fatal(err)
	}
	if got := audittest.Records(t, env.log.String()); len(got) != 0 {
		t.Errorf("audit records with the audit log off: %v", got)
	}
	if !strings.Contains(env.log.String(), `"msg":"entry created"`) || strings.Contains(env.log.String(), tok.Token) {
		t.Errorf("log without the entry's line, or with the token:\n%s", env.log)
	}
}

// TestCreateAuditNamesChosenID: a create refused for the ID the caller
// chose is audited with that ID.
func TestCreateAuditNamesChosenID(t *testing.T) {
	env := startAdmin(t, true, nil)
	e := entry("spiffe://example.org/w", "spiffe://example.org/agent/a", "unix:uid:1")
	e.Id = "k8s.c.forged"
	if _, err := env.admin.CreateEntry(context.Background(), &api.CreateEntryRequest{Entry: e}); err == nil {
		t.Fatal("create with the controller's ID succeeded")
	}
	audittest.One(t, env.log.String(), map[string]string{"method": api.AdminService_CreateEntry_FullMethodName, "entry_id": "k8s.c.forged"})
}
