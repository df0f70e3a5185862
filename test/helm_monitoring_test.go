package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	promqlengine "github.com/prometheus/prometheus/promql"
	promql "github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	promtemplate "github.com/prometheus/prometheus/template"
	"github.com/prometheus/prometheus/util/annotations"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/server/ca"
)

// monitoringRender is the chart rendered with the prometheus-operator's
// objects decoded strictly into the operator's own Go types.
type monitoringRender struct {
	objs        []runtime.Object
	podMonitors []*monitoringv1.PodMonitor
	rules       []*monitoringv1.PrometheusRule
	system      signetSystem
}

// helmMonitoring renders the chart; PodMonitors and PrometheusRules are
// decoded strictly (an unknown or misspelt field fails, as the operator's
// CRD validation would), the rest as helmObjects does, and the install is
// checked to fit together (checkSignetSystem).
func helmMonitoring(t *testing.T, ns, values string) monitoringRender {
	t.Helper()
	out, _, err := helmTemplate(t, ns, values)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	scheme := runtime.NewScheme()
	if err := monitoringv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	var r monitoringRender
	var rest bytes.Buffer
	yr := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("helm template: %v\n%s", err, doc)
		}
		if !strings.HasPrefix(tm.APIVersion, monitoringv1.SchemeGroupVersion.Group+"/") {
			rest.WriteString("\n---\n")
			rest.Write(doc)
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tm.Kind, err, doc)
		}
		switch o := obj.(type) {
		case *monitoringv1.PodMonitor:
			r.podMonitors = append(r.podMonitors, o)
		case *monitoringv1.PrometheusRule:
			r.rules = append(r.rules, o)
		default:
			t.Fatalf("the chart renders a %s, which this test does not know", tm.Kind)
		}
	}
	r.objs = decodeManifests(t, "helm template", rest.Bytes())
	r.system = checkSignetSystem(t, r.objs)
	return r
}

// TestHelmMonitoring renders the monitoring values users set and checks
// that the PodMonitor scrapes every server and agent on the port their
// /metrics is served on, and that every alert is a valid rule on metrics
// Signet exports.
func TestHelmMonitoring(t *testing.T) {
	for _, tc := range []struct {
		name, ns, values string
		// podMonitorNS and ruleNS: where they should be; "" for none.
		podMonitorNS, ruleNS string
		labels               map[string]string // on both objects
		interval             string
		upstream             bool
		alertLabels          map[string]string
		thresholds           map[string]int // alert name -> seconds
	}{{
		name: "defaults: neither", ns: "signet-system",
	}, {
		name: "PodMonitor alone", ns: "signet-system",
		values:       "telemetry: {prometheus: {podMonitor: {enabled: true}}}",
		podMonitorNS: "signet-system",
	}, {
		name: "PrometheusRule alone, default thresholds", ns: "identity",
		values: "telemetry: {prometheus: {prometheusRule: {enabled: true}}}",
		ruleNS: "identity",
		thresholds: map[string]int{"SignetServerCAExpiringSoon": 1800, "SignetAgentSVIDExpiringSoon": 900,
			"SignetFederatedBundleStale": 3600},
	}, {
		name: "kube-prometheus-stack in its own namespace", ns: "identity",
		values: `
telemetry:
  prometheus:
    podMonitor: {enabled: true, namespace: monitoring, labels: {release: kube-prometheus-stack}, interval: 1m30s}
    prometheusRule:
      enabled: true
      namespace: monitoring
      labels: {release: kube-prometheus-stack}
      alertLabels: {team: platform, cluster: eu-1}
      caExpirySeconds: 2400
      agentSVIDExpirySeconds: 600
      federatedBundleMaxAgeSeconds: 7200
      workloadSVIDExpirySeconds: 300
`,
		podMonitorNS: "monitoring", ruleNS: "monitoring",
		labels:      map[string]string{"release": "kube-prometheus-stack"},
		interval:    "1m30s",
		alertLabels: map[string]string{"team": "platform", "cluster": "eu-1"},
		thresholds: map[string]int{"SignetServerCAExpiringSoon": 2400, "SignetAgentSVIDExpiringSoon": 600,
			"SignetFederatedBundleStale": 7200, "SignetWorkloadSVIDExpiringSoon": 300},
	}, {
		name: "downstream servers: the upstream agents too", ns: "signet-system",
		values: `
upstream: {enabled: true, serverAddress: 'up.example.org:8081'}
telemetry: {prometheus: {podMonitor: {enabled: true}, prometheusRule: {enabled: true}}}
`,
		podMonitorNS: "signet-system", ruleNS: "signet-system", upstream: true,
		thresholds: map[string]int{"SignetServerCAExpiringSoon": 1800, "SignetAgentSVIDExpiringSoon": 900,
			"SignetFederatedBundleStale": 3600},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := helmMonitoring(t, tc.ns, tc.values)
			if tc.podMonitorNS == "" {
				if len(r.podMonitors) != 0 {
					t.Errorf("%d PodMonitors, want none", len(r.podMonitors))
				}
			} else {
				if len(r.podMonitors) != 1 {
					t.Fatalf("%d PodMonitors, want one", len(r.podMonitors))
				}
				pm := r.podMonitors[0]
				checkObjectMeta(t, pm.ObjectMeta, tc.podMonitorNS, tc.labels)
				checkPodMonitor(t, r, pm, tc.ns, tc.interval, tc.upstream)
			}
			if tc.ruleNS == "" {
				if len(r.rules) != 0 {
					t.Errorf("%d PrometheusRules, want none", len(r.rules))
				}
				return
			}
			if len(r.rules) != 1 {
				t.Fatalf("%d PrometheusRules, want one", len(r.rules))
			}
			checkObjectMeta(t, r.rules[0].ObjectMeta, tc.ruleNS, tc.labels)
			// The labels the operator's Prometheus gives every target of the
			// PodMonitor the chart renders, whether or not this case renders it.
			r2 := r
			if len(r.podMonitors) == 0 {
				r2 = helmMonitoring(t, tc.ns, "telemetry: {prometheus: {podMonitor: {enabled: true}}}")
			}
			checkRules(t, r.rules[0], targetLabels(r2.podMonitors[0]), tc.alertLabels, tc.thresholds)
		})
	}
}

