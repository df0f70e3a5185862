package k8sreg

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/registry"
	"github.com/signetid/signet/server/store"
)

// world is the cluster as the caches see it.
type world struct {
	crs        []*unstructured.Unstructured
	statics    []*unstructured.Unstructured
	pods       []*corev1.Pod
	namespaces map[string]*corev1.Namespace
	nodes      map[string]*corev1.Node
	// services names the Services whose EndpointSlices list a pod.
	services map[podKey][]string
}

// result is what reconciling one ClusterSPIFFEID came to.
type result struct {
	obj      *unstructured.Unstructured
	stats    ClusterSPIFFEIDStats
	entryIDs []string // the entries it sets (masked ones excluded)
	// The first problem, for the Ready condition.
	reason, message string
	failures        int
}

func (r *result) noteFailure(reason, msg string) {
	r.failures++
	if r.reason == "" {
		// A condition message is bounded (32 KiB); a template's error can
		// quote much of its input.
		r.reason, r.message = reason, clipMessage(msg)
	}
}

func clipMessage(s string) string {
	const maxMessage = 1024
	if len(s) > maxMessage {
		return strings.ToValidUTF8(s[:maxMessage], "") + "..."
	}
	return s
}

// staticResult is what reconciling one ClusterStaticEntry came to.
type staticResult struct {
	obj *unstructured.Unstructured
	// entryID is set when the spec rendered an entry.
	entryID         string
	masked, set     bool
	reason, message string
}

// desiredState is every entry the resources render, by ID.
type desiredState struct {
	entries map[string]registry.Entry
	results []*result
	statics []*staticResult
}

// desired renders the entries of the ClusterStaticEntries and
// ClusterSPIFFEIDs of this controller's class. Static entries come first,
// then ClusterSPIFFEIDs; each kind is taken oldest first, so when two
// resources render the same entry (same ID) the first one's wins on every
// server alike, and the other counts it as masked. Fallback ClusterSPIFFEIDs
// come last and skip every pod another one selected.
func (c *Controller) desired(w world) desiredState {
	slices.SortFunc(w.crs, oldestFirst)
	slices.SortFunc(w.statics, oldestFirst)
	slices.SortFunc(w.pods, func(a, b *corev1.Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	d := desiredState{entries: map[string]registry.Entry{}}
	for _, u := range w.statics {
		if class, _, _ := unstructured.NestedString(u.Object, "spec", "className"); !c.handles(class) {
			continue
		}
		d.statics = append(d.statics, c.renderStatic(u, d.entries))
	}
	type parsed struct {
		r *result
		s *spec
	}
	var specific, fallback []parsed
	for _, u := range w.crs {
		// The class is read first, so that a resource of another class that
		// does not even decode is left to its own controller.
		if class, _, _ := unstructured.NestedString(u.Object, "spec", "className"); !c.handles(class) {
			continue // another controller's: not even its status is ours
		}
		var cr ClusterSPIFFEID
		err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr)
		r := &result{obj: u}
		d.results = append(d.results, r)
		var s *spec
		if err == nil {
			s, err = parseSpec(cr.Spec)
		}
		if err != nil {
			r.noteFailure(ReasonInvalidSpec, err.Error())
			c.opts.Logger.Warn("kubernetes controller: invalid ClusterSPIFFEID", "name", u.GetName(), "error", err)
			continue
		}
		if s.fallback {
			fallback = append(fallback, parsed{r, s})
		} else {
			specific = append(specific, parsed{r, s})
		}
	}
	// A pod a specific resource selects never gets a fallback identity,
	// even when its specific entry fails to render: a broken template must
	// not hand the pod a different name.
	selected := map[types.UID]bool{}
	for _, p := range specific {
		c.renderCR(w, p.s, p.r, d.entries, func(pod *corev1.Pod) bool { selected[pod.UID] = true; return true })
	}
	for _, p := range fallback {
		c.renderCR(w, p.s, p.r, d.entries, func(pod *corev1.Pod) bool { return !selected[pod.UID] })
	}
	return d
}

// oldestFirst orders resources by age, then name: the order in which they
// claim what two of them state, the same on every server.
func oldestFirst(a, b *unstructured.Unstructured) int {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	return cmp.Or(ta.Time.Compare(tb.Time), strings.Compare(a.GetName(), b.GetName()))
}

// renderStatic adds a ClusterStaticEntry's entry to entries, unless an
// earlier resource has the same one.
func (c *Controller) renderStatic(u *unstructured.Unstructured, entries map[string]registry.Entry) *staticResult {
	r := &staticResult{obj: u}
	var cr ClusterStaticEntry
	err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cr)
	var e registry.Entry
	if err == nil {
		e, err = cr.Spec.Entry(c.opts.TrustDomain, c.opts.Cluster)
	}
	if err != nil {
		r.reason, r.message = ReasonInvalidSpec, clipMessage(err.Error())
		c.opts.Logger.Warn("kubernetes controller: invalid ClusterStaticEntry", "name", u.GetName(), "error", err)
		return r
	}
	r.entryID = e.ID
	if _, taken := entries[e.ID]; taken {
		r.masked = true
		return r
	}
	entries[e.ID] = e
	return r
}

