package client

import (
	"context"

	"google.golang.org/grpc"

	"github.com/signetid/signet/server/api"
)

// service routes every call to the client's current connection.
type service struct{ c *Client }

func (s service) Attest(ctx context.Context, in *api.AttestRequest, opts ...grpc.CallOption) (*api.AttestResponse, error) {
	return s.c.current().Attest(ctx, in, opts...)
}

func (s service) RenewAgent(ctx context.Context, in *api.RenewAgentRequest, opts ...grpc.CallOption) (*api.AttestResponse, error) {
	return s.c.current().RenewAgent(ctx, in, opts...)
}

func (s service) Sync(ctx context.Context, in *api.SyncRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[api.SyncResponse], error) {
	return s.c.current().Sync(ctx, in, opts...)
}

func (s service) BatchSignX509SVID(ctx context.Context, in *api.BatchSignX509SVIDRequest, opts ...grpc.CallOption) (*api.BatchSignX509SVIDResponse, error) {
	return s.c.current().BatchSignX509SVID(ctx, in, opts...)
}

func (s service) MintJWTSVID(ctx context.Context, in *api.MintJWTSVIDRequest, opts ...grpc.CallOption) (*api.MintJWTSVIDResponse, error) {
	return s.c.current().MintJWTSVID(ctx, in, opts...)
}
