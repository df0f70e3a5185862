package registry

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
)

// Entry is a registration entry: workloads matching Selectors, served by the
// agent ParentID (or by any agent a node-alias entry matches), get SPIFFEID.
type Entry struct {
	ID       string
	SPIFFEID spiffeid.ID
	// ParentID is zero for node-alias entries (Node true).
	ParentID spiffeid.ID
	// Node marks a node-alias entry: its selectors match agents' node
	// selectors, and entries parented to SPIFFEID are served by those agents.
	Node          bool
	Selectors     []selector.Selector
	X509TTL       time.Duration // zero: the server's default
	JWTTTL        time.Duration // zero: the server's default
	DNSNames      []string
	Hint          string
	FederatesWith []spiffeid.TrustDomain
	Admin         bool
	// Downstream marks the holder of SPIFFEID's SVID as another Signet
	// server of the trust domain, which this server signs intermediate CAs
	// for (SPIRE's downstream). Agents serve the SVID as any other.
	Downstream bool
	ExpiresAt  time.Time // zero: never
	Revision   int64
	CreatedAt  time.Time
}

// Limits on TTLs: long enough for any real use, short enough that a typo
// ("87600h") is caught instead of minting a decade-long credential.
const (
	MinTTL = time.Second
	MaxTTL = 30 * 24 * time.Hour
)

var (
	dnsLabelRE = regexp.MustCompile(`^(\*|[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)$`)
	hintRE     = regexp.MustCompile(`^[A-Za-z0-9._:/@-]{1,128}$`)
	entryIDRE  = regexp.MustCompile(`^[A-Za-z0-9._~-]{1,255}$`)
)

// CheckEntryID checks an entry ID a caller chose (SPIRE's custom entry
// IDs): 1 to 255 letters, digits and . _ ~ -, so that it is safe in a
// command line, a log line and a URL; not "." or "..", which a URL path
// resolves away. Generated IDs are UUIDs.
func CheckEntryID(id string) error {
	if !entryIDRE.MatchString(id) {
		return fmt.Errorf("entry ID %q: want 1 to 255 letters, digits, '.', '_', '~' or '-'", clip(id))
	}
	if id == "." || id == ".." {
		return fmt.Errorf("entry ID %q: a URL path would read it as a directory; use letters or digits too", id)
	}
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// ReservedPrefix starts the paths of Signet's own components
// (spiffe://TD/signet/server is the server's TLS identity, which agents
// trust by ID alone): no entry or join token may take one.
const ReservedPrefix = "/signet"

// Reserved reports whether id belongs to Signet's own components.
func Reserved(id spiffeid.ID) bool {
	return id.Path() == ReservedPrefix || strings.HasPrefix(id.Path(), ReservedPrefix+"/")
}

// Validate checks the entry for the server's trust domain td. It reports the
// first problem in words that say which field is wrong.
func (e *Entry) Validate(td spiffeid.TrustDomain) error {
	if e.SPIFFEID.IsZero() {
		return errors.New("entry: spiffe_id is required")
	}
	if _, err := ids.ParseWorkloadIDIn(e.SPIFFEID.String(), td); err != nil {
		return fmt.Errorf("entry: spiffe_id: %w", err)
	}
	if Reserved(e.SPIFFEID) {
		return fmt.Errorf("entry: spiffe_id %s: paths under %s/ are reserved for Signet itself", e.SPIFFEID, ReservedPrefix)
	}
	if e.Node {
		if !e.ParentID.IsZero() {
			return errors.New("entry: a node-alias entry (--node) takes no parent_id")
		}
		// No workload ever holds a node alias's SVID to ask for an
		// intermediate CA with: a downstream server is a workload.
		if e.Downstream {
			return errors.New("entry: downstream cannot be set on a node-alias entry (--node): a node alias names agents, not a workload that could be a downstream server")
		}
	} else {
		if e.ParentID.IsZero() {
			return errors.New("entry: parent_id is required (or make it a node-alias entry with --node)")
		}
		if _, err := ids.ParseWorkloadIDIn(e.ParentID.String(), td); err != nil {
			return fmt.Errorf("entry: parent_id: %w", err)
		}
		if e.ParentID == e.SPIFFEID {
			return errors.New("entry: parent_id and spiffe_id are the same")
		}
	}
	if len(e.Selectors) == 0 {
		return errors.New("entry: at least one selector is required")
	}
	for _, s := range e.Selectors {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("entry: %w", err)
		}
	}
	for name, ttl := range map[string]time.Duration{"x509_ttl": e.X509TTL, "jwt_ttl": e.JWTTTL} {
		if ttl != 0 && (ttl < MinTTL || ttl > MaxTTL) {
			return fmt.Errorf("entry: %s %s is out of range [%s, %s]", name, ttl, MinTTL, MaxTTL)
		}
	}
	for _, dns := range e.DNSNames {
		if err := ValidateDNSName(dns); err != nil {
			return fmt.Errorf("entry: %w", err)
		}
	}
	if e.Hint != "" && !hintRE.MatchString(e.Hint) {
		return fmt.Errorf("entry: hint %q: use 1-128 letters, digits or ._:/@-", e.Hint)
	}
	for _, fed := range e.FederatesWith {
		if fed == td {
			return fmt.Errorf("entry: federates_with %q is the server's own trust domain", fed.Name())
		}
	}
	return nil
}

// Normalize sorts and de-duplicates the entry's lists so equal entries
// compare equal and store identically.
func (e *Entry) Normalize() {
	e.Selectors = selector.Sort(e.Selectors)
	slices.Sort(e.DNSNames)
	e.DNSNames = slices.Compact(e.DNSNames)
	slices.SortFunc(e.FederatesWith, func(a, b spiffeid.TrustDomain) int { return strings.Compare(a.Name(), b.Name()) })
	e.FederatesWith = slices.Compact(e.FederatesWith)
}

// Expired reports whether the entry has an expiry that has passed.
func (e *Entry) Expired(now time.Time) bool {
	return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt)
}

// ValidateDNSName checks a DNS SAN: valid labels, a wildcard only as the
// leftmost label of a longer name.
func ValidateDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("dns name %q: length must be 1-253", name)
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		// A wildcard is only the leftmost label, and never the whole name:
		// a bare "*" matches every single-label host (db, localhost).
		if !dnsLabelRE.MatchString(l) || (l == "*" && (i != 0 || len(labels) == 1)) {
			return fmt.Errorf("dns name %q: label %q is not a valid DNS label", name, l)
		}
	}
	return nil
}
