package agentapi

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/store"
)

// Attest proves a node (join token, Kubernetes projected service account
// token, x509pop machine certificate, sshpop host certificate, aws_iid
// instance identity document or gcp_iit instance identity token) and
// signs its agent SVID. A join
// token is spent in the transaction that records the node, so when anything
// fails before, the agent's retry can use the same token; once that
// transaction commits, nothing fails, and an agent that never got the
// answer may ask again with the same key. An agent whose evidence can be
// presented again (k8s_psat, x509pop, sshpop) calls Attest again to renew
// (re-attestation): the same ID, the selectors of the fresh evidence, and
// the SVID the node had is no longer accepted. Evidence trusted on first
// use (aws_iid, gcp_iit) attests a node that is not recorded, or one whose
// agent's key the CSR's is (the agent that attested first, back after its
// SVID expired: it attests with the key of that SVID or the one before);
// its agent renews in place.
func (s *Service) Attest(ctx context.Context, req *api.AttestRequest) (*api.AttestResponse, error) {
	// Never the payload: a join token, a service account token.
	rec := audit.FromContext(ctx)
	rec.Add(slog.String("attestation_type", req.AttestationType))
	csr, err := ca.CheckCSR(req.Csr)
	if err != nil {
		return nil, signError("agent CSR", err)
	}
	keyHash := nodeattest.KeyHash(csr.RawSubjectPublicKeyInfo)
	res, err := s.attestNode(ctx, req, csr.RawSubjectPublicKeyInfo, keyHash)
	if err != nil {
		return nil, err
	}
	rec.Add(slog.String("agent_id", res.AgentID.String()))
	if res.JoinTokenRetry {
		return s.attestAgain(ctx, req.Csr, res.AgentID)
	}
	// Asked before signing, for a clear refusal; UpsertNode checks again
	// in its transaction, so a ban or another type's attestation racing
	// this one still holds.
	prev, err := s.cfg.Store.GetNode(ctx, res.AgentID.String())
	switch {
	case err == nil && prev.Banned:
		return nil, s.bannedError(res.AgentID)
	case err == nil && prev.AttestationType != res.Type:
		return nil, s.takeoverError(res, prev.AttestationType)
	case err == nil && res.TrustOnFirstUse && !prev.HoldsAgentKey(keyHash):
		return nil, s.alreadyAttestedError(res, prev.AgentKeyHash == "")
	case err == nil && res.TrustOnFirstUse && s.cfg.Now().Before(prev.ExpiresAt):
		return nil, s.svidValidError(res, prev.ExpiresAt)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, status.Errorf(codes.Unavailable, "look up agent %s: %v", res.AgentID, err)
	}
	reattested := err == nil
	chain, err := s.signAgent(ctx, req.Csr, res.AgentID)
	if err != nil {
		return nil, err
	}
	node := store.Node{
		SPIFFEID:        res.AgentID.String(),
		AttestationType: res.Type,
		Selectors:       res.Selectors,
		SerialNumber:    serialHex(chain[0].SerialNumber),
		ExpiresAt:       chain[0].NotAfter,
		AttestedAt:      s.cfg.Now(),
		CanReattest:     res.CanReattest,
		SVIDIssuer:      hex.EncodeToString(chain[0].AuthorityKeyId),
		AgentKeyHash:    keyHash,
	}
	// No PrevSerialNumber: Attest has no client certificate, so nothing
	// proves the attester holds the node's current SVID (a reinstalled
	// host with a certificate of the same name, a replacement pod). That
	// SVID stops working now; the agent moves to its new one.
	switch {
	case res.JoinTokenHash != "":
		err = s.cfg.Store.UpsertNodeSpendingToken(ctx, node, res.JoinTokenHash, keyHash, s.cfg.Now())
	case res.TrustOnFirstUse:
		reattested, err = s.cfg.Store.ClaimNode(ctx, node, s.cfg.Now())
	default:
		err = s.cfg.Store.UpsertNode(ctx, node)
	}
	var typeErr *store.AttestationTypeError
	switch {
	case errors.Is(err, store.ErrBanned):
		return nil, s.bannedError(res.AgentID)
	case errors.As(err, &typeErr):
		return nil, s.takeoverError(res, typeErr.Held)
	case errors.Is(err, store.ErrAlreadyExists):
		// Attested by a concurrent attestation with the same evidence, or
		// renewed since with another key.
		return nil, s.alreadyAttestedError(res, false)
	case errors.Is(err, store.ErrSVIDValid):
		// Renewed since, by its agent: its new expiry is not known here.
		return nil, s.svidValidError(res, time.Time{})
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrExpired):
		// Spent by a concurrent attestation, or expired, since it was read.
		s.cfg.Logger.Warn("agent attestation refused", "type", res.Type, "reason", err)
		return nil, status.Errorf(codes.PermissionDenied, "%v", err)
	case err != nil:
		// Nothing was written: the agent retries with the same evidence.
		return nil, status.Errorf(codes.Unavailable, "record agent %s: %v", res.AgentID, err)
	}
	s.publishNode(ctx, res.AgentID)
	auditSVID(rec, node.SerialNumber, node.ExpiresAt)
	rec.Add(slog.Bool("reattested", reattested), slog.Bool("can_reattest", res.CanReattest))
	msg := "agent attested"
	if reattested {
		msg = "agent re-attested"
	}
	s.cfg.Logger.Info(msg, "agent_id", res.AgentID.String(), "type", res.Type, "serial", node.SerialNumber, "expires_at", node.ExpiresAt,
		"can_reattest", res.CanReattest)
	return s.attestResponse(res.AgentID, chain, res.CanReattest), nil
}

