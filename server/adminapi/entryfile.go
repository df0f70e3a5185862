package adminapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/registry"
)

// entryFile is the JSON read by `signet server entry create --data FILE`,
// the shape of SPIRE's `entry create -data` so existing files carry over.
type entryFile struct {
	Entries []struct {
		SPIFFEID      string `json:"spiffe_id"`
		ParentID      string `json:"parent_id"`
		Node          bool   `json:"node"`
		Selectors     []struct{ Type, Value string }
		X509SVIDTTL   int32    `json:"x509_svid_ttl"`
		JWTSVIDTTL    int32    `json:"jwt_svid_ttl"`
		DNSNames      []string `json:"dns_names"`
		FederatesWith []string `json:"federates_with"`
		Hint          string   `json:"hint"`
		Admin         bool     `json:"admin"`
		Downstream    bool     `json:"downstream"`
		ExpiresAt     int64    `json:"expires_at"`
	} `json:"entries"`
}

// ParseEntryFile reads entries from JSON ({"entries": [...]}) and checks
// each one's IDs and selectors locally, naming the entry at fault.
func ParseEntryFile(r io.Reader) ([]*api.Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read entries: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f entryFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse entries JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse entries JSON: trailing data after the document")
	}
	if len(f.Entries) == 0 {
		return nil, errors.New("parse entries JSON: no entries (want {\"entries\": [...]})")
	}
	out := make([]*api.Entry, len(f.Entries))
	for i, in := range f.Entries {
		bad := func(err error) error { return fmt.Errorf("entry %d (%s): %w", i, in.SPIFFEID, err) }
		if _, err := ids.ParseWorkloadID(in.SPIFFEID); err != nil {
			return nil, bad(fmt.Errorf("spiffe_id: %w", err))
		}
		if in.ParentID == "" && !in.Node {
			return nil, bad(errors.New("parent_id is required (or \"node\": true)"))
		}
		if in.ParentID != "" {
			if _, err := ids.ParseWorkloadID(in.ParentID); err != nil {
				return nil, bad(fmt.Errorf("parent_id: %w", err))
			}
		}
		if in.X509SVIDTTL < 0 || in.JWTSVIDTTL < 0 || in.ExpiresAt < 0 {
			return nil, bad(errors.New("TTLs and expires_at cannot be negative"))
		}
		var sels []selector.Selector
		for _, s := range in.Selectors {
			sel := selector.Selector{Type: strings.TrimSpace(s.Type), Value: s.Value}
			if err := sel.Validate(); err != nil {
				return nil, bad(err)
			}
			sels = append(sels, sel)
		}
		if len(sels) == 0 {
			return nil, bad(errors.New("at least one selector is required"))
		}
		out[i] = &api.Entry{
			SpiffeId:       in.SPIFFEID,
			ParentId:       in.ParentID,
			Node:           in.Node,
			Selectors:      registry.SelectorsToProto(selector.Sort(sels)),
			X509TtlSeconds: in.X509SVIDTTL,
			JwtTtlSeconds:  in.JWTSVIDTTL,
			DnsNames:       in.DNSNames,
			FederatesWith:  in.FederatesWith,
			Hint:           in.Hint,
			Admin:          in.Admin,
			Downstream:     in.Downstream,
			ExpiresAt:      in.ExpiresAt,
		}
	}
	return out, nil
}