// checkObjectMeta checks a monitoring object's namespace and that it has
// the chart's labels and the user's.
func checkObjectMeta(t *testing.T, m metav1.ObjectMeta, ns string, extra map[string]string) {
	t.Helper()
	if m.Name != "signet" || m.Namespace != ns {
		t.Errorf("%s/%s, want %s/signet", m.Namespace, m.Name, ns)
	}
	want := map[string]string{"app.kubernetes.io/part-of": "signet", "app.kubernetes.io/managed-by": "Helm"}
	maps.Copy(want, extra)
	for k, v := range want {
		if m.Labels[k] != v {
			t.Errorf("%s label %s=%q, want %q (labels %v)", m.Name, k, m.Labels[k], v, m.Labels)
		}
	}
}

// checkPodMonitor checks that pm selects exactly the servers' and agents'
// pods (and the upstream agents' with upstream), in the release namespace,
// and scrapes each at /metrics on a port of its container that is the
// health listener that component is configured with.
func checkPodMonitor(t *testing.T, r monitoringRender, pm *monitoringv1.PodMonitor, releaseNS, interval string, upstream bool) {
	t.Helper()
	if ns := pm.Spec.NamespaceSelector; ns.Any || !slices.Equal(ns.MatchNames, []string{releaseNS}) {
		t.Errorf("namespaceSelector %+v, want the release namespace %s", ns, releaseNS)
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("selector %+v: %v", pm.Spec.Selector, err)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d podMetricsEndpoints, want one", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Path != "/metrics" || ep.Scheme != nil && *ep.Scheme != "http" || ep.Port == nil || ep.PortNumber != nil || ep.TargetPort != nil {
		t.Errorf("endpoint %+v: want a named port's http /metrics", ep)
	}
	if string(ep.Interval) != interval {
		t.Errorf("interval %q, want %q", ep.Interval, interval)
	}
	if interval != "" {
		if d, err := model.ParseDuration(interval); err != nil || d <= 0 {
			t.Errorf("interval %q is no Prometheus duration: %v", interval, err)
		}
	}
	if !slices.ContainsFunc(ep.RelabelConfigs, func(c monitoringv1.RelabelConfig) bool {
		return c.TargetLabel == "node" && slices.Equal(c.SourceLabels, []monitoringv1.LabelName{"__meta_kubernetes_pod_node_name"}) &&
			(c.Action == "" || strings.EqualFold(c.Action, "replace"))
	}) {
		t.Errorf("relabelings %+v: want the pod's node as label node", ep.RelabelConfigs)
	}

	// What each component serves /metrics on: its health listener.
	s := r.system
	agentHealth := argValue(s.agent.Spec.Template.Spec.Containers[0].Args, "health-listen")
	if agentHealth == "" && s.agentFile != nil {
		agentHealth = s.agentFile.HealthListen
	}
	health := map[string]string{"signet-server": s.config.HealthListen, "signet-agent": agentHealth}
	if upstream {
		health["signet-agent-upstream"] = nestedRender{objs: r.objs}.upstreamAgent(t).conf.HealthListen
	}

	jobs := map[string]bool{}
	for _, o := range r.objs {
		var tmpl corev1.PodTemplateSpec
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			tmpl = o.Spec.Template
		case *appsv1.StatefulSet:
			tmpl = o.Spec.Template
		case *appsv1.Deployment:
			tmpl = o.Spec.Template
		default:
			continue
		}
		key := keyOf(t, o)
		if !sel.Matches(k8slabels.Set(tmpl.Labels)) {
			if _, ok := health[key.Name]; ok {
				t.Errorf("the PodMonitor's selector %v does not select the pods of %v (labels %v)", sel, key, tmpl.Labels)
			}
			continue
		}
		if key.Namespace != releaseNS {
			t.Errorf("%v is not in the namespace the PodMonitor selects", key)
		}
		job := tmpl.Labels[pm.Spec.JobLabel]
		if job == "" || job != key.Name {
			t.Errorf("jobLabel %q gives the pods of %v job %q, want %q", pm.Spec.JobLabel, key, job, key.Name)
		}
		jobs[job] = true
		listen, ok := health[key.Name]
		if !ok {
			t.Errorf("the PodMonitor selects the pods of %v, which serve no metrics", key)
			continue
		}
		host, portStr, err := net.SplitHostPort(listen)
		port, perr := strconv.ParseUint(portStr, 10, 16)
		if err != nil || perr != nil || host != "" && !net.ParseIP(host).IsUnspecified() {
			t.Errorf("%v health listener %q: want all addresses and a port, for Prometheus to reach (%v, %v)", key, listen, err, perr)
			continue
		}
		var found bool
		for _, c := range tmpl.Spec.Containers {
			for _, p := range c.Ports {
				if p.Name == *ep.Port {
					found = true
					if p.ContainerPort != int32(port) || p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
						t.Errorf("%v container %s: port %s is %d/%s, but /metrics is on the health listener %q", key, c.Name, p.Name, p.ContainerPort, p.Protocol, listen)
					}
				}
			}
		}
		if !found {
			t.Errorf("%v: no container has a port named %q", key, *ep.Port)
		}
	}
	if want := slices.Sorted(maps.Keys(health)); !slices.Equal(slices.Sorted(maps.Keys(jobs)), want) {
		t.Errorf("the PodMonitor scrapes jobs %v, want %v", slices.Sorted(maps.Keys(jobs)), want)
	}
}

