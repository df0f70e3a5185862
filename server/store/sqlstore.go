package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
)

// errNoRows is what both drivers' "no rows" errors become.
var errNoRows = errors.New("no rows")

// querier is the part of a transaction the shared SQL needs; both drivers
// are adapted to it. Queries use $1, $2... placeholders, which both take.
type querier interface {
	exec(ctx context.Context, sql string, args ...any) (int64, error)
	query(ctx context.Context, sql string, args ...any) (rows, error)
	queryRow(ctx context.Context, sql string, args ...any) scanner
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type scanner interface {
	Scan(dest ...any) error
}

// queryAll runs a query and scans every row with scan. The rows are closed
// before it returns, so the caller may issue the next query on q.
func queryAll[T any](ctx context.Context, q querier, scan func(scanner) (T, error), sql string, args ...any) ([]T, error) {
	rs, err := q.query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rs.Err()
}

// tx is a write transaction. Code that changes what Revision covers calls
// bumpRevision, which marks the transaction changed: subscribers are then
// signalled once it commits.
type tx struct {
	querier
	changed bool
	// rev is the store revision this transaction commits, once bumped: a
	// transaction that writes several things (a relationship and its
	// bundle) moves the revision once.
	rev int64
}

// backend is one engine's connection handling.
type backend interface {
	// write runs fn in a transaction serialized with every other write to
	// the store, from any server sharing it, and commits it if fn returns
	// nil. It reports whether fn marked the transaction changed.
	write(ctx context.Context, fn func(*tx) error) (changed bool, err error)
	// read runs fn in a read-only transaction seeing one snapshot.
	read(ctx context.Context, fn func(querier) error) error
	isUniqueViolation(err error) bool
	ping(ctx context.Context) error
	close() error
}

// sqlStore implements Store over either backend.
type sqlStore struct {
	db      backend
	log     *slog.Logger
	changes *broadcaster
	// signalCommits: signal subscribers after each local commit. PostgreSQL
	// leaves it off, since its listener hears this server's NOTIFYs too and
	// a second signal per change would only cause needless work.
	signalCommits bool
}

var _ Store = (*sqlStore)(nil)

func (s *sqlStore) write(ctx context.Context, fn func(*tx) error) error {
	changed, err := s.db.write(ctx, fn)
	if err == nil && changed && s.signalCommits {
		s.changes.signal()
	}
	return err
}

func bumpRevision(ctx context.Context, t *tx) error {
	_, err := nextRevision(ctx, t)
	return err
}

// nextRevision is bumpRevision returning the store revision this
// transaction commits.
func nextRevision(ctx context.Context, t *tx) (int64, error) {
	if t.rev != 0 {
		return t.rev, nil
	}
	t.changed = true
	var rev int64
	if err := t.queryRow(ctx, `UPDATE store_revision SET value = value + 1 WHERE id = 1 RETURNING value`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("bump revision: %w", err)
	}
	if out, ok := ctx.Value(commitRevisionKey{}).(*int64); ok {
		*out = rev
	}
	t.rev = rev
	return rev, nil
}

// Times are stored as Unix nanoseconds, 0 for the zero time.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// roundTrip returns t as the store will give it back.
func roundTrip(t time.Time) time.Time { return fromNanos(toNanos(t)) }

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// --- entries ---

// normalizeEntry returns a copy of e with sorted, de-duplicated lists (empty
// ones nil) and times as stored, without touching the caller's slices.
func normalizeEntry(e registry.Entry) registry.Entry {
	e.Selectors = slices.Clone(e.Selectors)
	e.DNSNames = slices.Clone(e.DNSNames)
	e.FederatesWith = slices.Clone(e.FederatesWith)
	e.Normalize()
	if len(e.Selectors) == 0 {
		e.Selectors = nil
	}
	if len(e.DNSNames) == 0 {
		e.DNSNames = nil
	}
	if len(e.FederatesWith) == 0 {
		e.FederatesWith = nil
	}
	e.ExpiresAt = roundTrip(e.ExpiresAt)
	e.CreatedAt = roundTrip(e.CreatedAt)
	return e
}

// selectorsHash identifies a sorted selector set unambiguously (lengths are
// included, so values holding separators cannot collide).
func selectorsHash(sels []selector.Selector) string {
	h := sha256.New()
	var n [8]byte
	for _, s := range sels {
		for _, f := range []string{s.Type, s.Value} {
			binary.BigEndian.PutUint64(n[:], uint64(len(f)))
			h.Write(n[:])
			h.Write([]byte(f))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func encodeList(l []string) (string, error) {
	if len(l) == 0 {
		return "[]", nil
	}
	b, err := json.Marshal(l)
	return string(b), err
}

func decodeList(s string) ([]string, error) {
	if s == "[]" || s == "" {
		return nil, nil
	}
	var l []string
	err := json.Unmarshal([]byte(s), &l)
	return l, err
}

func trustDomainNames(tds []spiffeid.TrustDomain) []string {
	names := make([]string, len(tds))
	for i, td := range tds {
		names[i] = td.Name()
	}
	return names
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// entryArgs returns the entries row values after id, in entryColumns order.
func entryArgs(e registry.Entry) ([]any, error) {
	dns, err := encodeList(e.DNSNames)
	if err != nil {
		return nil, fmt.Errorf("encode dns names: %w", err)
	}
	feds, err := encodeList(trustDomainNames(e.FederatesWith))
	if err != nil {
		return nil, fmt.Errorf("encode federates_with: %w", err)
	}
	return []any{
		idString(e.SPIFFEID), idString(e.ParentID), boolInt(e.Node), selectorsHash(e.Selectors),
		int64(e.X509TTL), int64(e.JWTTTL), dns, e.Hint, feds, boolInt(e.Admin),
		toNanos(e.ExpiresAt), e.Revision, toNanos(e.CreatedAt), boolInt(e.Downstream),
	}, nil
}

const entryColumns = `id, spiffe_id, parent_id, node, selectors_hash, x509_ttl, jwt_ttl, dns_names, hint, federates_with, admin, expires_at, revision, created_at, downstream`

func scanEntry(sc scanner) (registry.Entry, error) {
	var (
		e                                            registry.Entry
		spiffeID, parentID, hash, dns, fed           string
		node, admin, downstream, x509, jwt, exp, crt int64
	)
	if err := sc.Scan(&e.ID, &spiffeID, &parentID, &node, &hash, &x509, &jwt, &dns, &e.Hint, &fed, &admin, &exp, &e.Revision, &crt, &downstream); err != nil {
		return e, err
	}
	var err error
	if e.SPIFFEID, err = spiffeid.FromString(spiffeID); err != nil {
		return e, fmt.Errorf("entry %s: stored spiffe_id %q: %w", e.ID, spiffeID, err)
	}
	if parentID != "" {
		if e.ParentID, err = spiffeid.FromString(parentID); err != nil {
			return e, fmt.Errorf("entry %s: stored parent_id %q: %w", e.ID, parentID, err)
		}
	}
	if e.DNSNames, err = decodeList(dns); err != nil {
		return e, fmt.Errorf("entry %s: stored dns_names: %w", e.ID, err)
	}
	feds, err := decodeList(fed)
	if err != nil {
		return e, fmt.Errorf("entry %s: stored federates_with: %w", e.ID, err)
	}
	for _, name := range feds {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return e, fmt.Errorf("entry %s: stored federates_with %q: %w", e.ID, name, err)
		}
		e.FederatesWith = append(e.FederatesWith, td)
	}
	e.Node, e.Admin, e.Downstream = node != 0, admin != 0, downstream != 0
	e.X509TTL, e.JWTTTL = time.Duration(x509), time.Duration(jwt)
	e.ExpiresAt, e.CreatedAt = fromNanos(exp), fromNanos(crt)
	return e, nil
}

// insertSelectors adds sels to a selector child table in one statement.
func insertSelectors(ctx context.Context, q querier, table, keyColumn, key string, sels []selector.Selector) error {
	if len(sels) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s, type, value) VALUES ", table, keyColumn)
	args := make([]any, 0, 1+2*len(sels))
	args = append(args, key)
	for i, s := range sels {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($1, $%d, $%d)", len(args)+1, len(args)+2)
		args = append(args, s.Type, s.Value)
	}
	_, err := q.exec(ctx, b.String(), args...)
	return err
}

// loadSelectors reads a selector child table: all rows (key == "") or one key's.
func loadSelectors(ctx context.Context, q querier, table, keyColumn, key string) (map[string][]selector.Selector, error) {
	sql := fmt.Sprintf("SELECT %s, type, value FROM %s", keyColumn, table)
	var args []any
	if key != "" {
		sql += fmt.Sprintf(" WHERE %s = $1", keyColumn)
		args = append(args, key)
	}
	rs, err := q.query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := make(map[string][]selector.Selector)
	for rs.Next() {
		var k string
		var s selector.Selector
		if err := rs.Scan(&k, &s.Type, &s.Value); err != nil {
			return nil, err
		}
		out[k] = append(out[k], s)
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	// Sorted in Go: SQL ORDER BY would follow the database's collation.
	for k, sels := range out {
		out[k] = selector.Sort(sels)
	}
	return out, nil
}

// insertEntry inserts a normalized entry with its ID set.
func insertEntry(ctx context.Context, q querier, e registry.Entry) error {
	args, err := entryArgs(e)
	if err != nil {
		return err
	}
	if _, err := q.exec(ctx, `INSERT INTO entries (`+entryColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		append([]any{e.ID}, args...)...); err != nil {
		return err
	}
	return insertSelectors(ctx, q, "entry_selectors", "entry_id", e.ID, e.Selectors)
}

func (s *sqlStore) CreateEntry(ctx context.Context, e registry.Entry) (registry.Entry, error) {
	created, err := s.CreateEntries(ctx, []registry.Entry{e})
	if err != nil {
		return registry.Entry{}, err
	}
	return created[0], nil
}

func (s *sqlStore) CreateEntries(ctx context.Context, es []registry.Entry) ([]registry.Entry, error) {
	if len(es) == 0 {
		return nil, nil
	}
	now := roundTrip(time.Now())
	out := make([]registry.Entry, len(es))
	for i, e := range es {
		e = normalizeEntry(e)
		if e.ID == "" {
			e.ID = uuid.NewString()
		}
		e.CreatedAt = now
		out[i] = e
	}
	what := "create entry " + out[0].SPIFFEID.String()
	if len(out) > 1 {
		what = fmt.Sprintf("create %d entries", len(out))
	}
	err := s.write(ctx, func(t *tx) error {
		// A new entry starts at the store revision that creates it, not at
		// 1: an entry's revision never exceeds the store revision of its
		// last write, so an ID deleted and created again (the Kubernetes
		// controller's IDs are deterministic) never repeats a revision, and
		// agents' Sync streams, which compare IDs and revisions, see it.
		rev, err := nextRevision(ctx, t)
		if err != nil {
			return err
		}
		for i := range out {
			out[i].Revision = rev
			if err := insertEntry(ctx, t, out[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if s.db.isUniqueViolation(err) {
		return nil, fmt.Errorf("%s: an entry with the same ID, or the same SPIFFE ID, parent and selectors, %w", what, ErrAlreadyExists)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

func (s *sqlStore) UpdateEntry(ctx context.Context, e registry.Entry) (registry.Entry, error) {
	return s.ModifyEntry(ctx, e.ID, func(registry.Entry) (registry.Entry, error) { return e, nil })
}

func (s *sqlStore) ModifyEntry(ctx context.Context, id string, fn func(registry.Entry) (registry.Entry, error)) (registry.Entry, error) {
	var out registry.Entry
	var fnErr error
	err := s.write(ctx, func(t *tx) error {
		cur, err := getEntry(ctx, t.querier, id)
		if err != nil {
			return err
		}
		e, err := fn(cur)
		if err != nil {
			fnErr = err
			return err
		}
		e = normalizeEntry(e)
		e.ID, e.Revision, e.CreatedAt = id, cur.Revision+1, cur.CreatedAt
		args, err := entryArgs(e)
		if err != nil {
			return err
		}
		if _, err := t.exec(ctx, `UPDATE entries SET spiffe_id = $2, parent_id = $3, node = $4, selectors_hash = $5,
			x509_ttl = $6, jwt_ttl = $7, dns_names = $8, hint = $9, federates_with = $10, admin = $11,
			expires_at = $12, revision = $13, created_at = $14, downstream = $15 WHERE id = $1`, append([]any{e.ID}, args...)...); err != nil {
			return err
		}
		if _, err := t.exec(ctx, `DELETE FROM entry_selectors WHERE entry_id = $1`, e.ID); err != nil {
			return err
		}
		if err := insertSelectors(ctx, t, "entry_selectors", "entry_id", e.ID, e.Selectors); err != nil {
			return err
		}
		out = e
		return bumpRevision(ctx, t)
	})
	if fnErr != nil {
		return registry.Entry{}, fnErr // the caller's own verdict, unwrapped
	}
	if s.db.isUniqueViolation(err) {
		return registry.Entry{}, fmt.Errorf("update entry %s: another entry has this SPIFFE ID, parent and selectors: %w", id, ErrAlreadyExists)
	}
	if err != nil {
		return registry.Entry{}, fmt.Errorf("update entry %s: %w", id, err)
	}
	return out, nil
}

func (s *sqlStore) DeleteEntry(ctx context.Context, id string) error {
	err := s.write(ctx, func(t *tx) error {
		n, err := t.exec(ctx, `DELETE FROM entries WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("delete entry %s: %w", id, err)
	}
	return nil
}

func (s *sqlStore) DeleteEntries(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.write(ctx, func(t *tx) error {
		for _, id := range ids {
			n, err := t.exec(ctx, `DELETE FROM entries WHERE id = $1`, id)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("entry %s: %w", id, ErrNotFound)
			}
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("delete %d entries: %w", len(ids), err)
	}
	return nil
}

func (s *sqlStore) PruneEntries(ctx context.Context, expiredBefore time.Time) ([]string, error) {
	var ids []string
	err := s.write(ctx, func(t *tx) error {
		ids = nil // a retried transaction starts again
		rows, err := queryAll(ctx, t.querier, func(sc scanner) (id string, err error) { return id, sc.Scan(&id) }, `SELECT id FROM entries WHERE expires_at <> 0 AND expires_at < $1`, toNanos(expiredBefore))
		if err != nil || len(rows) == 0 {
			return err
		}
		for _, id := range rows {
			if _, err := t.exec(ctx, `DELETE FROM entries WHERE id = $1`, id); err != nil {
				return err
			}
		}
		ids = rows
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return nil, fmt.Errorf("prune expired entries: %w", err)
	}
	return ids, nil
}

// getEntry reads one entry with its selectors through q.
func getEntry(ctx context.Context, q querier, id string) (registry.Entry, error) {
	e, err := scanEntry(q.queryRow(ctx, `SELECT `+entryColumns+` FROM entries WHERE id = $1`, id))
	if errors.Is(err, errNoRows) {
		return registry.Entry{}, ErrNotFound
	}
	if err != nil {
		return registry.Entry{}, err
	}
	sels, err := loadSelectors(ctx, q, "entry_selectors", "entry_id", id)
	e.Selectors = sels[id]
	return e, err
}

func (s *sqlStore) GetEntry(ctx context.Context, id string) (registry.Entry, error) {
	var e registry.Entry
	err := s.db.read(ctx, func(q querier) error {
		var err error
		e, err = getEntry(ctx, q, id)
		return err
	})
	if err != nil {
		return registry.Entry{}, fmt.Errorf("get entry %s: %w", id, err)
	}
	return e, nil
}

// ListEntries reads every entry in two queries (entries, then all their
// selectors) from one snapshot, sorted by SPIFFE ID then ID.
func (s *sqlStore) ListEntries(ctx context.Context) ([]registry.Entry, error) {
	var out []registry.Entry
	err := s.db.read(ctx, func(q querier) error {
		var err error
		if out, err = queryAll(ctx, q, scanEntry, `SELECT `+entryColumns+` FROM entries`); err != nil {
			return err
		}
		sels, err := loadSelectors(ctx, q, "entry_selectors", "entry_id", "")
		if err != nil {
			return err
		}
		for i := range out {
			out[i].Selectors = sels[out[i].ID]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	slices.SortFunc(out, func(a, b registry.Entry) int {
		if c := strings.Compare(a.SPIFFEID.String(), b.SPIFFEID.String()); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// --- join tokens ---

func (s *sqlStore) CreateJoinToken(ctx context.Context, jt JoinToken) error {
	if jt.Hash == "" || jt.ID == "" {
		return errors.New("create join token: hash and ID are required")
	}
	if jt.ExpiresAt.IsZero() {
		// Tokens always expire; a zero expiry is a caller bug, not "forever".
		return fmt.Errorf("create join token %s: an expiry is required", jt.ID)
	}
	if jt.CreatedAt.IsZero() {
		jt.CreatedAt = time.Now()
	}
	_, err := s.db.write(ctx, func(t *tx) error {
		_, err := t.exec(ctx, `INSERT INTO join_tokens (hash, id, spiffe_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)`,
			jt.Hash, jt.ID, jt.SPIFFEID, toNanos(jt.ExpiresAt), toNanos(jt.CreatedAt))
		return err
	})
	if s.db.isUniqueViolation(err) {
		return fmt.Errorf("create join token %s: %w", jt.ID, ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("create join token %s: %w", jt.ID, err)
	}
	return nil
}

func (s *sqlStore) GetJoinToken(ctx context.Context, hash string, now time.Time) (JoinToken, error) {
	var jt JoinToken
	err := s.db.read(ctx, func(q querier) error {
		var err error
		jt, err = joinTokenRow(ctx, q, `SELECT `+joinTokenColumns+` FROM join_tokens WHERE hash = $1`, hash)
		return err
	})
	if err == nil {
		err = unexpired(jt, now)
	}
	if err != nil {
		return JoinToken{}, fmt.Errorf("get join token: %w", err)
	}
	return jt, nil
}

const (
	joinTokenColumns = `hash, id, spiffe_id, expires_at, created_at, spent_key`
	// spendJoinToken marks the unspent token with hash $1 spent by key $2.
	spendJoinToken = `UPDATE join_tokens SET spent_key = $2 WHERE hash = $1 AND spent_key = '' RETURNING ` + joinTokenColumns
)

// joinTokenRow runs query, which selects or spends the token with hash $1
// returning joinTokenColumns, and scans its row: ErrNotFound if none.
func joinTokenRow(ctx context.Context, q querier, query, hash string, args ...any) (JoinToken, error) {
	var jt JoinToken
	var exp, created int64
	err := q.queryRow(ctx, query, append([]any{hash}, args...)...).Scan(&jt.Hash, &jt.ID, &jt.SPIFFEID, &exp, &created, &jt.SpentKey)
	if errors.Is(err, errNoRows) {
		return JoinToken{}, ErrNotFound
	}
	jt.ExpiresAt, jt.CreatedAt = fromNanos(exp), fromNanos(created)
	return jt, err
}

// unexpired is ErrExpired, with the token's ID and expiry, when jt is
// expired at now: at its expiry instant a token is expired.
func unexpired(jt JoinToken, now time.Time) error {
	if !now.Before(jt.ExpiresAt) {
		return fmt.Errorf("join token %s: %w at %s", jt.ID, ErrExpired, jt.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

func (s *sqlStore) PruneJoinTokens(ctx context.Context, now time.Time) error {
	_, err := s.db.write(ctx, func(t *tx) error {
		_, err := t.exec(ctx, `DELETE FROM join_tokens WHERE expires_at <= $1`, toNanos(now))
		return err
	})
	if err != nil {
		return fmt.Errorf("prune join tokens: %w", err)
	}
	return nil
}

// --- nodes ---

func normalizeNode(n Node) Node {
	n.Selectors = selector.Sort(slices.Clone(n.Selectors))
	if len(n.Selectors) == 0 {
		n.Selectors = nil
	}
	n.ExpiresAt, n.AttestedAt = roundTrip(n.ExpiresAt), roundTrip(n.AttestedAt)
	return n
}

func nodesEqual(a, b Node) bool {
	return a.SPIFFEID == b.SPIFFEID && a.AttestationType == b.AttestationType &&
		slices.Equal(a.Selectors, b.Selectors) && a.SerialNumber == b.SerialNumber &&
		a.PrevSerialNumber == b.PrevSerialNumber && a.ExpiresAt.Equal(b.ExpiresAt) && a.AttestedAt.Equal(b.AttestedAt) &&
		a.Banned == b.Banned && a.CanReattest == b.CanReattest && a.SVIDIssuer == b.SVIDIssuer &&
		a.AgentKeyHash == b.AgentKeyHash && a.PrevAgentKeyHash == b.PrevAgentKeyHash
}

const nodeColumns = `spiffe_id, attestation_type, serial_number, prev_serial_number, expires_at, attested_at, banned, can_reattest, svid_issuer,
	agent_key_hash, prev_agent_key_hash`

func scanNode(sc scanner) (Node, error) {
	var n Node
	var exp, att, banned, reattest int64
	if err := sc.Scan(&n.SPIFFEID, &n.AttestationType, &n.SerialNumber, &n.PrevSerialNumber, &exp, &att, &banned, &reattest, &n.SVIDIssuer,
		&n.AgentKeyHash, &n.PrevAgentKeyHash); err != nil {
		return n, err
	}
	n.ExpiresAt, n.AttestedAt, n.Banned, n.CanReattest = fromNanos(exp), fromNanos(att), banned != 0, reattest != 0
	return n, nil
}

func getNode(ctx context.Context, q querier, id string) (Node, error) {
	n, err := scanNode(q.queryRow(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE spiffe_id = $1`, id))
	if errors.Is(err, errNoRows) {
		return Node{}, ErrNotFound
	}
	if err != nil {
		return Node{}, err
	}
	sels, err := loadSelectors(ctx, q, "node_selectors", "spiffe_id", id)
	n.Selectors = sels[id]
	return n, err
}

// UpsertNode writes the node; an identical node is left alone, so renewals
// that change nothing do not wake every subscriber. A banned node
// (ErrBanned) or one of another attestation type (*AttestationTypeError)
// is not overwritten, checked in the write transaction so an attestation
// racing a ban or another type's attestation cannot undo it.
func (s *sqlStore) UpsertNode(ctx context.Context, n Node) error {
	if n.SPIFFEID == "" {
		return errors.New("upsert node: SPIFFE ID is required")
	}
	n = normalizeNode(n)
	if err := s.write(ctx, func(t *tx) error { return upsertNode(ctx, t, n) }); err != nil {
		return fmt.Errorf("upsert node %s: %w", n.SPIFFEID, err)
	}
	return nil
}

func (s *sqlStore) UpsertNodeSpendingToken(ctx context.Context, n Node, tokenHash, keyHash string, now time.Time) error {
	if n.SPIFFEID == "" {
		return errors.New("upsert node: SPIFFE ID is required")
	}
	if keyHash == "" {
		return fmt.Errorf("upsert node %s: the spending key is required", n.SPIFFEID)
	}
	n = normalizeNode(n)
	err := s.write(ctx, func(t *tx) error {
		jt, err := joinTokenRow(ctx, t, spendJoinToken, tokenHash, keyHash)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("join token unknown or already spent: %w", err)
		}
		if err == nil {
			err = unexpired(jt, now)
		}
		if err != nil {
			return err
		}
		return upsertNode(ctx, t, n)
	})
	if err != nil {
		return fmt.Errorf("upsert node %s: %w", n.SPIFFEID, err)
	}
	return nil
}

func (s *sqlStore) ClaimNode(ctx context.Context, n Node, now time.Time) (bool, error) {
	if n.SPIFFEID == "" {
		return false, errors.New("claim node: SPIFFE ID is required")
	}
	if n.AgentKeyHash == "" {
		return false, fmt.Errorf("claim node %s: the agent key is required", n.SPIFFEID)
	}
	n = normalizeNode(n)
	var reclaimed bool
	err := s.write(ctx, func(t *tx) error {
		old, err := getNode(ctx, t, n.SPIFFEID)
		switch {
		case err == nil && old.Banned:
			return ErrBanned
		case err == nil && old.AttestationType != n.AttestationType:
			return &AttestationTypeError{SPIFFEID: n.SPIFFEID, Held: old.AttestationType, Wanted: n.AttestationType}
		case err == nil && !old.HoldsAgentKey(n.AgentKeyHash):
			return ErrAlreadyExists
		case err == nil && now.Before(old.ExpiresAt):
			return ErrSVIDValid
		case err == nil:
			reclaimed = true
		case !errors.Is(err, ErrNotFound):
			return err
		}
		return upsertNode(ctx, t, n)
	})
	if err != nil {
		return false, fmt.Errorf("claim node %s: %w", n.SPIFFEID, err)
	}
	return reclaimed, nil
}

// upsertNode writes the normalized node n unless it is banned or of
// another attestation type.
func upsertNode(ctx context.Context, t *tx, n Node) error {
	old, err := getNode(ctx, t, n.SPIFFEID)
	switch {
	case err == nil && old.Banned:
		return ErrBanned
	case err == nil && old.AttestationType != n.AttestationType:
		return &AttestationTypeError{SPIFFEID: n.SPIFFEID, Held: old.AttestationType, Wanted: n.AttestationType}
	case err == nil && nodesEqual(old, n):
		return nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return err
	}
	if _, err := t.exec(ctx, `INSERT INTO nodes (`+nodeColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (spiffe_id) DO UPDATE SET attestation_type = excluded.attestation_type,
		serial_number = excluded.serial_number, prev_serial_number = excluded.prev_serial_number,
		expires_at = excluded.expires_at, attested_at = excluded.attested_at, banned = excluded.banned,
		can_reattest = excluded.can_reattest, svid_issuer = excluded.svid_issuer,
		agent_key_hash = excluded.agent_key_hash, prev_agent_key_hash = excluded.prev_agent_key_hash`,
		n.SPIFFEID, n.AttestationType, n.SerialNumber, n.PrevSerialNumber, toNanos(n.ExpiresAt), toNanos(n.AttestedAt), boolInt(n.Banned),
		boolInt(n.CanReattest), n.SVIDIssuer, n.AgentKeyHash, n.PrevAgentKeyHash); err != nil {
		return err
	}
	if _, err := t.exec(ctx, `DELETE FROM node_selectors WHERE spiffe_id = $1`, n.SPIFFEID); err != nil {
		return err
	}
	if err := insertSelectors(ctx, t, "node_selectors", "spiffe_id", n.SPIFFEID, n.Selectors); err != nil {
		return err
	}
	return bumpRevision(ctx, t)
}

func (s *sqlStore) GetNode(ctx context.Context, spiffeID string) (Node, error) {
	var n Node
	err := s.db.read(ctx, func(q querier) error {
		var err error
		n, err = getNode(ctx, q, spiffeID)
		return err
	})
	if err != nil {
		return Node{}, fmt.Errorf("get node %s: %w", spiffeID, err)
	}
	return n, nil
}

func (s *sqlStore) ListNodes(ctx context.Context) ([]Node, error) {
	var out []Node
	err := s.db.read(ctx, func(q querier) error {
		var err error
		if out, err = queryAll(ctx, q, scanNode, `SELECT `+nodeColumns+` FROM nodes`); err != nil {
			return err
		}
		sels, err := loadSelectors(ctx, q, "node_selectors", "spiffe_id", "")
		if err != nil {
			return err
		}
		for i := range out {
			out[i].Selectors = sels[out[i].SPIFFEID]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	return out, nil
}

func (s *sqlStore) RenewNode(ctx context.Context, spiffeID string, r NodeRenewal) error {
	err := s.write(ctx, func(t *tx) error {
		// The presented SVID's key is the current one's when it is the
		// current SVID, else (renewed again from the previous one, whose
		// answer the agent never got) it stays the previous one's.
		n, err := t.exec(ctx, `UPDATE nodes SET prev_serial_number = $2, serial_number = $3, expires_at = $4, svid_issuer = $5,
			prev_agent_key_hash = CASE WHEN serial_number = $2 THEN agent_key_hash ELSE prev_agent_key_hash END, agent_key_hash = $6
			WHERE spiffe_id = $1 AND banned = 0 AND (serial_number = $2 OR prev_serial_number = $2)`,
			spiffeID, r.PresentedSerial, r.Serial, toNanos(r.ExpiresAt), r.Issuer, r.AgentKeyHash)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("renew node %s: %w", spiffeID, err)
	}
	return nil
}

func (s *sqlStore) RetirePrevSerial(ctx context.Context, spiffeID, serial string) (bool, error) {
	if serial == "" {
		return false, fmt.Errorf("retire previous serial of node %s: the current serial is required", spiffeID)
	}
	var changed bool
	err := s.write(ctx, func(t *tx) error {
		n, err := t.exec(ctx, `UPDATE nodes SET prev_serial_number = '', prev_agent_key_hash = ''
			WHERE spiffe_id = $1 AND serial_number = $2 AND prev_serial_number <> ''`,
			spiffeID, serial)
		if err != nil || n == 0 {
			return err
		}
		changed = true
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return false, fmt.Errorf("retire previous serial of node %s: %w", spiffeID, err)
	}
	return changed, nil
}

func (s *sqlStore) BanNode(ctx context.Context, spiffeID string) error {
	err := s.write(ctx, func(t *tx) error {
		n, err := t.exec(ctx, `UPDATE nodes SET banned = 1, serial_number = '', prev_serial_number = '', agent_key_hash = '', prev_agent_key_hash = ''
			WHERE spiffe_id = $1`, spiffeID)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("ban node %s: %w", spiffeID, err)
	}
	return nil
}

func (s *sqlStore) DeleteNode(ctx context.Context, spiffeID string) error {
	err := s.write(ctx, func(t *tx) error {
		n, err := t.exec(ctx, `DELETE FROM nodes WHERE spiffe_id = $1`, spiffeID)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("delete node %s: %w", spiffeID, err)
	}
	return nil
}

func (s *sqlStore) DeleteExpiredNode(ctx context.Context, spiffeID string, expiredBefore time.Time) (bool, error) {
	var deleted bool
	err := s.write(ctx, func(t *tx) error {
		n, err := t.exec(ctx, `DELETE FROM nodes WHERE spiffe_id = $1 AND expires_at < $2 AND banned = 0`, spiffeID, toNanos(expiredBefore))
		if err != nil {
			return err
		}
		if deleted = n > 0; !deleted {
			return nil
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return false, fmt.Errorf("delete expired node %s: %w", spiffeID, err)
	}
	return deleted, nil
}

// --- authorities ---

func bumpBundleSequence(ctx context.Context, t *tx, trustDomain string) error {
	_, err := t.exec(ctx, `INSERT INTO bundles (trust_domain, sequence) VALUES ($1, 1)
		ON CONFLICT (trust_domain) DO UPDATE SET sequence = bundles.sequence + 1`, trustDomain)
	if err != nil {
		return fmt.Errorf("bump bundle sequence of %s: %w", trustDomain, err)
	}
	return nil
}

// checkAuthority refuses an authority the store could not give back usable.
func checkAuthority(a Authority) error {
	if a.TrustDomain == "" || a.KeyID == "" || (a.Kind != X509Authority && a.Kind != JWTAuthority) {
		return fmt.Errorf("authority %q of %q kind %q: trust domain, key ID and kind x509 or jwt are required", a.KeyID, a.TrustDomain, a.Kind)
	}
	if len(a.Data) == 0 {
		return fmt.Errorf("authority %s of %s has no data", a.KeyID, a.TrustDomain)
	}
	return nil
}

func (s *sqlStore) AddAuthority(ctx context.Context, a Authority) (Authority, bool, error) {
	if err := checkAuthority(a); err != nil {
		return Authority{}, false, fmt.Errorf("add authority: %w", err)
	}
	stored, added := a, false
	err := s.write(ctx, func(t *tx) error {
		stored, added = a, false
		// DO NOTHING, not a read first: two publishers racing (servers on
		// one PostgreSQL) cannot both see the ID free.
		n, err := t.exec(ctx, `INSERT INTO authorities (trust_domain, kind, key_id, data, expires_at, tainted) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (trust_domain, kind, key_id) DO NOTHING`,
			a.TrustDomain, string(a.Kind), a.KeyID, a.Data, toNanos(a.ExpiresAt), boolInt(a.Tainted))
		if err != nil {
			return fmt.Errorf("write authority %s: %w", a.KeyID, err)
		}
		if n == 1 {
			added = true
			if err := bumpBundleSequence(ctx, t, a.TrustDomain); err != nil {
				return err
			}
			return bumpRevision(ctx, t)
		}
		var exp, tainted int64
		if err := t.queryRow(ctx, `SELECT data, expires_at, tainted FROM authorities WHERE trust_domain = $1 AND kind = $2 AND key_id = $3`,
			a.TrustDomain, string(a.Kind), a.KeyID).Scan(&stored.Data, &exp, &tainted); err != nil {
			return fmt.Errorf("read authority %s: %w", a.KeyID, err)
		}
		stored.ExpiresAt, stored.Tainted = fromNanos(exp), tainted != 0
		return nil
	})
	if err != nil {
		return Authority{}, false, err
	}
	return stored, added, nil
}

func (s *sqlStore) PutAuthorities(ctx context.Context, auths []Authority) error {
	for _, a := range auths {
		if err := checkAuthority(a); err != nil {
			return fmt.Errorf("put authorities: %w", err)
		}
	}
	err := s.write(ctx, func(t *tx) error {
		var changed []string // trust domains
		for _, a := range auths {
			var data []byte
			var exp, tainted int64
			err := t.queryRow(ctx, `SELECT data, expires_at, tainted FROM authorities WHERE trust_domain = $1 AND kind = $2 AND key_id = $3`,
				a.TrustDomain, string(a.Kind), a.KeyID).Scan(&data, &exp, &tainted)
			switch {
			case err == nil && bytes.Equal(data, a.Data) && exp >= toNanos(a.ExpiresAt) && tainted >= boolInt(a.Tainted):
				continue
			case err != nil && !errors.Is(err, errNoRows):
				return fmt.Errorf("read authority %s: %w", a.KeyID, err)
			}
			// Expiry and taint only grow: the larger of stored and given.
			if _, err := t.exec(ctx, `INSERT INTO authorities (trust_domain, kind, key_id, data, expires_at, tainted) VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (trust_domain, kind, key_id) DO UPDATE SET data = excluded.data,
				expires_at = CASE WHEN excluded.expires_at > authorities.expires_at THEN excluded.expires_at ELSE authorities.expires_at END,
				tainted = CASE WHEN excluded.tainted > authorities.tainted THEN excluded.tainted ELSE authorities.tainted END`,
				a.TrustDomain, string(a.Kind), a.KeyID, a.Data, toNanos(a.ExpiresAt), boolInt(a.Tainted)); err != nil {
				return fmt.Errorf("write authority %s: %w", a.KeyID, err)
			}
			if !slices.Contains(changed, a.TrustDomain) {
				changed = append(changed, a.TrustDomain)
			}
		}
		for _, td := range changed {
			if err := bumpBundleSequence(ctx, t, td); err != nil {
				return err
			}
		}
		if len(changed) > 0 {
			return bumpRevision(ctx, t)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put authorities: %w", err)
	}
	return nil
}

func (s *sqlStore) ListAuthorities(ctx context.Context, trustDomain string) ([]Authority, int64, error) {
	var out []Authority
	var seq int64
	err := s.db.read(ctx, func(q querier) error {
		seq = 0
		byKey, err := listAuthorities(ctx, q, trustDomain)
		if err != nil {
			return err
		}
		out = slices.Collect(maps.Values(byKey))
		err = q.queryRow(ctx, `SELECT sequence FROM bundles WHERE trust_domain = $1`, trustDomain).Scan(&seq)
		if errors.Is(err, errNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list authorities of %s: %w", trustDomain, err)
	}
	slices.SortFunc(out, func(a, b Authority) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.KeyID, b.KeyID)
	})
	return out, seq, nil
}

func (s *sqlStore) DeleteAuthorities(ctx context.Context, trustDomain string, kind AuthorityKind, keyIDs []string) (int, error) {
	if trustDomain == "" || (kind != X509Authority && kind != JWTAuthority) {
		return 0, fmt.Errorf("delete authorities of %q kind %q: trust domain and kind x509 or jwt are required", trustDomain, kind)
	}
	var deleted int64
	err := s.write(ctx, func(t *tx) error {
		for _, keyID := range keyIDs {
			n, err := t.exec(ctx, `DELETE FROM authorities WHERE trust_domain = $1 AND kind = $2 AND key_id = $3`,
				trustDomain, string(kind), keyID)
			if err != nil {
				return fmt.Errorf("delete %s authority %s: %w", kind, keyID, err)
			}
			deleted += n
		}
		if deleted == 0 {
			return nil
		}
		if err := bumpBundleSequence(ctx, t, trustDomain); err != nil {
			return err
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return 0, fmt.Errorf("delete %s authorities of %s: %w", kind, trustDomain, err)
	}
	return int(deleted), nil
}

// PruneAuthorities deletes authorities whose ExpiresAt is before now (an
// authority is valid through its expiry instant, like a certificate).
func (s *sqlStore) PruneAuthorities(ctx context.Context, trustDomain string, now time.Time) error {
	err := s.write(ctx, func(t *tx) error {
		n, err := t.exec(ctx, `DELETE FROM authorities WHERE trust_domain = $1 AND expires_at <> 0 AND expires_at < $2`,
			trustDomain, toNanos(now))
		if err != nil || n == 0 {
			return err
		}
		if err := bumpBundleSequence(ctx, t, trustDomain); err != nil {
			return err
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("prune authorities of %s: %w", trustDomain, err)
	}
	return nil
}

// authorityKey identifies an authority within its trust domain.
type authorityKey struct {
	kind  AuthorityKind
	keyID string
}

// listAuthorities reads a trust domain's authorities through q, by key.
func listAuthorities(ctx context.Context, q querier, trustDomain string) (map[authorityKey]Authority, error) {
	auths, err := queryAll(ctx, q, func(sc scanner) (Authority, error) {
		a := Authority{TrustDomain: trustDomain}
		var kind string
		var exp, tainted int64
		err := sc.Scan(&kind, &a.KeyID, &a.Data, &exp, &tainted)
		a.Kind, a.ExpiresAt, a.Tainted = AuthorityKind(kind), fromNanos(exp), tainted != 0
		return a, err
	}, `SELECT kind, key_id, data, expires_at, tainted FROM authorities WHERE trust_domain = $1`, trustDomain)
	if err != nil {
		return nil, err
	}
	out := make(map[authorityKey]Authority, len(auths))
	for _, a := range auths {
		out[authorityKey{a.Kind, a.KeyID}] = a
	}
	return out, nil
}

// wantedAuthorities checks a bundle's authorities for SetBundle and
// PutFederationRelationship and keys them.
func wantedAuthorities(trustDomain string, auths []Authority) (map[authorityKey]Authority, error) {
	if len(auths) == 0 {
		return nil, errors.New("no authorities (delete the bundle instead)")
	}
	want := make(map[authorityKey]Authority, len(auths))
	for _, a := range auths {
		if err := checkAuthority(a); err != nil {
			return nil, err
		}
		if a.TrustDomain != trustDomain {
			return nil, fmt.Errorf("authority %s belongs to %s", a.KeyID, a.TrustDomain)
		}
		if a.Tainted {
			return nil, fmt.Errorf("%s authority %s is tainted: only a server's own authorities are (PutAuthorities)", a.Kind, a.KeyID)
		}
		k := authorityKey{a.Kind, a.KeyID}
		if _, dup := want[k]; dup {
			return nil, fmt.Errorf("%s authority %s given twice", a.Kind, a.KeyID)
		}
		a.ExpiresAt = roundTrip(a.ExpiresAt)
		want[k] = a
	}
	return want, nil
}

// replaceAuthorities writes want as trustDomain's authorities, unless they
// already are; it reports whether it wrote.
func replaceAuthorities(ctx context.Context, t *tx, trustDomain string, want map[authorityKey]Authority, onlyIfNone bool) (bool, error) {
	have, err := listAuthorities(ctx, t, trustDomain)
	if err != nil {
		return false, fmt.Errorf("read authorities: %w", err)
	}
	if onlyIfNone && len(have) > 0 {
		return false, nil
	}
	if len(have) == len(want) {
		same := true
		for k, a := range want {
			h, ok := have[k]
			// A tainted row here (written by PutAuthorities) is rewritten
			// untainted: a federated bundle carries no taint.
			same = same && ok && bytes.Equal(h.Data, a.Data) && h.ExpiresAt.Equal(a.ExpiresAt) && !h.Tainted
		}
		if same {
			return false, nil
		}
	}
	if _, err := t.exec(ctx, `DELETE FROM authorities WHERE trust_domain = $1`, trustDomain); err != nil {
		return false, fmt.Errorf("delete authorities: %w", err)
	}
	for _, a := range want {
		if _, err := t.exec(ctx, `INSERT INTO authorities (trust_domain, kind, key_id, data, expires_at) VALUES ($1, $2, $3, $4, $5)`,
			trustDomain, string(a.Kind), a.KeyID, a.Data, toNanos(a.ExpiresAt)); err != nil {
			return false, fmt.Errorf("write authority %s: %w", a.KeyID, err)
		}
	}
	if err := bumpBundleSequence(ctx, t, trustDomain); err != nil {
		return false, err
	}
	return true, bumpRevision(ctx, t)
}

func (s *sqlStore) SetBundle(ctx context.Context, trustDomain string, auths []Authority) (bool, error) {
	want, err := wantedAuthorities(trustDomain, auths)
	if err != nil {
		return false, fmt.Errorf("set bundle of %s: %w", trustDomain, err)
	}
	var changed bool
	err = s.write(ctx, func(t *tx) error {
		var err error
		changed, err = replaceAuthorities(ctx, t, trustDomain, want, false)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("set bundle of %s: %w", trustDomain, err)
	}
	return changed, nil
}

func (s *sqlStore) DeleteBundle(ctx context.Context, trustDomain string, mode BundleDeleteMode) (int, error) {
	var affected []registry.Entry
	err := s.write(ctx, func(t *tx) error {
		switch _, err := getRelationship(ctx, t, trustDomain); {
		case err == nil:
			return ErrFetched
		case !errors.Is(err, ErrNotFound):
			return err
		}
		var err error
		if affected, err = federatingEntries(ctx, t, trustDomain); err != nil {
			return err
		}
		if len(affected) > 0 && mode == BundleRestrict {
			return fmt.Errorf("%d entries federate with it: %w", len(affected), ErrInUse)
		}
		n, err := t.exec(ctx, `DELETE FROM authorities WHERE trust_domain = $1`, trustDomain)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		for _, e := range affected {
			if mode == BundleDeleteEntries {
				_, err = t.exec(ctx, `DELETE FROM entries WHERE id = $1`, e.ID)
			} else {
				e.FederatesWith = slices.DeleteFunc(e.FederatesWith, func(td spiffeid.TrustDomain) bool { return td.Name() == trustDomain })
				var feds string
				if feds, err = encodeList(trustDomainNames(e.FederatesWith)); err == nil {
					_, err = t.exec(ctx, `UPDATE entries SET federates_with = $2, revision = revision + 1 WHERE id = $1`, e.ID, feds)
				}
			}
			if err != nil {
				return fmt.Errorf("entry %s: %w", e.ID, err)
			}
		}
		if err := bumpBundleSequence(ctx, t, trustDomain); err != nil {
			return err
		}
		return bumpRevision(ctx, t)
	})
	if errors.Is(err, ErrInUse) {
		return len(affected), fmt.Errorf("delete bundle of %s: %w", trustDomain, err)
	}
	if err != nil {
		return 0, fmt.Errorf("delete bundle of %s: %w", trustDomain, err)
	}
	return len(affected), nil
}

// federatingEntries returns the entries (without selectors) whose
// federates_with names trustDomain. LIKE narrows the scan; the decoded list
// decides ('_' in a name is a LIKE wildcard).
func federatingEntries(ctx context.Context, t *tx, trustDomain string) ([]registry.Entry, error) {
	cands, err := queryAll(ctx, t.querier, scanEntry, `SELECT `+entryColumns+` FROM entries WHERE federates_with LIKE $1`, `%"`+trustDomain+`"%`)
	if err != nil {
		return nil, fmt.Errorf("find entries federating with %s: %w", trustDomain, err)
	}
	return slices.DeleteFunc(cands, func(e registry.Entry) bool {
		return !slices.ContainsFunc(e.FederatesWith, func(td spiffeid.TrustDomain) bool { return td.Name() == trustDomain })
	}), nil
}

func (s *sqlStore) ListBundleTrustDomains(ctx context.Context) ([]string, error) {
	var out []string
	err := s.db.read(ctx, func(q querier) error {
		var err error
		out, err = queryAll(ctx, q, func(sc scanner) (string, error) {
			var td string
			return td, sc.Scan(&td)
		}, `SELECT DISTINCT trust_domain FROM authorities`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list bundle trust domains: %w", err)
	}
	// Sorted in Go: SQL ORDER BY would follow the database's collation.
	slices.Sort(out)
	return out, nil
}

// --- the rest ---

func (s *sqlStore) Revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.db.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT value FROM store_revision WHERE id = 1`).Scan(&rev)
	})
	if err != nil {
		return 0, fmt.Errorf("read store revision: %w", err)
	}
	return rev, nil
}

func (s *sqlStore) Changes(ctx context.Context) <-chan struct{} { return s.changes.subscribe(ctx) }

func (s *sqlStore) Ping(ctx context.Context) error {
	if err := s.db.ping(ctx); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	return nil
}

func (s *sqlStore) Close() error {
	s.changes.close()
	if err := s.db.close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}
