package agentapi

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics are the agent API's Prometheus collectors.
type Metrics struct {
	signings   *prometheus.CounterVec
	rpcLatency *prometheus.HistogramVec
}

// NewMetrics registers the collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		signings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signet_server_signings_total",
			Help: "SVIDs signed, by type (x509, jwt, agent).",
		}, []string{"type"}),
		rpcLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "signet_server_rpc_duration_seconds",
			Help:    "Agent API unary RPC latency, by method and code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "code"}),
	}
	reg.MustRegister(m.signings, m.rpcLatency)
	return m
}

// UnaryInterceptor records RPC latency.
func (m *Metrics) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.rpcLatency.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(time.Since(start).Seconds())
	return resp, err
}

// MetricsInterceptor returns the unary interceptor recording RPC latency.
func (s *Service) MetricsInterceptor() grpc.UnaryServerInterceptor {
	return s.cfg.Metrics.UnaryInterceptor
}
