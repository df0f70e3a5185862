package k8sreg

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/signetid/signet/internal/kubetest"
	"github.com/signetid/signet/internal/pgtest"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cluster is the Kubernetes API the tests run against: a real
// kube-apiserver when make test provides one ($SIGNET_KUBE_APISERVER), else
// the stand-in. newCluster is the only place that makes one, and the tests
// change it only through client-go.
type cluster struct {
	kubeconfig string
	client     kubernetes.Interface
	dyn        dynamic.Interface
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv(kubetest.EnvKubeAPIServer) != "" {
		// A real kube-apiserver (make kube-bins), with deploy/base's CRDs.
		api := kubetest.StartRealAPIServer(t)
		applyCRDs(t, api, crdFiles...)
		return clusterAt(t, api.Kubeconfig(t, t.TempDir()))
	}
	return clusterAt(t, kubetest.NewAPIServer(t).Kubeconfig(t, t.TempDir()))
}

// clusterAt is the cluster a kubeconfig reaches.
func clusterAt(t *testing.T, kubeconfig string) *cluster {
	t.Helper()
	c := &cluster{kubeconfig: kubeconfig}
	var err error
	if c.client, c.dyn, err = Clients(c.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return c
}

// crdFiles are deploy/base's CRDs, which a real API server needs.
var crdFiles = []string{"crd-clusterspiffeid.yaml", "crd-clusterstaticentry.yaml", "crd-clusterfederatedtrustdomain.yaml"}

// applyCRDs installs deploy/base's CRDs of files in a real API server.
func applyCRDs(t *testing.T, api *kubetest.RealAPIServer, files ...string) {
	t.Helper()
	for _, f := range files {
		crd, err := os.ReadFile("../../deploy/base/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if err := api.Apply(context.Background(), "", crd); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *cluster) namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	ns, err := c.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if _, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return
	}
	ns.Labels = labels
	if _, err := c.client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// node creates a node and returns the ID of its agent.
func (c *cluster) node(t *testing.T, name string) string {
	t.Helper()
	n, err := c.client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return "spiffe://example.org/agent/k8s_psat/prod/" + string(n.UID)
}

func (c *cluster) pod(t *testing.T, ns, name, node string, labels map[string]string) *corev1.Pod {
	t.Helper()
	// A real API server admits a pod only with its service account.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sa-" + name}}
	if _, err := c.client.CoreV1().ServiceAccounts(ns).Create(context.Background(), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p, err := c.client.CoreV1().Pods(ns).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "sa-" + name,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// endpointSlice creates or replaces the EndpointSlice of Service svc that
// lists pods, as manager (kube-controller-manager's endpointslice
// controller, say) would write it.
func (c *cluster) endpointSlice(t *testing.T, ns, svc, manager string, pods ...*corev1.Pod) {
	t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-x1",
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: manager}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, p := range pods {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}})
	}
	slices := c.client.DiscoveryV1().EndpointSlices(ns)
	cur, err := slices.Get(context.Background(), s.Name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = cur.ResourceVersion
		_, err = slices.Update(context.Background(), s, metav1.UpdateOptions{})
	} else {
		_, err = slices.Create(context.Background(), s, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) deletePod(t *testing.T, ns, name string) {
	t.Helper()
	if err := c.client.CoreV1().Pods(ns).Delete(context.Background(), name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
}

// apply creates or replaces a ClusterSPIFFEID, as kubectl apply would.
func (c *cluster) apply(t *testing.T, name string, spec ClusterSPIFFEIDSpec) {
	t.Helper()
	c.applyResource(t, GVR, Kind, name, &spec)
}

// applyStatic creates or replaces a ClusterStaticEntry.
func (c *cluster) applyStatic(t *testing.T, name string, spec ClusterStaticEntrySpec) {
	t.Helper()
	c.applyResource(t, StaticEntryGVR, StaticEntryKind, name, &spec)
}

func (c *cluster) applyResource(t *testing.T, gvr schema.GroupVersionResource, kind, name string, spec any) {
	t.Helper()
	ctx := context.Background()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(spec)
	if err != nil {
		t.Fatal(err)
	}
	res := c.dyn.Resource(gvr)
	// The controller's status writes race with the update: retry as
	// kubectl would.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := res.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": Group + "/" + Version, "kind": kind,
				"metadata": map[string]any{"name": name}, "spec": m}}
			_, err = res.Create(ctx, u, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		cur.Object["spec"] = m
		_, err = res.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) deleteCR(t *testing.T, name string) {
	t.Helper()
	if err := c.dyn.Resource(GVR).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) status(t *testing.T, name string) (ClusterSPIFFEIDStatus, string) {
	t.Helper()
	cr, rv := getResource[ClusterSPIFFEID](t, c, GVR, name)
	return cr.Status, rv
}

// getResource reads a custom resource as its Go type, with its
// resourceVersion.
func getResource[T any](t *testing.T, c *cluster, gvr schema.GroupVersionResource, name string) (T, string) {
	t.Helper()
	var cr T
	u, err := c.dyn.Resource(gvr).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr); err != nil {
		t.Fatal(err)
	}
	return cr, u.GetResourceVersion()
}

func sqliteStore(t testing.TB) store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "signet.db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// start runs a controller, its options changed by each of with, until the
// test ends or stop is called.
func (c *cluster) start(t *testing.T, st store.Store, with ...func(*Options)) (ctrl *Controller, stop func()) {
	t.Helper()
	opts := Options{Client: c.client, Dynamic: c.dyn, Store: st, TrustDomain: td, Cluster: "prod",
		IgnoreNamespaces: DefaultIgnoreNamespaces, Debounce: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, f := range with {
		f(&opts)
	}
	ctrl, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return ctrl, stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond until it holds: the controller works asynchronously.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("timed out waiting for %s: %v", what, err)
}

// entries returns the store's entries as "spiffeID parent selectors..." lines.
func entries(t *testing.T, st store.Store) []string {
	t.Helper()
	all, err := st.ListEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range all {
		out = append(out, describe(e))
	}
	slices.Sort(out)
	return out
}

func describe(e registry.Entry) string {
	s := e.SPIFFEID.String() + " " + e.ParentID.String() + " " + strings.Join(selector.Strings(e.Selectors), ",")
	if len(e.DNSNames) > 0 {
		s += " dns=" + strings.Join(e.DNSNames, ",")
	}
	if e.X509TTL != 0 {
		s += " ttl=" + e.X509TTL.String()
	}
	if e.Downstream {
		s += " downstream"
	}
	return s
}

func wantEntries(t *testing.T, st store.Store, want ...string) {
	t.Helper()
	wantSorted(t, "entries", func() []string { return entries(t, st) }, want)
}

// wantSorted waits until list returns want, in any order.
func wantSorted(t *testing.T, what string, list func() []string, want []string) {
	t.Helper()
	slices.Sort(want)
	waitFor(t, what, func() error {
		got := list()
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("%s\n  %s\nwant\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		return nil
	})
}

func wantStatus(t *testing.T, c *cluster, name string, stats ClusterSPIFFEIDStats, ready metav1.ConditionStatus, msg string) {
	t.Helper()
	waitFor(t, "status of "+name, func() error {
		st, _ := c.status(t, name)
		cond := meta.FindStatusCondition(st.Conditions, ConditionReady)
		switch {
		case st.Stats != stats:
			return fmt.Errorf("stats %+v, want %+v", st.Stats, stats)
		case cond == nil || cond.Status != ready || !strings.Contains(cond.Message, msg):
			return fmt.Errorf("ready condition %+v, want %s with %q", cond, ready, msg)
		}
		return nil
	})
}

// testNS labels the tests' namespaces, and testNSSelector selects only
// them: a real API server has namespaces of its own.
var (
	testNS         = map[string]string{"signet-test": "yes"}
	testNSSelector = &metav1.LabelSelector{MatchLabels: testNS}
)

const nsSA = "spiffe://example.org/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"

// TestPodLifecycle: a selected pod gets its entry; a spec change updates
// it; the pod's deletion or end, a namespace relabelled and the
// ClusterSPIFFEID's deletion each remove it.
func TestPodLifecycle(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "payments", map[string]string{"signet": "on"})
	c.namespace(t, "kube-system", map[string]string{"signet": "on"})
	agent := c.node(t, "node-1")
	c.start(t, st)

	c.apply(t, "workloads", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA,
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"signet": "on"}},
		PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}}})
	web := c.pod(t, "payments", "web", "node-1", map[string]string{"app": "web"})
	c.pod(t, "payments", "nolabel", "node-1", nil)                                // not selected by the pod selector
	c.pod(t, "payments", "pending", "", map[string]string{"app": "pending"})      // not scheduled
	c.pod(t, "kube-system", "dns", "node-1", map[string]string{"app": "coredns"}) // ignored namespace
	webEntry := "spiffe://example.org/ns/payments/sa/sa-web " + agent + " k8s:pod-uid:" + string(web.UID)
	wantEntries(t, st, webEntry)
	wantStatus(t, c, "workloads", ClusterSPIFFEIDStats{NamespacesSelected: 1, NamespacesIgnored: 1, PodsSelected: 1, EntriesToSet: 1},
		metav1.ConditionTrue, "1 entries set")
	all, _ := st.ListEntries(context.Background())
	if !ownedBy(all[0].ID, "prod") {
		t.Fatalf("entry ID %q is not the controller's", all[0].ID)
	}

	// Spec change: the entry is updated in place.
	c.apply(t, "workloads", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA,
		NamespaceSelector:         &metav1.LabelSelector{MatchLabels: map[string]string{"signet": "on"}},
		PodSelector:               &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}},
		WorkloadSelectorTemplates: []string{"k8s:ns:{{ .PodMeta.Namespace }}"},
		DNSNameTemplates:          []string{"{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.svc"},
		TTL:                       metav1.Duration{Duration: 10 * time.Minute}})
	webEntry = "spiffe://example.org/ns/payments/sa/sa-web " + agent + " k8s:ns:payments,k8s:pod-uid:" + string(web.UID)
	wantEntries(t, st, webEntry+" dns=web.payments.svc ttl=10m0s")

	// A second pod, then the first one deleted.
	api := c.pod(t, "payments", "api", "node-1", map[string]string{"app": "api"})
	apiEntry := "spiffe://example.org/ns/payments/sa/sa-api " + agent + " k8s:ns:payments,k8s:pod-uid:" + string(api.UID) + " dns=api.payments.svc ttl=10m0s"
	wantEntries(t, st, webEntry+" dns=web.payments.svc ttl=10m0s", apiEntry)
	c.deletePod(t, "payments", "web")
	wantEntries(t, st, apiEntry)

	// A finished pod has no entry.
	api.Status.Phase = corev1.PodSucceeded
	if _, err := c.client.CoreV1().Pods("payments").UpdateStatus(context.Background(), api, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantEntries(t, st)

	// Namespace relabelled: its pods leave.
	db := c.pod(t, "payments", "db", "node-1", map[string]string{"app": "db"})
	wantEntries(t, st, "spiffe://example.org/ns/payments/sa/sa-db "+agent+" k8s:ns:payments,k8s:pod-uid:"+string(db.UID)+" dns=db.payments.svc ttl=10m0s")
	c.namespace(t, "payments", map[string]string{"signet": "off"})
	wantEntries(t, st)
	c.namespace(t, "payments", map[string]string{"signet": "on"})
	wantEntries(t, st, "spiffe://example.org/ns/payments/sa/sa-db "+agent+" k8s:ns:payments,k8s:pod-uid:"+string(db.UID)+" dns=db.payments.svc ttl=10m0s")

	// The ClusterSPIFFEID deleted: its entries go.
	c.deleteCR(t, "workloads")
	wantEntries(t, st)
}

