package test

import (
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/component-helpers/auth/rbac/validation"
)

// checkServerRBAC checks that the server's service account is granted what
// its config makes it ask of the cluster it runs in: the k8s_psat reviews,
// the controller's watches and status writes, the bundle ConfigMap and the
// controller's Lease, each in the namespace the config names.
func checkServerRBAC(t *testing.T, objs []runtime.Object, s signetSystem) {
	t.Helper()
	sa := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: s.server.Spec.Template.Spec.ServiceAccountName, Namespace: s.namespace}
	cfg := s.config
	need := map[string][]rbacv1.PolicyRule{} // by namespace; "" is cluster-wide
	for _, c := range cfg.K8sPSAT {
		if c.Kubeconfig == "" {
			need[""] = append(need[""],
				rbacv1.PolicyRule{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
				rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get"}})
		}
	}
	if b := cfg.K8sBundle; b != nil && b.Kubeconfig == "" {
		need[b.Namespace] = append(need[b.Namespace],
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{b.ConfigMap}, Verbs: []string{"get", "update"}})
	}
	if c := cfg.K8sController; c != nil && c.Kubeconfig == "" {
		need[""] = append(need[""],
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces"}, Verbs: []string{"list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"signetid.io"}, Resources: []string{"clusterspiffeids", "clusterstaticentries", "clusterfederatedtrustdomains"}, Verbs: []string{"list", "watch"}},
			rbacv1.PolicyRule{APIGroups: []string{"signetid.io"}, Resources: []string{"clusterspiffeids/status", "clusterstaticentries/status", "clusterfederatedtrustdomains/status"}, Verbs: []string{"update"}})
		if c.LeaderElection {
			ns := c.LeaderElectionNamespace
			if ns == "" {
				ns = s.namespace // the server pod's
			}
			need[ns] = append(need[ns],
				rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
				rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{c.LeaderElectionLease}, Verbs: []string{"get", "update"}})
		}
	}
	for ns, rules := range need {
		if ok, missing := validation.Covers(granted(objs, sa, ns), rules); !ok {
			where := "cluster-wide"
			if ns != "" {
				where = "in namespace " + ns
			}
			t.Errorf("the server's service account %s/%s is not granted, %s, what its config needs: %+v", sa.Namespace, sa.Name, where, missing)
		}
	}
}

// granted gathers the rules bound to sa, as the API server's RBAC
// authorizer would for a request in namespace ns ("" for cluster-wide).
func granted(objs []runtime.Object, sa rbacv1.Subject, ns string) []rbacv1.PolicyRule {
	roles := map[string][]rbacv1.PolicyRule{} // "Kind ns/name"
	for _, o := range objs {
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			roles["ClusterRole /"+r.Name] = r.Rules
		case *rbacv1.Role:
			roles["Role "+r.Namespace+"/"+r.Name] = r.Rules
		}
	}
	bound := func(subjects []rbacv1.Subject) bool {
		for _, s := range subjects {
			if s.Kind == sa.Kind && s.Name == sa.Name && s.Namespace == sa.Namespace {
				return true
			}
		}
		return false
	}
	var rules []rbacv1.PolicyRule
	for _, o := range objs {
		switch b := o.(type) {
		case *rbacv1.ClusterRoleBinding:
			if bound(b.Subjects) && b.RoleRef.Kind == "ClusterRole" {
				rules = append(rules, roles["ClusterRole /"+b.RoleRef.Name]...)
			}
		case *rbacv1.RoleBinding:
			if ns == "" || b.Namespace != ns || !bound(b.Subjects) {
				continue
			}
			if b.RoleRef.Kind == "ClusterRole" {
				rules = append(rules, roles["ClusterRole /"+b.RoleRef.Name]...)
			} else {
				rules = append(rules, roles["Role "+b.Namespace+"/"+b.RoleRef.Name]...)
			}
		}
	}
	return rules
}
