package adminapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/audit"
	"github.com/signetid/signet/server/k8sreg"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// CreateEntry validates and stores a new entry; nothing is stored on error.
func (s *Service) CreateEntry(ctx context.Context, req *api.CreateEntryRequest) (*api.Entry, error) {
	e, err := s.validNewEntry(req.GetEntry())
	if err != nil {
		return nil, err
	}
	e.Revision, e.CreatedAt = 0, s.cfg.Now()
	var rev int64
	created, err := s.cfg.Store.CreateEntry(store.WithCommitRevision(ctx, &rev), e)
	if err != nil {
		return nil, s.createError(ctx, "create entry", []registry.Entry{e}, err)
	}
	s.publish(ctx, rev, []registry.Entry{created})
	s.cfg.Logger.Info("entry created", "entry_id", created.ID, "spiffe_id", created.SPIFFEID.String(), "parent_id", created.ParentID.String(), "selectors", selector.Strings(created.Selectors))
	return registry.ToProto(&created), nil
}

// MaxBatch bounds one BatchCreateEntries call.
const MaxBatch = 10000

// BatchCreateEntries validates every entry and stores them in one
// transaction; one bad entry fails the call and nothing is stored.
func (s *Service) BatchCreateEntries(ctx context.Context, req *api.BatchCreateEntriesRequest) (*api.BatchCreateEntriesResponse, error) {
	if len(req.Entries) == 0 {
		return nil, status.Error(codes.InvalidArgument, "batch create: no entries")
	}
	if len(req.Entries) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "batch create: %d entries; the limit is %d", len(req.Entries), MaxBatch)
	}
	rec := audit.FromContext(ctx)
	entries := make([]registry.Entry, len(req.Entries))
	// Every entry is checked, so that each gets its own audit verdict; the
	// call fails with the first refusal.
	var verdicts []error
	var refused error
	for i, in := range req.Entries {
		e, err := s.validNewEntry(in)
		if err != nil {
			err = status.Errorf(codes.InvalidArgument, "batch create: entry %d (%s): %s", i, in.GetSpiffeId(), status.Convert(err).Message())
			if verdicts == nil {
				verdicts = make([]error, len(req.Entries))
				refused = err
			}
			verdicts[i] = err
			continue
		}
		entries[i] = e
	}
	if refused != nil {
		auditBatch(rec, req.Entries, verdicts, nil)
		return nil, refused
	}
	var rev int64
	created, err := s.cfg.Store.CreateEntries(store.WithCommitRevision(ctx, &rev), entries)
	if err != nil {
		auditBatch(rec, req.Entries, nil, nil)
		return nil, s.createError(ctx, "batch create", entries, err)
	}
	auditBatch(rec, req.Entries, nil, created)
	s.publish(ctx, rev, created)
	s.cfg.Logger.Info("entries created", "count", len(created))
	resp := &api.BatchCreateEntriesResponse{Entries: make([]*api.Entry, len(created))}
	for i := range created {
		resp.Entries[i] = registry.ToProto(&created[i])
	}
	return resp, nil
}

// createError is storeError for a create of entries, naming, when the
// store refused a duplicate, the entry at fault and what it collides with
// (another entry of the call, or a stored one): a restore of hundreds of
// entries otherwise says only that one of them exists.
func (s *Service) createError(ctx context.Context, what string, entries []registry.Entry, err error) error {
	if !errors.Is(err, store.ErrAlreadyExists) {
		return storeError(what, err)
	}
	name := func(i int) string {
		if len(entries) == 1 {
			return fmt.Sprintf("%s %s", what, entries[i].SPIFFEID)
		}
		return fmt.Sprintf("%s: entry %d (%s)", what, i, entries[i].SPIFFEID)
	}
	byID, byIdentity := map[string]int{}, map[string]int{}
	for i, e := range entries {
		if j, ok := byID[e.ID]; ok && e.ID != "" {
			return status.Errorf(codes.AlreadyExists, "%s: entry %d has the same ID %s", name(i), j, e.ID)
		}
		if j, ok := byIdentity[entryIdentity(&e)]; ok {
			return status.Errorf(codes.AlreadyExists, "%s: entry %d has the same SPIFFE ID, parent and selectors", name(i), j)
		}
		byID[e.ID], byIdentity[entryIdentity(&e)] = i, i
	}
	stored, lerr := s.cfg.Store.ListEntries(ctx)
	if lerr != nil {
		return storeError(what, err)
	}
	for k := range stored {
		o := &stored[k]
		if i, ok := byID[o.ID]; ok {
			return status.Errorf(codes.AlreadyExists, "%s: ID %s is taken (by the entry for %s)", name(i), o.ID, o.SPIFFEID)
		}
		if i, ok := byIdentity[entryIdentity(o)]; ok {
			return status.Errorf(codes.AlreadyExists, "%s: entry %s already has this SPIFFE ID, parent and selectors", name(i), o.ID)
		}
	}
	return storeError(what, err) // gone since: the caller may retry
}

