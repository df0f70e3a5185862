package store

import (
	"context"
	"errors"
	"time"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
)

// Errors every implementation returns (wrapped) so callers can map them to
// API codes with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrInUse: entries federate with the bundle a restricted delete was for.
	ErrInUse = errors.New("in use")
	// ErrFetched: a stored federation relationship fetches the bundle a
	// delete was for (its refresher would write it back).
	ErrFetched = errors.New("fetched by a federation relationship")
	// ErrBanned: the node is banned; only deleting it lifts the ban.
	ErrBanned  = errors.New("banned")
	ErrExpired = errors.New("expired")
	// ErrSVIDValid: ClaimNode with the key of a node whose SVID has not
	// expired; its agent renews in place.
	ErrSVIDValid = errors.New("the agent's SVID has not expired")
)

// AttestationTypeError: an upsert would replace a node recorded with
// another attestation type. One attestor's evidence must not take over an
// agent ID another attestor's evidence proved (an x509pop certificate
// naming a k8s_psat agent, a join token for an x509pop agent's ID); the
// node is evicted (deleted) first.
type AttestationTypeError struct {
	SPIFFEID string
	// Held is the type the node is recorded with; Wanted the upsert's.
	Held, Wanted string
}

func (e *AttestationTypeError) Error() string {
	return "node " + e.SPIFFEID + " is held by a " + e.Held + " agent, not " + e.Wanted
}

type commitRevisionKey struct{}

// WithCommitRevision returns a context in which a write records in *rev the
// store revision it commits (valid when the write returns nil). A caller
// that patches its own view of the store uses it to know that exactly its
// write, and nothing else, separates that view from the store.
func WithCommitRevision(ctx context.Context, rev *int64) context.Context {
	return context.WithValue(ctx, commitRevisionKey{}, rev)
}

// JoinToken is a single-use node attestation secret. Only its SHA-256 is
// stored; the token itself is shown once, at creation.
type JoinToken struct {
	// Hash is the hex SHA-256 of the token.
	Hash string
	// ID is the public name of the token, used in the agent ID.
	ID string
	// SPIFFEID, if set, is the ID the attesting agent takes.
	SPIFFEID  string
	ExpiresAt time.Time
	CreatedAt time.Time
	// SpentKey is the hex SHA-256 of the public key (PKIX DER) of the
	// agent that spent the token; "" while unspent.
	SpentKey string
}

// Node is an attested agent.
type Node struct {
	SPIFFEID        string
	AttestationType string
	Selectors       []selector.Selector
	// SerialNumber is the hex serial of the agent's current SVID.
	// PrevSerialNumber is the serial of the SVID an in-place renewal
	// (RenewNode) replaced: still accepted, so calls in flight on the
	// agent's old connection finish, until the agent first presents the
	// current one (RetirePrevSerial). An attestation leaves it empty:
	// Attest has no client certificate, so nothing proves the attester
	// holds the SVID the node had.
	SerialNumber     string
	PrevSerialNumber string
	ExpiresAt        time.Time
	AttestedAt       time.Time
	// Banned nodes cannot renew, and their ID cannot attest again until the
	// node is deleted (evicted).
	Banned bool
	// CanReattest: the node attestor said it can attest the node again
	// (x509pop, k8s_psat), so the agent renews by attesting again, never
	// in place. Rows an older server writes during a rolling upgrade lack
	// it, so the agent API decides by AttestationType, not by this flag;
	// it stays for the admin API's listing.
	CanReattest bool
	// SVIDIssuer is the hex subject key ID of the CA that signed the
	// current SVID (its AuthorityKeyId); empty when recorded by a server
	// before this field existed.
	SVIDIssuer string
	// AgentKeyHash is the hex SHA-256 of the current SVID's public key
	// (its SubjectPublicKeyInfo), PrevAgentKeyHash that of the SVID
	// PrevSerialNumber names. Evidence trusted on first use attests a
	// recorded node again only with one of these keys (ClaimNode): the
	// agent that attested first, back after its SVID expired. Empty when
	// recorded by a server before these fields existed.
	AgentKeyHash     string
	PrevAgentKeyHash string
}

// HoldsAgentKey reports whether keyHash is the agent key of the node's
// current or previous SVID (never an empty one).
func (n Node) HoldsAgentKey(keyHash string) bool {
	return keyHash != "" && (keyHash == n.AgentKeyHash || keyHash == n.PrevAgentKeyHash)
}