// attestAgain answers an agent whose join-token attestation committed but
// whose answer it never got (a deadline, a dropped connection): it presents
// the spent token again with the key it spent it for, and only that key
// can. It gets a new SVID for the node recorded then, which must still be
// there (not evicted since) and not banned; the write is RenewNode's
// conditional one, so an eviction racing it wins.
func (s *Service) attestAgain(ctx context.Context, csr []byte, id spiffeid.ID) (*api.AttestResponse, error) {
	n, err := s.cfg.Store.GetNode(ctx, id.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, s.spentError(id)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "look up agent %s: %v", id, err)
	case n.Banned:
		return nil, s.bannedError(id)
	}
	chain, err := s.signAgent(ctx, csr, id)
	if err != nil {
		return nil, err
	}
	serial := serialHex(chain[0].SerialNumber)
	switch err := s.cfg.Store.RenewNode(ctx, id.String(), renewal(n.SerialNumber, chain)); {
	case errors.Is(err, store.ErrNotFound):
		return nil, s.spentError(id)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "record agent %s: %v", id, err)
	}
	s.publishNode(ctx, id)
	auditSVID(audit.FromContext(ctx), serial, chain[0].NotAfter)
	s.cfg.Logger.Info("agent attestation answered again: the agent retried with the join token and key it attested with", "agent_id", id.String(),
		"serial", serial, "expires_at", chain[0].NotAfter)
	return s.attestResponse(id, chain, n.CanReattest), nil
}

func (s *Service) spentError(id spiffeid.ID) error {
	s.cfg.Logger.Warn("agent attestation refused", "agent_id", id.String(), "reason", "join token spent and its agent evicted since")
	return status.Errorf(codes.PermissionDenied, "%v (agent %s was evicted after attesting with it)", nodeattest.ErrTokenInvalid, id)
}

// publishNode refreshes the catalog before answering so the agent's next
// call finds its node. Failing that, its next call reloads the catalog
// (authenticate) when the node is missing: answer anyway, as the token is
// spent.
func (s *Service) publishNode(ctx context.Context, id spiffeid.ID) {
	if err := s.cfg.Catalog.Refresh(ctx); err != nil {
		s.cfg.Logger.Warn("refresh catalog after attestation", "agent_id", id.String(), "error", err)
	}
}

