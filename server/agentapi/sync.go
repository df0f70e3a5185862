package agentapi

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/catalog"
	"github.com/signetid/signet/server/registry"
)

// Sync pushes the agent its authorized entries and the bundles: at once, and
// again whenever the catalog changes in a way that concerns this agent (or an
// entry it serves expires). Eviction ends the stream with PermissionDenied.
func (s *Service) Sync(_ *api.SyncRequest, stream api.AgentService_SyncServer) error {
	ctx := stream.Context()
	var last [sha256.Size]byte
	for {
		snap, changed := s.cfg.Catalog.Current()
		c, snap, err := s.authenticate(ctx, snap)
		if err != nil {
			return err
		}
		now := s.cfg.Now()
		entries, until := snap.Entries.AuthorizedUntil(c.ID, c.Node.Selectors, now)
		resp := s.syncResponse(snap, entries)
		if sum := digest(resp); sum != last {
			if err := stream.Send(resp); err != nil {
				return err
			}
			last = sum
		}
		// Wake when an entry or a granting node alias expires, or when the
		// agent SVID this stream was opened with expires (authenticate then
		// ends the stream).
		next := c.NotAfter.Add(time.Millisecond)
		if !until.IsZero() && until.Before(next) {
			next = until
		}
		timer := time.NewTimer(next.Sub(now))
		expiry := timer.C
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		case <-expiry:
		}
		timer.Stop()
	}
}

func (s *Service) syncResponse(snap *catalog.Snapshot, entries []*registry.Entry) *api.SyncResponse {
	resp := &api.SyncResponse{
		Revision: snap.Revision,
		Bundle:   BundleToProto(snap.OwnBundle(s.cfg.TrustDomain), s.refreshHint()),
		Entries:  make([]*api.Entry, len(entries)),
	}
	feds := map[string]bool{}
	for i, e := range entries {
		resp.Entries[i] = registry.ToProto(e)
		for _, td := range e.FederatesWith {
			feds[td.Name()] = true
		}
	}
	slices.SortFunc(resp.Entries, func(a, b *api.Entry) int { return strings.Compare(a.Id, b.Id) })
	names := make([]string, 0, len(feds))
	for td := range feds {
		names = append(names, td)
	}
	slices.Sort(names)
	for _, td := range names {
		if b, ok := snap.Bundles[td]; ok {
			resp.FederatedBundles = append(resp.FederatedBundles, BundleToProto(b, s.refreshHint()))
		}
	}
	return resp
}

// digest summarizes what the agent would see, so unrelated catalog changes
// (another agent's entries) do not resend. IDs and revisions stand for the
// entries' content: the store never gives one ID a revision twice, not even
// across deletion and re-creation (store.Store.CreateEntry), which is much
// cheaper than hashing the content on every wake-up of every stream.
func digest(resp *api.SyncResponse) [sha256.Size]byte {
	h := sha256.New()
	var buf [8]byte
	for _, e := range resp.Entries {
		h.Write([]byte(e.Id))
		binary.BigEndian.PutUint64(buf[:], uint64(e.Revision))
		h.Write(buf[:])
	}
	for _, b := range append([]*api.Bundle{resp.Bundle}, resp.FederatedBundles...) {
		h.Write([]byte(b.TrustDomain))
		binary.BigEndian.PutUint64(buf[:], uint64(b.Sequence))
		h.Write(buf[:])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}
