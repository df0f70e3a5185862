package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/signetid/signet/server/ca"
	"github.com/signetid/signet/server/federation"
)

// registerMetrics adds the server's state to /metrics; the agent API adds
// its RPC and signing metrics itself.
func (s *Server) registerMetrics() {
	s.metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signet_server_entries", Help: "Registration entries."},
			func() float64 { snap, _ := s.catalog.Current(); return float64(snap.Entries.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signet_server_agents", Help: "Attested agents."},
			func() float64 { snap, _ := s.catalog.Current(); return float64(len(snap.Nodes)) }),
		newAuthorityCollector(s.ca),
		// s.federation is made after the metrics are registered.
		newFederationCollector(func() []federation.RefreshStatus {
			if s.federation == nil {
				return nil
			}
			return s.federation.RefreshStatuses()
		}),
	)
	if s.k8sReg != nil {
		s.metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signet_server_k8s_controller_leading",
			Help: "1 while this server runs the Kubernetes registration controller (it holds the lease, with leader_election)."},
			func() float64 {
				if s.k8sReg.Leading() {
					return 1
				}
				return 0
			}))
	}
}

// authorityCollector exports when this server's active and prepared X.509
// CAs and JWT keys expire. Rotation keeps the active one at least a sixth of
// its life from expiry, so one drawing nearer means rotation is stuck (an
// upstream authority down, a full disk).
type authorityCollector struct {
	ca     *ca.Manager
	expiry *prometheus.Desc
}

func newAuthorityCollector(m *ca.Manager) *authorityCollector {
	return &authorityCollector{ca: m, expiry: prometheus.NewDesc("signet_server_ca_expiry_timestamp_seconds",
		"When this server's X.509 CA or JWT signing key expires (Unix time), by kind (x509, jwt) and status (active, prepared).",
		[]string{"kind", "status"}, nil)}
}

func (c *authorityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.expiry }

func (c *authorityCollector) Collect(ch chan<- prometheus.Metric) {
	for _, kind := range []ca.AuthorityKind{ca.KindX509, ca.KindJWT} {
		auths, err := c.ca.LocalAuthorities(kind)
		if err != nil {
			continue
		}
		for _, a := range auths {
			if a.Status != ca.StatusActive && a.Status != ca.StatusPrepared {
				continue // old and revoked ones: several per label set, and nothing signs with them
			}
			ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, unixSeconds(a.ExpiresAt), string(kind), string(a.Status))
		}
	}
}

// federationCollector exports how fetching each federated trust domain's
// bundle goes: a relationship whose last success grows old serves a bundle
// that will miss the peer's next root.
type federationCollector struct {
	statuses          func() []federation.RefreshStatus
	lastRefresh, fail *prometheus.Desc
}

func newFederationCollector(statuses func() []federation.RefreshStatus) *federationCollector {
	return &federationCollector{
		statuses: statuses,
		lastRefresh: prometheus.NewDesc("signet_server_federated_bundle_last_refresh_timestamp_seconds",
			"When this server last fetched a federated trust domain's bundle from its endpoint (Unix time); absent until one fetch succeeds.",
			[]string{"trust_domain"}, nil),
		fail: prometheus.NewDesc("signet_server_federated_bundle_refresh_failures_total",
			"Failed fetches of a federated trust domain's bundle since this server started.",
			[]string{"trust_domain"}, nil),
	}
}

func (c *federationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.lastRefresh
	ch <- c.fail
}

func (c *federationCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.statuses() {
		td := st.TrustDomain.Name()
		if !st.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.lastRefresh, prometheus.GaugeValue, unixSeconds(st.LastSuccess), td)
		}
		ch <- prometheus.MustNewConstMetric(c.fail, prometheus.CounterValue, float64(st.Failures), td)
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
