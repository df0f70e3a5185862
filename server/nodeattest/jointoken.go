package nodeattest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// JoinTokenType is the attestation type of join tokens.
const JoinTokenType = "join_token"

// DefaultJoinTokenTTL is how long a join token is valid when no TTL is given.
const DefaultJoinTokenTTL = 10 * time.Minute

// Errors an attestation can fail with; the agent API answers PermissionDenied.
var (
	ErrTokenInvalid = errors.New("join token is unknown or already used")
	ErrTokenExpired = errors.New("join token has expired")
)

// Result is what a successful attestation proves.
type Result struct {
	AgentID   spiffeid.ID
	Type      string
	Selectors []selector.Selector
	// JoinTokenHash is the join token that proved it, still unspent: the
	// caller spends it for the agent's key in the transaction that records
	// the node (store.UpsertNodeSpendingToken), so a failure before leaves
	// it for a retry.
	JoinTokenHash string
	// JoinTokenRetry: the token was already spent by this very key. The
	// agent's earlier attestation committed but its answer was lost (a
	// deadline, a dropped connection), and it asks again with the same key:
	// the caller re-signs for the node recorded then, if it is still there.
	JoinTokenRetry bool
	// CanReattest: the evidence can be presented again (a machine
	// certificate, a projected service account token), so the agent renews
	// by attesting again and the server checks the evidence anew each
	// time. A join token is spent: its agent renews in place.
	CanReattest bool
	// TrustOnFirstUse: the evidence is not bound to a secret the agent
	// holds (a cloud's signed instance identity, which anyone who read it
	// can present), so it attests its node once: while the node is
	// recorded the same evidence is refused, but for the key of the node's
	// agent once its SVID expired, and the agent renews in place with its
	// SVID. Evicting the node lets the evidence attest again (SPIRE's
	// TOFU). The caller records the node with store.ClaimNode.
	TrustOnFirstUse bool
}

// KeyHash is the hex SHA-256 of a public key's PKIX DER, the form in which
// a spent join token remembers the agent key it attested.
func KeyHash(spki []byte) string {
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])
}

// NewJoinToken creates a random token and the record to store. The token is
// returned once; only its hash is kept. agentID, if set, is the ID the agent
// will take; it must be a workload ID in td.
func NewJoinToken(td spiffeid.TrustDomain, agentID string, ttl time.Duration, now time.Time) (string, store.JoinToken, error) {
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < time.Second || ttl > 30*24*time.Hour {
		return "", store.JoinToken{}, fmt.Errorf("join token ttl %s is out of range [1s, 720h]", ttl)
	}
	if agentID != "" {
		id, err := ids.ParseWorkloadIDIn(agentID, td)
		if err != nil {
			return "", store.JoinToken{}, fmt.Errorf("join token spiffe id: %w", err)
		}
		if registry.Reserved(id) {
			return "", store.JoinToken{}, fmt.Errorf("join token spiffe id %s: paths under %s/ are reserved for Signet itself", id, registry.ReservedPrefix)
		}
	}
	var raw [20]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", store.JoinToken{}, fmt.Errorf("generate join token: %w", err)
	}
	token := hex.EncodeToString(raw[:])
	hash := HashToken(token)
	return token, store.JoinToken{
		Hash:      hash,
		ID:        hash[:16],
		SPIFFEID:  agentID,
		ExpiresAt: now.Add(ttl),
		CreatedAt: now,
	}, nil
}

// HashToken is the stored form of a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// JoinTokens reads join tokens without spending them.
type JoinTokens interface {
	GetJoinToken(ctx context.Context, hash string, now time.Time) (store.JoinToken, error)
}

// AttestJoinToken checks token, presented with the agent key keyHash
// (KeyHash of its CSR's key), and names the agent. It does not spend the
// token: the caller does, with the node's record (Result.JoinTokenHash). A
// token already spent is refused, except to the key that spent it, until
// it expires (Result.JoinTokenRetry).
func AttestJoinToken(ctx context.Context, tokens JoinTokens, td spiffeid.TrustDomain, token, keyHash string, now time.Time) (Result, error) {
	if token == "" {
		return Result{}, ErrTokenInvalid
	}
	hash := HashToken(token)
	rec, err := tokens.GetJoinToken(ctx, hash, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Result{}, ErrTokenInvalid
	case errors.Is(err, store.ErrExpired):
		return Result{}, ErrTokenExpired
	case err != nil:
		return Result{}, fmt.Errorf("read join token: %w", err)
	}
	if rec.SpentKey != "" && (keyHash == "" || rec.SpentKey != keyHash) {
		return Result{}, ErrTokenInvalid
	}
	id, err := agentID(td, rec)
	if err != nil {
		return Result{}, err
	}
	return Result{
		AgentID:        id,
		Type:           JoinTokenType,
		Selectors:      []selector.Selector{{Type: JoinTokenType, Value: rec.ID}},
		JoinTokenHash:  hash,
		JoinTokenRetry: rec.SpentKey != "",
	}, nil
}

// AgentID is the SPIFFE ID an agent attesting with the token rec takes.
func AgentID(td spiffeid.TrustDomain, rec store.JoinToken) (spiffeid.ID, error) {
	return agentID(td, rec)
}

func agentID(td spiffeid.TrustDomain, rec store.JoinToken) (spiffeid.ID, error) {
	if rec.SPIFFEID != "" {
		return ids.ParseWorkloadIDIn(rec.SPIFFEID, td)
	}
	return spiffeid.FromSegments(td, "agent", JoinTokenType, rec.ID)
}
