package kubetest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
)

// resource is one kind of object the server stores. Objects are kept as
// unstructured maps (what every kind shares: metadata, spec, status);
// built-in kinds are converted to their k8s.io/api type on the wire, so
// clients get protobuf or JSON as they ask, custom ones are JSON only, as a
// real server serves CRDs without a protobuf schema.
type resource struct {
	gv         schema.GroupVersion
	plural     string
	kind       string
	namespaced bool
	// builtin kinds are in client-go's scheme.
	builtin bool
	// status: the kind has a status subresource, written only through it.
	status bool
}

// The resources served. ClusterSPIFFEID, ClusterStaticEntry and
// ClusterFederatedTrustDomain are Signet's CRDs (server/k8sreg); the
// stand-in serves them as if deploy/base's CRDs were installed.
var (
	podsResource       = &resource{gv: corev1.SchemeGroupVersion, plural: "pods", kind: "Pod", namespaced: true, builtin: true, status: true}
	nodesResource      = &resource{gv: corev1.SchemeGroupVersion, plural: "nodes", kind: "Node", builtin: true, status: true}
	namespacesResource = &resource{gv: corev1.SchemeGroupVersion, plural: "namespaces", kind: "Namespace", builtin: true, status: true}
	configMapsResource = &resource{gv: corev1.SchemeGroupVersion, plural: "configmaps", kind: "ConfigMap", namespaced: true, builtin: true}
	serviceAccounts    = &resource{gv: corev1.SchemeGroupVersion, plural: "serviceaccounts", kind: "ServiceAccount", namespaced: true, builtin: true}
	endpointSlices     = &resource{gv: discoveryv1.SchemeGroupVersion, plural: "endpointslices", kind: "EndpointSlice", namespaced: true, builtin: true}
	leases             = &resource{gv: coordinationv1.SchemeGroupVersion, plural: "leases", kind: "Lease", namespaced: true, builtin: true}
	clusterSPIFFEIDs   = &resource{gv: schema.GroupVersion{Group: "signetid.io", Version: "v1alpha1"}, plural: "clusterspiffeids", kind: "ClusterSPIFFEID", status: true}
	clusterStatics     = &resource{gv: schema.GroupVersion{Group: "signetid.io", Version: "v1alpha1"}, plural: "clusterstaticentries", kind: "ClusterStaticEntry", status: true}
	clusterFederations = &resource{gv: schema.GroupVersion{Group: "signetid.io", Version: "v1alpha1"}, plural: "clusterfederatedtrustdomains", kind: "ClusterFederatedTrustDomain", status: true}
	resources          = []*resource{podsResource, nodesResource, namespacesResource, configMapsResource, serviceAccounts, endpointSlices, leases, clusterSPIFFEIDs, clusterStatics, clusterFederations}
)

// event is one change, as a watch reports it.
type event struct {
	rv  int64
	res *resource
	typ watch.EventType
	obj map[string]any // a copy as of the change
}

// request is a parsed resource URL.
type request struct {
	res                 *resource
	namespace, name     string
	subresource         string // "status" or ""
	allNamespaces, list bool
}

// parsePath reads /api/v1/... and /apis/GROUP/VERSION/... URLs.
func parsePath(path string) (request, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var gv schema.GroupVersion
	switch {
	case len(parts) >= 3 && parts[0] == "api" && parts[1] == "v1":
		gv, parts = corev1.SchemeGroupVersion, parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		gv, parts = schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:]
	default:
		return request{}, false
	}
	find := func(plural string) *resource {
		for _, r := range resources {
			if r.gv == gv && r.plural == plural {
				return r
			}
		}
		return nil
	}
	var req request
	// namespaces/NS/RESOURCE[/NAME[/SUB]] is a namespaced resource; anything
	// else is RESOURCE[/NAME[/SUB]] (the namespace object itself included).
	if len(parts) >= 3 && parts[0] == "namespaces" {
		if r := find(parts[2]); r != nil && r.namespaced {
			req.res, req.namespace, parts = r, parts[1], parts[3:]
		}
	}
	if req.res == nil {
		if req.res = find(parts[0]); req.res == nil {
			return request{}, false
		}
		parts = parts[1:]
		req.allNamespaces = req.res.namespaced
	}
	switch len(parts) {
	case 0:
		req.list = true
	case 1:
		req.name = parts[0]
	case 2:
		if parts[1] != "status" || !req.res.status {
			return request{}, false
		}
		req.name, req.subresource = parts[0], parts[1]
	default:
		return request{}, false
	}
	if req.allNamespaces && !req.list {
		return request{}, false
	}
	return req, true
}

func (req request) key() string { return req.namespace + "/" + req.name }

