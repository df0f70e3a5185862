package agentapi

import (
	"context"
	"errors"
	"runtime"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/registry"
)

// MaxBatch bounds one BatchSignX509SVID call.
const MaxBatch = 1000

// BatchSignX509SVID signs workload CSRs for entries the agent may serve. One
// unauthorized entry fails the whole call: a well-behaved agent never asks.
func (s *Service) BatchSignX509SVID(ctx context.Context, req *api.BatchSignX509SVIDRequest) (*api.BatchSignX509SVIDResponse, error) {
	if len(req.Requests) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no CSRs in request")
	}
	if len(req.Requests) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "%d CSRs in one request; the limit is %d", len(req.Requests), MaxBatch)
	}
	snap, _ := s.cfg.Catalog.Current()
	c, snap, err := s.authenticate(ctx, snap)
	if err != nil {
		return nil, err
	}
	authorized := s.authorizedSet(c, snap)
	entries := make([]*registry.Entry, len(req.Requests))
	for i, r := range req.Requests {
		e, ok := authorized[r.EntryId]
		if !ok {
			s.cfg.Logger.Warn("refused X509-SVID request for an entry the agent may not serve", "agent_id", c.ID.String(), "entry_id", r.EntryId)
			return nil, status.Errorf(codes.PermissionDenied, "agent %s is not authorized for entry %q", c.ID, r.EntryId)
		}
		if len(r.Csr) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "entry %s: csr is empty", r.EntryId)
		}
		entries[i] = e
	}

	// Signing is CPU-bound; spread a batch over the cores.
	svids := make([]*api.X509SVID, len(req.Requests))
	errs := make([]error, len(req.Requests))
	workers := min(runtime.GOMAXPROCS(0), len(req.Requests))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := ctx.Err(); err != nil {
					errs[i] = err // the caller is gone: skip the work
					continue
				}
				svids[i], errs[i] = s.signOne(ctx, entries[i], req.Requests[i].Csr)
			}
		}()
	}
	for i := range req.Requests {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, signError("entry "+req.Requests[i].EntryId, err)
		}
	}
	s.cfg.Metrics.signings.WithLabelValues("x509").Add(float64(len(svids)))
	return &api.BatchSignX509SVIDResponse{Svids: svids}, nil
}

func (s *Service) signOne(ctx context.Context, e *registry.Entry, csr []byte) (*api.X509SVID, error) {
	signed, err := s.cfg.Signer.SignX509SVIDDER(ctx, csr, e.SPIFFEID, e.X509TTL, e.DNSNames)
	if err != nil {
		return nil, err
	}
	return &api.X509SVID{EntryId: e.ID, SpiffeId: e.SPIFFEID.String(), ExpiresAt: signed.NotAfter.Unix(), CertChain: signed.Chain}, nil
}

// MintJWTSVID signs a JWT-SVID for an entry the agent may serve.
func (s *Service) MintJWTSVID(ctx context.Context, req *api.MintJWTSVIDRequest) (*api.MintJWTSVIDResponse, error) {
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "at least one audience is required")
	}
	snap, _ := s.cfg.Catalog.Current()
	c, snap, err := s.authenticate(ctx, snap)
	if err != nil {
		return nil, err
	}
	e, ok := s.authorizedSet(c, snap)[req.EntryId]
	if !ok {
		s.cfg.Logger.Warn("refused JWT-SVID request for an entry the agent may not serve", "agent_id", c.ID.String(), "entry_id", req.EntryId)
		return nil, status.Errorf(codes.PermissionDenied, "agent %s is not authorized for entry %q", c.ID, req.EntryId)
	}
	now := s.cfg.Now()
	token, exp, err := s.cfg.Signer.MintJWTSVID(ctx, e.SPIFFEID, req.Audience, e.JWTTTL)
	if err != nil {
		return nil, signError("mint JWT-SVID for "+e.SPIFFEID.String(), err)
	}
	s.cfg.Metrics.signings.WithLabelValues("jwt").Inc()
	return &api.MintJWTSVIDResponse{SpiffeId: e.SPIFFEID.String(), Token: token, ExpiresAt: exp.Unix(), IssuedAt: now.Unix()}, nil
}

// signError maps a signing failure to a status: the request's fault
// (bad CSR, ID, TTL) is InvalidArgument, a cancelled call keeps its code,
// anything else is the server's problem.
func signError(what string, err error) error {
	switch {
	case errors.Is(err, ca.ErrInvalidRequest):
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}

// authorizedSet returns the entries the agent may serve now, by entry ID.
func (s *Service) authorizedSet(c caller, snap *catalog.Snapshot) map[string]*registry.Entry {
	list := snap.Entries.Authorized(c.ID, c.Node.Selectors, s.cfg.Now())
	m := make(map[string]*registry.Entry, len(list))
	for _, e := range list {
		m[e.ID] = e
	}
	return m
}
