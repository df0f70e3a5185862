package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/signetid/signet/server/store"
)

// Defaults of Options.
const (
	DefaultDebounce = 200 * time.Millisecond
	DefaultResync   = 10 * time.Minute
)

// DefaultIgnoreNamespaces are left alone unless configured otherwise:
// the cluster's own components get no workload entries.
var DefaultIgnoreNamespaces = []string{"kube-system", "kube-public"}

// Options configure a Controller.
type Options struct {
	// Client and Dynamic reach the cluster's API server.
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Store   store.Store
	// TrustDomain is the server's; rendered IDs must be in it.
	TrustDomain spiffeid.TrustDomain
	// Cluster is the k8s_psat cluster name the cluster's agents attest
	// with: entries are parented to spiffe://TD/agent/k8s_psat/<Cluster>/<node-uid>.
	Cluster string
	// IgnoreNamespaces are never selected.
	IgnoreNamespaces []string
	// ClusterDomain is the cluster's DNS domain (e.g. cluster.local), for
	// templates ({{ .ClusterDomain }}) and autoPopulateDNSNames; empty
	// leaves the fully qualified Service names out.
	ClusterDomain string
	// ClassName, when set, limits the controller to the ClusterSPIFFEIDs
	// of that className, and to those with none if WatchClassless; unset,
	// it handles those with no className. Deployments sharing a cluster
	// (not a store) tell their resources apart this way.
	ClassName      string
	WatchClassless bool
	// Debounce gathers a burst of changes into one reconcile; default
	// DefaultDebounce.
	Debounce time.Duration
	// Resync reconciles this often with no change seen, repairing the
	// store if it was changed behind the controller; default DefaultResync.
	Resync time.Duration
	// LeaderElection, when set, runs the controller on one server of
	// those that share it at a time; unset, this server always runs it.
	LeaderElection *LeaderElection
	Logger         *slog.Logger
}

// Controller keeps the store's controller-owned entries equal to what the
// ClusterSPIFFEIDs render for the cluster's pods and the
// ClusterStaticEntries state, and its federation relationships equal to
// the ClusterFederatedTrustDomains.
type Controller struct {
	opts    Options
	trigger chan struct{}
	leading atomic.Bool
}

