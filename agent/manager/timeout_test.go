package manager

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/server/api"
)

// silentServer is an agent API that accepts calls and never answers them,
// like a server behind a silently dropped network.
type silentServer struct {
	api.UnimplementedAgentServiceServer
	signCalls chan struct{} // one send per BatchSignX509SVID call that ended
}

func (s *silentServer) Sync(_ *api.SyncRequest, stream grpc.ServerStreamingServer[api.SyncResponse]) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (s *silentServer) BatchSignX509SVID(ctx context.Context, _ *api.BatchSignX509SVIDRequest) (*api.BatchSignX509SVIDResponse, error) {
	<-ctx.Done()
	s.signCalls <- struct{}{}
	return nil, ctx.Err()
}

// serveAgentAPI serves srv on 127.0.0.1 until the test ends and returns a
// client of it.
func serveAgentAPI(t *testing.T, srv api.AgentServiceServer) api.AgentServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	api.RegisterAgentServiceServer(gs, srv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewAgentServiceClient(conn)
}

// runInBackground runs m until the test ends.
func runInBackground(t *testing.T, m *Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestSigningCallToSilentServerTimesOutAndIsRetried(t *testing.T) {
	srv := &silentServer{signCalls: make(chan struct{}, 16)}
	c, err := cache.New(cache.Options{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetEntries([]cache.Entry{{ID: "e", SPIFFEID: spiffeid.RequireFromPath(td, "/w"), CreatedAt: t0}})
	m, err := New(Config{
		Server:      serveAgentAPI(t, srv),
		Cache:       c,
		TrustDomain: td,
		CallTimeout: 100 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runInBackground(t, m)

	// Two calls that ended server-side: the first gave up at its timeout,
	// and the manager tried again.
	deadline := time.After(20 * time.Second)
	for i := range 2 {
		select {
		case <-srv.signCalls:
		case <-deadline:
			t.Fatalf("BatchSignX509SVID call %d to a silent server never ended", i+1)
		}
	}
}
