package store

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// CreateNode records a node only when its ID is free: a recorded node
// (TOFU evidence replayed), a banned one or one of another type is
// refused and left as it was, on either store; an eviction frees the ID.
// Of many racing creates of one ID, over two connections, exactly one
// wins.
func TestCreateNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		ctx, s := testCtx(t), openStore(t, url)
		now := time.Now().Truncate(time.Second)
		n := Node{SPIFFEID: "spiffe://example.org/agent/aws_iid/111122223333/us-east-1/i-1", AttestationType: "aws_iid",
			SerialNumber: "0a", ExpiresAt: now.Add(time.Hour), AttestedAt: now}
		if err := s.CreateNode(ctx, n); err != nil {
			t.Fatalf("CreateNode: %v", err)
		}
		if got, err := s.GetNode(ctx, n.SPIFFEID); err != nil || got.SerialNumber != "0a" || got.CanReattest {
			t.Fatalf("created node = %+v, %v", got, err)
		}
		rev := revision(t, s)
		again := n
		again.SerialNumber = "0b"
		if err := s.CreateNode(ctx, again); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("CreateNode of a recorded node: %v, want ErrAlreadyExists", err)
		}
		other := again
		other.AttestationType = "join_token"
		var typeErr *AttestationTypeError
		if err := s.CreateNode(ctx, other); !errors.As(err, &typeErr) || typeErr.Held != "aws_iid" {
			t.Fatalf("CreateNode of another type: %v, want an AttestationTypeError naming aws_iid", err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.SerialNumber != "0a" {
			t.Fatalf("refused creates changed the node: %+v", got)
		}
		if r := revision(t, s); r != rev {
			t.Errorf("refused creates bumped the revision %d -> %d", rev, r)
		}
		if err := s.BanNode(ctx, n.SPIFFEID); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateNode(ctx, again); !errors.Is(err, ErrBanned) {
			t.Fatalf("CreateNode of a banned node: %v, want ErrBanned", err)
		}
		if err := s.DeleteNode(ctx, n.SPIFFEID); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateNode(ctx, again); err != nil {
			t.Fatalf("CreateNode after the eviction: %v", err)
		}
		if got, _ := s.GetNode(ctx, n.SPIFFEID); got.SerialNumber != "0b" || got.Banned {
			t.Fatalf("node created after the eviction = %+v", got)
		}

		// The race: one wins, the others are told the node exists.
		stores := []Store{s, openStore(t, url)}
		race := Node{SPIFFEID: "spiffe://example.org/agent/aws_iid/111122223333/us-east-1/i-race", AttestationType: "aws_iid", AttestedAt: now}
		var wg sync.WaitGroup
		start := make(chan struct{})
		results := make(chan error, 16)
		for i := range 16 {
			wg.Go(func() {
				<-start
				results <- stores[i%len(stores)].CreateNode(ctx, race)
			})
		}
		close(start)
		wg.Wait()
		close(results)
		wins := 0
		for err := range results {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrAlreadyExists):
				t.Errorf("racing CreateNode: %v, want nil or ErrAlreadyExists", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d of 16 racing creates recorded the node, want exactly 1", wins)
		}
	})
}