// NodeRenewal is an agent SVID renewed in place (RenewNode).
type NodeRenewal struct {
	// PresentedSerial is the serial of the SVID the agent renewed with:
	// the node's current or previous one.
	PresentedSerial string
	// Serial, ExpiresAt, Issuer (Node.SVIDIssuer) and AgentKeyHash are the
	// new SVID's.
	Serial       string
	ExpiresAt    time.Time
	Issuer       string
	AgentKeyHash string
}

// BundleDeleteMode says what deleting a federated bundle does to the
// entries that federate with its trust domain (SPIRE's modes).
type BundleDeleteMode int

const (
	// BundleRestrict refuses the delete (ErrInUse) while any entry federates.
	BundleRestrict BundleDeleteMode = iota
	// BundleDissociate removes the trust domain from those entries.
	BundleDissociate
	// BundleDeleteEntries deletes those entries.
	BundleDeleteEntries
)

// AuthorityKind says what an Authority holds.
type AuthorityKind string

const (
	// X509Authority data is a DER root certificate.
	X509Authority AuthorityKind = "x509"
	// JWTAuthority data is a PKIX DER public key.
	JWTAuthority AuthorityKind = "jwt"
)

// Authority is one trust anchor of a trust domain's bundle. Several servers
// sharing a store each publish their own; the bundle is the union.
type Authority struct {
	TrustDomain string
	Kind        AuthorityKind
	// KeyID identifies the authority: the JWT kid, or the hex SHA-256 of the
	// root's DER for X.509.
	KeyID     string
	Data      []byte
	ExpiresAt time.Time
	// Tainted: an operator tainted it (forced rotation). It still verifies,
	// but agents re-sign at once what it issued, before it is revoked.
	Tainted bool
}

// FederationRelationship is a foreign trust domain whose bundle every server
// sharing the store fetches from its bundle endpoint. The federation
// package checks the fields' meaning; the store only their presence.
type FederationRelationship struct {
	TrustDomain       string
	BundleEndpointURL string
	// Profile is "https_spiffe" or "https_web".
	Profile string
	// EndpointSPIFFEID is the ID an https_spiffe endpoint presents.
	EndpointSPIFFEID string
	// Owner is "" for an operator's relationship, or the name of what
	// manages it (the Kubernetes controller), which alone changes it.
	Owner     string
	Revision  int64
	CreatedAt time.Time
}

// RelationshipOption adds to what PutFederationRelationship writes.
type RelationshipOption func(*relationshipWrite)

// relationshipWrite is what the options of PutFederationRelationship ask.
type relationshipWrite struct {
	bundle     []Authority
	onlyIfNone bool
}

// WithBundle writes auths as the relationship's trust domain's bundle in
// the relationship's transaction, replacing a held one as SetBundle does.
// No authorities: no bundle is written.
func WithBundle(auths []Authority) RelationshipOption {
	return func(w *relationshipWrite) { w.bundle, w.onlyIfNone = auths, false }
}

// WithBootstrapBundle is WithBundle for a bootstrap bundle: it is
// written only while the trust domain holds none, so it never replaces one
// fetched or set since.
func WithBootstrapBundle(auths []Authority) RelationshipOption {
	return func(w *relationshipWrite) { w.bundle, w.onlyIfNone = auths, true }
}

