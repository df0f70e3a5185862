package workloadapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/signetid/signet/agent/attestor"
	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/internal/peercred"
	"github.com/signetid/signet/internal/selector"
)

// ErrCallerReplaced means the process that connected is not the one the
// attestors observed: it exited and its PID went to another process.
var ErrCallerReplaced = errors.New("the process that connected is not the one attested")

// Caller is a process attested from the kernel's view of its connection.
type Caller struct {
	PID       int32
	UID       uint32
	Selectors []selector.Selector
}

// AttestCaller identifies the peer of the connection ctx belongs to (a
// server with peercred.Credentials): its PID from SO_PEERCRED, turned into
// selectors by a. An error wrapping ErrCallerReplaced means the PID changed
// hands during attestation; any error means the caller has no identity.
func AttestCaller(ctx context.Context, a attestor.Attestor) (Caller, error) {
	info, err := peercred.FromContext(ctx)
	if err != nil {
		return Caller{}, err
	}
	c := Caller{PID: info.PID, UID: info.UID}
	if c.Selectors, err = a.Attest(ctx, info.PID); err != nil {
		return c, err
	}
	// The kernel recorded the PID at connect; the attestor observed whoever
	// holds it now. A caller that connected, passed the connection on and
	// exited would otherwise get the identity of the PID's next owner.
	if err := info.SameProcess(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrCallerReplaced, err)
	}
	return c, nil
}

// attest identifies the caller from the kernel's view of the connection. A
// caller that cannot be attested has no identity: PermissionDenied.
func (s *Server) attest(ctx context.Context, method string) (Caller, error) {
	start := time.Now()
	c, err := AttestCaller(ctx, s.attestor)
	switch {
	case errors.Is(err, peercred.ErrNoPeerCred):
		s.log.InfoContext(ctx, "workload attestation failed", "method", method, "error", err)
		return Caller{}, status.Error(codes.PermissionDenied, "could not identify the caller")
	case errors.Is(err, ErrCallerReplaced):
		s.metrics.observeAttestation(start, err)
		s.log.WarnContext(ctx, "workload attestation refused: the process that connected is not the one attested", "method", method, "pid", c.PID, "uid", c.UID, "error", err)
		return Caller{}, status.Error(codes.PermissionDenied, "could not attest the caller")
	case err != nil:
		s.metrics.observeAttestation(start, err)
		s.log.InfoContext(ctx, "workload attestation failed", "method", method, "pid", c.PID, "uid", c.UID, "error", err)
		return Caller{}, status.Error(codes.PermissionDenied, "could not attest the caller")
	}
	s.metrics.observeAttestation(start, nil)
	s.log.DebugContext(ctx, "workload attested", "method", method, "pid", c.PID, "selectors", selector.Strings(c.Selectors))
	return c, nil
}

func (s *Server) noIdentity(ctx context.Context, method string, c Caller) error {
	s.log.InfoContext(ctx, "no identity issued", "method", method, "pid", c.PID, "selectors", selector.Strings(c.Selectors))
	return status.Error(codes.PermissionDenied, "no identity issued")
}

// watch subscribes to the caller's state and sends a response built from
// every update until the client leaves, the server stops, or the caller has
// no identity any more.
func watch[T any](s *Server, ctx context.Context, method string, c Caller, build func(*cache.WorkloadState) (*T, error), send func(*T) error) error {
	sub := s.provider.Subscribe(c.Selectors)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.stopping:
			return status.Error(codes.Unavailable, "agent is shutting down")
		case st, ok := <-sub.Updates():
			if !ok {
				return status.Error(codes.Unavailable, "identity cache closed the subscription")
			}
			if st == nil || len(st.SVIDs) == 0 {
				return s.noIdentity(ctx, method, c)
			}
			resp, err := build(st)
			if err != nil {
				s.log.ErrorContext(ctx, "could not build Workload API response", "method", method, "pid", c.PID, "error", err)
				return status.Error(codes.Unavailable, "could not build the response")
			}
			if err := send(resp); err != nil {
				return err
			}
		}
	}
}

// FetchX509SVID implements the Workload API.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	const method = "FetchX509SVID"
	ctx := stream.Context()
	c, err := s.attest(ctx, method)
	if err != nil {
		return err
	}
	return watch(s, ctx, method, c, x509SVIDResponse, stream.Send)
}

// FetchX509Bundles implements the Workload API.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	const method = "FetchX509Bundles"
	ctx := stream.Context()
	c, err := s.attest(ctx, method)
	if err != nil {
		return err
	}
	return watch(s, ctx, method, c, x509BundlesResponse, stream.Send)
}

// FetchJWTBundles implements the Workload API.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	const method = "FetchJWTBundles"
	ctx := stream.Context()
	c, err := s.attest(ctx, method)
	if err != nil {
		return err
	}
	return watch(s, ctx, method, c, jwtBundlesResponse, stream.Send)
}

// FetchJWTSVID implements the Workload API.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	const method = "FetchJWTSVID"
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	var id spiffeid.ID
	if req.SpiffeId != "" {
		var err error
		if id, err = spiffeid.FromString(req.SpiffeId); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
	}
	c, err := s.attest(ctx, method)
	if err != nil {
		return nil, err
	}
	svids, err := s.provider.FetchJWTSVIDs(ctx, c.Selectors, id, req.Audience)
	switch {
	case errors.Is(err, cache.ErrNoIdentity) || (err == nil && len(svids) == 0):
		return nil, s.noIdentity(ctx, method, c)
	case err != nil:
		s.log.ErrorContext(ctx, "could not mint JWT-SVID", "pid", c.PID, "error", err)
		return nil, status.Errorf(codes.Unavailable, "could not mint JWT-SVID: %v", err)
	}
	resp := &workload.JWTSVIDResponse{}
	for _, svid := range svids {
		resp.Svids = append(resp.Svids, &workload.JWTSVID{
			SpiffeId: svid.ID.String(),
			Svid:     svid.Marshal(),
			Hint:     svid.Hint,
		})
	}
	return resp, nil
}

// ValidateJWTSVID implements the Workload API. The caller must be
// attestable but needs no identity of its own: a verifier only consumes
// bundles (without an identity, only the own trust domain's).
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	const method = "ValidateJWTSVID"
	if req.Audience == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.Svid == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	c, err := s.attest(ctx, method)
	if err != nil {
		return nil, err
	}
	// The caller's own bundles, as FetchJWTBundles gives them (SPIRE does
	// the same), not every bundle the agent holds for other workloads.
	svid, err := jwtsvid.ParseAndValidate(req.Svid, s.provider.JWTBundles(c.Selectors), []string{req.Audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid JWT-SVID: %v", err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "could not encode JWT-SVID claims: %v", err)
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