// takeoverError refuses an attestation of type res.Type for an agent ID a
// node of type held holds: that node's agent proved the ID with other
// evidence (a join token spent for it is left unspent).
func (s *Service) takeoverError(res nodeattest.Result, held string) error {
	s.cfg.Logger.Warn("agent attestation refused", "agent_id", res.AgentID.String(), "type", res.Type,
		"reason", "the agent ID is held by a "+held+" agent")
	return status.Errorf(codes.PermissionDenied, "agent %s is held by a %s agent; a %s attestation cannot take it over: evict it first (signet server agent evict --spiffe-id %s)",
		res.AgentID, held, res.Type, res.AgentID)
}

// alreadyAttestedError refuses evidence trusted on first use for a node
// that is recorded, presented with a key that is not its agent's: the
// evidence can be replayed, so only the agent that attested first holds
// the ID, renews in place, and attests again (its SVID expired) with its
// key. The message (one line) tells the cases apart for the operator: the
// host's agent lost its data directory (reinstalled, wiped), or its node
// was recorded before servers kept agent keys (keyless), which only an
// eviction mends; or someone else presented the evidence, which an
// eviction would hand them. The ErrorInfo names the ID, so that an agent
// whose last SVID has it attests again with that SVID's key (an agent
// tries a fresh key first: a key is presented only for the ID it was
// certified for).
func (s *Service) alreadyAttestedError(res nodeattest.Result, keyless bool) error {
	s.cfg.Logger.Warn("agent attestation refused", "agent_id", res.AgentID.String(), "type", res.Type,
		"reason", "already attested by another agent key: "+res.Type+" evidence is trusted on first use")
	lost := "if this host's agent lost its data directory (a reinstalled host, a wiped or new disk), only an eviction lets it attest again"
	if keyless {
		lost = "this agent was recorded by a server that did not keep agent keys and has not renewed since, so it cannot prove it is the same agent: only an eviction lets it attest again"
	}
	return api.AttestedWithAnotherKeyError(fmt.Sprintf("agent %s is already attested by another agent key: %s evidence attests a node once (trust on first use), as whoever reads it can replay it, "+
		"and then again only with the key of the agent that attested (kept in its data directory); "+
		"%s (signet server agent evict --spiffe-id %s); "+
		"if the agent on this host never attested, someone else presented its evidence: investigate, or ban the ID (signet server agent ban --spiffe-id %s), before evicting",
		res.AgentID, res.Type, lost, res.AgentID, res.AgentID), res.AgentID.String())
}

// svidValidError refuses evidence trusted on first use with the key of a
// node whose SVID has not expired: its agent renews in place with that
// SVID. Only a replayed CSR (the evidence and a request the agent once
// sent) would attest here, and it must not cut the agent's SVID off.
func (s *Service) svidValidError(res nodeattest.Result, expiresAt time.Time) error {
	s.cfg.Logger.Warn("agent attestation refused", "agent_id", res.AgentID.String(), "type", res.Type,
		"reason", "its SVID for this key is still valid", "expires_at", expiresAt)
	until := "" // renewed while this attestation was checked: expiry unknown
	if !expiresAt.IsZero() {
		until = " valid until " + expiresAt.UTC().Format(time.RFC3339)
	}
	return status.Errorf(codes.PermissionDenied, "agent %s holds an SVID for this key%s: it renews that SVID in place, and attests again with %s evidence only once it has expired",
		res.AgentID, until, res.Type)
}

func (s *Service) bannedError(id spiffeid.ID) error {
	s.cfg.Logger.Warn("agent attestation refused", "agent_id", id.String(), "reason", "banned")
	return status.Errorf(codes.PermissionDenied, "agent %s is banned (an admin lifts the ban with: signet server agent evict --spiffe-id %s)", id, id)
}

