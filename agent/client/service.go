package client

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
)

// errNotConnected answers calls made before the agent has attested: the
// Workload API serves from the persisted cache meanwhile, and a JWT request
// for a cached entry must get a retryable error, not a nil connection.
var errNotConnected = status.Error(codes.Unavailable, "the agent has not attested to the server yet")

// service routes every call to the client's current connection.
type service struct{ c *Client }

func (s service) Attest(ctx context.Context, in *api.AttestRequest, opts ...grpc.CallOption) (*api.AttestResponse, error) {
	cl, err := s.c.current()
	if err != nil {
		return nil, err
	}
	return cl.Attest(ctx, in, opts...)
}

func (s service) RenewAgent(ctx context.Context, in *api.RenewAgentRequest, opts ...grpc.CallOption) (*api.AttestResponse, error) {
	cl, err := s.c.current()
	if err != nil {
		return nil, err
	}
	return cl.RenewAgent(ctx, in, opts...)
}

func (s service) Sync(ctx context.Context, in *api.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[api.SyncResponse], error) {
	cl, err := s.c.current()
	if err != nil {
		return nil, err
	}
	return cl.Sync(ctx, in, opts...)
}

func (s service) BatchSignX509SVID(ctx context.Context, in *api.BatchSignX509SVIDRequest, opts ...grpc.CallOption) (*api.BatchSignX509SVIDResponse, error) {
	cl, err := s.c.current()
	if err != nil {
		return nil, err
	}
	return cl.BatchSignX509SVID(ctx, in, opts...)
}

func (s service) MintJWTSVID(ctx context.Context, in *api.MintJWTSVIDRequest, opts ...grpc.CallOption) (*api.MintJWTSVIDResponse, error) {
	cl, err := s.c.current()
	if err != nil {
		return nil, err
	}
	return cl.MintJWTSVID(ctx, in, opts...)
}
