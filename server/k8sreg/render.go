package k8sreg

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/signetid/signet/internal/ids"
	"github.com/signetid/signet/internal/selector"
	"github.com/signetid/signet/server/nodeattest"
	"github.com/signetid/signet/server/registry"
)

// OwnedIDPrefix starts the IDs of the entries the controller owns. The
// admin API gives entries UUIDs, so the prefix cannot be taken by accident.
const OwnedIDPrefix = "k8s."

// Owned reports whether an entry belongs to a Kubernetes controller (of
// any cluster): it is changed through its ClusterSPIFFEID, not by hand.
func Owned(entryID string) bool { return strings.HasPrefix(entryID, OwnedIDPrefix) }

// idHashLen is the hex length of the hash in an owned ID (128 bits).
const idHashLen = 32

// entryID names an entry after what makes it unique in the store (SPIFFE
// ID, parent, selectors) and the cluster, so every server renders the same
// ID for it: k8s.<cluster>.<hash>.
func entryID(cluster string, e *registry.Entry) string {
	h := sha256.New()
	h.Write([]byte(e.SPIFFEID.String()))
	h.Write([]byte{0})
	h.Write([]byte(e.ParentID.String()))
	for _, s := range e.Selectors {
		h.Write([]byte{0})
		h.Write([]byte(s.String()))
	}
	return OwnedIDPrefix + cluster + "." + hex.EncodeToString(h.Sum(nil))[:idHashLen]
}

// ownedBy reports whether entryID is one this cluster's controller names.
// The hash has no dot, so cluster "a" never claims cluster "a.b"'s entries.
func ownedBy(entryID, cluster string) bool {
	rest, ok := strings.CutPrefix(entryID, OwnedIDPrefix+cluster+".")
	if !ok || len(rest) != idHashLen {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}

// TemplateData is what a ClusterSPIFFEID's templates see, under SPIRE's
// names: {{ .PodMeta.Namespace }}, {{ .PodSpec.ServiceAccountName }}, ...
type TemplateData struct {
	TrustDomain string
	ClusterName string
	// ClusterDomain is the controller's cluster_domain (e.g.
	// cluster.local); empty when not configured.
	ClusterDomain string
	PodMeta       metav1.ObjectMeta
	PodSpec       corev1.PodSpec
	NodeMeta      metav1.ObjectMeta
	NodeSpec      corev1.NodeSpec
}

// maxRendered bounds one template's output: more than any ID (2048 bytes)
// or selector (1024) may hold, so a runaway template stops early.
const maxRendered = 4096

var errTooLong = fmt.Errorf("output exceeds %d bytes", maxRendered)

type limitedWriter struct{ strings.Builder }

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > maxRendered {
		return 0, errTooLong
	}
	return w.Builder.Write(p)
}

// spec is a ClusterSPIFFEID's spec, parsed once per reconcile.
type spec struct {
	spiffeID        *template.Template
	selectors       []*template.Template
	dnsNames        []*template.Template
	podSel, nsSel   labels.Selector
	federatesWith   []spiffeid.TrustDomain
	x509TTL, jwtTTL metav1.Duration
	hint            string
	admin           bool
	downstream      bool
	fallback        bool
	autoDNSNames    bool
}

// Validate checks the parts of a spec that do not depend on a pod: the
// templates parse, the selectors and trust domains are valid.
func (s ClusterSPIFFEIDSpec) Validate() error {
	_, err := parseSpec(s)
	return err
}

// parseSpec checks everything about a spec that does not depend on a pod.
// The error names the field.
func parseSpec(s ClusterSPIFFEIDSpec) (*spec, error) {
	out := &spec{x509TTL: s.TTL, jwtTTL: s.JWTTTL, hint: s.Hint, admin: s.Admin, downstream: s.Downstream,
		fallback: s.Fallback, autoDNSNames: s.AutoPopulateDNSNames}
	var err error
	if strings.TrimSpace(s.SPIFFEIDTemplate) == "" {
		return nil, errors.New("spiffeIDTemplate is required")
	}
	if out.spiffeID, err = parseTemplate("spiffeIDTemplate", s.SPIFFEIDTemplate); err != nil {
		return nil, err
	}
	for i, t := range s.WorkloadSelectorTemplates {
		tmpl, err := parseTemplate(fmt.Sprintf("workloadSelectorTemplates[%d]", i), t)
		if err != nil {
			return nil, err
		}
		out.selectors = append(out.selectors, tmpl)
	}
	for i, t := range s.DNSNameTemplates {
		tmpl, err := parseTemplate(fmt.Sprintf("dnsNameTemplates[%d]", i), t)
		if err != nil {
			return nil, err
		}
		out.dnsNames = append(out.dnsNames, tmpl)
	}
	if out.podSel, err = labelSelector(s.PodSelector); err != nil {
		return nil, fmt.Errorf("podSelector: %w", err)
	}
	if out.nsSel, err = labelSelector(s.NamespaceSelector); err != nil {
		return nil, fmt.Errorf("namespaceSelector: %w", err)
	}
	for i, name := range s.FederatesWith {
		td, err := ids.ParseTrustDomain(name)
		if err != nil {
			return nil, fmt.Errorf("federatesWith[%d]: %w", i, err)
		}
		out.federatesWith = append(out.federatesWith, td)
	}
	return out, nil
}

