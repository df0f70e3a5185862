package delegatedidentity

import (
	"context"
	"errors"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/agent/delegatedidentity/types"
	"github.com/signetid/signet/agent/workloadapi"
	"github.com/signetid/signet/internal/selector"
)

// The refusals, in SPIRE's words.
var (
	errNoIdentity  = errors.New("no identity issued")
	errNotDelegate = errors.New("caller not configured as an authorized delegate")
)

// authorize returns the first of a caller's identities that is an
// authorized delegate.
func authorize(identities, delegates []spiffeid.ID) (spiffeid.ID, error) {
	if len(identities) == 0 {
		return spiffeid.ID{}, errNoIdentity
	}
	for _, id := range identities {
		if slices.Contains(delegates, id) {
			return id, nil
		}
	}
	return spiffeid.ID{}, errNotDelegate
}

// delegate is an attested, authorized caller.
type delegate struct {
	workloadapi.Caller
	id spiffeid.ID
}

// admit attests the caller from its connection and authorizes it.
func (s *Server) admit(ctx context.Context, method string) (delegate, error) {
	c, err := workloadapi.AttestCaller(ctx, s.attestor)
	if err != nil {
		s.log.WarnContext(ctx, "delegated identity API refused: the caller could not be attested", "method", method, "pid", c.PID, "uid", c.UID, "error", err)
		return delegate{}, status.Error(codes.PermissionDenied, "could not attest the caller")
	}
	return s.check(ctx, method, c)
}

// check authorizes c by the identities the agent would give it now: a
// delegate whose entry was removed is refused from then on.
func (s *Server) check(ctx context.Context, method string, c workloadapi.Caller) (delegate, error) {
	ids := s.source.Identities(c.Selectors)
	id, err := authorize(ids, s.delegates)
	if err != nil {
		names := make([]string, len(ids))
		for i, id := range ids {
			names[i] = id.String()
		}
		s.log.WarnContext(ctx, "delegated identity API refused: "+err.Error(), "method", method, "pid", c.PID, "uid", c.UID,
			"selectors", selector.Strings(c.Selectors), "identities", names)
		return delegate{}, status.Error(codes.PermissionDenied, err.Error())
	}
	return delegate{Caller: c, id: id}, nil
}

// target returns the selectors of the workload a delegate names: given, or
// attested from a PID, never both. For a PID it also returns the process,
// held by a pidfd, which the caller must close (or hand to watchExit).
func (s *Server) target(ctx context.Context, method string, d delegate, sels []*types.Selector, pid int32) ([]selector.Selector, *workloadProcess, error) {
	var out []selector.Selector
	var proc *workloadProcess
	switch {
	case len(sels) > 0 && pid != 0:
		return nil, nil, status.Error(codes.InvalidArgument, "give selectors or a pid, not both")
	case pid != 0:
		var err error
		if out, proc, err = s.attestPID(ctx, pid); err != nil {
			s.log.InfoContext(ctx, "delegated identity API: workload PID not attested", "method", method, "delegate", d.id.String(), "pid", pid, "error", err)
			return nil, nil, err
		}
	case len(sels) == 0:
		return nil, nil, status.Error(codes.InvalidArgument, "name the workload by selectors or by pid")
	default:
		var err error
		if out, err = selectorsFromProto(sels); err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "could not parse provided selectors: %v", err)
		}
	}
	s.log.InfoContext(ctx, "delegated identity API: serving a workload to a delegate", "method", method, "delegate", d.id.String(),
		"delegate_pid", d.PID, "pid", pid, "selectors", selector.Strings(out))
	return out, proc, nil
}

// attestPID runs the workload attestors on a PID a delegate named, the
// agent's PID namespace's. A pidfd taken first pins the process: if it has
// exited by the end of the attestation, the PID may name another process
// and nothing is served. The stream then ends when the process exits (SPIRE
// asks delegates not to let the PID be reused while they subscribe).
func (s *Server) attestPID(ctx context.Context, pid int32) ([]selector.Selector, *workloadProcess, error) {
	if pid < 0 {
		return nil, nil, status.Errorf(codes.InvalidArgument, "pid %d: want a positive process ID", pid)
	}
	gone := status.Errorf(codes.NotFound, "pid %d: no such process (it has exited, or is not in the agent's PID namespace)", pid)
	proc, err := openProcess(pid)
	if errors.Is(err, unix.ESRCH) {
		return nil, nil, gone
	}
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "pid %d: pidfd_open: %v", pid, err)
	}
	sels, err := s.attestor.Attest(ctx, pid)
	switch {
	case !proc.alive():
		proc.close()
		return nil, nil, gone
	case err != nil:
		proc.close()
		return nil, nil, status.Errorf(codes.Internal, "workload attestation of pid %d failed: %v", pid, err)
	}
	return sels, proc, nil
}