// entryIdentity is what the store keeps unique besides the ID: SPIFFE ID,
// parent (or node alias) and selectors (sorted: entries here are normalized).
func entryIdentity(e *registry.Entry) string {
	return fmt.Sprintf("%s\x00%s\x00%t\x00%q", e.SPIFFEID, e.ParentID, e.Node, selector.Strings(e.Selectors))
}

// updatable names the fields an update mask may list.
var updatable = []string{"spiffe_id", "parent_id", "node", "selectors", "x509_ttl", "jwt_ttl", "dns_names", "hint", "federates_with", "admin", "downstream", "expires_at"}

// UpdateEntry replaces the masked fields (all when the mask is empty). The
// merge runs inside the store's write transaction, so two admins updating
// different fields at once both keep their change.
func (s *Service) UpdateEntry(ctx context.Context, req *api.UpdateEntryRequest) (*api.Entry, error) {
	in := req.GetEntry()
	if in.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "update entry: id is required")
	}
	if err := notManaged("update", in.Id); err != nil {
		return nil, err
	}
	mask := req.UpdateMask
	if len(mask) == 0 {
		mask = updatable
	}
	for _, f := range mask {
		if !slices.Contains(updatable, f) {
			return nil, status.Errorf(codes.InvalidArgument, "update entry: unknown field %q in mask (known: %s)", f, strings.Join(updatable, ", "))
		}
	}
	var rev int64
	updated, err := s.cfg.Store.ModifyEntry(store.WithCommitRevision(ctx, &rev), in.Id, func(cur registry.Entry) (registry.Entry, error) {
		e, err := s.validEntry(mergeEntry(registry.ToProto(&cur), in, mask))
		if err == nil && slices.Contains(mask, "expires_at") {
			err = s.notExpired(e)
		}
		return e, err
	})
	if _, isStatus := status.FromError(err); err != nil && isStatus {
		return nil, err // validEntry's verdict
	}
	if err != nil {
		return nil, storeError("update entry "+in.Id, err)
	}
	s.publish(ctx, rev, []registry.Entry{updated})
	s.cfg.Logger.Info("entry updated", "entry_id", updated.ID, "spiffe_id", updated.SPIFFEID.String(), "revision", updated.Revision)
	return registry.ToProto(&updated), nil
}

// mergeEntry copies the masked fields of in onto cur.
func mergeEntry(cur, in *api.Entry, mask []string) *api.Entry {
	for _, f := range mask {
		switch f {
		case "spiffe_id":
			cur.SpiffeId = in.SpiffeId
		case "parent_id":
			cur.ParentId = in.ParentId
		case "node":
			cur.Node = in.Node
		case "selectors":
			cur.Selectors = in.Selectors
		case "x509_ttl":
			cur.X509TtlSeconds = in.X509TtlSeconds
		case "jwt_ttl":
			cur.JwtTtlSeconds = in.JwtTtlSeconds
		case "dns_names":
			cur.DnsNames = in.DnsNames
		case "hint":
			cur.Hint = in.Hint
		case "federates_with":
			cur.FederatesWith = in.FederatesWith
		case "admin":
			cur.Admin = in.Admin
		case "downstream":
			cur.Downstream = in.Downstream
		case "expires_at":
			cur.ExpiresAt = in.ExpiresAt
		}
	}
	return cur
}

// DeleteEntry removes an entry.
func (s *Service) DeleteEntry(ctx context.Context, req *api.DeleteEntryRequest) (*api.DeleteEntryResponse, error) {
	if req.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "delete entry: id is required")
	}
	if err := notManaged("delete", req.Id); err != nil {
		return nil, err
	}
	var rev int64
	if err := s.cfg.Store.DeleteEntry(store.WithCommitRevision(ctx, &rev), req.Id); err != nil {
		return nil, storeError("delete entry "+req.Id, err)
	}
	s.publish(ctx, rev, nil, req.Id)
	s.cfg.Logger.Info("entry deleted", "entry_id", req.Id)
	return &api.DeleteEntryResponse{}, nil
}