// TestDownstream: a ClusterSPIFFEID's and a ClusterStaticEntry's
// downstream reach their entries (through the CRDs' schemas, on a real API
// server) and are set and cleared in place; a static node alias with
// downstream is refused, naming why.
func TestDownstream(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "signet", testNS)
	agent := c.node(t, "node-1")
	c.start(t, st)

	spec := ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, NamespaceSelector: testNSSelector, Downstream: true}
	c.apply(t, "nested", spec)
	pod := c.pod(t, "signet", "east", "node-1", nil)
	podEntry := "spiffe://example.org/ns/signet/sa/sa-east " + agent + " k8s:pod-uid:" + string(pod.UID)
	static := ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/signet-west", ParentID: "spiffe://example.org/agent/join/n1",
		Selectors: []string{"unix:uid:0"}, Downstream: true}
	c.applyStatic(t, "west", static)
	staticEntry := "spiffe://example.org/signet-west spiffe://example.org/agent/join/n1 unix:uid:0"
	wantEntries(t, st, podEntry+" downstream", staticEntry+" downstream")

	spec.Downstream, static.Downstream = false, false
	c.apply(t, "nested", spec)
	c.applyStatic(t, "west", static)
	wantEntries(t, st, podEntry, staticEntry)
	spec.Downstream = true
	c.apply(t, "nested", spec)
	wantEntries(t, st, podEntry+" downstream", staticEntry)

	c.applyStatic(t, "alias", ClusterStaticEntrySpec{SPIFFEID: "spiffe://example.org/nodes/prod", Node: true,
		Selectors: []string{"k8s_psat:cluster:prod"}, Downstream: true})
	wantStaticStatus(t, c, "alias", false, false, false, metav1.ConditionFalse, "downstream cannot be set on a node-alias entry")
	wantEntries(t, st, podEntry+" downstream", staticEntry)
}

