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
	res, err := AttestJoinToken(ctx, st, td, tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.AgentID.String(), "spiffe://example.org/agent/join_token/") || strings.Contains(res.AgentID.String(), tok) ||
		res.JoinTokenHash != HashToken(tok) {
		t.Fatalf("agent ID %s, token hash %q", res.AgentID, res.JoinTokenHash)
	}
	// Checking does not spend the token; recording the node does.
	if _, err := AttestJoinToken(ctx, st, td, tok, now); err != nil {
		t.Fatalf("checked again before it was spent: %v", err)
	}
	if err := st.UpsertNodeSpendingToken(ctx, store.Node{SPIFFEID: res.AgentID.String(), AttestationType: JoinTokenType}, res.JoinTokenHash, now); err != nil {
		t.Fatal(err)
	}
	if _, err := AttestJoinToken(ctx, st, td, tok, now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("second use: %v, want ErrTokenInvalid", err)
	}
	expiring := issue("spiffe://example.org/agent/x", time.Minute)
	if _, err := AttestJoinToken(ctx, st, td, expiring, now.Add(2*time.Minute)); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired: %v, want ErrTokenExpired", err)
	}
	named := issue("spiffe://example.org/agent/x", time.Minute)
	if res, err := AttestJoinToken(ctx, st, td, named, now); err != nil || res.AgentID.String() != "spiffe://example.org/agent/x" {
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
	if _, err := AttestJoinToken(ctx, st, td, "", now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("empty token: %v", err)
	}
}
