package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/signetid/signet/agent/cache"
)

// stateCollector exports what an operator alerts on: how many entries the
// agent serves and how many have a valid SVID, and when the agent's own
// SVID and the soonest workload SVID expire. Both are renewed at about half
// of their lifetime, so an expiry drawing near means renewals fail (the
// server unreachable, the agent evicted). Read at each scrape, from one
// cache snapshot.
type stateCollector struct {
	stats     func() cache.Stats
	agentSVID func() (time.Time, bool)

	entries, svids, earliest, own *prometheus.Desc
}

func newStateCollector(stats func() cache.Stats, agentSVID func() (time.Time, bool)) *stateCollector {
	return &stateCollector{
		stats:     stats,
		agentSVID: agentSVID,
		entries:   prometheus.NewDesc("signet_agent_entries", "Registration entries the agent serves to workloads.", nil, nil),
		svids:     prometheus.NewDesc("signet_agent_svids_cached", "Unexpired workload X509-SVIDs in the agent's cache.", nil, nil),
		earliest: prometheus.NewDesc("signet_agent_workload_svid_earliest_expiry_timestamp_seconds",
			"When the soonest-expiring cached workload X509-SVID expires (Unix time); absent when none is cached.", nil, nil),
		own: prometheus.NewDesc("signet_agent_svid_expiry_timestamp_seconds",
			"When the agent's own SVID expires (Unix time); absent until the agent is attested.", nil, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.svids
	ch <- c.earliest
	ch <- c.own
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(st.Entries))
	ch <- prometheus.MustNewConstMetric(c.svids, prometheus.GaugeValue, float64(st.SVIDs))
	if !st.EarliestExpiry.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.earliest, prometheus.GaugeValue, unixSeconds(st.EarliestExpiry))
	}
	if exp, ok := c.agentSVID(); ok {
		ch <- prometheus.MustNewConstMetric(c.own, prometheus.GaugeValue, unixSeconds(exp))
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