// TestBadTemplates: a ClusterSPIFFEID whose template does not parse, or
// renders an invalid entry for some pods, shows why in its status; nothing
// invalid is stored and the other pods and resources are unaffected.
func TestBadTemplates(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	good := c.pod(t, "shop", "good", "node-1", map[string]string{"tier": "web"})
	bad := c.pod(t, "shop", "bad", "node-1", map[string]string{"tier": "under_score"})
	c.start(t, st)

	c.apply(t, "broken", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: "spiffe://example.org/{{ .PodMeta.Name"})
	c.apply(t, "by-tier", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: "spiffe://example.org/tier/{{ .PodMeta.Name }}",
		DNSNameTemplates: []string{"{{ .PodMeta.Labels.tier }}.shop"}})
	wantEntries(t, st, "spiffe://example.org/tier/good "+agent+" k8s:pod-uid:"+string(good.UID)+" dns=web.shop")
	wantStatus(t, c, "broken", ClusterSPIFFEIDStats{}, metav1.ConditionFalse, "spiffeIDTemplate: template: spiffeIDTemplate:1: unclosed action")
	wantStatus(t, c, "by-tier", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 2, PodEntryRenderFailures: 1, EntriesToSet: 1},
		metav1.ConditionFalse, `pod shop/bad: entry: dns name "under_score.shop"`)

	// Fixed: the condition turns Ready and the bad pod gets its entry.
	c.apply(t, "by-tier", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: "spiffe://example.org/tier/{{ .PodMeta.Name }}"})
	wantEntries(t, st, "spiffe://example.org/tier/good "+agent+" k8s:pod-uid:"+string(good.UID),
		"spiffe://example.org/tier/bad "+agent+" k8s:pod-uid:"+string(bad.UID))
	wantStatus(t, c, "by-tier", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 2, EntriesToSet: 2}, metav1.ConditionTrue, "2 entries set")
}

