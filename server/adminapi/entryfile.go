package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
)

// EntryFile is the JSON of entries: what `signet server entry list|show
// --output json` print and what `entry create --data FILE` reads, so a
// listing restores as it was (IDs included) on this or another server.
// Field names are SPIRE's (its `entry create -data` and `entry show
// -output json`); reading also takes SPIRE's printed form, see EntryJSON.
type EntryFile struct {
	Entries []EntryJSON `json:"entries"`
	// NextPageToken is in SPIRE's listings; always empty, ignored.
	NextPageToken string `json:"next_page_token,omitempty"`
}

// EntryJSON is one entry. Reading, SPIFFE IDs may be SPIRE's objects
// ({"trust_domain": ..., "path": ...}) and integers strings (as SPIRE's
// JSON prints int64s); a parent_id of spiffe://TD/spire/server is SPIRE's
// mark of a node alias when "node" is absent (SPIRE has no such field;
// Signet always prints it, so its own node alias named spire/server keeps
// its children as they were). revision_number and created_at are the
// server's and ignored on create.
type EntryJSON struct {
	ID             string         `json:"id"`
	SPIFFEID       jsonID         `json:"spiffe_id"`
	ParentID       jsonID         `json:"parent_id"`
	Node           *bool          `json:"node"`
	Selectors      []SelectorJSON `json:"selectors"`
	X509SVIDTTL    jsonInt        `json:"x509_svid_ttl"`
	JWTSVIDTTL     jsonInt        `json:"jwt_svid_ttl"`
	DNSNames       []string       `json:"dns_names"`
	FederatesWith  []string       `json:"federates_with"`
	Hint           string         `json:"hint"`
	Admin          bool           `json:"admin"`
	Downstream     bool           `json:"downstream"`
	ExpiresAt      jsonInt        `json:"expires_at"`
	RevisionNumber jsonInt        `json:"revision_number"`
	CreatedAt      jsonInt        `json:"created_at"`
	// StoreSVID is SPIRE's (SVIDStore plugins): read so that SPIRE's
	// listings load, refused when true, never printed.
	StoreSVID bool `json:"store_svid,omitempty"`
	// The names of SPIRE's `entry create -data` files (its older
	// RegistrationEntry JSON), read only: entry_id is id, entryExpiry is
	// expires_at, and ttl is x509_svid_ttl when that is not given.
	EntryID     string  `json:"entry_id,omitempty"`
	EntryExpiry jsonInt `json:"entryExpiry,omitempty"`
	TTL         jsonInt `json:"ttl,omitempty"`
}

// resolveAliases folds SPIRE's -data names into the fields they mean; two
// names for one field must agree.
func (in *EntryJSON) resolveAliases() error {
	switch {
	case in.EntryID == "":
	case in.ID == "" || in.ID == in.EntryID:
		in.ID = in.EntryID
	default:
		return fmt.Errorf("id %q and entry_id %q differ", in.ID, in.EntryID)
	}
	switch {
	case in.EntryExpiry == 0:
	case in.ExpiresAt == 0 || in.ExpiresAt == in.EntryExpiry:
		in.ExpiresAt = in.EntryExpiry
	default:
		return fmt.Errorf("expires_at %d and entryExpiry %d differ", in.ExpiresAt, in.EntryExpiry)
	}
	if in.X509SVIDTTL == 0 {
		in.X509SVIDTTL = in.TTL
	}
	return nil
}

// SelectorJSON is a selector in the CLI's JSON (SPIRE's shape).
type SelectorJSON struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// AgentJSON is one attested agent as the CLI's --output json prints it;
// times are Unix seconds, as in entries.
type AgentJSON struct {
	SPIFFEID        string         `json:"spiffe_id"`
	AttestationType string         `json:"attestation_type"`
	Selectors       []SelectorJSON `json:"selectors"`
	SerialNumber    string         `json:"serial_number"`
	ExpiresAt       int64          `json:"expires_at"`
	AttestedAt      int64          `json:"attested_at"`
	Banned          bool           `json:"banned"`
	CanReattest     bool           `json:"can_reattest"`
}

