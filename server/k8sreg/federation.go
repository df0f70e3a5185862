package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/store"
)

// RelationshipOwnerPrefix starts the Owner of every federation relationship
// a Kubernetes controller manages in the store.
const RelationshipOwnerPrefix = "k8s_controller/"

// RelationshipOwner is the Owner that the controller of cluster, and of
// className if set, gives the federation relationships it keeps:
// k8s_controller/<cluster>[/<className>]. Each controller changes and
// deletes only its own; the cluster is one path segment, so no two
// controllers share a name.
func RelationshipOwner(cluster, className string) string {
	if className == "" {
		return RelationshipOwnerPrefix + cluster
	}
	return RelationshipOwnerPrefix + cluster + "/" + className
}

// Relationship checks the spec for a server of trust domain own and returns
// the relationship it states and, when it carries a trustDomainBundle, that
// bundle's authorities, to bootstrap the trust domain with. The error names
// the field at fault.
func (s ClusterFederatedTrustDomainSpec) Relationship(own spiffeid.TrustDomain) (federation.Relationship, []store.Authority, error) {
	rel, err := federation.RelationshipSpec{TrustDomain: s.TrustDomain, BundleEndpointURL: s.BundleEndpointURL,
		Profile: federation.Profile(s.BundleEndpointProfile.Type), EndpointSPIFFEID: s.BundleEndpointProfile.EndpointSPIFFEID,
	}.Resolve(own, federation.ResourceFields)
	if err != nil {
		return federation.Relationship{}, nil, err
	}
	if s.TrustDomainBundle == "" {
		return rel, nil, nil
	}
	b, err := spiffebundle.Parse(rel.TrustDomain, []byte(s.TrustDomainBundle))
	if err != nil {
		return federation.Relationship{}, nil, fmt.Errorf("trustDomainBundle: %w", err)
	}
	auths, err := federation.Authorities(b)
	if err != nil {
		return federation.Relationship{}, nil, fmt.Errorf("trustDomainBundle: %w", err)
	}
	return rel, auths, nil
}

// fedResult is what reconciling one ClusterFederatedTrustDomain came to.
type fedResult struct {
	obj *unstructured.Unstructured
	// rel and bootstrap are set when the spec is valid.
	rel       store.FederationRelationship
	bootstrap []store.Authority
	// The problem, for the Ready condition; "" when in force.
	reason, message string
}

// desiredFederations checks the ClusterFederatedTrustDomains of this
// controller's class, oldest first: the first valid one for a trust domain
// states its relationship on every server alike, later ones are masked.
func (c *Controller) desiredFederations(objs []*unstructured.Unstructured) []*fedResult {
	slices.SortFunc(objs, oldestFirst)
	owner := c.relationshipOwner()
	first := map[string]string{} // trust domain -> resource name
	var out []*fedResult
	for _, u := range objs {
		if class, _, _ := unstructured.NestedString(u.Object, "spec", "className"); !c.handles(class) {
			continue
		}
		r := &fedResult{obj: u}
		out = append(out, r)
		var cr ClusterFederatedTrustDomain
		err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr)
		var rel federation.Relationship
		if err == nil {
			rel, r.bootstrap, err = cr.Spec.Relationship(c.opts.TrustDomain)
		}
		if err != nil {
			r.reason, r.message = ReasonInvalidSpec, clipMessage(err.Error())
			c.opts.Logger.Warn("kubernetes controller: invalid ClusterFederatedTrustDomain", "name", u.GetName(), "error", err)
			continue
		}
		r.rel = rel.StoreForm(owner)
		td := r.rel.TrustDomain
		if winner, taken := first[td]; taken {
			r.reason, r.message = ReasonMasked, fmt.Sprintf("trust domain %s is set by the older ClusterFederatedTrustDomain %s", td, winner)
			continue
		}
		first[td] = u.GetName()
	}
	return out
}

func (c *Controller) relationshipOwner() string {
	return RelationshipOwner(c.opts.Cluster, c.opts.ClassName)
}

// notOwnedError refuses to change a relationship managed by someone else.
type notOwnedError struct {
	trustDomain, owner string
}

func (e *notOwnedError) Error() string {
	if e.owner == "" {
		return fmt.Sprintf("the federation relationship with %s is an operator's (signet server federation create), left as it is; `signet server federation delete` hands it to this resource", e.trustDomain)
	}
	return fmt.Sprintf("the federation relationship with %s is managed by %s: left as it is", e.trustDomain, e.owner)
}

