package client

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/api/x509pop/x509poptest"
)

// A re-attestation ends the SVID the agent held, so a Sync stream still
// open on the old connection is refused as superseded, and the refusal can
// reach the agent before the answer that superseded it (the server ends
// the stream when it records the node, then answers). Reported then, as
// the agent's Sync loop reports it, it must not start another
// re-attestation once the new SVID is in place (each would supersede the
// last, for good); the agent stays ready and its calls go over the new
// connection. Against a real server.
func TestSupersededRefusalDuringReattestation(t *testing.T) {
	ctx := context.Background()
	s, ca := x509popServer(t)
	_, certPath, keyPath := ca.NodeFiles(t, t.TempDir(), x509poptest.Leaf{CommonName: "node-1"})
	logs := &logtest.Buffer{}
	var calls callCounter
	var (
		c         *Client
		oldStream grpc.ServerStreamingClient[api.SyncResponse]
		armed     atomic.Bool
		refused   = make(chan error, 1)
	)
	// Once armed, the Attest answer is held back until the old stream's
	// refusal has come and been reported.
	refusalFirst := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err != nil || method != api.AgentService_Attest_FullMethodName || !armed.Load() {
			return err
		}
		var serr error
		for serr == nil {
			_, serr = oldStream.Recv()
		}
		c.ReportAuthFailure(serr)
		refused <- serr
		return nil
	}
	c = newClient(t, s, t.TempDir(), nil, func(cfg *Config) {
		cfg.NodeAttestor = X509PoP(td, certPath, keyPath)
		cfg.Logger = logs.Logger()
		cfg.DialOptions = append(cfg.DialOptions, calls.dialOption(), grpc.WithChainUnaryInterceptor(refusalFirst))
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	streamCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var err error
	if oldStream, err = c.Service().Sync(streamCtx, &api.SyncRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := oldStream.Recv(); err != nil {
		t.Fatal(err)
	}

	armed.Store(true)
	if err := c.renewOrReattest(ctx); err != nil {
		t.Fatalf("renew by re-attestation: %v", err)
	}
	armed.Store(false)
	if err := <-refused; status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("old connection's stream after the re-attestation: %v; want Unauthenticated (superseded)", err)
	}

	// Run takes the pending renewal request, made for the replaced SVID.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "renewal request dropped") && calls.get(api.AgentService_Attest_FullMethodName) == 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Run neither dropped nor acted on the renewal request:\n%s", logs.String())
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := calls.get(api.AgentService_Attest_FullMethodName); got != 2 {
		t.Fatalf("%d Attest calls, want 2 (start, renewal): the refusal of the replaced SVID started another re-attestation", got)
	}
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready after the superseded refusal: %v", err)
	}
	if err := syncWorks(ctx, c); err != nil {
		t.Fatalf("sync over the new connection: %v", err)
	}
}
