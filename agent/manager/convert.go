package manager

import (
	"fmt"
	"time"

	"github.com/signetid/signet/agent/cache"
	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/api"
)

// entryFromProto converts a synced entry. Node-alias entries are not
// workload entries; the caller skips them.
func entryFromProto(e *api.Entry) (cache.Entry, error) {
	id, err := ids.ParseWorkloadID(e.SpiffeId)
	if err != nil {
		return cache.Entry{}, fmt.Errorf("entry %s: %w", e.Id, err)
	}
	out := cache.Entry{
		ID:        e.Id,
		SPIFFEID:  id,
		X509TTL:   time.Duration(e.X509TtlSeconds) * time.Second,
		JWTTTL:    time.Duration(e.JwtTtlSeconds) * time.Second,
		DNSNames:  e.DnsNames,
		Hint:      e.Hint,
		Admin:     e.Admin,
		CreatedAt: time.Unix(e.CreatedAt, 0),
		Revision:  e.Revision,
	}
	if e.ExpiresAt != 0 {
		out.ExpiresAt = time.Unix(e.ExpiresAt, 0)
	}
	for _, s := range e.Selectors {
		out.Selectors = append(out.Selectors, selector.Selector{Type: s.Type, Value: s.Value})
	}
	for _, f := range e.FederatesWith {
		td, err := ids.ParseTrustDomain(f)
		if err != nil {
			return cache.Entry{}, fmt.Errorf("entry %s: federates_with: %w", e.Id, err)
		}
		out.FederatesWith = append(out.FederatesWith, td)
	}
	return out, nil
}
