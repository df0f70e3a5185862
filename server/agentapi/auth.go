package agentapi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/store"
)

// ServerID is the SPIFFE ID in the server's TLS certificate; agents
// authorize exactly this ID.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromPath(td, ca.ServerPath)
}

// TLSConfig returns the server's TLS 1.3 configuration: it presents the
// certificate getCert returns, and asks for (but, because Attest comes
// before any agent SVID exists, does not require) a client certificate.
// The handshake only checks that the certificates parse (TLS itself proves
// the leaf's key); authenticate verifies the chain against the bundle at
// every call, so an agent whose CA was revoked gets PermissionDenied, and
// attests again, instead of a TLS failure it cannot tell from an outage.
func (s *Service) TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		GetCertificate:        getCert,
		ClientAuth:            tls.RequestClientCert,
		VerifyPeerCertificate: parseClientChain,
	}
}

func parseClientChain(raw [][]byte, _ [][]*x509.Certificate) error {
	for _, der := range raw {
		if _, err := x509.ParseCertificate(der); err != nil {
			return fmt.Errorf("parse client certificate: %w", err)
		}
	}
	return nil
}

// maxVerified bounds the verified-chain memory; past it, it starts over.
const maxVerified = 1 << 14

// verifyChain checks the agent's chain against snap's own bundle, once per
// SVID and bundle sequence (a verification costs two signatures' worth of
// CPU, which a one-CSR call would otherwise pay every time).
func (s *Service) verifyChain(snap *catalog.Snapshot, chain []*x509.Certificate, id spiffeid.ID) error {
	own := snap.OwnBundle(s.cfg.TrustDomain)
	key := string(chain[0].Raw)
	s.verifiedMu.Lock()
	seq, ok := s.verified[key]
	s.verifiedMu.Unlock()
	if ok && seq == own.Sequence {
		return nil
	}
	bundle, err := x509BundleOf(s.cfg.TrustDomain, own)
	if err != nil {
		return status.Errorf(codes.Internal, "trust bundle: %v", err)
	}
	if _, _, err := x509svid.Verify(chain, bundle); err != nil {
		return status.Errorf(codes.PermissionDenied, "%s presents an SVID that does not verify against the trust bundle (was its CA revoked?): %v; an agent must attest again", id, err)
	}
	s.verifiedMu.Lock()
	if len(s.verified) >= maxVerified {
		clear(s.verified)
	}
	s.verified[key] = own.Sequence
	s.verifiedMu.Unlock()
	return nil
}

// caller is an authenticated agent.
type caller struct {
	ID       spiffeid.ID
	Serial   string
	NotAfter time.Time // of the presented agent SVID
	Node     store.Node
}

// errNoClientCert is returned by peerSVID when the connection carries no
// client certificate.
var errNoClientCert = errors.New("no client certificate")

// peerSVID returns the client certificate chain of the connection, not
// yet verified, and the ID its leaf names.
func peerSVID(ctx context.Context) ([]*x509.Certificate, spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, spiffeid.ID{}, errNoClientCert
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, spiffeid.ID{}, errNoClientCert
	}
	chain := info.State.PeerCertificates
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("client certificate: %w", err)
	}
	return chain, id, nil
}

// authenticate names the calling agent: its chain verifies against the
// bundle, it is still attested, and it presents its current SVID or the
// one an in-place renewal just replaced. An agent presenting its current
// SVID has moved to it: the previous one stops working (retirePrev). It
// returns the snapshot it decided on, for the caller to authorize against.
func (s *Service) authenticate(ctx context.Context, snap *catalog.Snapshot) (caller, *catalog.Snapshot, error) {
	c, snap, err := s.identify(ctx, snap)
	if err == nil && c.Node.PrevSerialNumber != "" && c.Serial == c.Node.SerialNumber {
		s.retirePrev(ctx, c)
	}
	return c, snap, err
}

// retirePrev clears the previous serial of c's node, c presenting the
// current one, so the SVID it replaced (perhaps copied off the host) is
// refused from now on, by this server at once and by others at their next
// reload. The write is conditional on the serial, so a renewal or eviction
// since is kept; concurrent calls of one agent share one write. A failure
// is logged, not the caller's: the next call tries again.
func (s *Service) retirePrev(ctx context.Context, c caller) {
	_, err, _ := s.refreshes.Do("retire "+c.ID.String()+" "+c.Serial, func() (any, error) {
		changed, err := s.cfg.Store.RetirePrevSerial(ctx, c.ID.String(), c.Serial)
		if err != nil || !changed {
			return nil, err
		}
		s.cfg.Logger.Debug("agent presents its current SVID; the previous one is no longer accepted", "agent_id", c.ID.String(),
			"serial", c.Serial, "previous_serial", c.Node.PrevSerialNumber)
		// The reload the change signal would bring anyway, now, so this
		// server stops accepting the previous serial before the next call.
		_, err, _ = s.refreshes.Do("catalog", func() (any, error) { return nil, s.cfg.Catalog.Refresh(ctx) })
		return nil, err
	})
	if err != nil {
		s.cfg.Logger.Warn("retire the agent's previous SVID (it stays accepted until the agent's next call)", "agent_id", c.ID.String(), "error", err)
	}
}

