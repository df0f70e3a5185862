package nodeattest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server/store"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestJoinTokens(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "s.db"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now()
	issue := func(agentID string, ttl time.Duration) string {
		tok, rec, err := NewJoinToken(td, agentID, ttl, now)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(rec.Hash, tok) || rec.Hash == tok || len(tok) < 32 {
			t.Fatalf("token %q stored as %q", tok, rec.Hash)
		}
		if err := st.CreateJoinToken(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return tok
	}

	tok := issue("", 0)
	res, err := AttestJoinToken(ctx, st, td, tok, "key1", now)
	if err != nil || res.JoinTokenRetry || res.CanReattest {
		t.Fatalf("first use: %+v, %v (a spent token cannot attest again)", res, err)
	}
	if !strings.HasPrefix(res.AgentID.String(), "spiffe://example.org/agent/join_token/") || strings.Contains(res.AgentID.String(), tok) ||
		res.JoinTokenHash != HashToken(tok) {
		t.Fatalf("agent ID %s, token hash %q", res.AgentID, res.JoinTokenHash)
	}
	// Checking does not spend the token, whatever the key; recording the
	// node does, for its key.
	if res, err := AttestJoinToken(ctx, st, td, tok, "key2", now); err != nil || res.JoinTokenRetry {
		t.Fatalf("checked again before it was spent: %+v, %v", res, err)
	}
	if err := st.UpsertNodeSpendingToken(ctx, store.Node{SPIFFEID: res.AgentID.String(), AttestationType: JoinTokenType}, res.JoinTokenHash, "key1", now); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"key2", ""} {
		if _, err := AttestJoinToken(ctx, st, td, tok, key, now); !errors.Is(err, ErrTokenInvalid) {
			t.Fatalf("second use with key %q: %v, want ErrTokenInvalid", key, err)
		}
	}
	// The key that spent it may ask again (its answer was lost), as the
	// same agent, until the token expires.
	if again, err := AttestJoinToken(ctx, st, td, tok, "key1", now); err != nil || !again.JoinTokenRetry || again.AgentID != res.AgentID {
		t.Fatalf("retry by the spending key: %+v, %v", again, err)
	}
	if _, err := AttestJoinToken(ctx, st, td, tok, "key1", now.Add(DefaultJoinTokenTTL)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("retry after expiry: %v, want ErrTokenExpired", err)
	}
	expiring := issue("spiffe://example.org/agent/x", time.Minute)
	if _, err := AttestJoinToken(ctx, st, td, expiring, "k", now.Add(2*time.Minute)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired: %v, want ErrTokenExpired", err)
	}
	named := issue("spiffe://example.org/agent/x", time.Minute)
	if res, err := AttestJoinToken(ctx, st, td, named, "k", now); err != nil || res.AgentID.String() != "spiffe://example.org/agent/x" {
		t.Fatalf("named token: %v %v", res.AgentID, err)
	}
	for _, bad := range []struct {
		id  string
		ttl time.Duration
	}{{"spiffe://other.org/a", 0}, {"spiffe://example.org/a/", 0}, {"", time.Hour * 24 * 365}, {"", -time.Second}, {"spiffe://example.org/signet/server", 0}} {
		if _, _, err := NewJoinToken(td, bad.id, bad.ttl, now); err == nil {
			t.Errorf("NewJoinToken(%q, %s) succeeded", bad.id, bad.ttl)
		}
	}
	if _, err := AttestJoinToken(ctx, st, td, "", "k", now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("empty token: %v", err)
	}
}
