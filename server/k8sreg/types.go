package k8sreg

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The ClusterSPIFFEID custom resource (deploy/base/crd-clusterspiffeid.yaml).
const (
	Group    = "signetid.io"
	Version  = "v1alpha1"
	Kind     = "ClusterSPIFFEID"
	Resource = "clusterspiffeids"
)

// GVR names the resource for the dynamic client.
var GVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// ClusterSPIFFEID is a cluster-scoped description of the identity given to
// the pods it selects.
type ClusterSPIFFEID struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterSPIFFEIDSpec   `json:"spec"`
	Status ClusterSPIFFEIDStatus `json:"status,omitempty"`
}

// ClusterSPIFFEIDSpec is SPIRE's ClusterSPIFFEID spec. Templates are Go
// text/template over TemplateData.
type ClusterSPIFFEIDSpec struct {
	// SPIFFEIDTemplate renders the workload's SPIFFE ID.
	SPIFFEIDTemplate string `json:"spiffeIDTemplate"`
	// PodSelector and NamespaceSelector scope the pods; unset selects all.
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// WorkloadSelectorTemplates render selectors added to k8s:pod-uid.
	WorkloadSelectorTemplates []string `json:"workloadSelectorTemplates,omitempty"`
	// DNSNameTemplates render the X509-SVID's DNS names.
	DNSNameTemplates []string `json:"dnsNameTemplates,omitempty"`
	// TTL and JWTTTL bound the SVIDs' lifetimes; zero is the server's default.
	TTL    metav1.Duration `json:"ttl,omitempty"`
	JWTTTL metav1.Duration `json:"jwtTtl,omitempty"`
	// FederatesWith names trust domains whose bundles the workload gets.
	FederatesWith []string `json:"federatesWith,omitempty"`
	Hint          string   `json:"hint,omitempty"`
	Admin         bool     `json:"admin,omitempty"`
	// Downstream marks the pods as downstream Signet servers of the trust
	// domain, which the server signs intermediate CAs for.
	Downstream bool `json:"downstream,omitempty"`
	// AutoPopulateDNSNames adds the names of the Services whose
	// EndpointSlices list the pod: svc, svc.ns, svc.ns.svc and, with the
	// controller's cluster_domain, svc.ns.svc.<cluster domain>.
	AutoPopulateDNSNames bool `json:"autoPopulateDNSNames,omitempty"`
	// Fallback applies this resource to a pod only when no resource
	// without Fallback selects it: a default identity that specific ones
	// replace.
	Fallback bool `json:"fallback,omitempty"`
	// ClassName picks the controller that handles the resource (the
	// controller's class_name); empty is handled by a controller with no
	// class_name or with watch_classless.
	ClassName string `json:"className,omitempty"`
}

// ClusterSPIFFEIDStatus is what the controller made of the resource.
type ClusterSPIFFEIDStatus struct {
	Stats ClusterSPIFFEIDStats `json:"stats"`
	// Conditions holds ConditionReady: False with the first problem
	// (a template that does not parse, an entry that does not validate, a
	// store write that failed), so `kubectl describe` shows it.
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ClusterSPIFFEIDStats are SPIRE's statistics, under its names.
type ClusterSPIFFEIDStats struct {
	NamespacesSelected int `json:"namespacesSelected"`
	NamespacesIgnored  int `json:"namespacesIgnored"`
	PodsSelected       int `json:"podsSelected"`
	// PodEntryRenderFailures counts pods whose entry did not render or
	// validate; nothing is stored for them.
	PodEntryRenderFailures int `json:"podEntryRenderFailures"`
	// EntriesMasked counts entries another (older) ClusterSPIFFEID also
	// renders: one entry is stored, from the older resource.
	EntriesMasked int `json:"entriesMasked"`
	EntriesToSet  int `json:"entriesToSet"`
	// EntryFailures counts entries the store refused to create or update.
	EntryFailures int `json:"entryFailures"`
}

// ConditionReady is the condition type the controller sets.
const ConditionReady = "Ready"

// Reasons of ConditionReady.
const (
	ReasonReconciled   = "Reconciled"
	ReasonInvalidSpec  = "InvalidSpec"
	ReasonRenderFailed = "RenderFailed"
	ReasonEntryFailed  = "EntryFailed"
)

// The ClusterStaticEntry custom resource (deploy/base/crd-clusterstaticentry.yaml).
const (
	StaticEntryKind     = "ClusterStaticEntry"
	StaticEntryResource = "clusterstaticentries"
)

// StaticEntryGVR names ClusterStaticEntries for the dynamic client.
var StaticEntryGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: StaticEntryResource}

// ClusterStaticEntry is one registration entry, written as a cluster
// resource: for what no pod template renders (a node alias, a workload
// outside the cluster) but should be kept with the cluster's manifests.
type ClusterStaticEntry struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterStaticEntrySpec   `json:"spec"`
	Status ClusterStaticEntryStatus `json:"status,omitempty"`
}

