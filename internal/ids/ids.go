package ids

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// MaxIDLength is the longest SPIFFE ID accepted, in bytes.
	MaxIDLength = 2048
	// MaxTrustDomainLength is the longest trust domain name accepted, in bytes.
	MaxTrustDomainLength = 255
)

// ParseTrustDomain parses a bare trust domain name ("example.org"). A
// spiffe:// prefix is tolerated when nothing follows the host.
func ParseTrustDomain(s string) (spiffeid.TrustDomain, error) {
	if s == "" {
		return spiffeid.TrustDomain{}, errors.New("trust domain is empty")
	}
	if len(s) > MaxTrustDomainLength {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q is %d bytes; the limit is %d", clip(s), len(s), MaxTrustDomainLength)
	}
	if strings.HasPrefix(s, "spiffe://") {
		id, err := ParseID(s)
		if err != nil {
			return spiffeid.TrustDomain{}, err
		}
		if id.Path() != "" {
			return spiffeid.TrustDomain{}, fmt.Errorf("invalid trust domain %q: a trust domain has no path", clip(s))
		}
		return id.TrustDomain(), nil
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("invalid trust domain %q: %w", clip(s), err)
	}
	return td, nil
}

// ParseID parses any SPIFFE ID, including the bare trust domain ID
// (spiffe://example.org), and enforces the length limits.
func ParseID(s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, errors.New("SPIFFE ID is empty")
	}
	if len(s) > MaxIDLength {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %q is %d bytes; the limit is %d", clip(s), len(s), MaxIDLength)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("invalid SPIFFE ID %q: %w", clip(s), err)
	}
	if n := len(id.TrustDomain().Name()); n > MaxTrustDomainLength {
		return spiffeid.ID{}, fmt.Errorf("invalid SPIFFE ID %q: trust domain is %d bytes; the limit is %d", clip(s), n, MaxTrustDomainLength)
	}
	return id, nil
}

// ParseWorkloadID parses a SPIFFE ID that names a workload or an agent: it
// must have a path (never the bare trust domain).
func ParseWorkloadID(s string) (spiffeid.ID, error) {
	id, err := ParseID(s)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("invalid SPIFFE ID %q: a workload ID needs a path; the bare trust domain ID is reserved", s)
	}
	return id, nil
}

// ParseWorkloadIDIn parses a workload ID that must belong to td.
func ParseWorkloadIDIn(s string, td spiffeid.TrustDomain) (spiffeid.ID, error) {
	id, err := ParseWorkloadID(s)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if !id.MemberOf(td) {
		return spiffeid.ID{}, fmt.Errorf("SPIFFE ID %q is not in trust domain %q", s, td.Name())
	}
	return id, nil
}

// clip keeps error messages readable when the input is huge.
func clip(s string) string {
	const max = 96
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