// handles reports whether a resource of class is this controller's.
func (c *Controller) handles(class string) bool {
	if class == "" {
		return c.opts.ClassName == "" || c.opts.WatchClassless
	}
	return class == c.opts.ClassName
}

// renderCR renders one ClusterSPIFFEID's entries into entries. take is
// asked about each pod the resource selects; a pod it refuses is skipped.
func (c *Controller) renderCR(w world, s *spec, r *result, entries map[string]registry.Entry, take func(*corev1.Pod) bool) {
	nsSelected := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(w.namespaces)) {
		if !s.nsSel.Matches(labels.Set(w.namespaces[name].Labels)) {
			continue
		}
		if slices.Contains(c.opts.IgnoreNamespaces, name) {
			r.stats.NamespacesIgnored++
			continue
		}
		r.stats.NamespacesSelected++
		nsSelected[name] = true
	}
	for _, pod := range w.pods {
		if !nsSelected[pod.Namespace] || !s.podSel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		// Only pods that run or will run get entries: one not yet on a node
		// has no agent to serve it, a finished one has no process left.
		if pod.Spec.NodeName == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		if !take(pod) {
			continue
		}
		r.stats.PodsSelected++
		var e registry.Entry
		node, ok := w.nodes[pod.Spec.NodeName]
		err := fmt.Errorf("node %s is not known to the API server", pod.Spec.NodeName)
		if ok {
			e, err = s.render(c.site(), pod, node, w.services[podKey{pod.Namespace, pod.UID}])
		}
		if err != nil {
			r.stats.PodEntryRenderFailures++
			r.noteFailure(ReasonRenderFailed, fmt.Sprintf("pod %s/%s: %v", pod.Namespace, pod.Name, err))
			c.opts.Logger.Warn("kubernetes controller: entry not rendered", "clusterspiffeid", r.obj.GetName(), "pod", pod.Namespace+"/"+pod.Name, "error", err)
			continue
		}
		if _, taken := entries[e.ID]; taken {
			r.stats.EntriesMasked++
			continue
		}
		entries[e.ID] = e
		r.entryIDs = append(r.entryIDs, e.ID)
		r.stats.EntriesToSet++
	}
}