// targetLabels are the labels the prometheus-operator's Prometheus puts on
// every series scraped through pm: its default ones and pm's relabelings'.
func targetLabels(pm *monitoringv1.PodMonitor) []string {
	out := []string{"namespace", "pod", "container", "endpoint", "instance", "job"}
	for _, ep := range pm.Spec.PodMetricsEndpoints {
		for _, c := range ep.RelabelConfigs {
			if c.TargetLabel != "" {
				out = append(out, c.TargetLabel)
			}
		}
	}
	return out
}

// checkRules checks every alert of the rule: a unique name, a severity
// and the user's labels, a valid `for`, an expression that parses as
// PromQL and reads only metrics (and their labels) that Signet's code
// exports, the configured threshold, and summary and description
// templates that Prometheus can expand with the alert's labels.
func checkRules(t *testing.T, pr *monitoringv1.PrometheusRule, target []string, alertLabels map[string]string, thresholds map[string]int) {
	t.Helper()
	exported := exportedMetrics(t)
	// The values the rules compare labels to are the server's.
	if ca.StatusActive != "active" || ca.KindJWT != "jwt" {
		t.Errorf("the server's status %q and kind %q are not the ones the rules name", ca.StatusActive, ca.KindJWT)
	}
	want := []string{"SignetAgentNotAttested", "SignetAgentSVIDExpiringSoon", "SignetAgentWorkloadSVIDsMissing",
		"SignetFederatedBundleNeverFetched", "SignetFederatedBundleStale", "SignetServerCAExpiringSoon"}
	if _, ok := thresholds["SignetWorkloadSVIDExpiringSoon"]; ok {
		want = append(want, "SignetWorkloadSVIDExpiringSoon")
	}
	var names []string
	p := promql.NewParser(promql.Options{})
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			names = append(names, rule.Alert)
			t.Run(rule.Alert, func(t *testing.T) {
				if rule.Record != "" || rule.Alert == "" {
					t.Fatalf("rule %+v: want an alerting rule", rule)
				}
				if rule.For == nil {
					t.Error("no for")
				} else if d, err := model.ParseDuration(string(*rule.For)); err != nil || d <= 0 {
					t.Errorf("for %q: %v", *rule.For, err)
				}
				if sev := rule.Labels["severity"]; sev != "critical" && sev != "warning" {
					t.Errorf("severity %q", sev)
				}
				others := maps.Clone(rule.Labels)
				delete(others, "severity")
				if len(others) != len(alertLabels) || !maps.Equal(others, alertLabels) {
					t.Errorf("labels %v, want severity and %v", rule.Labels, alertLabels)
				}
				expr, err := p.ParseExpr(rule.Expr.String())
				if err != nil {
					t.Fatalf("expr %q: %v", rule.Expr.String(), err)
				}
				metricLabels := checkExprMetrics(t, expr, exported, target)
				if want, ok := thresholds[rule.Alert]; ok && !comparesWith(expr, float64(want)) {
					t.Errorf("expr %q does not compare with the threshold %d", rule.Expr.String(), want)
				}
				sample := map[string]string{}
				for _, l := range append(metricLabels, target...) {
					sample[l] = "x-" + l
				}
				if _, ok := sample["kind"]; ok {
					sample["kind"] = string(ca.KindJWT) // the templates' one branch
				}
				for _, a := range []string{"summary", "description"} {
					text, ok := rule.Annotations[a]
					if !ok || strings.TrimSpace(text) == "" {
						t.Errorf("no %s", a)
						continue
					}
					out, err := expandAlertTemplate(text, sample, 1234.5)
					if err != nil {
						t.Errorf("%s %q: %v", a, text, err)
					} else if strings.Contains(out, "{{") || strings.Contains(out, "<no value>") {
						t.Errorf("%s expands to %q", a, out)
					}
				}
				// The alert names what it is about: the pod, and the
				// trust domain for federation alerts.
				if !strings.Contains(rule.Annotations["summary"], "$labels.pod") ||
					slices.Contains(metricLabels, "trust_domain") && !strings.Contains(rule.Annotations["summary"], "$labels.trust_domain") {
					t.Errorf("summary %q does not name the pod (and trust domain)", rule.Annotations["summary"])
				}
			})
		}
	}
	if slices.Sort(names); !slices.Equal(names, want) {
		t.Errorf("alerts %v, want %v", names, want)
	}
}