// TestSameEntryTwice: two ClusterSPIFFEIDs rendering the same entry make
// one entry; the younger one reports it masked, and deleting the older one
// leaves the entry to the younger.
func TestSameEntryTwice(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	p := c.pod(t, "shop", "web", "node-1", nil)
	c.apply(t, "a-first", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: nsSA})
	// Creation timestamps have one-second resolution.
	time.Sleep(1100 * time.Millisecond)
	c.apply(t, "b-second", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: nsSA, Hint: "second"})
	c.start(t, st)
	entry := "spiffe://example.org/ns/shop/sa/sa-web " + agent + " k8s:pod-uid:" + string(p.UID)
	wantEntries(t, st, entry)
	wantStatus(t, c, "b-second", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 1, EntriesMasked: 1}, metav1.ConditionTrue, "0 entries set")
	all, _ := st.ListEntries(context.Background())
	if all[0].Hint != "" {
		t.Fatalf("the younger ClusterSPIFFEID's entry won (hint %q)", all[0].Hint)
	}
	c.deleteCR(t, "a-first")
	waitFor(t, "the entry taken over", func() error {
		all, _ := st.ListEntries(context.Background())
		if len(all) != 1 || all[0].Hint != "second" {
			return fmt.Errorf("entries %v", all)
		}
		return nil
	})
}

// TestOthersEntriesUntouched: entries created through the admin API (UUID
// IDs) survive every reconcile, and one that holds the SPIFFE ID, parent
// and selectors a pod would get is reported, not overwritten.
func TestOthersEntriesUntouched(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	ctx := context.Background()
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	p := c.pod(t, "shop", "web", "node-1", nil)
	p2 := c.pod(t, "shop", "api", "node-1", nil)
	mk := func(id, parent, sel string) registry.Entry {
		e := registry.Entry{SPIFFEID: spiffeid.RequireFromString(id), ParentID: spiffeid.RequireFromString(parent)}
		s, err := selector.Parse(sel)
		if err != nil {
			t.Fatal(err)
		}
		e.Selectors = []selector.Selector{s}
		created, err := st.CreateEntry(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		return created
	}
	mk("spiffe://example.org/admin-made", agent, "k8s:ns:shop")
	mk("spiffe://example.org/ns/shop/sa/sa-web", agent, "k8s:pod-uid:"+string(p.UID)) // what the controller would render
	before := entries(t, st)
	c.start(t, st)
	c.apply(t, "all", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: nsSA})
	apiEntry := "spiffe://example.org/ns/shop/sa/sa-api " + agent + " k8s:pod-uid:" + string(p2.UID)
	wantEntries(t, st, append(slices.Clone(before), apiEntry)...)
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 2, EntriesToSet: 2, EntryFailures: 1},
		metav1.ConditionFalse, "an entry not managed by the controller has the same SPIFFE ID, parent and selectors")
	c.deleteCR(t, "all")
	wantEntries(t, st, before...)
}