// New checks opts and returns a Controller; Run starts it.
func New(opts Options) (*Controller, error) {
	switch {
	case opts.Client == nil || opts.Dynamic == nil:
		return nil, errors.New("kubernetes controller: no Kubernetes client")
	case opts.Store == nil:
		return nil, errors.New("kubernetes controller: no store")
	case opts.TrustDomain.IsZero():
		return nil, errors.New("kubernetes controller: no trust domain")
	}
	if _, err := spiffeid.FromSegments(opts.TrustDomain, opts.Cluster); err != nil {
		return nil, fmt.Errorf("kubernetes controller: cluster %q: %w", opts.Cluster, err)
	}
	if opts.ClusterDomain != "" {
		if errs := validation.IsDNS1123Subdomain(opts.ClusterDomain); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes controller: cluster domain %q: %s", opts.ClusterDomain, strings.Join(errs, "; "))
		}
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Resync <= 0 {
		opts.Resync = DefaultResync
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LeaderElection != nil {
		le := *opts.LeaderElection
		if le.Client == nil {
			le.Client = opts.Client
		}
		if err := le.check(); err != nil {
			return nil, fmt.Errorf("kubernetes controller: %w", err)
		}
		opts.LeaderElection = &le
	}
	return &Controller{opts: opts, trigger: make(chan struct{}, 1)}, nil
}

// listers read the informers' caches.
type listers struct {
	pods, namespaces, nodes, slices, crs, statics, feds cache.Indexer
}

// The controller's products: what it keeps in the store, each from the
// resources it reads. Each is reconciled once the informers of its own
// resources have synced, so a CRD or a permission missing holds up only
// the product that reads it.
const (
	specEntries   = "ClusterSPIFFEID entries"
	staticEntries = "ClusterStaticEntry entries"
	federations   = "federation relationships"
)

// product is one of the products and the informers it reads.
type product struct {
	name    string
	watches []*watch
	// ready is set once every informer has synced: from then on the
	// caches hold the cluster's state, and an empty one means none.
	ready atomic.Bool
}

// watch is one informer.
type watch struct {
	resource string
	synced   cache.DoneChecker // the informer's first list is in the cache and handled
	// missing: the API server's last answer was that it serves no such
	// resource, because its CRD is not installed.
	missing atomic.Bool
}

// missing reports whether the API server serves none of some resource p
// reads.
func (p *product) missing() bool {
	return slices.ContainsFunc(p.watches, func(w *watch) bool { return w.missing.Load() })
}

// synced says which products a reconcile acts for: those whose informers
// have synced. The others' entries and relationships are left as they are:
// an empty cache that has not synced says nothing about the cluster.
type synced struct {
	specs, statics, feds bool
	// noStatics: the API server serves no ClusterStaticEntries (their CRD
	// is not installed), so none states an entry.
	noStatics bool
}

// mayChange reports whether a reconcile may update or delete a stored
// entry the controller owns, which is a pod's entry (podEntry) or not:
// only when every product that may state it has synced, ClusterStaticEntries
// counting as known too when the API server serves none. Every
// ClusterSPIFFEID entry is a pod's entry; a ClusterStaticEntry may state
// one too, and then wins; any other entry is a ClusterStaticEntry's. So
// while ClusterStaticEntries cannot be read (no RBAC), ClusterSPIFFEIDs
// only add entries; while they have no CRD, ClusterSPIFFEIDs are
// reconciled in full.
func (s synced) mayChange(podEntry bool) bool {
	if podEntry {
		return s.specs && (s.statics || s.noStatics)
	}
	return s.statics
}

func (c *Controller) site() site {
	return site{td: c.opts.TrustDomain, cluster: c.opts.Cluster, clusterDomain: c.opts.ClusterDomain}
}

// Run watches the cluster and reconciles until ctx ends, while this server
// leads if the controller has LeaderElection. Reconcile failures (store or
// API server down) are retried with backoff; they never stop the server.
func (c *Controller) Run(ctx context.Context) error {
	if c.opts.LeaderElection != nil {
		return c.runElected(ctx)
	}
	c.leading.Store(true)
	defer c.leading.Store(false)
	return c.run(ctx)
}

// Leading reports whether this server runs the controller now.
func (c *Controller) Leading() bool { return c.leading.Load() }

func (c *Controller) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var waiting sync.WaitGroup
	defer waiting.Wait()
	factory := informers.NewSharedInformerFactoryWithOptions(c.opts.Client, 0,
		informers.WithTransform(stripManagedFields))
	dfactory := dynamicinformer.NewDynamicSharedInformerFactory(c.opts.Dynamic, 0)
	defer factory.Shutdown()
	defer dfactory.Shutdown()
	defer cancel() // first: the informers and waits stop, then the factories are shut down
	poke := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.poke() },
		UpdateFunc: func(any, any) { c.poke() },
		DeleteFunc: func(any) { c.poke() },
	}
	crPoke := poke
	crPoke.UpdateFunc = func(old, cur any) {
		// The controller's own status writes change nothing to reconcile.
		o, ok1 := old.(*unstructured.Unstructured)
		n, ok2 := cur.(*unstructured.Unstructured)
		if !ok1 || !ok2 || o.GetGeneration() != n.GetGeneration() {
			c.poke()
		}
	}
	var l listers
	specs, statics, feds := &product{name: specEntries}, &product{name: staticEntries}, &product{name: federations}
	for _, inf := range []struct {
		resource string
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
		into     *cache.Indexer
		of       *product
	}{
		{"pods", factory.Core().V1().Pods().Informer(), poke, &l.pods, specs},
		{"namespaces", factory.Core().V1().Namespaces().Informer(), poke, &l.namespaces, specs},
		{"nodes", factory.Core().V1().Nodes().Informer(), poke, &l.nodes, specs},
		{"endpointslices", factory.Discovery().V1().EndpointSlices().Informer(), poke, &l.slices, specs},
		{Resource, dfactory.ForResource(GVR).Informer(), crPoke, &l.crs, specs},
		{StaticEntryResource, dfactory.ForResource(StaticEntryGVR).Informer(), crPoke, &l.statics, statics},
		{FederatedTrustDomainResource, dfactory.ForResource(FederatedTrustDomainGVR).Informer(), crPoke, &l.feds, feds},
	} {
		reg, err := inf.informer.AddEventHandler(inf.handler)
		if err != nil {
			return fmt.Errorf("kubernetes controller: %w", err)
		}
		w := &watch{resource: inf.resource, synced: reg.HasSyncedChecker()}
		if err := inf.informer.SetWatchErrorHandlerWithContext(c.watchErrors(w)); err != nil {
			return fmt.Errorf("kubernetes controller: %w", err)
		}
		*inf.into = inf.informer.GetIndexer()
		inf.of.watches = append(inf.of.watches, w)
	}
	products := []*product{specs, statics, feds}
	factory.Start(ctx.Done())
	dfactory.Start(ctx.Done())
	c.opts.Logger.Info("kubernetes controller: waiting for the API server", "cluster", c.opts.Cluster, "waiting", waitingFor(products))
	for _, p := range products {
		waiting.Go(func() { c.await(ctx, p) })
	}

	retry := backoff.NewExponentialBackOff(backoff.WithInitialInterval(time.Second),
		backoff.WithMaxInterval(time.Minute), backoff.WithMaxElapsedTime(0))
	next := time.NewTimer(0)
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-next.C:
		case <-c.trigger:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(c.opts.Debounce):
			}
			select { // changes during the wait are in this reconcile
			case <-c.trigger:
			default:
			}
		}
		s := synced{specs: specs.ready.Load(), statics: statics.ready.Load(), feds: feds.ready.Load()}
		s.noStatics = !s.statics && statics.missing()
		wait := c.opts.Resync
		if err := c.reconcile(ctx, l, s); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = retry.NextBackOff()
			c.opts.Logger.Error("kubernetes controller: reconcile failed; retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			retry.Reset()
		}
		next.Reset(wait)
	}
}