// Store is Signet's persistent state. Every write is one transaction: when a
// method returns nil, the change is durable.
type Store interface {
	// CreateEntry stores a new entry, assigning Revision, CreatedAt and, when
	// the caller left it empty, ID (a caller-chosen ID lets the Kubernetes
	// controller recognise its own entries). An entry with the same ID, or
	// the same SPIFFE ID, parent and selectors, is ErrAlreadyExists. Revision
	// is the store revision of the creating write, so revisions of one ID
	// never repeat, even across deletion and re-creation.
	CreateEntry(ctx context.Context, e registry.Entry) (registry.Entry, error)
	// CreateEntries stores several entries in one transaction: all or none.
	CreateEntries(ctx context.Context, es []registry.Entry) ([]registry.Entry, error)
	// UpdateEntry replaces the entry with e.ID, bumping its Revision.
	UpdateEntry(ctx context.Context, e registry.Entry) (registry.Entry, error)
	// ModifyEntry replaces the entry with id by fn(current entry), read and
	// written in one transaction, so concurrent partial updates cannot
	// overwrite each other. An error from fn is returned as is, and nothing
	// is written. ID, Revision and CreatedAt stay the store's.
	ModifyEntry(ctx context.Context, id string, fn func(registry.Entry) (registry.Entry, error)) (registry.Entry, error)
	DeleteEntry(ctx context.Context, id string) error
	GetEntry(ctx context.Context, id string) (registry.Entry, error)
	ListEntries(ctx context.Context) ([]registry.Entry, error)
	// DeleteEntries deletes every entry of ids in one write, or none: an
	// unknown ID is ErrNotFound, naming it.
	DeleteEntries(ctx context.Context, ids []string) error
	// PruneEntries deletes, in one write, the entries whose expiry is
	// before the given time (never those without one), and returns their
	// IDs; none is no write.
	PruneEntries(ctx context.Context, expiredBefore time.Time) ([]string, error)

	CreateJoinToken(ctx context.Context, t JoinToken) error
	// GetJoinToken returns the token with this hash, spent (SpentKey set)
	// or not: ErrNotFound if unknown, ErrExpired if past ExpiresAt at now.
	GetJoinToken(ctx context.Context, hash string, now time.Time) (JoinToken, error)
	// PruneJoinTokens deletes tokens expired before now.
	PruneJoinTokens(ctx context.Context, now time.Time) error

	// UpsertNode creates or replaces the node with n.SPIFFEID. A node
	// recorded with another attestation type is not replaced
	// (*AttestationTypeError), nor a banned one (ErrBanned), checked in the
	// write transaction.
	UpsertNode(ctx context.Context, n Node) error
	// UpsertNodeSpendingToken is UpsertNode that also spends the join token
	// with tokenHash for the agent key keyHash (JoinToken.SpentKey), in the
	// same transaction: ErrNotFound if the token is unknown or already
	// spent, ErrExpired if past ExpiresAt at now. When it fails nothing is
	// written, so the token can still attest.
	UpsertNodeSpendingToken(ctx context.Context, n Node, tokenHash, keyHash string, now time.Time) error
	// ClaimNode records a node attested by evidence trusted on first use
	// (aws_iid, gcp_iit: evidence that can be replayed) only if none with
	// n.SPIFFEID is recorded, or if the recorded node's current or
	// previous agent key is n.AgentKeyHash and its SVID expired before now
	// (its agent back with the key it holds: reclaimed), checked in the
	// write transaction, so two racing with the same evidence cannot both
	// record the node, and a renewal racing it wins. Any other recorded
	// node is ErrAlreadyExists (ErrSVIDValid when only its expiry is in
	// the way, ErrBanned if banned, *AttestationTypeError if of another
	// type).
	ClaimNode(ctx context.Context, n Node, now time.Time) (reclaimed bool, err error)
	GetNode(ctx context.Context, spiffeID string) (Node, error)
	ListNodes(ctx context.Context) ([]Node, error)
	// RenewNode records a renewed agent SVID in one conditional write: the
	// node must still exist and r.PresentedSerial be its current or
	// previous serial (else ErrNotFound), so a renewal racing an eviction
	// cannot bring the node back. The presented SVID (serial and agent
	// key) becomes the previous one.
	RenewNode(ctx context.Context, spiffeID string, r NodeRenewal) error
	// RetirePrevSerial clears the node's previous serial (and agent key) in one
	// conditional write, only while serial is still its current one: the
	// agent presented its current SVID, so the one before stops working.
	// It reports whether it changed anything (not when the node is gone,
	// renewed again since, or has no previous serial).
	RetirePrevSerial(ctx context.Context, spiffeID, serial string) (bool, error)
	// BanNode clears a node's serials and marks it banned, so it can neither
	// renew nor attest again (UpsertNode answers ErrBanned) until DeleteNode:
	// ErrNotFound if unknown.
	BanNode(ctx context.Context, spiffeID string) error
	// DeleteNode removes (evicts) a node, lifting a ban: ErrNotFound if unknown.
	DeleteNode(ctx context.Context, spiffeID string) error
	// DeleteExpiredNode removes a node in one conditional write, only
	// while its SVID expired before the given time and it is not banned
	// (a purge never lifts a ban, and never removes an agent that renewed
	// or attested again meanwhile). It reports whether it removed it.
	DeleteExpiredNode(ctx context.Context, spiffeID string, expiredBefore time.Time) (bool, error)

	// PutAuthorities adds or updates (by TrustDomain, Kind, KeyID) bundle
	// authorities and bumps the trust domain's bundle sequence if anything
	// changed. An authority's expiry only grows: servers under one upstream
	// root each publish it until their own CAs expire, and the last writer
	// must not cut the others short. Likewise the taint mark only goes
	// from false to true: Tainted set on a stored untainted authority is a
	// change; Tainted unset on a tainted one keeps the mark and is no
	// change (a server that has not yet heard of the taint republishing).
	PutAuthorities(ctx context.Context, auths []Authority) error
	// AddAuthority stores a when no authority of its trust domain, kind and
	// key ID is stored, bumping the bundle sequence, and reports true;
	// otherwise it changes nothing and returns the stored one. Keys others
	// publish (downstream servers) go through it: one key ID names one key,
	// and no publisher may replace another's.
	AddAuthority(ctx context.Context, a Authority) (Authority, bool, error)
	// DeleteAuthorities deletes, in one transaction, the authorities of
	// trustDomain of this kind with these key IDs, ignoring IDs not stored
	// (a revocation is retried until it sticks), and returns how many it
	// deleted. It bumps the bundle sequence and the revision only if it
	// deleted any. It revokes this server's own authorities; a federated
	// bundle is replaced with SetBundle.
	DeleteAuthorities(ctx context.Context, trustDomain string, kind AuthorityKind, keyIDs []string) (deleted int, err error)
	// ListAuthorities returns a trust domain's authorities and its bundle sequence.
	ListAuthorities(ctx context.Context, trustDomain string) ([]Authority, int64, error)
	// PruneAuthorities deletes authorities that expired before now.
	PruneAuthorities(ctx context.Context, trustDomain string, now time.Time) error
	// SetBundle replaces every authority of trustDomain with auths (a
	// federated bundle, fetched or set by an operator): authorities not in
	// auths are deleted. It bumps the bundle sequence and the revision, and
	// reports changed, only if the set differs from the stored one. auths
	// must not be empty (DeleteBundle removes a bundle) nor tainted (only a
	// server's own authorities are).
	SetBundle(ctx context.Context, trustDomain string, auths []Authority) (changed bool, err error)
	// DeleteBundle deletes every authority of trustDomain: ErrNotFound if it
	// has none. Its sequence is bumped and kept, so a bundle set later
	// continues it and agents never see a sequence go back. mode says what
	// happens to entries that federate with trustDomain, in the same
	// transaction; it returns how many there were (also with ErrInUse). A
	// bundle a stored federation relationship fetches is ErrFetched,
	// checked in the same transaction.
	DeleteBundle(ctx context.Context, trustDomain string, mode BundleDeleteMode) (entries int, err error)
	// ListBundleTrustDomains returns the trust domains that have
	// authorities, sorted.
	ListBundleTrustDomains(ctx context.Context) ([]string, error)

	// PutFederationRelationship creates or replaces the relationship with
	// r.TrustDomain, in one transaction with check, which sees the stored
	// one (nil if none) and may refuse the write with an error, returned
	// wrapped (errors.Is and errors.As find it), and with the bundle of a
	// WithBundle or WithBootstrapBundle option: the relationship and its
	// bundle are written together or not at all. It assigns Revision and,
	// for a new one, CreatedAt, and reports changed (and bumps the store
	// revision, once) only if the relationship or the bundle differs.
	PutFederationRelationship(ctx context.Context, r FederationRelationship, check func(cur *FederationRelationship) error, opts ...RelationshipOption) (changed bool, err error)
	// DeleteFederationRelationship deletes the relationship with
	// trustDomain, if check (given it) allows; its error is returned wrapped.
	// ErrNotFound if none. The
	// bundle stays; `bundle delete` removes it.
	DeleteFederationRelationship(ctx context.Context, trustDomain string, check func(cur FederationRelationship) error) error
	GetFederationRelationship(ctx context.Context, trustDomain string) (FederationRelationship, error)
	// ListFederationRelationships returns them sorted by trust domain.
	ListFederationRelationships(ctx context.Context) ([]FederationRelationship, error)

	// Revision increases with every change to entries, nodes, authorities
	// or federation relationships.
	Revision(ctx context.Context) (int64, error)
	// Changes delivers a signal after every committed change by this or (for
	// PostgreSQL) any other server sharing the store. Signals coalesce: one
	// pending signal stands for any number of changes. The channel closes
	// when ctx ends.
	Changes(ctx context.Context) <-chan struct{}

	// Ping checks the store is reachable (readiness).
	Ping(ctx context.Context) error
	Close() error
}