func (a *APIServer) serveResource(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	if q.Get("labelSelector") != "" || q.Get("fieldSelector") != "" {
		// Better a loud refusal than a list that silently ignores them.
		writeStatus(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, "kubetest does not support label or field selectors")
		return
	}
	switch {
	case r.Method == http.MethodGet && req.list && (q.Get("watch") == "true" || q.Get("watch") == "1"):
		a.watch(w, r, req)
	case r.Method == http.MethodGet && req.list:
		a.list(w, r, req)
	case r.Method == http.MethodGet:
		a.mu.Lock()
		obj, ok := a.objects[req.res][req.key()]
		a.mu.Unlock()
		if !ok {
			notFound(w, r, req)
			return
		}
		writeObject(w, r, req.res, http.StatusOK, obj)
	case r.Method == http.MethodPost && req.list && !req.allNamespaces:
		a.create(w, r, req)
	case r.Method == http.MethodPut && req.name != "":
		a.update(w, r, req)
	case r.Method == http.MethodDelete && req.name != "" && req.subresource == "":
		a.mu.Lock()
		obj, ok := a.objects[req.res][req.key()]
		if ok {
			a.removeLocked(req.res, req.key())
		}
		a.mu.Unlock()
		if !ok {
			notFound(w, r, req)
			return
		}
		writeObject(w, r, req.res, http.StatusOK, obj)
	default:
		writeStatus(w, r, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, r.Method+" is not supported on "+r.URL.Path)
	}
}

func notFound(w http.ResponseWriter, r *http.Request, req request) {
	writeStatus(w, r, http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("%s %q not found", req.res.plural, req.name))
}

// decodeBody reads a request's object: protobuf or JSON for built-in kinds,
// JSON for custom ones.
func decodeBody(r *http.Request, res *resource) (map[string]any, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	if !res.builtin {
		var u map[string]any
		if err := json.Unmarshal(body, &u); err != nil {
			return nil, err
		}
		return u, nil
	}
	obj, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
	if err != nil {
		return nil, err
	}
	if *gvk != res.gv.WithKind(res.kind) {
		return nil, fmt.Errorf("got a %s, want a %s", gvk, res.kind)
	}
	return toMap(res, obj)
}

func toMap(res *resource, obj runtime.Object) (map[string]any, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u["apiVersion"], u["kind"] = res.gv.String(), res.kind
	return u, nil
}

