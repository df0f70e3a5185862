package store

import (
	"errors"
	"testing"
	"time"
)

// ClaimNode records a node only when its ID is free or its agent's key is
// presented after its SVID expired: a recorded node claimed with another
// key (TOFU evidence replayed), before its SVID expired, a banned one or
// one of another type is refused and left as it was, on either store; an
// eviction frees the ID. The key of the node's current SVID, or of the
// previous one until it is retired, reclaims it. Of many racing claims of one ID with different keys, over
// two connections, exactly one wins.
func TestClaimNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		now := time.Now().Truncate(time.Second)
		later := now.Add(2 * time.Hour) // the node's SVIDs have expired
		n := Node{SPIFFEID: "spiffe://example.org/agent/aws_iid/111122223333/us-east-1/i-1", AttestationType: "aws_iid",
			SerialNumber: "0a", ExpiresAt: now.Add(time.Hour), AttestedAt: now, AgentKeyHash: "k1"}
		if reclaimed, err := s.ClaimNode(ctx, n, now); err != nil || reclaimed {
			t.Fatalf("ClaimNode of a free ID: reclaimed %v, %v", reclaimed, err)
		}
		if got, err := s.GetNode(ctx, n.SPIFFEID); err != nil || got.SerialNumber != "0a" || got.CanReattest || got.AgentKeyHash != "k1" {
			t.Fatalf("claimed node = %+v, %v", got, err)
		}
		rev := revision(t, s)
		replay := n
		replay.SerialNumber, replay.AgentKeyHash = "0b", "thief"
		if _, err := s.ClaimNode(ctx, replay, later); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("ClaimNode of a recorded node with another key: %v, want ErrAlreadyExists", err)
		}
		other := n
		other.AttestationType = "join_token"
		var typeErr *AttestationTypeError
		if _, err := s.ClaimNode(ctx, other, later); !errors.As(err, &typeErr) || typeErr.Held != "aws_iid" {
			t.Fatalf("ClaimNode of another type: %v, want an AttestationTypeError naming aws_iid", err)
		}
		noKey := n
		noKey.AgentKeyHash = ""
		if _, err := s.ClaimNode(ctx, noKey, later); err == nil {
			t.Fatal("ClaimNode without an agent key succeeded")
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.SerialNumber != "0a" || got.AgentKeyHash != "k1" {
			t.Fatalf("refused claims changed the node: %+v", got)
		}
		if r := revision(t, s); r != rev {
			t.Errorf("refused claims bumped the revision %d -> %d", rev, r)
		}

		// Its own key reclaims it only once its SVID has expired: before,
		// its agent renews in place.
		if _, err := s.ClaimNode(ctx, n, now); !errors.Is(err, ErrSVIDValid) {
			t.Fatalf("ClaimNode with the node's key before its SVID expired: %v, want ErrSVIDValid", err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.SerialNumber != "0a" {
			t.Fatalf("a refused reclaim changed the node: %+v", got)
		}

		// Renewed in place with key k2: k1 is the previous SVID's key and
		// still reclaims, as does k2; once retired, k1 no longer does.
		if err := s.RenewNode(ctx, n.SPIFFEID, NodeRenewal{PresentedSerial: "0a", Serial: "0c", ExpiresAt: now.Add(time.Hour), AgentKeyHash: "k2"}); err != nil {
			t.Fatal(err)
		}
		back := n
		back.SerialNumber = "0d"
		if reclaimed, err := s.ClaimNode(ctx, back, later); err != nil || !reclaimed {
			t.Fatalf("ClaimNode with the previous SVID's key: reclaimed %v, %v", reclaimed, err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.SerialNumber != "0d" || got.PrevSerialNumber != "" || got.AgentKeyHash != "k1" || got.PrevAgentKeyHash != "" {
			t.Fatalf("reclaimed node = %+v, want serial 0d, key k1, nothing previous", got)
		}
		if err := s.RenewNode(ctx, n.SPIFFEID, NodeRenewal{PresentedSerial: "0d", Serial: "0e", ExpiresAt: now.Add(time.Hour), AgentKeyHash: "k3"}); err != nil {
			t.Fatal(err)
		}
		if changed, err := s.RetirePrevSerial(ctx, n.SPIFFEID, "0e"); err != nil || !changed {
			t.Fatalf("retire: %v %v", changed, err)
		}
		if _, err := s.ClaimNode(ctx, back, later); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("ClaimNode with a retired SVID's key: %v, want ErrAlreadyExists", err)
		}
		current := n
		current.AgentKeyHash, current.SerialNumber = "k3", "0f"
		if reclaimed, err := s.ClaimNode(ctx, current, later); err != nil || !reclaimed {
			t.Fatalf("ClaimNode with the current SVID's key: reclaimed %v, %v", reclaimed, err)
		}

		if err := s.BanNode(ctx, n.SPIFFEID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ClaimNode(ctx, current, later); !errors.Is(err, ErrBanned) {
			t.Fatalf("ClaimNode of a banned node with its key: %v, want ErrBanned", err)
		}
		if err := s.DeleteNode(ctx, n.SPIFFEID); err != nil {
			t.Fatal(err)
		}
		if reclaimed, err := s.ClaimNode(ctx, replay, later); err != nil || reclaimed {
			t.Fatalf("ClaimNode after the eviction: reclaimed %v, %v", reclaimed, err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.SerialNumber != "0b" || got.Banned || got.AgentKeyHash != "thief" {
			t.Fatalf("node claimed after the eviction = %+v", got)
		}

		// The race: one wins, the others are told the node exists.
		stores := []Store{s, openStore(t, url)}
		oneWins(t, 16, ErrAlreadyExists, "racing claims recorded the node", func(i int) error {
			race := Node{SPIFFEID: "spiffe://example.org/agent/aws_iid/111122223333/us-east-1/i-race", AttestationType: "aws_iid", AttestedAt: now,
				AgentKeyHash: string(rune('a' + i))}
			_, err := stores[i%len(stores)].ClaimNode(ctx, race, now)
			return err
		})
	})
}