// attestNode checks the evidence with the attestor of its type; a join
// token is read, not spent (Attest spends it with the node's record).
// agentKey is the CSR's public key (DER): x509pop and sshpop evidence must
// sign it.
// Refusals are logged: they are what an operator looks at when an agent
// will not start.
func (s *Service) attestNode(ctx context.Context, req *api.AttestRequest, agentKey []byte, keyHash string) (nodeattest.Result, error) {
	var res nodeattest.Result
	var err error
	switch {
	case req.AttestationType == nodeattest.JoinTokenType:
		res, err = nodeattest.AttestJoinToken(ctx, s.cfg.Store, s.cfg.TrustDomain, string(req.Payload), keyHash, s.cfg.Now())
	case req.AttestationType == nodeattest.K8sPSATType && s.cfg.PSAT != nil:
		res, err = s.cfg.PSAT.Attest(ctx, req.Payload)
	case req.AttestationType == nodeattest.K8sPSATType:
		return res, status.Error(codes.FailedPrecondition, "k8s_psat attestation is not configured on this server (add a k8s_psat block to its config)")
	case req.AttestationType == nodeattest.X509PoPType && s.cfg.X509PoP != nil:
		res, err = s.cfg.X509PoP.Attest(ctx, req.Payload, agentKey, s.cfg.Now())
	case req.AttestationType == nodeattest.X509PoPType:
		return res, status.Error(codes.FailedPrecondition, "x509pop attestation is not configured on this server (add an x509pop block to its config)")
	case req.AttestationType == nodeattest.SSHPoPType && s.cfg.SSHPoP != nil:
		res, err = s.cfg.SSHPoP.Attest(ctx, req.Payload, agentKey, s.cfg.Now())
	case req.AttestationType == nodeattest.SSHPoPType:
		return res, status.Error(codes.FailedPrecondition, "sshpop attestation is not configured on this server (add an sshpop block to its config)")
	case req.AttestationType == nodeattest.AWSIIDType && s.cfg.AWSIID != nil:
		res, err = s.cfg.AWSIID.Attest(ctx, req.Payload, s.cfg.Now())
	case req.AttestationType == nodeattest.AWSIIDType:
		return res, status.Error(codes.FailedPrecondition, "aws_iid attestation is not configured on this server (add an aws_iid block to its config)")
	case req.AttestationType == nodeattest.GCPIITType && s.cfg.GCPIIT != nil:
		res, err = s.cfg.GCPIIT.Attest(ctx, req.Payload, s.cfg.Now())
	case req.AttestationType == nodeattest.GCPIITType:
		return res, status.Error(codes.FailedPrecondition, "gcp_iit attestation is not configured on this server (add a gcp_iit block to its config)")
	default:
		return res, status.Errorf(codes.InvalidArgument, "attestation type %q is not supported (want %q, %q, %q, %q, %q or %q)", req.AttestationType,
			nodeattest.JoinTokenType, nodeattest.K8sPSATType, nodeattest.X509PoPType, nodeattest.SSHPoPType, nodeattest.AWSIIDType, nodeattest.GCPIITType)
	}
	if err == nil {
		return res, nil
	}
	s.cfg.Logger.Warn("agent attestation refused", "type", req.AttestationType, "reason", err)
	switch {
	case errors.Is(err, nodeattest.ErrTokenInvalid), errors.Is(err, nodeattest.ErrTokenExpired), errors.Is(err, nodeattest.ErrNotAttested),
		errors.Is(err, nodeattest.ErrX509PoPRefused), errors.Is(err, nodeattest.ErrSSHPoPRefused), errors.Is(err, nodeattest.ErrAWSIIDRefused),
		errors.Is(err, nodeattest.ErrGCPIITRefused):
		return res, status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, nodeattest.ErrMalformed), errors.Is(err, nodeattest.ErrX509PoPMalformed), errors.Is(err, nodeattest.ErrSSHPoPMalformed),
		errors.Is(err, nodeattest.ErrAWSIIDMalformed), errors.Is(err, nodeattest.ErrGCPIITMalformed):
		return res, status.Error(codes.InvalidArgument, err.Error())
	}
	// The store, the cluster's API server, the node CA file or Google's
	// certificates endpoint could not answer, and nothing was spent: the
	// agent retries. The caller is
	// not yet authenticated: the detail (paths, store errors) is in the
	// server's log only.
	return res, status.Error(codes.Unavailable, "attest: the server cannot check this evidence now (its store, the cluster's API server, its node CA file or Google's certificates did not answer; the server's log says which); retry")
}