// AgentToJSON is a in the JSON the CLI prints.
func AgentToJSON(a *api.Agent) AgentJSON {
	return AgentJSON{SPIFFEID: a.SpiffeId, AttestationType: a.AttestationType, Selectors: selectorsToJSON(a.Selectors),
		SerialNumber: a.SerialNumber, ExpiresAt: a.ExpiresAt, AttestedAt: a.AttestedAt, Banned: a.Banned, CanReattest: a.CanReattest}
}

func selectorsToJSON(sels []*api.Selector) []SelectorJSON {
	out := make([]SelectorJSON, len(sels))
	for i, s := range sels {
		out[i] = SelectorJSON{Type: s.Type, Value: s.Value}
	}
	return out
}

// jsonID is a SPIFFE ID: a string, or SPIRE's {"trust_domain", "path"}.
type jsonID string

func (id *jsonID) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*id = jsonID(s)
		return nil
	}
	var o struct {
		TrustDomain string `json:"trust_domain"`
		Path        string `json:"path"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil || o.TrustDomain == "" {
		return fmt.Errorf("want a SPIFFE ID, as a string or {\"trust_domain\": ..., \"path\": ...}, not %.60s", b)
	}
	*id = jsonID("spiffe://" + o.TrustDomain + o.Path)
	return nil
}

// jsonInt is an integer: a JSON number, or a string holding one (SPIRE
// prints int64 fields as strings).
type jsonInt int64

func (n *jsonInt) UnmarshalJSON(b []byte) error {
	var v int64
	if err := json.Unmarshal(b, &v); err == nil {
		*n = jsonInt(v)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			*n = jsonInt(v)
			return nil
		}
	}
	return fmt.Errorf("want an integer, not %.40s", b)
}

// spireServerPath is the parent path of SPIRE's node-alias entries.
const spireServerPath = "/spire/server"

// EntryToJSON is e in the JSON the CLI prints.
func EntryToJSON(e *api.Entry) EntryJSON {
	node := e.Node
	out := EntryJSON{
		ID:             e.Id,
		SPIFFEID:       jsonID(e.SpiffeId),
		ParentID:       jsonID(e.ParentId),
		Node:           &node,
		Selectors:      selectorsToJSON(e.Selectors),
		X509SVIDTTL:    jsonInt(e.X509TtlSeconds),
		JWTSVIDTTL:     jsonInt(e.JwtTtlSeconds),
		DNSNames:       nonNil(e.DnsNames),
		FederatesWith:  nonNil(e.FederatesWith),
		Hint:           e.Hint,
		Admin:          e.Admin,
		Downstream:     e.Downstream,
		ExpiresAt:      jsonInt(e.ExpiresAt),
		RevisionNumber: jsonInt(e.Revision),
		CreatedAt:      jsonInt(e.CreatedAt),
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// ParseEntryFile reads entries from JSON ({"entries": [...]}) and checks
// each one's IDs and selectors locally, naming the entry at fault.
func ParseEntryFile(r io.Reader) ([]*api.Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	// The document, then each entry on its own: an error names the entry.
	var f struct {
		Entries       []json.RawMessage `json:"entries"`
		NextPageToken string            `json:"next_page_token"`
	}
	if err := strictDecode(data, &f); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) && typ.Field == "" {
			return nil, fmt.Errorf("parse entries JSON: want an object {\"entries\": [...]}, not a JSON %s", typ.Value)
		}
		return nil, fmt.Errorf("parse entries JSON: %w", err)
	}
	if len(f.Entries) == 0 {
		return nil, errors.New("parse entries JSON: no entries (want {\"entries\": [...]})")
	}
	out := make([]*api.Entry, len(f.Entries))
	for i, raw := range f.Entries {
		var in EntryJSON
		if err := strictDecode(raw, &in); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if out[i], err = in.toProto(); err != nil {
			return nil, fmt.Errorf("entry %d (%s): %w", i, in.SPIFFEID, err)
		}
	}
	return out, nil
}

// strictDecode decodes one JSON document into v: unknown fields and
// trailing data are errors.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the document")
	}
	return nil
}

func (in *EntryJSON) toProto() (*api.Entry, error) {
	if err := in.resolveAliases(); err != nil {
		return nil, err
	}
	if in.ID != "" {
		if err := registry.CheckEntryID(in.ID); err != nil {
			return nil, fmt.Errorf("id: %w", err)
		}
	}
	spiffeID, err := ids.ParseWorkloadID(string(in.SPIFFEID))
	if err != nil {
		return nil, fmt.Errorf("spiffe_id: %w", err)
	}
	parent, node := string(in.ParentID), in.Node != nil && *in.Node
	if parent != "" {
		p, err := ids.ParseWorkloadID(parent)
		if err != nil {
			return nil, fmt.Errorf("parent_id: %w", err)
		}
		if in.Node == nil && p.Path() == spireServerPath && p.MemberOf(spiffeID.TrustDomain()) {
			parent, node = "", true
		}
	}
	if parent == "" && !node {
		return nil, errors.New("parent_id is required (or \"node\": true)")
	}
	if parent != "" && node {
		return nil, errors.New("a node alias (\"node\": true) has no parent_id")
	}
	if in.StoreSVID {
		return nil, errors.New("store_svid: Signet has no SVIDStore; the agent serves SVIDs over the Workload API, or signet helper writes them to files")
	}
	if in.X509SVIDTTL < 0 || in.JWTSVIDTTL < 0 || in.ExpiresAt < 0 || in.TTL < 0 {
		return nil, errors.New("TTLs and expires_at cannot be negative")
	}
	if in.X509SVIDTTL > 1<<31-1 || in.JWTSVIDTTL > 1<<31-1 {
		return nil, errors.New("TTL too large (seconds)")
	}
	var sels []selector.Selector
	for _, s := range in.Selectors {
		sel := selector.Selector{Type: strings.TrimSpace(s.Type), Value: s.Value}
		if err := sel.Validate(); err != nil {
			return nil, err
		}
		sels = append(sels, sel)
	}
	if len(sels) == 0 {
		return nil, errors.New("at least one selector is required")
	}
	return &api.Entry{
		Id:             in.ID,
		SpiffeId:       spiffeID.String(),
		ParentId:       parent,
		Node:           node,
		Selectors:      registry.SelectorsToProto(selector.Sort(sels)),
		X509TtlSeconds: int32(in.X509SVIDTTL),
		JwtTtlSeconds:  int32(in.JWTSVIDTTL),
		DnsNames:       in.DNSNames,
		FederatesWith:  in.FederatesWith,
		Hint:           in.Hint,
		Admin:          in.Admin,
		Downstream:     in.Downstream,
		ExpiresAt:      int64(in.ExpiresAt),
	}, nil
}

// ParseEntryIDs reads the entries to delete from JSON: SPIRE's
// `entry delete -file` shape ({"ids": [...]}) or a listing of entries
// ({"entries": [{"id": ...}, ...]}, as `entry list --output json` prints,
// other fields ignored), so a filtered listing can be deleted as a whole.
func ParseEntryIDs(r io.Reader) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read entry IDs: %w", err)
	}
	var f struct {
		IDs     []string `json:"ids"`
		Entries []struct {
			ID string `json:"id"`
		} `json:"entries"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse entry IDs JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse entry IDs JSON: trailing data after the document")
	}
	if f.IDs != nil && f.Entries != nil {
		return nil, errors.New(`parse entry IDs JSON: give "ids" or "entries", not both`)
	}
	ids := f.IDs
	for i, e := range f.Entries {
		if e.ID == "" {
			return nil, fmt.Errorf("entry %d has no \"id\"", i)
		}
		ids = append(ids, e.ID)
	}
	if len(ids) == 0 {
		return nil, errors.New(`parse entry IDs JSON: no entries (want {"ids": [...]} or {"entries": [{"id": ...}]})`)
	}
	for i, id := range ids {
		if err := registry.CheckEntryID(id); err != nil {
			return nil, fmt.Errorf("ID %d: %w", i, err)
		}
	}
	return ids, nil
}
