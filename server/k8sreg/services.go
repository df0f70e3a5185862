package k8sreg

import (
	"maps"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podKey names a pod the way an EndpointSlice can: its namespace is the
// slice's.
type podKey struct {
	namespace string
	uid       types.UID
}

// sliceManagers are the kube-controller-manager controllers that write
// EndpointSlices from a Service's selector or its Endpoints. Slices others
// write are ignored: whoever may create an EndpointSlice in a namespace
// could otherwise label one for any Service name there ("kubernetes" in
// default, say) and so put that name in a pod's SVID.
var sliceManagers = []string{"endpointslice-controller.k8s.io", "endpointslicemirroring-controller.k8s.io"}

// podServices maps each pod that EndpointSlices list to the names of their
// Services (sorted, once each). Endpoints that are not ready count: a pod
// often becomes ready only once it can serve TLS under those names.
func podServices(eps []*discoveryv1.EndpointSlice) map[podKey][]string {
	sets := map[podKey]map[string]bool{}
	for _, s := range eps {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" || !slices.Contains(sliceManagers, s.Labels[discoveryv1.LabelManagedBy]) {
			continue
		}
		for _, ep := range s.Endpoints {
			ref := ep.TargetRef
			if ref == nil || ref.Kind != "Pod" || ref.UID == "" || (ref.Namespace != "" && ref.Namespace != s.Namespace) {
				continue
			}
			k := podKey{s.Namespace, ref.UID}
			if sets[k] == nil {
				sets[k] = map[string]bool{}
			}
			sets[k][svc] = true
		}
	}
	out := make(map[podKey][]string, len(sets))
	for k, set := range sets {
		out[k] = slices.Sorted(maps.Keys(set))
	}
	return out
}

// serviceDNSNames are the names cluster DNS gives each Service in ns.
func serviceDNSNames(services []string, ns, clusterDomain string) []string {
	var out []string
	for _, svc := range services {
		out = append(out, svc, svc+"."+ns, svc+"."+ns+".svc")
		if clusterDomain != "" {
			out = append(out, svc+"."+ns+".svc."+clusterDomain)
		}
	}
	return out
}
