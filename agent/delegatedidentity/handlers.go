package delegatedidentity

import (
	"context"
	"errors"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/signetid/signet/agent/cache"
	pb "github.com/signetid/signet/agent/delegatedidentity/v1"
	"github.com/signetid/signet/internal/selector"
)

// SubscribeToX509SVIDs implements the Delegated Identity API.
func (s *Server) SubscribeToX509SVIDs(req *pb.SubscribeToX509SVIDsRequest, stream grpc.ServerStreamingServer[pb.SubscribeToX509SVIDsResponse]) error {
	const method = "SubscribeToX509SVIDs"
	ctx := stream.Context()
	d, err := s.admit(ctx, method)
	if err != nil {
		return err
	}
	sels, proc, err := s.target(ctx, method, d, req.Selectors, req.Pid)
	if err != nil {
		return err
	}
	var exited <-chan struct{}
	if proc != nil {
		exited = proc.watchExit(ctx)
	}
	workload := s.source.Subscribe(sels)
	defer workload.Close()
	return s.watch(ctx, method, d, workload.Updates(), exited, func(st *cache.WorkloadState) error {
		resp, err := x509SVIDsResponse(st)
		if err != nil {
			s.log.ErrorContext(ctx, "could not build a Delegated Identity API response", "method", method, "error", err)
			return status.Error(codes.Internal, "could not serialize response")
		}
		return stream.Send(resp)
	})
}

// SubscribeToX509Bundles implements the Delegated Identity API.
func (s *Server) SubscribeToX509Bundles(_ *pb.SubscribeToX509BundlesRequest, stream grpc.ServerStreamingServer[pb.SubscribeToX509BundlesResponse]) error {
	return streamBundles(s, stream, "SubscribeToX509Bundles", func(b []*spiffebundle.Bundle) (*pb.SubscribeToX509BundlesResponse, error) {
		return x509BundlesResponse(b), nil
	})
}

// SubscribeToJWTBundles implements the Delegated Identity API.
func (s *Server) SubscribeToJWTBundles(_ *pb.SubscribeToJWTBundlesRequest, stream grpc.ServerStreamingServer[pb.SubscribeToJWTBundlesResponse]) error {
	return streamBundles(s, stream, "SubscribeToJWTBundles", jwtBundlesResponse)
}

// streamBundles sends every bundle the agent holds, rendered by build, at
// once and again whenever the rendering changes.
func streamBundles[T any, P interface {
	*T
	proto.Message
}](s *Server, stream grpc.ServerStreamingServer[T], method string, build func([]*spiffebundle.Bundle) (P, error)) error {
	ctx := stream.Context()
	d, err := s.admit(ctx, method)
	if err != nil {
		return err
	}
	var last P
	return s.watch(ctx, method, d, nil, nil, func(*cache.WorkloadState) error {
		resp, err := build(s.source.Bundles())
		if err != nil {
			s.log.ErrorContext(ctx, "could not build a Delegated Identity API response", "method", method, "error", err)
			return status.Error(codes.Internal, "could not serialize response")
		}
		if proto.Equal(resp, last) {
			return nil
		}
		last = resp
		return stream.Send((*T)(resp))
	})
}

// FetchJWTSVIDs implements the Delegated Identity API.
func (s *Server) FetchJWTSVIDs(ctx context.Context, req *pb.FetchJWTSVIDsRequest) (*pb.FetchJWTSVIDsResponse, error) {
	const method = "FetchJWTSVIDs"
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	d, err := s.admit(ctx, method)
	if err != nil {
		return nil, err
	}
	sels, proc, err := s.target(ctx, method, d, req.Selectors, req.Pid)
	if err != nil {
		return nil, err
	}
	svids, err := s.source.FetchJWTSVIDs(ctx, sels, spiffeid.ID{}, req.Audience)
	if proc != nil {
		alive := proc.alive()
		proc.close()
		if !alive {
			return nil, status.Errorf(codes.NotFound, "pid %d: the process exited during the request", req.Pid)
		}
	}
	switch {
	case errors.Is(err, cache.ErrNoIdentity) || (err == nil && len(svids) == 0):
		s.log.InfoContext(ctx, "delegated identity API: no identity issued", "method", method, "delegate", d.id.String(), "selectors", selector.Strings(sels))
		return nil, status.Error(codes.PermissionDenied, errNoIdentity.Error())
	case err != nil:
		s.log.ErrorContext(ctx, "could not mint JWT-SVID for a delegate", "method", method, "delegate", d.id.String(), "error", err)
		return nil, status.Errorf(codes.Unavailable, "could not fetch JWT-SVID: %v", err)
	}
	return jwtSVIDsResponse(svids), nil
}

// watch calls send with the workload's state at once and after every
// change, until the client leaves, the server stops, the workload process
// named by PID exits (exited), or the delegate is no longer authorized: its own identities are watched too, so a removed
// delegate entry ends the stream at once. With no workload (bundle
// streams), send runs on each of the delegate's updates, which include
// every bundle change.
func (s *Server) watch(ctx context.Context, method string, d delegate, workload <-chan *cache.WorkloadState, exited <-chan struct{}, send func(*cache.WorkloadState) error) error {
	self := s.source.Subscribe(d.Selectors)
	defer self.Close()
	for {
		var st *cache.WorkloadState
		var ok, mine bool
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "agent is shutting down")
		case <-exited:
			return status.Error(codes.NotFound, "the workload process exited; subscribe again by selectors or by a live PID")
		case st, ok = <-self.Updates():
			mine = true
		case st, ok = <-workload:
		}
		if !ok {
			return status.Error(codes.Unavailable, "identity cache closed the subscription")
		}
		if _, err := s.check(ctx, method, d.Caller); err != nil {
			return err
		}
		if mine && workload != nil {
			continue // the delegate's own change: authorization rechecked
		}
		if err := send(st); err != nil {
			return err
		}
	}
}