// BatchDeleteEntries deletes every entry named in one transaction; one
// refused ID fails the call and nothing is deleted.
func (s *Service) BatchDeleteEntries(ctx context.Context, req *api.BatchDeleteEntriesRequest) (*api.BatchDeleteEntriesResponse, error) {
	if len(req.Ids) == 0 {
		return nil, status.Error(codes.InvalidArgument, "batch delete: no entry IDs")
	}
	if len(req.Ids) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "batch delete: %d entries; the limit is %d", len(req.Ids), MaxBatch)
	}
	seen := make(map[string]bool, len(req.Ids))
	for i, id := range req.Ids {
		if id == "" || seen[id] {
			return nil, status.Errorf(codes.InvalidArgument, "batch delete: ID %d %q is empty or repeated", i, id)
		}
		seen[id] = true
		if err := notManaged("delete", id); err != nil {
			return nil, err
		}
	}
	var rev int64
	if err := s.cfg.Store.DeleteEntries(store.WithCommitRevision(ctx, &rev), req.Ids); err != nil {
		if errors.Is(err, store.ErrNotFound) { // the store's error names the ID
			return nil, status.Errorf(codes.NotFound, "batch delete, nothing deleted: %v", err)
		}
		return nil, storeError("batch delete (nothing deleted)", err)
	}
	s.publish(ctx, rev, nil, req.Ids...)
	s.cfg.Logger.Info("entries deleted", "count", len(req.Ids), "entry_ids", req.Ids)
	return &api.BatchDeleteEntriesResponse{}, nil
}

// notManaged refuses to change an entry the Kubernetes controller owns: it
// would put it back (or delete it) at its next reconcile.
func notManaged(op, id string) error {
	if k8sreg.Owned(id) {
		return status.Errorf(codes.FailedPrecondition, "%s entry %s: it is managed by the Kubernetes controller; change the ClusterSPIFFEID or ClusterStaticEntry it comes from instead", op, id)
	}
	return nil
}

// GetEntry returns one entry.
func (s *Service) GetEntry(ctx context.Context, req *api.GetEntryRequest) (*api.Entry, error) {
	if req.Id == "" {
		return nil, status.Error(codes.InvalidArgument, "show entry: id is required")
	}
	e, err := s.cfg.Store.GetEntry(ctx, req.Id)
	if err != nil {
		return nil, storeError("entry "+req.Id, err)
	}
	return registry.ToProto(&e), nil
}

// ListEntries returns the entries matching every given filter, by SPIFFE ID.
func (s *Service) ListEntries(ctx context.Context, req *api.ListEntriesRequest) (*api.ListEntriesResponse, error) {
	f, err := newEntryFilter(req)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "list entries: %v", err)
	}
	entries, err := s.cfg.Store.ListEntries(ctx)
	if err != nil {
		return nil, storeError("list entries", err)
	}
	resp := &api.ListEntriesResponse{}
	for i := range entries {
		if f.keep(&entries[i]) {
			resp.Entries = append(resp.Entries, registry.ToProto(&entries[i]))
		}
	}
	slices.SortFunc(resp.Entries, func(a, b *api.Entry) int {
		if c := strings.Compare(a.SpiffeId, b.SpiffeId); c != 0 {
			return c
		}
		return strings.Compare(a.Id, b.Id)
	})
	return resp, nil
}

// validNewEntry is validEntry for an entry being created: it must not have
// expired already, and an ID the caller chose (SPIRE's custom entry IDs:
// a restored entry keeps its ID) must be well formed and not one of the
// Kubernetes controller's, which it would take for its own.
func (s *Service) validNewEntry(in *api.Entry) (registry.Entry, error) {
	e, err := s.validEntry(in)
	if err != nil {
		return e, err
	}
	if e.ID != "" {
		if err := registry.CheckEntryID(e.ID); err != nil {
			return e, status.Error(codes.InvalidArgument, err.Error())
		}
		if k8sreg.Owned(e.ID) {
			return e, status.Errorf(codes.InvalidArgument, "entry ID %s: IDs starting %q belong to the Kubernetes controller, which creates its entries itself; leave such entries out (or the ID, for a new one)", e.ID, k8sreg.OwnedIDPrefix)
		}
	}
	return e, s.notExpired(e)
}

// notExpired refuses an expires_at that has passed: such an entry would be
// stored and never served, which is surely not what was meant.
func (s *Service) notExpired(e registry.Entry) error {
	if e.Expired(s.cfg.Now()) {
		return status.Errorf(codes.InvalidArgument, "entry: expires_at %s is in the past", e.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// validEntry converts, validates and normalizes an API entry.
func (s *Service) validEntry(in *api.Entry) (registry.Entry, error) {
	e, err := registry.FromProto(in)
	if err != nil {
		return registry.Entry{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := e.Validate(s.cfg.TrustDomain); err != nil {
		return registry.Entry{}, status.Error(codes.InvalidArgument, err.Error())
	}
	e.Normalize()
	return e, nil
}