// checkExprMetrics checks that every metric expr selects is exported by
// Signet's code, by name, and that every label it matches or groups on is
// one of that metric's or a target label. It returns the labels of the
// metrics expr reads.
func checkExprMetrics(t *testing.T, expr promql.Expr, exported map[string][]string, target []string) []string {
	t.Helper()
	var metricLabels, grouping []string
	var selectors int
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		switch n := n.(type) {
		case *promql.VectorSelector:
			selectors++
			have, ok := exported[n.Name]
			if !ok {
				t.Errorf("expr reads %q, which no server or agent code exports", n.Name)
				return nil
			}
			metricLabels = append(metricLabels, have...)
			for _, m := range n.LabelMatchers {
				if m.Name == labels.MetricName {
					continue
				}
				if !slices.Contains(have, m.Name) && !slices.Contains(target, m.Name) {
					t.Errorf("expr matches label %q, which %s does not have (%v) nor its targets", m.Name, n.Name, have)
				}
			}
		case *promql.BinaryExpr:
			if n.VectorMatching != nil {
				grouping = append(grouping, n.VectorMatching.MatchingLabels...)
				grouping = append(grouping, n.VectorMatching.Include...)
			}
		case *promql.AggregateExpr:
			grouping = append(grouping, n.Grouping...)
		}
		return nil
	})
	if selectors == 0 {
		t.Error("expr reads no metric")
	}
	for _, l := range grouping {
		if !slices.Contains(metricLabels, l) && !slices.Contains(target, l) {
			t.Errorf("expr groups on label %q, which none of its metrics has", l)
		}
	}
	slices.Sort(metricLabels)
	return slices.Compact(metricLabels)
}

// comparesWith reports whether expr holds a comparison with the number v.
func comparesWith(expr promql.Expr, v float64) bool {
	var found bool
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		if b, ok := n.(*promql.BinaryExpr); ok && b.Op.IsComparisonOperator() {
			for _, side := range []promql.Expr{b.LHS, b.RHS} {
				if num, ok := side.(*promql.NumberLiteral); ok && num.Val == v {
					found = true
				}
			}
		}
		return nil
	})
	return found
}

// expandAlertTemplate expands an alert annotation with Prometheus' own
// template expander, as its rule manager does (with $labels and $value
// defined first), but refusing a label the alert does not have (Prometheus
// would print nothing).
func expandAlertTemplate(text string, lbls map[string]string, value float64) (string, error) {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	data := promtemplate.AlertTemplateData(lbls, map[string]string{}, "", promqlengine.Sample{F: value})
	return promtemplate.NewTemplateExpander(context.Background(), defs+text, "__alert", data, 0, nil, nil, []string{"missingkey=error"}).Expand()
}

// exportedMetrics reads the Prometheus metrics the server's and the
// agent's code define, from the prometheus constructors' arguments in
// their Go source: each name with its variable labels (a histogram's
// _bucket, _sum and _count series too). Reading the source rather than a
// running binary's /metrics also finds the metrics a state that is hard
// to reach (a federation relationship, a cached SVID) brings.
func exportedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, dir := range []string{"../server", "../agent"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			return metricsInPackage(path, out)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) == 0 {
		t.Fatal("no metrics found in ../server and ../agent")
	}
	return out
}