// TestStatusWrittenOnlyOnChange: reconciles caused by unrelated changes do
// not rewrite an unchanged status.
func TestStatusWrittenOnlyOnChange(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "shop", testNS)
	c.node(t, "node-1")
	c.pod(t, "shop", "web", "node-1", nil)
	c.start(t, st)
	c.apply(t, "all", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: nsSA})
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 1, EntriesToSet: 1}, metav1.ConditionTrue, "1 entries set")
	_, rv := c.status(t, "all")
	// Unrelated changes, each a reconcile; the last one does change the
	// status, so the test knows every earlier reconcile has run.
	for i := range 3 {
		c.node(t, fmt.Sprintf("other-%d", i))
		time.Sleep(100 * time.Millisecond)
	}
	if _, rv2 := c.status(t, "all"); rv2 != rv {
		t.Fatalf("an unchanged status was rewritten (resourceVersion %s -> %s)", rv, rv2)
	}
	c.pod(t, "shop", "api", "node-1", nil)
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 2, EntriesToSet: 2}, metav1.ConditionTrue, "2 entries set")
}

// TestTwoControllersConverge runs two controllers (two servers) on one
// PostgreSQL store, reconciling the same changes at once: they converge on
// one set of entries, without duplicates or failures.
func TestTwoControllersConverge(t *testing.T) {
	c := newCluster(t)
	url := pgtest.NewDatabase(t)
	open := func() store.Store {
		st, err := store.Open(context.Background(), url, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	a, b := open(), open()
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	c.start(t, a)
	c.start(t, b)
	c.apply(t, "all", ClusterSPIFFEIDSpec{NamespaceSelector: testNSSelector, SPIFFEIDTemplate: "spiffe://example.org/pod/{{ .PodMeta.Name }}"})
	var want []string
	for i := range 20 {
		p := c.pod(t, "shop", fmt.Sprintf("p%02d", i), "node-1", nil)
		want = append(want, fmt.Sprintf("spiffe://example.org/pod/p%02d %s k8s:pod-uid:%s", i, agent, p.UID))
	}
	wantEntries(t, a, want...)
	wantStatus(t, c, "all", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 20, EntriesToSet: 20}, metav1.ConditionTrue, "20 entries set")
	for i := range 10 {
		c.deletePod(t, "shop", fmt.Sprintf("p%02d", i))
	}
	wantEntries(t, b, want[10:]...)
	if got := entries(t, a); !slices.Equal(got, want[10:]) {
		t.Fatalf("the stores disagree: %v", got)
	}
}

// TestFallback: a fallback ClusterSPIFFEID names only the pods no other one
// selects, even when the other one fails to render for a pod; it takes a
// pod back once the specific one lets go of it.
func TestFallback(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	c.start(t, st)
	web := c.pod(t, "shop", "web", "node-1", map[string]string{"app": "web"})
	batch := c.pod(t, "shop", "batch", "node-1", map[string]string{"app": "batch"})
	c.pod(t, "shop", "odd", "node-1", map[string]string{"app": "odd"}) // specific template fails for it

	c.apply(t, "default-id", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/default/{{ .PodMeta.Name }}",
		NamespaceSelector: testNSSelector, Fallback: true})
	c.apply(t, "web-id", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: `spiffe://example.org/app/{{ if eq .PodMeta.Name "odd" }}{{ .Nope }}{{ end }}{{ .PodMeta.Labels.app }}`,
		NamespaceSelector: testNSSelector,
		PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"web", "odd"}}}}})
	wantEntries(t, st,
		"spiffe://example.org/app/web "+agent+" k8s:pod-uid:"+string(web.UID),
		"spiffe://example.org/default/batch "+agent+" k8s:pod-uid:"+string(batch.UID))
	wantStatus(t, c, "default-id", ClusterSPIFFEIDStats{NamespacesSelected: 1, PodsSelected: 1, EntriesToSet: 1}, metav1.ConditionTrue, "1 entries set")

	// The specific one narrowed: web falls back to the default.
	c.apply(t, "web-id", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/app/{{ .PodMeta.Labels.app }}",
		NamespaceSelector: testNSSelector, PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "none"}}})
	wantEntries(t, st,
		"spiffe://example.org/default/web "+agent+" k8s:pod-uid:"+string(web.UID),
		"spiffe://example.org/default/batch "+agent+" k8s:pod-uid:"+string(batch.UID),
		"spiffe://example.org/default/odd "+agent+" k8s:pod-uid:"+string(podUID(t, c, "shop", "odd")))
}