// RenewAgent signs a fresh agent SVID for the calling agent. An agent that
// can attest again is refused: it renews by attesting again, so that its
// evidence is checked anew (a machine certificate that expired or whose CA
// was dropped, a pod or node that is gone, ends its identity at its next
// renewal).
func (s *Service) RenewAgent(ctx context.Context, req *api.RenewAgentRequest) (*api.AttestResponse, error) {
	snap, _ := s.cfg.Catalog.Current()
	c, _, err := s.authenticate(ctx, snap)
	if err != nil {
		return nil, err
	}
	rec := audit.FromContext(ctx)
	auditCaller(rec, c)
	if mustReattest(c.Node) {
		return nil, status.Errorf(codes.PermissionDenied, "agent %s must re-attest to renew its SVID: it attested with %s, whose evidence the server checks anew at every renewal",
			c.ID, c.Node.AttestationType)
	}
	chain, err := s.signAgent(ctx, req.Csr, c.ID)
	if err != nil {
		return nil, err
	}
	// Conditional on the node still being there with the presented serial:
	// an eviction committed since our snapshot wins. The old serial stays
	// valid until the agent reconnects with the new SVID.
	serial := serialHex(chain[0].SerialNumber)
	if err := s.cfg.Store.RenewNode(ctx, c.ID.String(), renewal(c.Serial, chain)); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.PermissionDenied, "agent %s is not attested (evicted?)", c.ID)
		}
		return nil, status.Errorf(codes.Internal, "record agent %s: %v", c.ID, err)
	}
	if err := s.cfg.Catalog.Refresh(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "refresh catalog: %v", err)
	}
	auditSVID(rec, serial, chain[0].NotAfter)
	s.cfg.Logger.Info("agent SVID renewed", "agent_id", c.ID.String(), "serial", serial, "expires_at", chain[0].NotAfter)
	return s.attestResponse(c.ID, chain, false), nil
}

// mustReattest: the node's agent renews by attesting again, never in
// place. The attestation type decides: a node written during a rolling
// upgrade by an older server lacks can_reattest, and would otherwise renew
// in place for good, its evidence never checked again. Its agent, old or
// new, attests again when RenewAgent refuses it.
func mustReattest(n store.Node) bool {
	return nodeattest.Reattests(n.AttestationType) || n.CanReattest
}

func (s *Service) signAgent(ctx context.Context, csr []byte, id spiffeid.ID) ([]*x509.Certificate, error) {
	chain, err := s.cfg.Signer.SignX509SVID(ctx, csr, id, s.cfg.AgentTTL, nil)
	if err != nil {
		return nil, signError("sign agent SVID for "+id.String(), err)
	}
	s.cfg.Metrics.signings.WithLabelValues("agent").Inc()
	return chain, nil
}

// renewal records the agent SVID chain renewed in place of the one with
// serial presented.
func renewal(presented string, chain []*x509.Certificate) store.NodeRenewal {
	return store.NodeRenewal{
		PresentedSerial: presented,
		Serial:          serialHex(chain[0].SerialNumber),
		ExpiresAt:       chain[0].NotAfter,
		Issuer:          hex.EncodeToString(chain[0].AuthorityKeyId),
		AgentKeyHash:    nodeattest.KeyHash(chain[0].RawSubjectPublicKeyInfo),
	}
}

// auditSVID adds the agent SVID an attestation or renewal signed to its
// audit record.
func auditSVID(rec *audit.Record, serial string, expiresAt time.Time) {
	rec.Add(slog.String("serial", serial), slog.Time("expires_at", expiresAt.UTC()))
}

// attestResponse answers an attestation or renewal; reattestable tells the
// agent how to renew next.
func (s *Service) attestResponse(id spiffeid.ID, chain []*x509.Certificate, reattestable bool) *api.AttestResponse {
	snap, _ := s.cfg.Catalog.Current()
	resp := &api.AttestResponse{
		SpiffeId:     id.String(),
		Bundle:       BundleToProto(snap.OwnBundle(s.cfg.TrustDomain), s.refreshHint()),
		Reattestable: reattestable,
	}
	for _, c := range chain {
		resp.SvidChain = append(resp.SvidChain, c.Raw)
	}
	return resp
}

func (s *Service) refreshHint() int32 { return int32(s.cfg.RefreshHint.Seconds()) }