// applyFederations makes the store's relationships of this controller's
// owner those of the results in force: each one put (its bootstrap bundle
// first, if the store holds none, so that the first fetch of an
// https_spiffe endpoint can authenticate it), and the rest of its owner's
// deleted. Relationships of others are never changed; a result that asks
// for one is marked ReasonNotOwned. It returns how many writes failed (the
// results say which); an error means the store could not be read.
func (c *Controller) applyFederations(ctx context.Context, results []*fedResult) (failures int, err error) {
	owner := c.relationshipOwner()
	stored, err := c.opts.Store.ListFederationRelationships(ctx)
	if err != nil {
		return 0, fmt.Errorf("list federation relationships: %w", err)
	}
	have := map[string]store.FederationRelationship{}
	for _, r := range stored {
		have[r.TrustDomain] = r
	}
	var held []string // trust domains with a bundle; read only if needed
	if slices.ContainsFunc(results, func(r *fedResult) bool { return r.reason == "" && r.bootstrap != nil }) {
		if held, err = c.opts.Store.ListBundleTrustDomains(ctx); err != nil {
			return 0, fmt.Errorf("list bundles: %w", err)
		}
	}
	log := c.opts.Logger
	fail := func(r *fedResult, what string, err error) {
		failures++
		r.reason, r.message = ReasonStoreFailed, clipMessage(fmt.Sprintf("%s: %v", what, err))
		log.Error("kubernetes controller: "+what, "name", r.obj.GetName(), "trust_domain", r.rel.TrustDomain, "error", err)
	}
	ours := func(cur *store.FederationRelationship) error {
		if cur != nil && cur.Owner != owner {
			return &notOwnedError{cur.TrustDomain, cur.Owner}
		}
		return nil
	}
	want := map[string]bool{}
	for _, r := range results {
		if r.reason != "" {
			continue
		}
		td := r.rel.TrustDomain
		want[td] = true
		cur, exists := have[td]
		if exists {
			if err := ours(&cur); err != nil {
				r.reason, r.message = ReasonNotOwned, err.Error()
				continue
			}
		}
		// Also when the relationship is stored: a bundle deleted since
		// (`bundle delete`) leaves an https_spiffe endpoint unverifiable.
		// The bundle goes in the relationship's transaction, so a refused
		// write (another owner meanwhile) leaves no bundle behind either.
		needBundle := r.bootstrap != nil && !slices.Contains(held, td)
		if exists && sameRelationship(cur, r.rel) && !needBundle {
			continue // no write transaction for what is already so
		}
		var opts []store.RelationshipOption
		if needBundle {
			opts = append(opts, store.WithBootstrapBundle(r.bootstrap))
		}
		changed, err := c.opts.Store.PutFederationRelationship(ctx, r.rel, ours, opts...)
		var notOurs *notOwnedError
		switch {
		case errors.As(err, &notOurs): // created by someone else meanwhile
			r.reason, r.message = ReasonNotOwned, notOurs.Error()
		case err != nil:
			fail(r, "put federation relationship", err)
		case changed:
			log.Info("kubernetes controller: federation relationship set", "name", r.obj.GetName(), "trust_domain", td,
				"bundle_endpoint_url", r.rel.BundleEndpointURL, "profile", r.rel.Profile, "bootstrap_bundle", needBundle)
		}
	}
	for _, cur := range stored {
		if cur.Owner != owner || want[cur.TrustDomain] {
			continue
		}
		err := c.opts.Store.DeleteFederationRelationship(ctx, cur.TrustDomain, func(cur store.FederationRelationship) error {
			return ours(&cur)
		})
		var notOurs *notOwnedError
		switch {
		case errors.Is(err, store.ErrNotFound) || errors.As(err, &notOurs):
			// deleted, or replaced by someone else, meanwhile
		case err != nil:
			failures++
			log.Error("kubernetes controller: delete federation relationship", "trust_domain", cur.TrustDomain, "error", err)
		default:
			log.Info("kubernetes controller: federation relationship deleted", "trust_domain", cur.TrustDomain)
		}
	}
	return failures, nil
}

// sameRelationship compares what the controller sets.
func sameRelationship(a, b store.FederationRelationship) bool {
	return a.BundleEndpointURL == b.BundleEndpointURL && a.Profile == b.Profile &&
		a.EndpointSPIFFEID == b.EndpointSPIFFEID && a.Owner == b.Owner
}

// reconcileFederations brings the store's relationships in line with the
// ClusterFederatedTrustDomains and records each one's status.
func (c *Controller) reconcileFederations(ctx context.Context, objs []*unstructured.Unstructured) error {
	results := c.desiredFederations(objs)
	failures, err := c.applyFederations(ctx, results)
	if err != nil {
		return err // nothing known to report
	}
	for _, r := range results {
		var cur ClusterFederatedTrustDomainStatus
		readStatus(r.obj, &cur)
		next := ClusterFederatedTrustDomainStatus{Conditions: slices.Clone(cur.Conditions)}
		meta.SetStatusCondition(&next.Conditions, ready(r.obj, r.reason, r.message,
			"federation relationship with "+r.rel.TrustDomain+" set"))
		c.writeStatus(ctx, FederatedTrustDomainGVR, r.obj, &cur, &next)
	}
	if failures > 0 {
		return fmt.Errorf("%d federation relationships could not be written", failures)
	}
	return nil
}
