package workloadapi

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/signetid/signet/agent/cache"
)

// sdsService is Envoy's Secret Discovery Service (v3, state of the world)
// over the same socket, attestation and cache as the Workload API, so an
// Envoy sidecar gets its SVID and bundles the way SPIRE's agent gives them.
// As in SPIRE, and unlike the Workload API, an attested caller with no SVID
// still gets the bundles it names (public roots, for an Envoy that only
// verifies peers); asking for an SVID it does not have is PermissionDenied.
type sdsService struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	s *Server
}

// isSDSMethod tells the interceptors which calls are SDS: Envoy does not
// send the Workload API's security header (SPIRE does not ask for it).
func isSDSMethod(fullMethod string) bool {
	switch fullMethod {
	case secretv3.SecretDiscoveryService_StreamSecrets_FullMethodName,
		secretv3.SecretDiscoveryService_FetchSecrets_FullMethodName,
		secretv3.SecretDiscoveryService_DeltaSecrets_FullMethodName:
		return true
	}
	return false
}

func checkSecretType(req *discoveryv3.DiscoveryRequest) error {
	if req.TypeUrl != "" && req.TypeUrl != secretTypeURL {
		return status.Errorf(codes.InvalidArgument, "this service serves only %s, not %s", secretTypeURL, req.TypeUrl)
	}
	return nil
}

// FetchSecrets answers once with the caller's current secrets.
func (d *sdsService) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	const method = "FetchSecrets"
	if err := checkSecretType(req); err != nil {
		return nil, err
	}
	c, err := d.s.attest(ctx, method)
	if err != nil {
		return nil, err
	}
	sub := d.s.provider.Subscribe(c.Selectors)
	defer sub.Close()
	var st *cache.WorkloadState
	select {
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-d.s.stopping:
		return nil, status.Error(codes.Unavailable, "agent is shutting down")
	case next, ok := <-sub.Updates():
		if !ok || next == nil {
			return nil, status.Error(codes.Unavailable, "identity cache closed the subscription")
		}
		st = next
	}
	res, err := sdsSecrets(st, req.ResourceNames, d.s.sds, d.s.sds.useSPIFFEValidator(req.Node))
	if err != nil {
		d.s.log.InfoContext(ctx, "SDS request refused", "method", method, "pid", c.PID, "names", req.ResourceNames, "error", err)
		return nil, err
	}
	return &discoveryv3.DiscoveryResponse{TypeUrl: secretTypeURL, Resources: res}, nil
}

// StreamSecrets follows the xDS state-of-the-world protocol: each response
// carries a new version and nonce; a request echoing the last nonce is an
// ACK (or a NACK with error_detail, which is logged) and changes nothing
// unless its resource names changed; a request with a stale nonce is
// ignored. Secrets are sent again only when what the caller asked for
// changed, so an unrelated cache change does not make Envoy rebuild its TLS
// contexts.
func (d *sdsService) StreamSecrets(stream grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]) error {
	const method = "StreamSecrets"
	ctx := stream.Context()
	c, err := d.s.attest(ctx, method)
	if err != nil {
		return err
	}
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	sub := d.s.provider.Subscribe(c.Selectors)
	defer sub.Close()

	var (
		st      *cache.WorkloadState
		req     *discoveryv3.DiscoveryRequest // the last accepted request
		node    *corev3.Node                  // from the first request that had one: Envoy may send it only once
		sent    []*anypb.Any
		version uint64
		nonce   string
	)
	for {
		force := false
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-d.s.stopping:
			return status.Error(codes.Unavailable, "agent is shutting down")
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case next, ok := <-sub.Updates():
			if !ok {
				return status.Error(codes.Unavailable, "identity cache closed the subscription")
			}
			if next == nil {
				return status.Error(codes.Unavailable, "identity cache sent no state")
			}
			st = next
		case r := <-reqs:
			if err := checkSecretType(r); err != nil {
				return err
			}
			if node == nil {
				node = r.Node
			}
			if nonce != "" && r.ResponseNonce != nonce {
				continue // answers an older response; a newer one is on its way
			}
			if r.ErrorDetail != nil {
				d.s.log.WarnContext(ctx, "Envoy rejected the secrets it was sent", "pid", c.PID, "node", node.GetId(), "names", r.ResourceNames, "version", r.VersionInfo, "error", r.ErrorDetail.GetMessage())
			}
			if req != nil && sameNames(req.ResourceNames, r.ResourceNames) {
				continue // ACK or NACK of what was sent
			}
			req, force = r, true
		}
		if st == nil || req == nil {
			continue
		}
		res, err := sdsSecrets(st, req.ResourceNames, d.s.sds, d.s.sds.useSPIFFEValidator(node))
		if err != nil {
			d.s.log.InfoContext(ctx, "SDS request refused", "method", method, "pid", c.PID, "node", node.GetId(), "names", req.ResourceNames, "error", err)
			return err
		}
		if !force && slices.EqualFunc(res, sent, func(a, b *anypb.Any) bool { return proto.Equal(a, b) }) {
			continue
		}
		version++
		nonce = rand.Text()
		resp := &discoveryv3.DiscoveryResponse{
			VersionInfo: strconv.FormatUint(version, 10),
			Resources:   res,
			TypeUrl:     secretTypeURL,
			Nonce:       nonce,
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		sent = res
		d.s.log.DebugContext(ctx, "SDS secrets sent", "pid", c.PID, "node", node.GetId(), "names", req.ResourceNames, "version", resp.VersionInfo, "count", len(res))
	}
}

// sameNames compares resource name lists as sets.
func sameNames(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