// metricsInPackage adds the metrics defined in the Go package in dir.
func metricsInPackage(dir string, out map[string][]string) error {
	fset := token.NewFileSet()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	var files []*ast.File
	consts := map[string]string{} // package-level string constants
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		for _, decl := range f.Decls {
			if g, ok := decl.(*ast.GenDecl); ok && g.Tok == token.CONST {
				for _, spec := range g.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, name := range vs.Names {
						if i < len(vs.Values) {
							if s, ok := stringLit(vs.Values[i], nil); ok {
								consts[name.Name] = s
							}
						}
					}
				}
			}
		}
	}
	var errs []error
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
				return true
			}
			var name string
			var lbls []string
			var suffixes []string
			switch fn := sel.Sel.Name; fn {
			case "NewDesc":
				name, ok = stringLit(call.Args[0], consts)
				lbls = stringList(call.Args[2], consts)
			case "NewCounter", "NewGauge", "NewCounterFunc", "NewGaugeFunc", "NewUntypedFunc", "NewHistogram", "NewSummary",
				"NewCounterVec", "NewGaugeVec", "NewHistogramVec", "NewSummaryVec":
				name, ok = optsName(call.Args[0], consts)
				if strings.HasSuffix(fn, "Vec") {
					lbls = stringList(call.Args[1], consts)
				}
				switch {
				case strings.HasPrefix(fn, "NewHistogram"):
					suffixes = []string{"_bucket", "_sum", "_count"}
				case strings.HasPrefix(fn, "NewSummary"):
					suffixes = []string{"_sum", "_count"}
				}
			default:
				return true
			}
			if !ok {
				errs = append(errs, fmt.Errorf("%s: prometheus.%s: cannot read the metric name", fset.Position(call.Pos()), sel.Sel.Name))
				return true
			}
			out[name] = lbls
			for _, s := range suffixes {
				out[name+s] = lbls
			}
			if slices.Contains(suffixes, "_bucket") {
				out[name+"_bucket"] = append(slices.Clone(lbls), "le")
			}
			return true
		})
	}
	return errors.Join(errs...)
}

// stringLit is the value of a string literal, or of a constant in consts.
func stringLit(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	}
	return "", false
}

// stringList is the values of a []string{...} literal (nil for nil).
func stringList(e ast.Expr, consts map[string]string) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range lit.Elts {
		if s, ok := stringLit(el, consts); ok {
			out = append(out, s)
		}
	}
	return out
}

// optsName is the Name of a prometheus.XxxOpts{...} literal.
func optsName(e ast.Expr, consts map[string]string) (string, bool) {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return "", false
	}
	for _, el := range lit.Elts {
		if kv, ok := el.(*ast.KeyValueExpr); ok {
			if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
				return stringLit(kv.Value, consts)
			}
		}
	}
	return "", false
}

// TestHelmMonitoringMetricsFound checks that exportedMetrics finds the
// metrics the README's Operations section documents for alerting, with
// their labels, so that checkRules' "exported" is the code's list.
func TestHelmMonitoringMetricsFound(t *testing.T) {
	got := exportedMetrics(t)
	for name, lbls := range map[string][]string{
		"signet_server_ca_expiry_timestamp_seconds":                     {"kind", "status"},
		"signet_server_federated_bundle_last_refresh_timestamp_seconds": {"trust_domain"},
		"signet_server_federated_bundle_refresh_failures_total":         {"trust_domain"},
		"signet_agent_svid_expiry_timestamp_seconds":                    nil,
		"signet_agent_workload_svid_earliest_expiry_timestamp_seconds":  nil,
		"signet_agent_entries":                                          nil,
		"signet_agent_svids_cached":                                     nil,
		"signet_server_signings_total":                                  {"type"},
		"signet_server_rpc_duration_seconds_bucket":                     {"method", "code", "le"},
		"signet_agent_workload_api_calls_total":                         {"method", "code"}, // its name a constant
	} {
		have, ok := got[name]
		if !ok {
			t.Errorf("%s not found", name)
		} else if lbls != nil && !slices.Equal(have, lbls) {
			t.Errorf("%s: labels %v, want %v", name, have, lbls)
		}
	}
}

