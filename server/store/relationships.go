package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

const relationshipColumns = `trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, owner, revision, created_at`

func scanRelationship(sc scanner) (FederationRelationship, error) {
	var r FederationRelationship
	var created int64
	if err := sc.Scan(&r.TrustDomain, &r.BundleEndpointURL, &r.Profile, &r.EndpointSPIFFEID, &r.Owner, &r.Revision, &created); err != nil {
		return FederationRelationship{}, err
	}
	r.CreatedAt = fromNanos(created)
	return r, nil
}

func getRelationship(ctx context.Context, q querier, trustDomain string) (FederationRelationship, error) {
	r, err := scanRelationship(q.queryRow(ctx, `SELECT `+relationshipColumns+` FROM federation_relationships WHERE trust_domain = $1`, trustDomain))
	if errors.Is(err, errNoRows) {
		return FederationRelationship{}, ErrNotFound
	}
	return r, err
}

// checkRelationship: the store keeps only complete relationships.
func checkRelationship(r FederationRelationship) error {
	switch {
	case r.TrustDomain == "":
		return errors.New("no trust domain")
	case r.BundleEndpointURL == "":
		return errors.New("no bundle endpoint URL")
	case r.Profile != "https_spiffe" && r.Profile != "https_web":
		return fmt.Errorf("unknown bundle endpoint profile %q", r.Profile)
	case (r.Profile == "https_spiffe") != (r.EndpointSPIFFEID != ""):
		return errors.New("an endpoint SPIFFE ID goes with the https_spiffe profile, and only with it")
	}
	return nil
}

func sameRelationship(a, b FederationRelationship) bool {
	return a.BundleEndpointURL == b.BundleEndpointURL && a.Profile == b.Profile &&
		a.EndpointSPIFFEID == b.EndpointSPIFFEID && a.Owner == b.Owner
}

func (s *sqlStore) PutFederationRelationship(ctx context.Context, r FederationRelationship, check func(cur *FederationRelationship) error, opts ...RelationshipOption) (bool, error) {
	if err := checkRelationship(r); err != nil {
		return false, fmt.Errorf("put federation relationship %s: %w", r.TrustDomain, err)
	}
	var w relationshipWrite
	for _, o := range opts {
		o(&w)
	}
	var want map[authorityKey]Authority
	if len(w.bundle) > 0 {
		var err error
		if want, err = wantedAuthorities(r.TrustDomain, w.bundle); err != nil {
			return false, fmt.Errorf("put federation relationship %s: bundle: %w", r.TrustDomain, err)
		}
	}
	var changed bool
	err := s.write(ctx, func(t *tx) error {
		cur, err := getRelationship(ctx, t, r.TrustDomain)
		var curp *FederationRelationship
		switch {
		case err == nil:
			curp = &cur
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if check != nil {
			if err := check(curp); err != nil {
				return err
			}
		}
		if curp == nil || !sameRelationship(cur, r) {
			if err := writeRelationship(ctx, t, r, curp == nil); err != nil {
				return err
			}
			changed = true
		}
		if want == nil {
			return nil
		}
		// After the relationship, so that a failing bundle write undoes a
		// staged relationship; the revision moves once for both.
		set, err := replaceAuthorities(ctx, t, r.TrustDomain, want, w.onlyIfNone)
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		changed = changed || set
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("put federation relationship %s: %w", r.TrustDomain, err)
	}
	return changed, nil
}

// writeRelationship inserts r, or replaces the stored one, at the
// transaction's store revision.
func writeRelationship(ctx context.Context, t *tx, r FederationRelationship, insert bool) error {
	rev, err := nextRevision(ctx, t)
	if err != nil {
		return err
	}
	if insert {
		_, err = t.exec(ctx, `INSERT INTO federation_relationships (`+relationshipColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			r.TrustDomain, r.BundleEndpointURL, r.Profile, r.EndpointSPIFFEID, r.Owner, rev, toNanos(time.Now()))
	} else {
		_, err = t.exec(ctx, `UPDATE federation_relationships SET bundle_endpoint_url = $2, profile = $3, endpoint_spiffe_id = $4, owner = $5, revision = $6 WHERE trust_domain = $1`,
			r.TrustDomain, r.BundleEndpointURL, r.Profile, r.EndpointSPIFFEID, r.Owner, rev)
	}
	return err
}

func (s *sqlStore) DeleteFederationRelationship(ctx context.Context, trustDomain string, check func(cur FederationRelationship) error) error {
	err := s.write(ctx, func(t *tx) error {
		cur, err := getRelationship(ctx, t, trustDomain)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(cur); err != nil {
				return err
			}
		}
		if _, err := t.exec(ctx, `DELETE FROM federation_relationships WHERE trust_domain = $1`, trustDomain); err != nil {
			return err
		}
		return bumpRevision(ctx, t)
	})
	if err != nil {
		return fmt.Errorf("delete federation relationship %s: %w", trustDomain, err)
	}
	return nil
}

func (s *sqlStore) GetFederationRelationship(ctx context.Context, trustDomain string) (FederationRelationship, error) {
	var r FederationRelationship
	err := s.db.read(ctx, func(q querier) error {
		var err error
		r, err = getRelationship(ctx, q, trustDomain)
		return err
	})
	if err != nil {
		return FederationRelationship{}, fmt.Errorf("get federation relationship %s: %w", trustDomain, err)
	}
	return r, nil
}

func (s *sqlStore) ListFederationRelationships(ctx context.Context) ([]FederationRelationship, error) {
	var out []FederationRelationship
	err := s.db.read(ctx, func(q querier) error {
		var err error
		out, err = queryAll(ctx, q, scanRelationship, `SELECT `+relationshipColumns+` FROM federation_relationships`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list federation relationships: %w", err)
	}
	// Sorted in Go: SQL ORDER BY would follow the database's collation.
	slices.SortFunc(out, func(a, b FederationRelationship) int { return strings.Compare(a.TrustDomain, b.TrustDomain) })
	return out, nil
}