// apply makes the store's entries owned by this cluster's controller equal
// to want: missing ones created, changed ones updated, stale ones deleted,
// the last two only as far as s allows (synced.mayChange): an entry that a
// product not yet synced may state is left as it is. Entries of others are
// never touched. It returns the entries that could not be written; an
// error means the store could not be read.
func (c *Controller) apply(ctx context.Context, want map[string]registry.Entry, s synced) (map[string]error, error) {
	all, err := c.opts.Store.ListEntries(ctx)
	if err != nil {
		return nil, fmt.Errorf("list entries: %w", err)
	}
	have := map[string]registry.Entry{}
	for _, e := range all {
		if ownedBy(e.ID, c.opts.Cluster) {
			have[e.ID] = e
		}
	}
	failures := map[string]error{}
	log := c.opts.Logger
	ids := slices.Sorted(maps.Keys(want))
	// New entries go in one transaction, which matters for a cluster's
	// first reconcile; if any is refused (another server created it
	// meanwhile, say), they are created one by one below.
	var missing []registry.Entry
	for _, id := range ids {
		if _, exists := have[id]; !exists {
			missing = append(missing, want[id])
		}
	}
	if len(missing) > 1 {
		if created, err := c.opts.Store.CreateEntries(ctx, missing); err == nil {
			for _, e := range created {
				have[e.ID] = e
			}
			log.Info("kubernetes controller: entries created", "count", len(created))
		}
	}
	for _, id := range ids {
		e := want[id]
		cur, exists := have[id]
		switch {
		case !exists:
			if err := c.create(ctx, e); err != nil {
				failures[id] = err
				log.Error("kubernetes controller: create entry", "entry_id", id, "spiffe_id", e.SPIFFEID.String(), "error", err)
				continue
			}
			log.Info("kubernetes controller: entry created", "entry_id", id, "spiffe_id", e.SPIFFEID.String(), "parent_id", e.ParentID.String(), "selectors", selector.Strings(e.Selectors))
		case !sameEntry(cur, e) && s.mayChange(c.podEntry(cur)):
			_, err := c.opts.Store.ModifyEntry(ctx, id, func(cur registry.Entry) (registry.Entry, error) {
				e.Revision, e.CreatedAt = cur.Revision, cur.CreatedAt
				return e, nil
			})
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile by another server; the next reconcile settles it
			}
			if err != nil {
				failures[id] = err
				log.Error("kubernetes controller: update entry", "entry_id", id, "spiffe_id", e.SPIFFEID.String(), "error", err)
				continue
			}
			log.Info("kubernetes controller: entry updated", "entry_id", id, "spiffe_id", e.SPIFFEID.String())
		}
	}
	for _, id := range slices.Sorted(maps.Keys(have)) {
		if _, keep := want[id]; keep || !s.mayChange(c.podEntry(have[id])) {
			continue
		}
		if err := c.opts.Store.DeleteEntry(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
			failures[id] = err
			log.Error("kubernetes controller: delete entry", "entry_id", id, "error", err)
			continue
		}
		log.Info("kubernetes controller: entry deleted", "entry_id", id, "spiffe_id", have[id].SPIFFEID.String())
	}
	return failures, nil
}

// podEntry reports whether e has the form of every entry a ClusterSPIFFEID
// renders, which tells them from the rest of the entries the controller
// owns (their IDs are alike): a workload entry of one of this cluster's
// k8s_psat agents, with a k8s:pod-uid selector.
func (c *Controller) podEntry(e registry.Entry) bool {
	node, underAgent := strings.CutPrefix(e.ParentID.Path(), "/agent/"+nodeattest.K8sPSATType+"/"+c.opts.Cluster+"/")
	return !e.Node && e.ParentID.MemberOf(c.opts.TrustDomain) && underAgent && node != "" && !strings.Contains(node, "/") &&
		slices.ContainsFunc(e.Selectors, func(s selector.Selector) bool {
			return s.Type == "k8s" && strings.HasPrefix(s.Value, "pod-uid:")
		})
}

// create stores e. ErrAlreadyExists is success when another server created
// the same entry meanwhile, and a failure when an entry of someone else
// holds the same SPIFFE ID, parent and selectors.
func (c *Controller) create(ctx context.Context, e registry.Entry) error {
	_, err := c.opts.Store.CreateEntry(ctx, e)
	if !errors.Is(err, store.ErrAlreadyExists) {
		return err
	}
	if _, gerr := c.opts.Store.GetEntry(ctx, e.ID); gerr == nil {
		return nil
	}
	return fmt.Errorf("an entry not managed by the controller has the same SPIFFE ID, parent and selectors: %w", err)
}