// waitingFor names the resources each product waits for, for the log:
// "ClusterSPIFFEID entries: pods, ...; ...".
func waitingFor(products []*product) string {
	var out []string
	for _, p := range products {
		var rs []string
		for _, w := range p.watches {
			rs = append(rs, w.resource)
		}
		out = append(out, p.name+": "+strings.Join(rs, ", "))
	}
	return strings.Join(out, "; ")
}

// await marks p ready once its informers have synced, and has it
// reconciled; the informers retry failed lists by themselves, so a CRD or
// a permission granted later starts it without a restart.
func (c *Controller) await(ctx context.Context, p *product) {
	var synced []cache.DoneChecker
	for _, w := range p.watches {
		synced = append(synced, w.synced)
	}
	if !cache.WaitFor(ctx, "", synced...) {
		return
	}
	p.ready.Store(true)
	c.opts.Logger.Info("kubernetes controller started", "cluster", c.opts.Cluster, "product", p.name)
	c.poke()
}

// watchErrors logs why w's informer cannot list or watch, and notes
// whether the API server serves the resource at all.
func (c *Controller) watchErrors(w *watch) cache.WatchErrorHandlerWithContext {
	report := watchErrorHandler(c.opts.Logger, w.resource)
	return func(ctx context.Context, r *cache.Reflector, err error) {
		report(ctx, r, err)
		missing := crdMissing(w.resource, err)
		if w.missing.Swap(missing) != missing && missing {
			c.poke() // may free another product's reconcile (synced.noStatics)
		}
	}
}

// stripManagedFields drops what the controller never reads and what takes
// much of a cached pod's memory.
func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func (c *Controller) poke() {
	select {
	case c.trigger <- struct{}{}:
	default: // a reconcile is already due
	}
}

// reconcile brings the store's entries and federation relationships in
// line with the caches of the products that have synced; a failure of one
// does not hold up the other.
func (c *Controller) reconcile(ctx context.Context, l listers, s synced) error {
	var fedErr, entriesErr error
	if s.feds {
		fedErr = c.reconcileFederations(ctx, resources(l.feds))
	}
	if s.specs || s.statics {
		entriesErr = c.reconcileEntries(ctx, l, s)
	}
	return errors.Join(entriesErr, fedErr)
}

// resources are the custom resources in a dynamic informer's cache.
func resources(idx cache.Indexer) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range idx.List() {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

// reconcileEntries renders the desired entries from the caches of the
// synced products, brings the store in line as far as s allows, and
// records each ClusterSPIFFEID's and ClusterStaticEntry's status.
func (c *Controller) reconcileEntries(ctx context.Context, l listers, s synced) error {
	w := world{namespaces: map[string]*corev1.Namespace{}, nodes: map[string]*corev1.Node{}}
	if s.statics {
		w.statics = resources(l.statics)
	}
	if s.specs {
		readCluster(l, &w)
	}
	d := c.desired(w)
	failures, err := c.apply(ctx, d.entries, s)
	if err != nil {
		return err
	}
	for id, ferr := range failures {
		for _, r := range d.results {
			if slices.Contains(r.entryIDs, id) {
				r.stats.EntryFailures++
				r.noteFailure(ReasonEntryFailed, fmt.Sprintf("entry %s: %v", id, ferr))
			}
		}
	}
	for _, r := range d.results {
		c.updateStatus(ctx, r)
	}
	for _, r := range d.statics {
		if ferr, failed := failures[r.entryID]; failed && !r.masked {
			r.reason, r.message = ReasonEntryFailed, clipMessage(fmt.Sprintf("entry %s: %v", r.entryID, ferr))
		}
		r.set = r.entryID != "" && !r.masked && r.reason == ""
		c.updateStaticStatus(ctx, r)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d entries could not be written", len(failures))
	}
	return nil
}

// readCluster puts what ClusterSPIFFEIDs render from into w: their
// resources, the pods, namespaces, nodes and the Services that route to
// each pod.
func readCluster(l listers, w *world) {
	w.crs = resources(l.crs)
	for _, o := range l.pods.List() {
		if p, ok := o.(*corev1.Pod); ok {
			w.pods = append(w.pods, p)
		}
	}
	for _, o := range l.namespaces.List() {
		if ns, ok := o.(*corev1.Namespace); ok {
			w.namespaces[ns.Name] = ns
		}
	}
	for _, o := range l.nodes.List() {
		if n, ok := o.(*corev1.Node); ok {
			w.nodes[n.Name] = n
		}
	}
	var eps []*discoveryv1.EndpointSlice
	for _, o := range l.slices.List() {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			eps = append(eps, s)
		}
	}
	w.services = podServices(eps)
}
