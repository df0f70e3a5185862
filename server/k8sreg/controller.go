package k8sreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
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
	factory := informers.NewSharedInformerFactoryWithOptions(c.opts.Client, 0,
		informers.WithTransform(stripManagedFields))
	dfactory := dynamicinformer.NewDynamicSharedInformerFactory(c.opts.Dynamic, 0)
	defer factory.Shutdown()
	defer dfactory.Shutdown()
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
	for _, inf := range []struct {
		resource string
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
		into     *cache.Indexer
	}{
		{"pods", factory.Core().V1().Pods().Informer(), poke, &l.pods},
		{"namespaces", factory.Core().V1().Namespaces().Informer(), poke, &l.namespaces},
		{"nodes", factory.Core().V1().Nodes().Informer(), poke, &l.nodes},
		{"endpointslices", factory.Discovery().V1().EndpointSlices().Informer(), poke, &l.slices},
		{Resource, dfactory.ForResource(GVR).Informer(), crPoke, &l.crs},
		{StaticEntryResource, dfactory.ForResource(StaticEntryGVR).Informer(), crPoke, &l.statics},
		{FederatedTrustDomainResource, dfactory.ForResource(FederatedTrustDomainGVR).Informer(), crPoke, &l.feds},
	} {
		if _, err := inf.informer.AddEventHandler(inf.handler); err != nil {
			return fmt.Errorf("kubernetes controller: %w", err)
		}
		if err := inf.informer.SetWatchErrorHandlerWithContext(watchErrorHandler(c.opts.Logger, inf.resource)); err != nil {
			return fmt.Errorf("kubernetes controller: %w", err)
		}
		*inf.into = inf.informer.GetIndexer()
	}
	factory.Start(ctx.Done())
	dfactory.Start(ctx.Done())
	c.opts.Logger.Info("kubernetes controller: waiting for the API server's pods, namespaces, nodes, EndpointSlices, ClusterSPIFFEIDs, ClusterStaticEntries and ClusterFederatedTrustDomains", "cluster", c.opts.Cluster)
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return ctxDoneOr(ctx, fmt.Errorf("kubernetes controller: %v cache did not sync", typ))
		}
	}
	for gvr, ok := range dfactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return ctxDoneOr(ctx, fmt.Errorf("kubernetes controller: %s cache did not sync", gvr.Resource))
		}
	}
	c.opts.Logger.Info("kubernetes controller started", "cluster", c.opts.Cluster)

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
		wait := c.opts.Resync
		if err := c.reconcile(ctx, l); err != nil {
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

func ctxDoneOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
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
// line with the caches; a failure of one does not hold up the other.
func (c *Controller) reconcile(ctx context.Context, l listers) error {
	fedErr := c.reconcileFederations(ctx, resources(l.feds))
	return errors.Join(c.reconcileEntries(ctx, l), fedErr)
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

// reconcileEntries renders the desired entries from the caches, brings the
// store in line, and records each ClusterSPIFFEID's and
// ClusterStaticEntry's status.
func (c *Controller) reconcileEntries(ctx context.Context, l listers) error {
	w := world{
		crs:        resources(l.crs),
		statics:    resources(l.statics),
		namespaces: map[string]*corev1.Namespace{},
		nodes:      map[string]*corev1.Node{},
	}
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
	d := c.desired(w)
	failures, err := c.apply(ctx, d.entries)
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