// sameEntry compares what the controller sets.
func sameEntry(a, b registry.Entry) bool {
	return a.SPIFFEID == b.SPIFFEID && a.ParentID == b.ParentID && a.Node == b.Node &&
		slices.Equal(a.Selectors, b.Selectors) && a.X509TTL == b.X509TTL && a.JWTTTL == b.JWTTTL &&
		slices.Equal(a.DNSNames, b.DNSNames) && a.Hint == b.Hint && slices.Equal(a.FederatesWith, b.FederatesWith) &&
		a.Admin == b.Admin && a.Downstream == b.Downstream && a.ExpiresAt.IsZero() == b.ExpiresAt.IsZero()
}

// updateStatus writes a ClusterSPIFFEID's status when it changed.
func (c *Controller) updateStatus(ctx context.Context, r *result) {
	var cur ClusterSPIFFEIDStatus
	readStatus(r.obj, &cur)
	next := ClusterSPIFFEIDStatus{Stats: r.stats, Conditions: slices.Clone(cur.Conditions)}
	cond := ready(r.obj, r.reason, r.message, fmt.Sprintf("%d entries set", r.stats.EntriesToSet))
	if r.failures > 1 {
		cond.Message += fmt.Sprintf(" (and %d more problems)", r.failures-1)
	}
	meta.SetStatusCondition(&next.Conditions, cond)
	c.writeStatus(ctx, GVR, r.obj, &cur, &next)
}

// updateStaticStatus writes a ClusterStaticEntry's status when it changed.
func (c *Controller) updateStaticStatus(ctx context.Context, r *staticResult) {
	var cur ClusterStaticEntryStatus
	readStatus(r.obj, &cur)
	next := ClusterStaticEntryStatus{Rendered: r.entryID != "", Masked: r.masked, Set: r.set, Conditions: slices.Clone(cur.Conditions)}
	ok := "entry " + r.entryID + " set"
	if r.masked {
		ok = "entry " + r.entryID + " is an older resource's: masked"
	}
	meta.SetStatusCondition(&next.Conditions, ready(r.obj, r.reason, r.message, ok))
	c.writeStatus(ctx, StaticEntryGVR, r.obj, &cur, &next)
}

// readStatus decodes obj's status into into; a status the controller
// cannot read is left zero, to be rewritten whole.
func readStatus(obj *unstructured.Unstructured, into any) {
	if st, ok := obj.Object["status"].(map[string]any); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(st, into)
	}
}

// ready is the Ready condition: False with the first problem's reason, else
// True with okMessage.
func ready(obj *unstructured.Unstructured, reason, message, okMessage string) metav1.Condition {
	cond := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonReconciled,
		Message: okMessage, ObservedGeneration: obj.GetGeneration()}
	if reason != "" {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, reason, message
	}
	return cond
}

// writeStatus replaces obj's status, cur, with next unless they are equal.
// A conflict means a newer version exists, whose event brings another
// reconcile: nothing to retry here.
func (c *Controller) writeStatus(ctx context.Context, gvr schema.GroupVersionResource, obj *unstructured.Unstructured, cur, next any) {
	if equality.Semantic.DeepEqual(cur, next) {
		return
	}
	log := c.opts.Logger.With("resource", gvr.Resource, "name", obj.GetName())
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(next)
	if err != nil {
		log.Error("kubernetes controller: encode status", "error", err)
		return
	}
	u := obj.DeepCopy()
	u.Object["status"] = st
	_, err = c.opts.Dynamic.Resource(gvr).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	switch {
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		log.Debug("kubernetes controller: status not updated; the resource changed", "error", err)
	case err != nil:
		log.Warn("kubernetes controller: status not updated", "error", err)
	}
}
