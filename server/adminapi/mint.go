package adminapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/registry"
)

// MintX509SVID signs an X509-SVID for a workload no agent serves (SPIRE's
// x509 mint). The caller keeps the key: only its CSR comes here.
func (s *Service) MintX509SVID(ctx context.Context, req *api.MintX509SVIDRequest) (*api.MintX509SVIDResponse, error) {
	id, err := s.mintable(req.SpiffeId)
	if err != nil {
		return nil, err
	}
	// The nested servers' API signs an intermediate CA for any caller whose
	// X509-SVID names a downstream entry: a minted one would be such a
	// credential, on disk. A downstream server gets its SVID from its agent.
	if snap, _ := s.cfg.Catalog.Current(); snap != nil {
		if e, ok := snap.Entries.Downstream(id, s.cfg.Now()); ok {
			return nil, status.Errorf(codes.InvalidArgument, "mint X509-SVID: %s is a downstream server's ID (entry %s): its SVID could have the nested servers' API sign a CA for the whole trust domain; the downstream server gets it from its agent", id, e.ID)
		}
	}
	ttl, err := mintTTL(req.TtlSeconds)
	if err != nil {
		return nil, err
	}
	for _, d := range req.DnsNames {
		if err := registry.ValidateDNSName(d); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "mint X509-SVID: %v", err)
		}
	}
	chain, err := s.cfg.CA.SignX509SVID(ctx, req.Csr, id, ttl, req.DnsNames)
	if err != nil {
		return nil, mintError("mint X509-SVID", err)
	}
	resp := &api.MintX509SVIDResponse{ExpiresAt: chain[0].NotAfter.Unix()}
	for _, c := range chain {
		resp.Chain = append(resp.Chain, c.Raw)
	}
	s.cfg.Logger.Info("X509-SVID minted", "spiffe_id", id.String(), "expires_at", chain[0].NotAfter.UTC(), "serial", chain[0].SerialNumber.Text(16))
	return resp, nil
}

// MintJWT mints a JWT-SVID for a workload no agent serves (SPIRE's jwt
// mint). The token is never logged.
func (s *Service) MintJWT(ctx context.Context, req *api.MintJWTRequest) (*api.MintJWTResponse, error) {
	id, err := s.mintable(req.SpiffeId)
	if err != nil {
		return nil, err
	}
	ttl, err := mintTTL(req.TtlSeconds)
	if err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "mint JWT-SVID: at least one audience is required")
	}
	token, exp, err := s.cfg.CA.MintJWTSVID(ctx, id, req.Audience, ttl)
	if err != nil {
		return nil, mintError("mint JWT-SVID", err)
	}
	s.cfg.Logger.Info("JWT-SVID minted", "spiffe_id", id.String(), "audience", req.Audience, "expires_at", exp.UTC())
	return &api.MintJWTResponse{Token: token, ExpiresAt: exp.Unix()}, nil
}

// mintable checks the ID an SVID is minted for: a workload ID of this
// trust domain, never one of Signet's own (the server's TLS identity,
// which agents trust by ID alone).
func (s *Service) mintable(raw string) (spiffeid.ID, error) {
	id, err := ids.ParseWorkloadID(raw)
	if err != nil {
		return id, status.Errorf(codes.InvalidArgument, "mint: spiffe_id: %v", err)
	}
	if !id.MemberOf(s.cfg.TrustDomain) {
		return id, status.Errorf(codes.InvalidArgument, "mint: %s is not in trust domain %s", id, s.cfg.TrustDomain)
	}
	if registry.Reserved(id) {
		return id, status.Errorf(codes.InvalidArgument, "mint: %s is reserved for Signet's own components", id)
	}
	return id, nil
}

func mintTTL(sec int32) (time.Duration, error) {
	ttl := time.Duration(sec) * time.Second
	if sec < 0 || ttl > registry.MaxTTL {
		return 0, status.Errorf(codes.InvalidArgument, "mint: ttl %s: want 0 (the server's default) up to %s", ttl, registry.MaxTTL)
	}
	return ttl, nil
}

func mintError(what string, err error) error {
	if errors.Is(err, ca.ErrInvalidRequest) {
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, fmt.Sprintf("%s: %v", what, err))
}