// TestHelmMonitoringRefusesBadValues checks that values of the wrong type
// or form are refused, naming the value.
func TestHelmMonitoringRefusesBadValues(t *testing.T) {
	for _, tc := range []struct{ name, values, want string }{
		// SPIRE's chart has telemetry.prometheus.enabled for its metrics
		// listener; Signet's servers and agents always serve /metrics.
		{"SPIRE's telemetry.prometheus.enabled", "telemetry: {prometheus: {enabled: true}}", "enabled"},
		{"misspelt PodMonitor value", "telemetry: {prometheus: {podMonitor: {enable: true}}}", "enable"},
		{"PodMonitor switch not a boolean", "telemetry: {prometheus: {podMonitor: {enabled: 'yes'}}}", "/telemetry/prometheus/podMonitor/enabled"},
		{"PodMonitor namespace not a name", "telemetry: {prometheus: {podMonitor: {namespace: Monitoring}}}", "/telemetry/prometheus/podMonitor/namespace"},
		{"PodMonitor labels a list", "telemetry: {prometheus: {podMonitor: {labels: [release]}}}", "/telemetry/prometheus/podMonitor/labels"},
		{"PodMonitor label value not a string", "telemetry: {prometheus: {podMonitor: {labels: {release: {name: x}}}}}", "/telemetry/prometheus/podMonitor/labels/release"},
		{"PodMonitor label value too long", "telemetry: {prometheus: {podMonitor: {labels: {release: " + strings.Repeat("a", 64) + "}}}}", "/telemetry/prometheus/podMonitor/labels/release"},
		{"PodMonitor label key not a label key", "telemetry: {prometheus: {podMonitor: {labels: {'a b': x}}}}", "/telemetry/prometheus/podMonitor/labels"},
		{"interval not a duration", "telemetry: {prometheus: {podMonitor: {interval: 30}}}", "/telemetry/prometheus/podMonitor/interval"},
		{"interval in words", "telemetry: {prometheus: {podMonitor: {interval: 30 seconds}}}", "/telemetry/prometheus/podMonitor/interval"},
		{"interval in Go's form", "telemetry: {prometheus: {podMonitor: {interval: 1.5m}}}", "/telemetry/prometheus/podMonitor/interval"},
		{"interval zero", "telemetry: {prometheus: {podMonitor: {interval: 0s}}}", "/telemetry/prometheus/podMonitor/interval"},
		{"misspelt PrometheusRule value", "telemetry: {prometheus: {prometheusRule: {enable: true}}}", "enable"},
		{"PrometheusRule switch not a boolean", "telemetry: {prometheus: {prometheusRule: {enabled: 1}}}", "/telemetry/prometheus/prometheusRule/enabled"},
		{"PrometheusRule labels not strings", "telemetry: {prometheus: {prometheusRule: {labels: {release: [a]}}}}", "/telemetry/prometheus/prometheusRule/labels/release"},
		{"alert label not a Prometheus label name", "telemetry: {prometheus: {prometheusRule: {alertLabels: {team.name: x}}}}", "/telemetry/prometheus/prometheusRule/alertLabels"},
		{"alert label severity (each alert sets its own)", "telemetry: {prometheus: {prometheusRule: {alertLabels: {severity: page}}}}", "/telemetry/prometheus/prometheusRule/alertLabels"},
		{"alert label value not a string", "telemetry: {prometheus: {prometheusRule: {alertLabels: {team: [a]}}}}", "/telemetry/prometheus/prometheusRule/alertLabels/team"},
		{"threshold a duration", "telemetry: {prometheus: {prometheusRule: {caExpirySeconds: 30m}}}", "/telemetry/prometheus/prometheusRule/caExpirySeconds"},
		{"threshold a fraction", "telemetry: {prometheus: {prometheusRule: {agentSVIDExpirySeconds: 90.5}}}", "/telemetry/prometheus/prometheusRule/agentSVIDExpirySeconds"},
		{"negative threshold", "telemetry: {prometheus: {prometheusRule: {workloadSVIDExpirySeconds: -1}}}", "/telemetry/prometheus/prometheusRule/workloadSVIDExpirySeconds"},
		// At or past the point where rotation activates the next CA, the
		// alert would fire at every rotation.
		{"CA threshold past activation", "telemetry: {prometheus: {prometheusRule: {caExpirySeconds: 3600}}}", "/telemetry/prometheus/prometheusRule/caExpirySeconds"},
		{"agent SVID threshold past renewal", "telemetry: {prometheus: {prometheusRule: {agentSVIDExpirySeconds: 1800}}}", "/telemetry/prometheus/prometheusRule/agentSVIDExpirySeconds"},
		{"bundle age threshold zero", "telemetry: {prometheus: {prometheusRule: {federatedBundleMaxAgeSeconds: 0}}}", "/telemetry/prometheus/prometheusRule/federatedBundleMaxAgeSeconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := helmTemplate(t, "signet-system", tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestHelmMonitoringAlertsFire evaluates the chart's alert expressions
// with Prometheus' own PromQL engine on the series a scrape of servers and
// agents in a healthy or a failing state gives (names and labels as the
// code exports them, target labels as the PodMonitor adds them), and
// checks which alerts fire, for which pod. Only the expressions: `for` is
// Prometheus' to apply.
func TestHelmMonitoringAlertsFire(t *testing.T) {
	r := helmMonitoring(t, "signet-system", `
telemetry: {prometheus: {podMonitor: {enabled: true}, prometheusRule: {enabled: true, workloadSVIDExpirySeconds: 300}}}
`)
	target := targetLabels(r.podMonitors[0])
	rules := map[string]monitoringv1.Rule{}
	for _, g := range r.rules[0].Spec.Groups {
		for _, rule := range g.Rules {
			rules[rule.Alert] = rule
		}
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) float64 { return float64(now.Add(d).Unix()) }
	type series struct {
		pod, metric string
		labels      []string // name, value, ...
		value       float64
	}
	server := func(metric string, value float64, lbls ...string) series {
		return series{"signet-server-0", metric, lbls, value}
	}
	agent := func(pod, metric string, value float64) series { return series{pod, metric, nil, value} }
	healthyAgent := func(pod string) []series {
		return []series{
			agent(pod, "signet_agent_svid_expiry_timestamp_seconds", at(28*time.Minute)),
			agent(pod, "signet_agent_workload_svid_earliest_expiry_timestamp_seconds", at(31*time.Minute)),
			agent(pod, "signet_agent_entries", 4),
			agent(pod, "signet_agent_svids_cached", 4),
		}
	}
	healthyServer := []series{
		server("signet_server_ca_expiry_timestamp_seconds", at(61*time.Minute), "kind", "x509", "status", "active"),
		server("signet_server_ca_expiry_timestamp_seconds", at(5*time.Hour), "kind", "x509", "status", "prepared"),
		server("signet_server_ca_expiry_timestamp_seconds", at(3*time.Hour), "kind", "jwt", "status", "active"),
		server("signet_server_federated_bundle_last_refresh_timestamp_seconds", at(-4*time.Minute), "trust_domain", "peer.org"),
		server("signet_server_federated_bundle_refresh_failures_total", 3, "trust_domain", "peer.org"),
	}
	exported := exportedMetrics(t)
	for _, tc := range []struct {
		name   string
		series []series
		want   []string // alert/pod[/trust domain or kind]
	}{
		{"healthy, just before the CA's activation", append(slices.Clone(healthyServer), healthyAgent("signet-agent-a")...), nil},
		{"X.509 CA not rotated", []series{
			server("signet_server_ca_expiry_timestamp_seconds", at(20*time.Minute), "kind", "x509", "status", "active"),
			server("signet_server_ca_expiry_timestamp_seconds", at(5*time.Hour), "kind", "x509", "status", "prepared"),
			server("signet_server_ca_expiry_timestamp_seconds", at(3*time.Hour), "kind", "jwt", "status", "active"),
		}, []string{"SignetServerCAExpiringSoon/signet-server-0/x509"}},
		{"JWT key not rotated", []series{
			server("signet_server_ca_expiry_timestamp_seconds", at(3*time.Hour), "kind", "x509", "status", "active"),
			server("signet_server_ca_expiry_timestamp_seconds", at(29*time.Minute), "kind", "jwt", "status", "active"),
		}, []string{"SignetServerCAExpiringSoon/signet-server-0/jwt"}},
		{"a prepared CA near its end is no alarm", []series{
			server("signet_server_ca_expiry_timestamp_seconds", at(3*time.Hour), "kind", "x509", "status", "active"),
			server("signet_server_ca_expiry_timestamp_seconds", at(10*time.Minute), "kind", "x509", "status", "prepared"),
		}, nil},
		{"federated bundle two hours old", []series{
			server("signet_server_federated_bundle_last_refresh_timestamp_seconds", at(-2*time.Hour), "trust_domain", "peer.org"),
			server("signet_server_federated_bundle_refresh_failures_total", 30, "trust_domain", "peer.org"),
			server("signet_server_federated_bundle_last_refresh_timestamp_seconds", at(-time.Minute), "trust_domain", "other.org"),
			server("signet_server_federated_bundle_refresh_failures_total", 0, "trust_domain", "other.org"),
		}, []string{"SignetFederatedBundleStale/signet-server-0/peer.org"}},
		{"federated bundle never fetched", []series{
			server("signet_server_federated_bundle_refresh_failures_total", 4, "trust_domain", "peer.org"),
			// Just configured: not fetched yet, nothing failed.
			server("signet_server_federated_bundle_refresh_failures_total", 0, "trust_domain", "new.org"),
		}, []string{"SignetFederatedBundleNeverFetched/signet-server-0/peer.org"}},
		{"agent SVID not renewed", append(healthyAgent("signet-agent-a"),
			agent("signet-agent-b", "signet_agent_svid_expiry_timestamp_seconds", at(10*time.Minute)),
			agent("signet-agent-b", "signet_agent_entries", 0),
			agent("signet-agent-b", "signet_agent_svids_cached", 0),
		), []string{"SignetAgentSVIDExpiringSoon/signet-agent-b"}},
		{"agent SVID expired", []series{
			agent("signet-agent-b", "signet_agent_svid_expiry_timestamp_seconds", at(-5*time.Minute)),
			agent("signet-agent-b", "signet_agent_entries", 0),
			agent("signet-agent-b", "signet_agent_svids_cached", 0),
		}, []string{"SignetAgentSVIDExpiringSoon/signet-agent-b"}},
		{"agent not attested", append(healthyAgent("signet-agent-a"),
			agent("signet-agent-b", "signet_agent_entries", 0),
			agent("signet-agent-b", "signet_agent_svids_cached", 0),
		), []string{"SignetAgentNotAttested/signet-agent-b"}},
		{"entries without SVIDs", append(healthyAgent("signet-agent-a"),
			agent("signet-agent-b", "signet_agent_svid_expiry_timestamp_seconds", at(25*time.Minute)),
			agent("signet-agent-b", "signet_agent_workload_svid_earliest_expiry_timestamp_seconds", at(40*time.Minute)),
			agent("signet-agent-b", "signet_agent_entries", 5),
			agent("signet-agent-b", "signet_agent_svids_cached", 3),
		), []string{"SignetAgentWorkloadSVIDsMissing/signet-agent-b"}},
		{"workload SVID not renewed", append(healthyAgent("signet-agent-a"),
			agent("signet-agent-b", "signet_agent_svid_expiry_timestamp_seconds", at(25*time.Minute)),
			agent("signet-agent-b", "signet_agent_workload_svid_earliest_expiry_timestamp_seconds", at(2*time.Minute)),
			agent("signet-agent-b", "signet_agent_entries", 5),
			agent("signet-agent-b", "signet_agent_svids_cached", 5),
		), []string{"SignetWorkloadSVIDExpiringSoon/signet-agent-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var all []storage.Series
			for _, s := range tc.series {
				// As the code exports them.
				var names []string
				for i := 0; i < len(s.labels); i += 2 {
					names = append(names, s.labels[i])
				}
				if have, ok := exported[s.metric]; !ok || !slices.Equal(names, have) {
					t.Fatalf("series %s%v: the code exports %v (%v)", s.metric, names, have, ok)
				}
				kv := []string{labels.MetricName, s.metric}
				for _, l := range target {
					v := "x-" + l
					switch l {
					case "pod":
						v = s.pod
					case "namespace":
						v = "signet-system"
					case "node":
						v = "node-of-" + s.pod
					case "job":
						v, _, _ = strings.Cut(s.pod, "-0") // signet-server-0: signet-server
						v = strings.TrimSuffix(strings.TrimSuffix(v, "-a"), "-b")
					}
					kv = append(kv, l, v)
				}
				// Scraped 15 s ago: within the lookback.
				ts := now.Add(-15 * time.Second).UnixMilli()
				all = append(all, promqlengine.NewStorageSeries(promqlengine.Series{
					Metric: labels.FromStrings(append(kv, s.labels...)...),
					Floats: []promqlengine.FPoint{{T: ts, F: s.value}},
				}))
			}
			var firing []string
			for _, alert := range slices.Sorted(maps.Keys(rules)) {
				rule := rules[alert]
				for _, smpl := range evalPromQL(t, all, rule.Expr.String(), now) {
					id := alert + "/" + smpl.Metric.Get("pod")
					for _, l := range []string{"trust_domain", "kind"} {
						if v := smpl.Metric.Get(l); v != "" {
							id += "/" + v
						}
					}
					firing = append(firing, id)
					// What the alert says, as Prometheus would send it: the
					// pod and what it is about.
					summary, err := expandAlertTemplate(rule.Annotations["summary"], smpl.Metric.Map(), smpl.F)
					if err != nil {
						t.Fatalf("%s summary: %v", alert, err)
					}
					for _, l := range []string{"pod", "trust_domain", "node"} {
						if v := smpl.Metric.Get(l); v != "" && (l != "node" || strings.HasPrefix(smpl.Metric.Get("job"), "signet-agent")) && !strings.Contains(summary, v) {
							t.Errorf("%s summary %q does not name the %s %s", alert, summary, l, v)
						}
					}
					t.Logf("%s: %s", alert, summary)
				}
			}
			if !slices.Equal(firing, tc.want) {
				t.Errorf("firing %v, want %v", firing, tc.want)
			}
		})
	}
}

// evalPromQL evaluates expr at ts over the given series with Prometheus'
// engine, with its default 5-minute lookback.
func evalPromQL(t *testing.T, all []storage.Series, expr string, ts time.Time) promqlengine.Vector {
	t.Helper()
	q := storage.QueryableFunc(func(int64, int64) (storage.Querier, error) {
		return &storage.MockQuerier{SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
			var out []storage.Series
			for _, s := range all {
				if slices.IndexFunc(ms, func(m *labels.Matcher) bool { return !m.Matches(s.Labels().Get(m.Name)) }) < 0 {
					out = append(out, s)
				}
			}
			slices.SortFunc(out, func(a, b storage.Series) int { return labels.Compare(a.Labels(), b.Labels()) })
			return &seriesSet{series: out}
		}}, nil
	})
	eng := promqlengine.NewEngine(promqlengine.EngineOpts{MaxSamples: 10000, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute})
	query, err := eng.NewInstantQuery(t.Context(), q, nil, expr, ts)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer query.Close()
	v, err := query.Exec(t.Context()).Vector()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// seriesSet is a storage.SeriesSet over a slice.
type seriesSet struct {
	series []storage.Series
	next   int
}

func (s *seriesSet) Next() bool                        { s.next++; return s.next <= len(s.series) }
func (s *seriesSet) At() storage.Series                { return s.series[s.next-1] }
func (s *seriesSet) Err() error                        { return nil }
func (s *seriesSet) Warnings() annotations.Annotations { return nil }