// identify checks the caller's SVID against snap and, when snap refuses,
// against the store's newest state: with several servers on one store, an
// agent that attested or renewed on another server (perhaps under a CA
// just published there) may call here before this server has heard of it.
func (s *Service) identify(ctx context.Context, snap *catalog.Snapshot) (caller, *catalog.Snapshot, error) {
	chain, id, err := peerSVID(ctx)
	if err != nil {
		return caller{}, snap, status.Errorf(codes.Unauthenticated, "agent SVID required: %v", err)
	}
	leaf := chain[0]
	// A long-lived connection (a Sync stream) must not outlive the SVID it
	// was opened with.
	if now := s.cfg.Now(); now.After(leaf.NotAfter) {
		return caller{}, snap, status.Errorf(codes.Unauthenticated, "agent %s presents an expired SVID (not after %s); renew or re-attest", id, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	check := func(snap *catalog.Snapshot) (caller, error) {
		if err := s.verifyChain(snap, chain, id); err != nil {
			return caller{}, err
		}
		return checkNode(snap, leaf, id)
	}
	c, err := check(snap)
	if err == nil {
		return c, snap, nil
	}
	if _, rerr, _ := s.refreshes.Do("catalog", func() (any, error) { return nil, s.cfg.Catalog.Refresh(ctx) }); rerr != nil {
		return caller{}, snap, err
	}
	if fresh, _ := s.cfg.Catalog.Current(); fresh.Revision != snap.Revision {
		c, err = check(fresh)
		return c, fresh, err
	}
	return caller{}, snap, err
}

// checkNode checks the presented SVID against the node record in snap.
func checkNode(snap *catalog.Snapshot, leaf *x509.Certificate, id spiffeid.ID) (caller, error) {
	node, ok := snap.Nodes[id.String()]
	if !ok {
		return caller{}, status.Errorf(codes.PermissionDenied, "agent %s is not attested (evicted?)", id)
	}
	if node.Banned {
		return caller{}, status.Errorf(codes.PermissionDenied, "agent %s is banned", id)
	}
	serial := serialHex(leaf.SerialNumber)
	if serial != node.SerialNumber && serial != node.PrevSerialNumber {
		return caller{}, status.Errorf(codes.Unauthenticated, "agent %s presents a superseded SVID (serial %s); reconnect with the current one", id, serial)
	}
	return caller{ID: id, Serial: serial, NotAfter: leaf.NotAfter, Node: node}, nil
}

func serialHex(n *big.Int) string { return n.Text(16) }

// auditCaller names the authenticated agent in the call's audit record.
func auditCaller(rec *audit.Record, c caller) {
	if rec != nil {
		rec.Add(slog.String("caller_id", c.ID.String()))
	}
}

// AuthenticateSVID names a caller that is not an agent (a downstream
// server): its X509-SVID of this trust domain verifies against the bundle
// now. What the ID may do is the caller's to decide.
func (s *Service) AuthenticateSVID(ctx context.Context) (spiffeid.ID, error) {
	chain, id, err := peerSVID(ctx)
	if err != nil {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "X509-SVID required: %v", err)
	}
	if now := s.cfg.Now(); now.After(chain[0].NotAfter) {
		return spiffeid.ID{}, status.Errorf(codes.Unauthenticated, "%s presents an expired X509-SVID (not after %s)", id, chain[0].NotAfter.UTC().Format(time.RFC3339))
	}
	snap, _ := s.cfg.Catalog.Current()
	if err := s.verifyChain(snap, chain, id); err != nil {
		// A root published a moment ago by another server: look again.
		if _, rerr, _ := s.refreshes.Do("catalog", func() (any, error) { return nil, s.cfg.Catalog.Refresh(ctx) }); rerr != nil {
			return spiffeid.ID{}, err
		}
		fresh, _ := s.cfg.Catalog.Current()
		if fresh.Revision == snap.Revision {
			return spiffeid.ID{}, err
		}
		if err := s.verifyChain(fresh, chain, id); err != nil {
			return spiffeid.ID{}, err
		}
	}
	return id, nil
}
