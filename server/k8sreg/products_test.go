package k8sreg

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/internal/logtest"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// staticEntry is the entry a ClusterStaticEntry of spec states.
func staticEntry(t *testing.T, spec ClusterStaticEntrySpec) registry.Entry {
	t.Helper()
	e, err := spec.Entry(td, "prod")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestPodEntry: what tells a ClusterSPIFFEID's entries from the other
// entries the controller owns. Every rendered entry is a pod's entry
// (TestRender checks that too); of the entries ClusterStaticEntries state,
// only one with a pod's form is.
func TestPodEntry(t *testing.T) {
	ctrl := &Controller{opts: Options{TrustDomain: td, Cluster: "prod"}}
	s, err := parseSpec(ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, WorkloadSelectorTemplates: []string{"k8s:ns:{{ .PodMeta.Namespace }}"}})
	if err != nil {
		t.Fatal(err)
	}
	rendered, err := s.render(site{td: td, cluster: "prod"}, testPod(), testNode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	agent := "spiffe://example.org/agent/k8s_psat/prod/node-uid-1"
	for _, tc := range []struct {
		name string
		e    registry.Entry
		want bool
	}{
		{"rendered for a pod", rendered, true},
		{"a ClusterStaticEntry stating a pod's entry", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/web",
			ParentID: agent, Selectors: []string{"k8s:pod-uid:1234"}}), true},
		{"node alias", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/nodes", Node: true,
			Selectors: []string{"k8s_psat:cluster:prod"}}), false},
		{"a workload outside the cluster", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db",
			ParentID: "spiffe://example.org/agent/join_token/n1", Selectors: []string{"unix:uid:70"}}), false},
		{"this cluster's agent, no pod UID", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/ds",
			ParentID: agent, Selectors: []string{"k8s:ns:kube-system", "k8s:sa:ds"}}), false},
		{"another cluster's agent", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/web",
			ParentID: "spiffe://example.org/agent/k8s_psat/prod2/node-uid-1", Selectors: []string{"k8s:pod-uid:1234"}}), false},
		{"a path under an agent", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/web",
			ParentID: agent + "/x", Selectors: []string{"k8s:pod-uid:1234"}}), false},
		{"a node alias by pod UID", staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/web", Node: true,
			Selectors: []string{"k8s:pod-uid:1234"}}), false},
	} {
		if got := ctrl.podEntry(tc.e); got != tc.want {
			t.Errorf("%s: podEntry = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestMayChange: an owned entry is updated or deleted only when every
// product that may state it has synced.
func TestMayChange(t *testing.T) {
	for _, tc := range []struct {
		s           synced
		pod, nonPod bool
		why         string
	}{
		{synced{}, false, false, "nothing synced"},
		{synced{specs: true, statics: true, feds: true}, true, true, "all synced"},
		{synced{specs: true, statics: true}, true, true, "federations are no entries' product"},
		{synced{specs: true}, false, false, "a ClusterStaticEntry not yet read may state a pod's entry"},
		{synced{specs: true, noStatics: true}, true, false, "no ClusterStaticEntry CRD: none states a pod's entry, the stored ones are kept"},
		{synced{statics: true}, false, true, "ClusterSPIFFEIDs not yet read"},
		{synced{noStatics: true}, false, false, "no ClusterStaticEntry CRD, ClusterSPIFFEIDs not yet read"},
	} {
		if got := tc.s.mayChange(true); got != tc.pod {
			t.Errorf("%s: %+v: mayChange(pod entry) = %v, want %v", tc.why, tc.s, got, tc.pod)
		}
		if got := tc.s.mayChange(false); got != tc.nonPod {
			t.Errorf("%s: %+v: mayChange(other entry) = %v, want %v", tc.why, tc.s, got, tc.nonPod)
		}
	}
}

// TestProductsStartAlone runs the controller against a real API server
// that has only the ClusterSPIFFEID CRD: ClusterSPIFFEIDs are reconciled in
// full at once, while what the ClusterStaticEntry and federation products
// keep in the store stays as it is, however stale; once their CRDs are
// applied those products start too, without a restart.
func TestProductsStartAlone(t *testing.T) {
	ctx := context.Background()
	api := kubetest.StartRealAPIServer(t)
	applyCRDs(t, api, "crd-clusterspiffeid.yaml")
	c := clusterAt(t, api.Kubeconfig(t, t.TempDir()))

	// In the store before the controller starts, all stale: an entry of a
	// ClusterStaticEntry deleted meanwhile, a relationship of a
	// ClusterFederatedTrustDomain deleted meanwhile, and the entry of a
	// pod that is gone.
	st := sqliteStore(t)
	staleStatic := staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db",
		ParentID: "spiffe://example.org/agent/join_token/n1", Selectors: []string{"unix:uid:70"}})
	stalePod := staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/ns/shop/sa/sa-gone",
		ParentID: "spiffe://example.org/agent/k8s_psat/prod/node-uid-gone", Selectors: []string{"k8s:pod-uid:uid-gone"}})
	for _, e := range []registry.Entry{staleStatic, stalePod} {
		if _, err := st.CreateEntry(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	staleRel := store.FederationRelationship{TrustDomain: "gone.org", BundleEndpointURL: "https://gone.org/b", Profile: "https_web",
		Owner: RelationshipOwner("prod", "")}
	if _, err := st.PutFederationRelationship(ctx, staleRel, nil); err != nil {
		t.Fatal(err)
	}
	staleRelLine := "gone.org https://gone.org/b https_web  k8s_controller/prod"
	wantRelationships(t, st, staleRelLine)

	logs := &logtest.Buffer{}
	c.start(t, st, func(o *Options) { o.Logger = logs.Logger() })
	logs.WaitFor(t, `waiting="ClusterSPIFFEID entries: pods, namespaces, nodes, endpointslices, clusterspiffeids; `+
		`ClusterStaticEntry entries: clusterstaticentries; federation relationships: clusterfederatedtrustdomains"`, time.Minute)
	logs.WaitFor(t, `product="ClusterSPIFFEID entries"`, time.Minute)
	for _, kind := range []string{StaticEntryKind, FederatedTrustDomainKind} {
		logs.WaitFor(t, "install the "+kind+" CRD", time.Minute)
		if !slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(line string) bool {
			return strings.Contains(line, "level=ERROR") && strings.Contains(line, "install the "+kind+" CRD")
		}) {
			t.Errorf("the missing %s CRD is not logged at ERROR", kind)
		}
	}

	// ClusterSPIFFEIDs: the pod's entry is created, the gone pod's deleted
	// (no ClusterStaticEntry can state it: there is no such resource).
	// Federations are reconciled before entries, so by then a stale
	// deletion of either would have run too.
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	web := c.pod(t, "shop", "web", "node-1", nil)
	c.apply(t, "all", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: nsSA})
	webEntry := "spiffe://example.org/ns/shop/sa/sa-web " + agent + " k8s:pod-uid:" + string(web.UID)
	wantEntries(t, st, describe(staleStatic), webEntry)
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 1, EntriesToSet: 1}, metav1.ConditionTrue, "1 entries set")
	if got := relationships(t, st); !slices.Equal(got, []string{staleRelLine}) {
		t.Fatalf("relationships %q while ClusterFederatedTrustDomains cannot be read, want the stored one kept", got)
	}
	for _, p := range []string{staticEntries, federations} {
		if strings.Contains(logs.String(), `product="`+p+`"`) {
			t.Fatalf("%s started without their CRD", p)
		}
	}

	// The CRDs applied: both products start, with no resource yet, and
	// their stale entry and relationship go; then their resources are
	// reconciled.
	applyCRDs(t, api, "crd-clusterstaticentry.yaml", "crd-clusterfederatedtrustdomain.yaml")
	logs.WaitFor(t, `product="`+staticEntries+`"`, time.Minute)
	logs.WaitFor(t, `product="`+federations+`"`, time.Minute)
	wantEntries(t, st, webEntry)
	wantRelationships(t, st)
	c.applyStatic(t, "cache", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/cache",
		ParentID: "spiffe://example.org/agent/join_token/n1", Selectors: []string{"unix:uid:80"}})
	c.applyFederation(t, "partner", ClusterFederatedTrustDomainSpec{TrustDomain: "partner.org", BundleEndpointURL: "https://partner.org/b",
		BundleEndpointProfile: BundleEndpointProfile{Type: "https_web"}})
	wantEntries(t, st, webEntry, "spiffe://example.org/cache spiffe://example.org/agent/join_token/n1 unix:uid:80")
	wantStaticStatus(t, c, "cache", true, false, true, metav1.ConditionTrue, "set")
	wantRelationships(t, st, "partner.org https://partner.org/b https_web  k8s_controller/prod")
	wantFedStatus(t, c, "partner", metav1.ConditionTrue, ReasonReconciled, "set")
	for _, p := range []string{specEntries, staticEntries, federations} {
		if n := strings.Count(logs.String(), `product="`+p+`"`); n != 1 {
			t.Errorf("%s started %d times, want once", p, n)
		}
	}
}

