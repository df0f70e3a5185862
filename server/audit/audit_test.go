package audit_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/internal/peercred"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/audit/audittest"
)

// batchHealth is the standard health service, whose Check of the service
// "batch" stands for a batch call: two items, the second refused by
// itself, and the call failing.
type batchHealth struct{ *grpchealth.Server }

func (h batchHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.GetService() != "batch" {
		return h.Server.Check(ctx, req)
	}
	rec := audit.FromContext(ctx)
	rec.Add(slog.String("shared", "yes"))
	rec.AddItem(nil, slog.Int("item", 0))
	rec.AddItem(status.Error(codes.PermissionDenied, "item 1 refused"), slog.Int("item", 1))
	return nil, status.Error(codes.PermissionDenied, "item 1 refused")
}

// serve runs the health service behind the audit interceptors on a Unix
// socket with kernel credentials, as the admin socket does.
func serve(t *testing.T, o audit.Options) (healthpb.HealthClient, *logtest.Buffer) {
	t.Helper()
	var log logtest.Buffer
	l := audit.New(audittest.Logger(&log))
	g := grpc.NewServer(grpc.Creds(peercred.Credentials()),
		grpc.UnaryInterceptor(l.UnaryInterceptor(o)), grpc.StreamInterceptor(l.StreamInterceptor(o)))
	healthpb.RegisterHealthServer(g, batchHealth{grpchealth.NewServer()})
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn), &log
}

// fields is what the services pass: here the health request's service.
func fields(req, resp any) []slog.Attr {
	attrs := []slog.Attr{slog.String("service", req.(*healthpb.HealthCheckRequest).GetService())}
	if r, ok := resp.(*healthpb.HealthCheckResponse); ok {
		attrs = append(attrs, slog.String("answer", r.GetStatus().String()))
	}
	return attrs
}

func TestRecords(t *testing.T) {
	client, log := serve(t, audit.Options{Fields: fields, Skip: func(m string) bool { return m == "/grpc.health.v1.Health/List" }})
	ctx := context.Background()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "batch"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("batch: %v", err)
	}
	if _, err := client.List(ctx, &healthpb.HealthListRequest{}); err != nil {
		t.Fatal(err)
	}
	watchCtx, cancel := context.WithCancel(ctx)
	w, err := client.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	log.WaitFor(t, "Health/Watch", 10*time.Second)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	caller := map[string]string{
		"caller_uid": strconv.Itoa(os.Getuid()), "caller_gid": strconv.Itoa(os.Getgid()),
		"caller_pid": strconv.Itoa(os.Getpid()), "caller_path": exe,
	}
	check := func(want map[string]string) {
		t.Helper()
		for k, v := range caller {
			want[k] = v
		}
		audittest.One(t, log.String(), want)
	}
	check(map[string]string{"method": "/grpc.health.v1.Health/Check", "service": "", "answer": "SERVING",
		"status": "success", "status_code": "OK", "status_message": ""})
	check(map[string]string{"method": "/grpc.health.v1.Health/Check", "service": "nope", "answer": "",
		"status": "error", "status_code": "NotFound", "status_message": "unknown service"})
	check(map[string]string{"service": "batch", "shared": "yes", "item": "0",
		"status": "error", "status_code": "PermissionDenied", "status_message": "the call failed: item 1 refused"})
	check(map[string]string{"service": "batch", "shared": "yes", "item": "1",
		"status": "error", "status_code": "PermissionDenied", "status_message": "item 1 refused"})
	check(map[string]string{"method": "/grpc.health.v1.Health/Watch", "service": "watched",
		"status": "error", "status_code": "Canceled"})

	records := audittest.Records(t, log.String())
	if len(records) != 5 {
		t.Errorf("%d records, want 5 (none for the skipped List):\n%s", len(records), log)
	}
	ids := map[string]int{}
	for _, r := range records {
		ids[r.Get("request_id")]++
	}
	if len(ids) != 4 || ids[audittest.Filter(records, map[string]string{"service": "batch"})[0].Get("request_id")] != 2 {
		t.Errorf("request IDs %v: want one per call, shared by a batch's items", ids)
	}
}

// Without the interceptor, handlers' records are nil and take every call.
func TestNoRecordWithoutInterceptor(t *testing.T) {
	rec := audit.FromContext(context.Background())
	if rec != nil {
		t.Fatalf("record without an interceptor: %v", rec)
	}
	rec.Add(slog.String("a", "b"))
	rec.AddItem(nil, slog.String("a", "b"))
}

type depthKey int

// BenchmarkFromContextOff is what a handler pays per call with the audit
// log off: the record lookup through a context about as deep as a gRPC
// server call's, and a call on the nil record.
func BenchmarkFromContextOff(b *testing.B) {
	ctx := context.Background()
	for i := range 10 {
		ctx = context.WithValue(ctx, depthKey(i), i)
	}
	for b.Loop() {
		rec := audit.FromContext(ctx)
		rec.Add(slog.String("entry_id", "e"))
	}
}
