package registry

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
)

// ToProto converts an entry for the API.
func ToProto(e *Entry) *api.Entry {
	out := &api.Entry{
		Id:             e.ID,
		SpiffeId:       e.SPIFFEID.String(),
		Node:           e.Node,
		X509TtlSeconds: int32(e.X509TTL / time.Second),
		JwtTtlSeconds:  int32(e.JWTTTL / time.Second),
		DnsNames:       e.DNSNames,
		Hint:           e.Hint,
		Admin:          e.Admin,
		Downstream:     e.Downstream,
		Revision:       e.Revision,
		Selectors:      SelectorsToProto(e.Selectors),
	}
	if !e.ParentID.IsZero() {
		out.ParentId = e.ParentID.String()
	}
	for _, td := range e.FederatesWith {
		out.FederatesWith = append(out.FederatesWith, td.Name())
	}
	if !e.ExpiresAt.IsZero() {
		out.ExpiresAt = e.ExpiresAt.Unix()
	}
	if !e.CreatedAt.IsZero() {
		out.CreatedAt = e.CreatedAt.Unix()
	}
	return out
}

// FromProto converts an API entry, parsing every ID and selector; it does
// not apply the trust-domain rules of Validate.
func FromProto(in *api.Entry) (Entry, error) {
	if in == nil {
		return Entry{}, fmt.Errorf("entry is missing")
	}
	e := Entry{
		ID:         in.Id,
		Node:       in.Node,
		X509TTL:    time.Duration(in.X509TtlSeconds) * time.Second,
		JWTTTL:     time.Duration(in.JwtTtlSeconds) * time.Second,
		DNSNames:   append([]string(nil), in.DnsNames...),
		Hint:       in.Hint,
		Admin:      in.Admin,
		Downstream: in.Downstream,
		Revision:   in.Revision,
	}
	if in.X509TtlSeconds < 0 || in.JwtTtlSeconds < 0 {
		return Entry{}, fmt.Errorf("entry: TTLs cannot be negative")
	}
	var err error
	if in.SpiffeId == "" {
		return Entry{}, fmt.Errorf("entry: spiffe_id is required")
	}
	if e.SPIFFEID, err = ids.ParseWorkloadID(in.SpiffeId); err != nil {
		return Entry{}, fmt.Errorf("entry: spiffe_id: %w", err)
	}
	if in.ParentId != "" {
		if e.ParentID, err = ids.ParseWorkloadID(in.ParentId); err != nil {
			return Entry{}, fmt.Errorf("entry: parent_id: %w", err)
		}
	}
	if e.Selectors, err = SelectorsFromProto(in.Selectors); err != nil {
		return Entry{}, fmt.Errorf("entry: %w", err)
	}
	for _, name := range in.FederatesWith {
		td, err := ids.ParseTrustDomain(name)
		if err != nil {
			return Entry{}, fmt.Errorf("entry: federates_with: %w", err)
		}
		e.FederatesWith = append(e.FederatesWith, td)
	}
	if in.ExpiresAt < 0 {
		return Entry{}, fmt.Errorf("entry: expires_at %d is negative (Unix seconds; 0 means never)", in.ExpiresAt)
	}
	if in.ExpiresAt != 0 {
		e.ExpiresAt = time.Unix(in.ExpiresAt, 0)
	}
	if in.CreatedAt != 0 {
		e.CreatedAt = time.Unix(in.CreatedAt, 0)
	}
	return e, nil
}

// SelectorsToProto converts selectors for the API.
func SelectorsToProto(sels []selector.Selector) []*api.Selector {
	out := make([]*api.Selector, len(sels))
	for i, s := range sels {
		out[i] = &api.Selector{Type: s.Type, Value: s.Value}
	}
	return out
}

// SelectorsFromProto converts and validates API selectors.
func SelectorsFromProto(in []*api.Selector) ([]selector.Selector, error) {
	out := make([]selector.Selector, 0, len(in))
	for _, s := range in {
		sel := selector.Selector{Type: s.GetType(), Value: s.GetValue()}
		if err := sel.Validate(); err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return out, nil
}

// TrustDomainsOf returns the names of tds.
func TrustDomainsOf(tds []spiffeid.TrustDomain) []string {
	out := make([]string, len(tds))
	for i, td := range tds {
		out[i] = td.Name()
	}
	return out
}
