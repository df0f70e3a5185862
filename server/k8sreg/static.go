package k8sreg

import (
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
)

// Entry turns the spec into the registration entry it stands for, checked
// as an `entry create` would be. The error names the field at fault.
func (s ClusterStaticEntrySpec) Entry(td spiffeid.TrustDomain, cluster string) (registry.Entry, error) {
	e := registry.Entry{Node: s.Node, X509TTL: s.X509SVIDTTL.Duration, JWTTTL: s.JWTSVIDTTL.Duration,
		DNSNames: slices.Clone(s.DNSNames), Hint: s.Hint, Admin: s.Admin, Downstream: s.Downstream}
	var err error
	if s.SPIFFEID == "" {
		return registry.Entry{}, errors.New("spiffeID is required")
	}
	if e.SPIFFEID, err = ids.ParseWorkloadIDIn(s.SPIFFEID, td); err != nil {
		return registry.Entry{}, fmt.Errorf("spiffeID: %w", err)
	}
	switch {
	case s.Node && s.ParentID != "":
		return registry.Entry{}, errors.New("parentID must be empty with node: true (a node alias has no parent)")
	case !s.Node && s.ParentID == "":
		return registry.Entry{}, errors.New("parentID is required (or node: true, for a node alias)")
	case !s.Node:
		if e.ParentID, err = ids.ParseWorkloadIDIn(s.ParentID, td); err != nil {
			return registry.Entry{}, fmt.Errorf("parentID: %w", err)
		}
	}
	if len(s.Selectors) == 0 {
		return registry.Entry{}, errors.New("selectors: at least one is required")
	}
	for i, text := range s.Selectors {
		sel, err := selector.Parse(text)
		if err != nil {
			return registry.Entry{}, fmt.Errorf("selectors[%d]: %w", i, err)
		}
		e.Selectors = append(e.Selectors, sel)
	}
	for i, name := range s.FederatesWith {
		td, err := ids.ParseTrustDomain(name)
		if err != nil {
			return registry.Entry{}, fmt.Errorf("federatesWith[%d]: %w", i, err)
		}
		e.FederatesWith = append(e.FederatesWith, td)
	}
	if err := e.Validate(td); err != nil {
		return registry.Entry{}, err
	}
	e.Normalize()
	e.ID = entryID(cluster, &e)
	return e, nil
}
