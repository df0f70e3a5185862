package cache

import (
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/selector"
)

// Entry is the agent's view of one registration entry it may serve.
type Entry struct {
	ID            string
	SPIFFEID      spiffeid.ID
	Selectors     []selector.Selector
	X509TTL       time.Duration // zero: the server's default
	JWTTTL        time.Duration // zero: the server's default
	DNSNames      []string
	Hint          string
	FederatesWith []spiffeid.TrustDomain
	Admin         bool
	CreatedAt     time.Time
	Revision      int64
	// ExpiresAt ends the entry (zero: never). The server stops pushing it
	// then; the agent honours it too, for when the server is unreachable.
	ExpiresAt time.Time
}

// Expired reports whether the entry has ended at now.
func (e *Entry) Expired(now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

// equal reports whether a and b describe the same entry in every field.
func (e *Entry) equal(o *Entry) bool {
	return e.ID == o.ID && e.SPIFFEID == o.SPIFFEID && e.X509TTL == o.X509TTL &&
		e.JWTTTL == o.JWTTTL && e.Hint == o.Hint && e.Admin == o.Admin &&
		e.CreatedAt.Equal(o.CreatedAt) && e.Revision == o.Revision && e.ExpiresAt.Equal(o.ExpiresAt) &&
		slices.Equal(e.Selectors, o.Selectors) && slices.Equal(e.DNSNames, o.DNSNames) &&
		slices.Equal(e.FederatesWith, o.FederatesWith)
}

// compareEntries orders entries for a workload: the oldest entry first (the
// default identity), ties broken by entry ID so the order is stable.
func compareEntries(a, b *Entry) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}