func podUID(t *testing.T, c *cluster, ns, name string) string {
	t.Helper()
	p, err := c.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}

// TestClasses: a controller with a class_name handles only its class (and
// classless resources with watch_classless); one without handles only
// classless ones. It leaves the others' status alone.
func TestClasses(t *testing.T) {
	c := newCluster(t)
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	web := c.pod(t, "shop", "web", "node-1", nil)
	for _, name := range []string{"plain", "eu", "us"} {
		spec := ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/" + name + "/{{ .PodMeta.Name }}", NamespaceSelector: testNSSelector}
		if name != "plain" {
			spec.ClassName = "signet-" + name
		}
		c.apply(t, name, spec)
	}
	// Another class's resource that does not even decode (a TTL that is
	// no duration) is still not this controller's to report on.
	broken := &unstructured.Unstructured{Object: map[string]any{"apiVersion": Group + "/" + Version, "kind": Kind,
		"metadata": map[string]any{"name": "us-broken"},
		"spec":     map[string]any{"spiffeIDTemplate": "spiffe://example.org/x", "className": "signet-us", "ttl": "banana"}}}
	if _, err := c.dyn.Resource(GVR).Create(context.Background(), broken, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	entry := func(name string) string {
		return "spiffe://example.org/" + name + "/web " + agent + " k8s:pod-uid:" + string(web.UID)
	}
	for _, tc := range []struct {
		name      string
		class     string
		classless bool
		want      []string
	}{
		{"no class", "", false, []string{entry("plain")}},
		{"class", "signet-eu", false, []string{entry("eu")}},
		{"class and classless", "signet-eu", true, []string{entry("plain"), entry("eu")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := sqliteStore(t)
			c.start(t, st, func(o *Options) { o.ClassName, o.WatchClassless = tc.class, tc.classless })
			wantEntries(t, st, tc.want...)
		})
	}
	for _, name := range []string{"us", "us-broken"} {
		u, err := c.dyn.Resource(GVR).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := u.Object["status"]; ok {
			t.Errorf("%s, of no running controller's class, got a status: %v", name, st)
		}
	}
}

// TestServiceDNSNames: with autoPopulateDNSNames a pod's entry carries the
// names of the Services whose EndpointSlices list it, and follows them; a
// slice written by anyone but kube-controller-manager adds nothing.
func TestServiceDNSNames(t *testing.T) {
	c := newCluster(t)
	st := sqliteStore(t)
	c.namespace(t, "shop", testNS)
	agent := c.node(t, "node-1")
	c.start(t, st, func(o *Options) { o.ClusterDomain = "cluster.local" })
	web := c.pod(t, "shop", "web", "node-1", map[string]string{"app": "web"})
	other := c.pod(t, "shop", "other", "node-1", nil)
	c.apply(t, "web", ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/web", NamespaceSelector: testNSSelector,
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, AutoPopulateDNSNames: true,
		DNSNameTemplates: []string{"web.example.com"}})
	base := "spiffe://example.org/web " + agent + " k8s:pod-uid:" + string(web.UID) + " dns="
	wantEntries(t, st, base+"web.example.com")

	c.endpointSlice(t, "shop", "storefront", "endpointslice-controller.k8s.io", web, other)
	c.endpointSlice(t, "shop", "kubernetes", "someone-else", web)
	wantEntries(t, st, base+"storefront,storefront.shop,storefront.shop.svc,storefront.shop.svc.cluster.local,web.example.com")

	c.endpointSlice(t, "shop", "storefront", "endpointslice-controller.k8s.io", other)
	wantEntries(t, st, base+"web.example.com")
}
