package k8sreg

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/signetid/signet/internal/selector"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "payments", Name: "checkout-7f9c", UID: "pod-uid-1",
			Labels: map[string]string{"app": "checkout"}},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "checkout"},
	}
}

func testNode() *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-uid-1",
		Labels: map[string]string{"topology.kubernetes.io/zone": "eu-1a"}}}
}

func TestRender(t *testing.T) {
	const nsSA = "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
	for _, tc := range []struct {
		name string
		spec ClusterSPIFFEIDSpec
		// clusterDomain and services are the controller's and the pod's.
		clusterDomain string
		services      []string
		wantID        string
		wantSel       []string
		wantDNS       []string
		wantErr       string
		// wantDownstream: the entry is a downstream server's.
		wantDownstream bool
	}{
		{name: "namespace and service account", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA},
			wantID: "spiffe://example.org/ns/payments/sa/checkout", wantSel: []string{"k8s:pod-uid:pod-uid-1"}},
		{name: "cluster, node and labels", spec: ClusterSPIFFEIDSpec{
			SPIFFEIDTemplate:          `spiffe://example.org/{{ .ClusterName }}/{{ index .NodeMeta.Labels "topology.kubernetes.io/zone" }}/{{ .PodMeta.Labels.app }}`,
			WorkloadSelectorTemplates: []string{"k8s:ns:{{ .PodMeta.Namespace }}", "k8s:sa:{{ .PodSpec.ServiceAccountName }}"},
			DNSNameTemplates:          []string{"{{ .PodMeta.Labels.app }}.{{ .PodMeta.Namespace }}.svc", "checkout.example"},
		},
			wantID:  "spiffe://example.org/prod/eu-1a/checkout",
			wantSel: []string{"k8s:ns:payments", "k8s:pod-uid:pod-uid-1", "k8s:sa:checkout"},
			wantDNS: []string{"checkout.example", "checkout.payments.svc"}},
		{name: "cluster domain", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA,
			DNSNameTemplates: []string{"{{ .PodMeta.Name }}.{{ .PodMeta.Namespace }}.pod.{{ .ClusterDomain }}"}},
			clusterDomain: "cluster.local",
			wantID:        "spiffe://example.org/ns/payments/sa/checkout", wantSel: []string{"k8s:pod-uid:pod-uid-1"},
			wantDNS: []string{"checkout-7f9c.payments.pod.cluster.local"}},
		{name: "service names", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, AutoPopulateDNSNames: true,
			DNSNameTemplates: []string{"checkout.payments.svc", "checkout.example"}},
			clusterDomain: "cluster.local", services: []string{"checkout", "payments-api"},
			wantID: "spiffe://example.org/ns/payments/sa/checkout", wantSel: []string{"k8s:pod-uid:pod-uid-1"},
			wantDNS: []string{"checkout", "checkout.example", "checkout.payments", "checkout.payments.svc", "checkout.payments.svc.cluster.local",
				"payments-api", "payments-api.payments", "payments-api.payments.svc", "payments-api.payments.svc.cluster.local"}},
		{name: "service names without cluster domain", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, AutoPopulateDNSNames: true},
			services: []string{"checkout"},
			wantID:   "spiffe://example.org/ns/payments/sa/checkout", wantSel: []string{"k8s:pod-uid:pod-uid-1"},
			wantDNS: []string{"checkout", "checkout.payments", "checkout.payments.svc"}},
		{name: "services ignored unless asked for", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA},
			clusterDomain: "cluster.local", services: []string{"checkout"},
			wantID: "spiffe://example.org/ns/payments/sa/checkout", wantSel: []string{"k8s:pod-uid:pod-uid-1"}},
		{name: "downstream", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, Downstream: true},
			wantID: "spiffe://example.org/ns/payments/sa/checkout", wantSel: []string{"k8s:pod-uid:pod-uid-1"}, wantDownstream: true},
		{name: "no cluster domain", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, DNSNameTemplates: []string{"x.{{ .ClusterDomain }}"}},
			wantErr: "dns name"},
		{name: "empty template", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: " "}, wantErr: "spiffeIDTemplate is required"},
		{name: "template does not parse", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/{{ .PodMeta.Name"}, wantErr: "spiffeIDTemplate: template:"},
		{name: "unknown field", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/{{ .PodMeta.Nmae }}"}, wantErr: "spiffeIDTemplate: template:"},
		{name: "missing label key", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/{{ .PodMeta.Labels.tier }}"}, wantErr: "map has no entry for key"},
		{name: "other trust domain", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://other.org/x"}, wantErr: "trust domain"},
		{name: "not a SPIFFE ID", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "{{ .PodMeta.Name }}"}, wantErr: `spiffeIDTemplate rendered "checkout-7f9c"`},
		{name: "reserved path", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/signet/server"}, wantErr: "reserved"},
		{name: "bad selector", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, WorkloadSelectorTemplates: []string{"k8s:namespace:{{ .PodMeta.Namespace }}"}}, wantErr: "workloadSelectorTemplates[0]: invalid selector"},
		{name: "bad DNS name", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, DNSNameTemplates: []string{"{{ .PodMeta.Name }}_x"}}, wantErr: "dns name"},
		{name: "TTL out of range", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, TTL: metav1.Duration{Duration: 365 * 24 * time.Hour}}, wantErr: "x509_ttl"},
		{name: "federates with own trust domain", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, FederatesWith: []string{"example.org"}}, wantErr: "own trust domain"},
		{name: "bad federated trust domain", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, FederatesWith: []string{"Bad Domain"}}, wantErr: "federatesWith[0]"},
		{name: "bad pod selector", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: nsSA, PodSelector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}}, wantErr: "podSelector"},
		{name: "runaway output", spec: ClusterSPIFFEIDSpec{SPIFFEIDTemplate: `spiffe://example.org/{{ range 5000 }}x{{ end }}`}, wantErr: "exceeds 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSpec(tc.spec)
			if err == nil {
				pod, node := testPod(), testNode()
				e, rerr := s.render(site{td: td, cluster: "prod", clusterDomain: tc.clusterDomain}, pod, node, tc.services)
				err = rerr
				if err == nil {
					if e.SPIFFEID.String() != tc.wantID {
						t.Errorf("SPIFFE ID %s, want %s", e.SPIFFEID, tc.wantID)
					}
					if e.ParentID.String() != "spiffe://example.org/agent/k8s_psat/prod/node-uid-1" {
						t.Errorf("parent %s, want the agent of node-1", e.ParentID)
					}
					if got := strings.Join(selector.Strings(e.Selectors), " "); got != strings.Join(tc.wantSel, " ") {
						t.Errorf("selectors %s, want %v", got, tc.wantSel)
					}
					if strings.Join(e.DNSNames, " ") != strings.Join(tc.wantDNS, " ") {
						t.Errorf("DNS names %v, want %v", e.DNSNames, tc.wantDNS)
					}
					if e.Downstream != tc.wantDownstream {
						t.Errorf("downstream %v, want %v", e.Downstream, tc.wantDownstream)
					}
					if !ownedBy(e.ID, "prod") || ownedBy(e.ID, "pro") {
						t.Errorf("entry ID %q is not named for cluster prod", e.ID)
					}
					if ctrl := (&Controller{opts: Options{TrustDomain: td, Cluster: "prod"}}); !ctrl.podEntry(e) {
						t.Errorf("rendered entry %+v is not told for a pod's", e)
					}
				}
			}
			if tc.wantErr == "" && err != nil {
				t.Fatalf("render: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("render error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestEntryIDs(t *testing.T) {
	s, err := parseSpec(ClusterSPIFFEIDSpec{SPIFFEIDTemplate: "spiffe://example.org/a"})
	if err != nil {
		t.Fatal(err)
	}
	pod, node := testPod(), testNode()
	a, _ := s.render(site{td: td, cluster: "prod"}, pod, node, nil)
	b, _ := s.render(site{td: td, cluster: "prod"}, pod, node, nil)
	if a.ID != b.ID {
		t.Fatalf("the same entry got IDs %s and %s", a.ID, b.ID)
	}
	pod.UID = "pod-uid-2"
	c, _ := s.render(site{td: td, cluster: "prod"}, pod, node, nil)
	d, _ := s.render(site{td: td, cluster: "prod.eu"}, pod, node, nil)
	if c.ID == a.ID || c.ID == d.ID {
		t.Fatalf("different entries share an ID: %s %s %s", a.ID, c.ID, d.ID)
	}
	for _, tc := range []struct {
		id      string
		cluster string
		want    bool
	}{
		{a.ID, "prod", true},
		{d.ID, "prod", false}, // cluster prod.eu's
		{d.ID, "prod.eu", true},
		{"k8s.prod.xyz", "prod", false},
		{"3f2b8c1e-1111-2222-3333-444455556666", "prod", false},
	} {
		if got := ownedBy(tc.id, tc.cluster); got != tc.want {
			t.Errorf("ownedBy(%q, %q) = %v, want %v", tc.id, tc.cluster, got, tc.want)
		}
	}
	if !Owned(a.ID) || Owned("3f2b8c1e-1111-2222-3333-444455556666") {
		t.Error("Owned misjudges")
	}
}

// FuzzRender feeds arbitrary templates and pod fields through parsing,
// rendering and selector parsing: no panic, and whatever renders validates.
func FuzzRender(f *testing.F) {
	f.Add("spiffe://example.org/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}", "k8s:ns:{{ .PodMeta.Namespace }}", "{{ .PodMeta.Name }}.svc", "payments", "checkout", "web")
	f.Add("spiffe://{{ .TrustDomain }}/{{ .ClusterName }}/{{ .NodeMeta.Name }}", "k8s:pod-label:app:{{ .PodMeta.Labels.app }}", "", "ns", "sa", "a:b")
	f.Add("{{ define \"x\" }}{{ template \"x\" }}{{ end }}{{ template \"x\" }}", "{{ .PodSpec.Containers }}", "{{ .PodMeta", "", "", "")
	f.Add("spiffe://example.org/{{ printf \"%s\" .PodMeta.Labels }}", "unix:uid:{{ len .PodMeta.Name }}", "*.{{ .PodMeta.Namespace }}", "../..", "x y", "\x00")
	f.Fuzz(func(t *testing.T, idTmpl, selTmpl, dnsTmpl, ns, sa, label string) {
		spec := ClusterSPIFFEIDSpec{SPIFFEIDTemplate: idTmpl, WorkloadSelectorTemplates: []string{selTmpl}, AutoPopulateDNSNames: true}
		if dnsTmpl != "" {
			spec.DNSNameTemplates = []string{dnsTmpl}
		}
		s, err := parseSpec(spec)
		if err != nil {
			return
		}
		pod := testPod()
		pod.Namespace, pod.Spec.ServiceAccountName, pod.Labels["app"] = ns, sa, label
		e, err := s.render(site{td: td, cluster: "prod", clusterDomain: "cluster.local"}, pod, testNode(), []string{label})
		if err != nil {
			return
		}
		if verr := e.Validate(td); verr != nil {
			t.Fatalf("rendered an invalid entry: %v", verr)
		}
		if !ownedBy(e.ID, "prod") {
			t.Fatalf("rendered entry ID %q is not owned", e.ID)
		}
	})
}