func (a *APIServer) create(w http.ResponseWriter, r *http.Request, req request) {
	in, err := decodeBody(r, req.res)
	if err != nil {
		writeStatus(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	u := &unstructured.Unstructured{Object: in}
	if u.GetName() == "" {
		writeStatus(w, r, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "metadata.name: Required value")
		return
	}
	u.SetNamespace(req.namespace)
	req.name = u.GetName()
	a.mu.Lock()
	if _, exists := a.objects[req.res][req.key()]; exists {
		a.mu.Unlock()
		writeStatus(w, r, http.StatusConflict, metav1.StatusReasonAlreadyExists, fmt.Sprintf("%s %q already exists", req.res.plural, req.name))
		return
	}
	u.SetUID("")
	obj := a.storeLocked(req.res, in)
	a.mu.Unlock()
	writeObject(w, r, req.res, http.StatusCreated, obj)
}

// update is PUT with optimistic concurrency: a resourceVersion, if given,
// must be the stored one. The main resource keeps the stored status and the
// status subresource changes nothing but the status, as for real kinds with
// a status subresource.
func (a *APIServer) update(w http.ResponseWriter, r *http.Request, req request) {
	in, err := decodeBody(r, req.res)
	if err != nil {
		writeStatus(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	u := &unstructured.Unstructured{Object: in}
	if u.GetName() != req.name {
		writeStatus(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, "the name of the object does not match the name on the URL")
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, exists := a.objects[req.res][req.key()]
	switch {
	case !exists:
		notFound(w, r, req)
		return
	case u.GetResourceVersion() != "" && u.GetResourceVersion() != (&unstructured.Unstructured{Object: cur}).GetResourceVersion():
		writeStatus(w, r, http.StatusConflict, metav1.StatusReasonConflict, fmt.Sprintf("Operation cannot be fulfilled on %s %q: the object has been modified; please apply your changes to the latest version and try again", req.res.plural, req.name))
		return
	}
	next := runtime.DeepCopyJSON(cur)
	if req.subresource == "status" {
		setOrDelete(next, "status", in["status"])
	} else {
		for k, v := range in {
			if k != "status" || !req.res.status {
				next[k] = v
			}
		}
		for k := range next {
			if _, ok := in[k]; !ok && k != "status" {
				delete(next, k)
			}
		}
		// The server owns these.
		nu, cu := &unstructured.Unstructured{Object: next}, &unstructured.Unstructured{Object: cur}
		nu.SetUID(cu.GetUID())
		nu.SetCreationTimestamp(cu.GetCreationTimestamp())
		nu.SetNamespace(req.namespace)
		nu.SetGeneration(cu.GetGeneration())
		nu.SetResourceVersion(cu.GetResourceVersion())
	}
	if reflect.DeepEqual(next, cur) {
		// A no-op write changes nothing, resourceVersion included.
		writeObject(w, r, req.res, http.StatusOK, cur)
		return
	}
	writeObject(w, r, req.res, http.StatusOK, a.storeLocked(req.res, next))
}

func setOrDelete(m map[string]any, key string, v any) {
	if v == nil {
		delete(m, key)
		return
	}
	m[key] = v
}

// put stores a built-in object given by a test (create or replace).
func (a *APIServer) put(res *resource, obj runtime.Object) {
	u, err := toMap(res, obj)
	if err != nil {
		panic(fmt.Sprintf("kubetest: %s: %v", res.kind, err)) // a test's own object
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.storeLocked(res, u)
}

// storeLocked creates or replaces an object: a new resourceVersion, the
// server's fields on creation, the generation bumped when the spec
// changes, and an event for watchers.
func (a *APIServer) storeLocked(res *resource, in map[string]any) map[string]any {
	u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(in)}
	u.SetAPIVersion(res.gv.String())
	u.SetKind(res.kind)
	key := u.GetNamespace() + "/" + u.GetName()
	cur, exists := a.objects[res][key]
	typ, gen := watch.Added, int64(1)
	if exists {
		// A test's helper may replace an object with another UID (a node
		// recreated under its name); an update keeps the stored one.
		cu := &unstructured.Unstructured{Object: cur}
		typ, gen = watch.Modified, cu.GetGeneration()
		if u.GetUID() == "" {
			u.SetUID(cu.GetUID())
		}
		if ts := u.GetCreationTimestamp(); ts.IsZero() {
			u.SetCreationTimestamp(cu.GetCreationTimestamp())
		}
		if !reflect.DeepEqual(u.Object["spec"], cur["spec"]) {
			gen++
		}
	}
	if u.GetUID() == "" {
		u.SetUID(types.UID(uuid.NewString()))
	}
	if ts := u.GetCreationTimestamp(); ts.IsZero() {
		u.SetCreationTimestamp(metav1.NewTime(time.Now().Truncate(time.Second)))
	}
	u.SetGeneration(gen)
	a.rv++
	u.SetResourceVersion(strconv.FormatInt(a.rv, 10))
	a.objects[res][key] = u.Object
	a.eventLocked(res, typ, u.Object)
	return u.Object
}

func (a *APIServer) remove(res *resource, key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeLocked(res, key)
}

func (a *APIServer) removeLocked(res *resource, key string) {
	cur, ok := a.objects[res][key]
	if !ok {
		return
	}
	delete(a.objects[res], key)
	a.rv++
	gone := runtime.DeepCopyJSON(cur)
	(&unstructured.Unstructured{Object: gone}).SetResourceVersion(strconv.FormatInt(a.rv, 10))
	a.eventLocked(res, watch.Deleted, gone)
}

func (a *APIServer) eventLocked(res *resource, typ watch.EventType, obj map[string]any) {
	a.events = append(a.events, event{rv: a.rv, res: res, typ: typ, obj: runtime.DeepCopyJSON(obj)})
	close(a.changed)
	a.changed = make(chan struct{})
}

// snapshotLocked returns the objects of req's collection, sorted by key.
func (a *APIServer) snapshotLocked(req request) []map[string]any {
	keys := slices.Sorted(maps.Keys(a.objects[req.res]))
	var out []map[string]any
	for _, k := range keys {
		if req.allNamespaces || strings.HasPrefix(k, req.namespace+"/") {
			out = append(out, runtime.DeepCopyJSON(a.objects[req.res][k]))
		}
	}
	return out
}

func (a *APIServer) list(w http.ResponseWriter, r *http.Request, req request) {
	a.mu.Lock()
	items := a.snapshotLocked(req)
	rv := strconv.FormatInt(a.rv, 10)
	a.mu.Unlock()
	if req.res.builtin {
		list, err := scheme.Scheme.New(req.res.gv.WithKind(req.res.kind + "List"))
		if err == nil {
			err = runtime.DefaultUnstructuredConverter.FromUnstructured(map[string]any{
				"apiVersion": req.res.gv.String(), "kind": req.res.kind + "List",
				"metadata": map[string]any{"resourceVersion": rv}, "items": toAny(items),
			}, list)
		}
		if err != nil {
			writeStatus(w, r, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
			return
		}
		write(w, r, http.StatusOK, list)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"apiVersion": req.res.gv.String(), "kind": req.res.kind + "List",
		"metadata": map[string]any{"resourceVersion": rv}, "items": items,
	})
}

func toAny(items []map[string]any) []any {
	out := make([]any, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}

// typed converts a stored built-in object to its k8s.io/api type.
func typed(res *resource, u map[string]any) (runtime.Object, error) {
	obj, err := scheme.Scheme.New(res.gv.WithKind(res.kind))
	if err != nil {
		return nil, err
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, obj); err != nil {
		return nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(res.gv.WithKind(res.kind))
	return obj, nil
}

func writeObject(w http.ResponseWriter, r *http.Request, res *resource, code int, u map[string]any) {
	if !res.builtin {
		writeJSON(w, code, u)
		return
	}
	obj, err := typed(res, u)
	if err != nil {
		writeStatus(w, r, http.StatusInternalServerError, metav1.StatusReasonInternalError, err.Error())
		return
	}
	write(w, r, code, obj)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", runtime.ContentTypeJSON)
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
