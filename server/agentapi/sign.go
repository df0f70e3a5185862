package agentapi

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit"
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
	rec := audit.FromContext(ctx)
	auditCaller(rec, c)
	authorized := s.authorizedSet(c, snap)
	entries := make([]*registry.Entry, len(req.Requests))
	// errs holds each CSR's verdict: a refusal here, a signing failure
	// below. Every CSR is checked, so each refusal is on record; the call
	// fails with the first.
	errs := make([]error, len(req.Requests))
	var refused error
	for i, r := range req.Requests {
		e, ok := authorized[r.EntryId]
		switch {
		case !ok:
			errs[i] = s.refuseEntry(rec, "X509-SVID", c, r.EntryId)
		case len(r.Csr) == 0:
			errs[i] = status.Errorf(codes.InvalidArgument, "entry %s: csr is empty", r.EntryId)
		}
		if errs[i] != nil {
			refused = cmp.Or(refused, errs[i])
			continue
		}
		entries[i] = e
	}
	if refused != nil {
		auditSigned(rec, snap, req.Requests, entries, errs, nil)
		return nil, refused
	}

	// Signing is CPU-bound; spread a batch over the cores.
	svids := make([]*api.X509SVID, len(req.Requests))
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
			errs[i] = signError("entry "+req.Requests[i].EntryId, err)
			refused = cmp.Or(refused, errs[i])
		}
	}
	auditSigned(rec, snap, req.Requests, entries, errs, svids)
	if refused != nil {
		return nil, refused
	}
	s.cfg.Metrics.signings.WithLabelValues("x509").Add(float64(len(svids)))
	return &api.BatchSignX509SVIDResponse{Svids: svids}, nil
}

// refuseEntry is the refusal of an entry the agent may not serve. It is
// logged as a warning, or, with the audit log on, in the audit record.
func (s *Service) refuseEntry(rec *audit.Record, kind string, c caller, entryID string) error {
	if rec == nil {
		s.cfg.Logger.Warn("refused "+kind+" request for an entry the agent may not serve", "agent_id", c.ID.String(), "entry_id", entryID)
	}
	return status.Errorf(codes.PermissionDenied, "agent %s is not authorized for entry %q", c.ID, entryID)
}

// auditSigned records one audit item per CSR of a batch: the entry, the
// SPIFFE ID it names (of an entry the agent was refused too, as stored),
// the SVID's expiry when signed, and the CSR's own verdict.
func auditSigned(rec *audit.Record, snap *catalog.Snapshot, reqs []*api.X509SVIDRequest, entries []*registry.Entry, errs []error, svids []*api.X509SVID) {
	if rec == nil {
		return
	}
	for i, r := range reqs {
		attrs := []slog.Attr{slog.String("entry_id", r.EntryId)}
		if id, ok := entrySPIFFEID(snap, entries[i], r.EntryId); ok {
			attrs = append(attrs, slog.String("spiffe_id", id))
		}
		if svids != nil && svids[i] != nil {
			attrs = append(attrs, slog.Time("expires_at", time.Unix(svids[i].ExpiresAt, 0).UTC()))
		}
		rec.AddItem(errs[i], attrs...)
	}
}

// entrySPIFFEID is the SPIFFE ID of the entry authorized, or else of the
// stored entry named id (what a refused agent asked for).
func entrySPIFFEID(snap *catalog.Snapshot, authorized *registry.Entry, id string) (string, bool) {
	if authorized != nil {
		return authorized.SPIFFEID.String(), true
	}
	if e, ok := snap.Entries.Get(id); ok {
		return e.SPIFFEID.String(), true
	}
	return "", false
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
	rec := audit.FromContext(ctx)
	auditCaller(rec, c)
	e, ok := s.authorizedSet(c, snap)[req.EntryId]
	if rec != nil {
		rec.Add(slog.String("entry_id", req.EntryId), slog.Any("audience", req.Audience))
		if id, known := entrySPIFFEID(snap, e, req.EntryId); known {
			rec.Add(slog.String("spiffe_id", id))
		}
	}
	if !ok {
		return nil, s.refuseEntry(rec, "JWT-SVID", c, req.EntryId)
	}
	now := s.cfg.Now()
	token, exp, err := s.cfg.Signer.MintJWTSVID(ctx, e.SPIFFEID, req.Audience, e.JWTTTL)
	if err != nil {
		return nil, signError("mint JWT-SVID for "+e.SPIFFEID.String(), err)
	}
	rec.Add(slog.Time("expires_at", exp.UTC()))
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