func parseTemplate(field, text string) (*template.Template, error) {
	t, err := template.New(field).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return t, nil
}

// labelSelector converts a selector; unset selects everything.
func labelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

func execute(t *template.Template, data *TemplateData) (string, error) {
	var w limitedWriter
	if err := t.Execute(&w, data); err != nil {
		return "", err
	}
	return w.String(), nil
}

// site is where entries are rendered for: the server's trust domain and
// the cluster's names.
type site struct {
	td                     spiffeid.TrustDomain
	cluster, clusterDomain string
}

// render builds and validates the entry of one pod on its node; services
// are the names of the Services that route to the pod (for
// autoPopulateDNSNames). The pod and node are copied for the templates: a
// template may call methods on what it is given, and must never change the
// informers' shared objects.
func (s *spec) render(at site, pod *corev1.Pod, node *corev1.Node, services []string) (registry.Entry, error) {
	td, cluster := at.td, at.cluster
	data := &TemplateData{
		TrustDomain:   td.Name(),
		ClusterName:   cluster,
		ClusterDomain: at.clusterDomain,
		PodMeta:       *pod.ObjectMeta.DeepCopy(),
		PodSpec:       *pod.Spec.DeepCopy(),
		NodeMeta:      *node.ObjectMeta.DeepCopy(),
		NodeSpec:      *node.Spec.DeepCopy(),
	}
	e := registry.Entry{
		X509TTL:       s.x509TTL.Duration,
		JWTTTL:        s.jwtTTL.Duration,
		Hint:          s.hint,
		Admin:         s.admin,
		Downstream:    s.downstream,
		FederatesWith: append([]spiffeid.TrustDomain(nil), s.federatesWith...),
		Selectors:     []selector.Selector{{Type: "k8s", Value: "pod-uid:" + string(pod.UID)}},
	}
	rendered, err := execute(s.spiffeID, data)
	if err != nil {
		return registry.Entry{}, fmt.Errorf("spiffeIDTemplate: %w", err)
	}
	if e.SPIFFEID, err = ids.ParseWorkloadIDIn(rendered, td); err != nil {
		return registry.Entry{}, fmt.Errorf("spiffeIDTemplate rendered %q: %w", clip(rendered), err)
	}
	if e.ParentID, err = nodeattest.PSATAgentID(td, cluster, string(node.UID)); err != nil {
		return registry.Entry{}, fmt.Errorf("node %s uid %q cannot name an agent: %w", node.Name, node.UID, err)
	}
	for i, t := range s.selectors {
		rendered, err := execute(t, data)
		if err != nil {
			return registry.Entry{}, fmt.Errorf("workloadSelectorTemplates[%d]: %w", i, err)
		}
		sel, err := selector.Parse(rendered)
		if err != nil {
			return registry.Entry{}, fmt.Errorf("workloadSelectorTemplates[%d]: %w", i, err)
		}
		e.Selectors = append(e.Selectors, sel)
	}
	for i, t := range s.dnsNames {
		rendered, err := execute(t, data)
		if err != nil {
			return registry.Entry{}, fmt.Errorf("dnsNameTemplates[%d]: %w", i, err)
		}
		e.DNSNames = append(e.DNSNames, rendered)
	}
	if s.autoDNSNames {
		e.DNSNames = append(e.DNSNames, serviceDNSNames(services, pod.Namespace, at.clusterDomain)...)
	}
	if err := e.Validate(td); err != nil {
		return registry.Entry{}, err
	}
	e.Normalize()
	e.ID = entryID(cluster, &e)
	return e, nil
}

// clip shortens rendered text quoted in an error.
func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