// ClusterStaticEntrySpec is SPIRE's ClusterStaticEntry spec, less
// storeSVID, plus Node: Signet names node-alias entries with a flag where
// SPIRE uses the server's ID as parent.
type ClusterStaticEntrySpec struct {
	SPIFFEID string `json:"spiffeID"`
	// ParentID is the agent (or node alias) that serves the entry; unset
	// with Node.
	ParentID string `json:"parentID,omitempty"`
	// Node makes a node-alias entry: agents whose node selectors match
	// Selectors also hold SPIFFEID.
	Node      bool     `json:"node,omitempty"`
	Selectors []string `json:"selectors"`
	// FederatesWith names trust domains whose bundles the workload gets.
	FederatesWith []string        `json:"federatesWith,omitempty"`
	X509SVIDTTL   metav1.Duration `json:"x509SVIDTTL,omitempty"`
	JWTSVIDTTL    metav1.Duration `json:"jwtSVIDTTL,omitempty"`
	DNSNames      []string        `json:"dnsNames,omitempty"`
	Hint          string          `json:"hint,omitempty"`
	Admin         bool            `json:"admin,omitempty"`
	// Downstream marks the workload as a downstream Signet server of the
	// trust domain; not with Node.
	Downstream bool `json:"downstream,omitempty"`
	// ClassName picks the controller, as a ClusterSPIFFEID's does.
	ClassName string `json:"className,omitempty"`
}

// ClusterStaticEntryStatus is what the controller made of the resource,
// under SPIRE's names, with a Ready condition naming any problem.
type ClusterStaticEntryStatus struct {
	// Rendered: the spec makes a valid entry.
	Rendered bool `json:"rendered"`
	// Masked: an older resource renders the same entry (same SPIFFE ID,
	// parent and selectors); that one is stored.
	Masked bool `json:"masked"`
	// Set: the entry is in the store as the spec says.
	Set        bool               `json:"set"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// The ClusterFederatedTrustDomain custom resource
// (deploy/base/crd-clusterfederatedtrustdomain.yaml).
const (
	FederatedTrustDomainKind     = "ClusterFederatedTrustDomain"
	FederatedTrustDomainResource = "clusterfederatedtrustdomains"
)

// FederatedTrustDomainGVR names ClusterFederatedTrustDomains for the
// dynamic client.
var FederatedTrustDomainGVR = schema.GroupVersionResource{Group: Group, Version: Version, Resource: FederatedTrustDomainResource}

// ClusterFederatedTrustDomain is a federation relationship with a foreign
// trust domain, written as a cluster resource: the controller keeps it in
// the store, where every server's federation service fetches its bundle.
type ClusterFederatedTrustDomain struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterFederatedTrustDomainSpec   `json:"spec"`
	Status ClusterFederatedTrustDomainStatus `json:"status,omitempty"`
}

// ClusterFederatedTrustDomainSpec is SPIRE's ClusterFederatedTrustDomain
// spec, under its names.
type ClusterFederatedTrustDomainSpec struct {
	// TrustDomain is the foreign trust domain (example.org; spiffe://example.org
	// is taken too).
	TrustDomain string `json:"trustDomain"`
	// BundleEndpointURL is its bundle endpoint: https://host[:port][/path].
	BundleEndpointURL     string                `json:"bundleEndpointURL"`
	BundleEndpointProfile BundleEndpointProfile `json:"bundleEndpointProfile"`
	// TrustDomainBundle is a SPIFFE bundle document of the trust domain,
	// stored only while the store holds no bundle for it: what an
	// https_spiffe endpoint is first authenticated with. Fetched bundles
	// replace it and it never replaces them.
	TrustDomainBundle string `json:"trustDomainBundle,omitempty"`
	// ClassName picks the controller, as a ClusterSPIFFEID's does.
	ClassName string `json:"className,omitempty"`
}

// BundleEndpointProfile is how the bundle endpoint authenticates itself.
type BundleEndpointProfile struct {
	// Type is https_spiffe or https_web.
	Type string `json:"type"`
	// EndpointSPIFFEID is the ID an https_spiffe endpoint presents; unset
	// is a Signet server's, spiffe://<trustDomain>/signet/server (a SPIRE
	// server's, spiffe://<trustDomain>/spire/server, must be given).
	EndpointSPIFFEID string `json:"endpointSPIFFEID,omitempty"`
}

// ClusterFederatedTrustDomainStatus is what the controller made of the
// resource: a Ready condition, False with why the relationship is not in
// force (an invalid spec, an older resource for the same trust domain, a
// relationship someone else manages, a store write that failed).
type ClusterFederatedTrustDomainStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Reasons of a ClusterFederatedTrustDomain's ConditionReady, beside
// ReasonReconciled and ReasonInvalidSpec.
const (
	// ReasonMasked: an older resource states the same trust domain.
	ReasonMasked = "Masked"
	// ReasonNotOwned: the store's relationship with the trust domain is an
	// operator's or another controller's, and is left to them.
	ReasonNotOwned = "NotOwned"
	// ReasonStoreFailed: the store refused a write.
	ReasonStoreFailed = "StoreFailed"
)
