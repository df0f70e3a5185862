// Package k8sreg is the Kubernetes registration controller: it turns
// ClusterSPIFFEID resources (group signetid.io, shaped like SPIRE's
// spire-controller-manager's) into registration entries for the cluster's
// pods, so a pod gets its identity without an `entry create`. It watches
// pods, namespaces, nodes, EndpointSlices and ClusterSPIFFEIDs with client-go
// informers and,
// after any change, reconciles the whole desired set of entries with the
// ones it owns in the store. Owned entries carry deterministic IDs
// (OwnedIDPrefix, the cluster and a hash of SPIFFE ID, parent and
// selectors), so servers sharing a store converge on one set instead of
// duplicating it, and entries written by anyone else are never touched.
// ClusterStaticEntries add one entry each, under the same rules.
//
// ClusterFederatedTrustDomains become the store's federation relationships,
// which every server's federation service follows. The controller's carry
// Owner RelationshipOwner(cluster, className); it never changes one with
// another owner (an operator's, made with `signet server federation
// create`, or another controller's), and deletes its own once no resource
// asks for them.
//
// Each of the three products (ClusterSPIFFEID entries, ClusterStaticEntry
// entries, federation relationships) is reconciled as soon as the
// informers it reads have synced, so a CRD or a permission missing holds
// up only its own. What a product not yet synced keeps in the store is
// left alone: relationships by their owner, entries by their form (every
// ClusterSPIFFEID entry is a pod's entry, see podEntry; anything else the
// controller owns is a ClusterStaticEntry's).
package k8sreg
