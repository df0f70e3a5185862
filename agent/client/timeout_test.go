package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
)

// silentServer accepts MintJWTSVID calls and never answers them, like a
// server behind a silently dropped network.
type silentServer struct {
	api.UnimplementedAgentServiceServer
}

func (silentServer) MintJWTSVID(ctx context.Context, _ *api.MintJWTSVIDRequest) (*api.MintJWTSVIDResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestMintJWTSVIDToSilentServerTimesOut(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	api.RegisterAgentServiceServer(gs, silentServer{})
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := New(Config{ServerAddr: lis.Addr().String(), TrustDomain: td, DataDir: t.TempDir(), CallTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.conn = conn // as setIdentity would, without TLS

	// The caller's context has no deadline (a Workload API stream can live
	// for days): only the client's call timeout can end the call.
	done := make(chan error, 1)
	go func() {
		_, err := c.MintJWTSVID(context.Background(), "e", []string{"aud"})
		done <- err
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("MintJWTSVID: %v, want a deadline error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("MintJWTSVID to a silent server never returned")
	}
}