// TestProductsWaitForRBAC runs the controller as an identity that may read
// everything but ClusterStaticEntries, one of which states a pod's entry
// (and so wins over the ClusterSPIFFEID that renders it too): while they
// cannot be read, ClusterSPIFFEIDs only add entries, since any stored pod's
// entry may be that resource's; once the permission is granted, the
// ClusterStaticEntry product starts and the stale entries go.
func TestProductsWaitForRBAC(t *testing.T) {
	ctx := context.Background()
	api := kubetest.StartRealAPIServer(t)
	applyCRDs(t, api, crdFiles...)
	c := clusterAt(t, api.Kubeconfig(t, t.TempDir()))
	// The server's RBAC (deploy/base/server-rbac.yaml) less ClusterStaticEntries.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "controller"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{Group}, Resources: []string{Resource, FederatedTrustDomainResource}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{Group}, Resources: []string{Resource + "/status", FederatedTrustDomainResource + "/status"}, Verbs: []string{"update"}},
	}}
	roles := c.client.RbacV1().ClusterRoles()
	role, err := roles.Create(ctx, role, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "controller"}}
	if _, err := c.client.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "controller"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "controller"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "controller"}}}
	if _, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := api.TokenRequest(ctx, "default", "controller", "", "")
	if err != nil {
		t.Fatal(err)
	}
	client, dyn, err := Clients(api.KubeconfigFor(t, t.TempDir(), "controller", tok))
	if err != nil {
		t.Fatal(err)
	}

	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	web := c.pod(t, "shop", "web", "node-1", nil)
	c.apply(t, "all", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: nsSA})
	overrideSpec := ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/ns/shop/sa/sa-web", ParentID: agent,
		Selectors: []string{"k8s:pod-uid:" + string(web.UID)}, Hint: "static"}
	c.applyStatic(t, "web-override", overrideSpec)
	// In the store, as a controller that could read everything left it:
	// the ClusterStaticEntry's entry for web, and two entries whose
	// resources have gone since: a pod's and another ClusterStaticEntry's.
	st := sqliteStore(t)
	override := staticEntry(t, overrideSpec)
	stalePod := staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/ns/shop/sa/sa-gone",
		ParentID: agent, Selectors: []string{"k8s:pod-uid:uid-gone"}})
	staleStatic := staticEntry(t, ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/db",
		ParentID: "spiffe://example.org/agent/join_token/n1", Selectors: []string{"unix:uid:70"}})
	for _, e := range []registry.Entry{override, stalePod, staleStatic} {
		if _, err := st.CreateEntry(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	wantHint := func() {
		t.Helper()
		got, err := st.GetEntry(ctx, override.ID)
		if err != nil || got.Hint != "static" {
			t.Fatalf("the ClusterStaticEntry's entry for web: %+v, %v; want it kept, hint static", got, err)
		}
	}

	logs := &logtest.Buffer{}
	c.start(t, st, func(o *Options) { o.Client, o.Dynamic, o.Logger = client, dyn, logs.Logger() })
	logs.WaitFor(t, "may not list and watch "+StaticEntryResource, time.Minute)
	logs.WaitFor(t, `product="`+specEntries+`"`, time.Minute)
	// A new pod gets its entry; once its status says so, the reconcile
	// that would have updated or deleted the others is over.
	apiPod := c.pod(t, "shop", "api", "node-1", nil)
	apiEntry := "spiffe://example.org/ns/shop/sa/sa-api " + agent + " k8s:pod-uid:" + string(apiPod.UID)
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 2, EntriesToSet: 2}, metav1.ConditionTrue, "2 entries set")
	want := []string{describe(override), describe(stalePod), describe(staleStatic), apiEntry}
	if got := entries(t, st); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("entries while ClusterStaticEntries cannot be read:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	wantHint()

	// Granted: the ClusterStaticEntry product starts, its resource masks
	// the ClusterSPIFFEID's entry for web, and the stale entries go.
	role.Rules = append(role.Rules,
		rbacv1.PolicyRule{APIGroups: []string{Group}, Resources: []string{StaticEntryResource}, Verbs: []string{"get", "list", "watch"}},
		rbacv1.PolicyRule{APIGroups: []string{Group}, Resources: []string{StaticEntryResource + "/status"}, Verbs: []string{"update"}})
	if _, err := roles.Update(ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	logs.WaitFor(t, `product="`+staticEntries+`"`, time.Minute)
	wantEntries(t, st, describe(override), apiEntry)
	wantHint()
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 2, EntriesToSet: 1, EntriesMasked: 1}, metav1.ConditionTrue, "1 entries set")
	wantStaticStatus(t, c, "web-override", true, false, true, metav1.ConditionTrue, "set")
}
