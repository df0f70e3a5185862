package workloadapi

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metric names, for dashboards and tests.
const (
	MetricCalls       = "signet_agent_workload_api_calls_total"
	MetricAttestation = "signet_agent_workload_attestation_duration_seconds"
)

type metrics struct {
	calls       *prometheus.CounterVec
	attestation *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCalls,
			Help: "Workload API and Envoy SDS calls by method and final gRPC code (streams count when they end).",
		}, []string{"method", "code"}),
		attestation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricAttestation,
			Help:    "Time to attest a Workload API caller, by result (ok or error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.calls, m.attestation} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("workload API: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observeAttestation(start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.attestation.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

// securityHeader is the metadata every Workload API request must carry, so
// that a browser or proxy tricked into reaching the socket (SSRF) is refused.
// SDS calls are exempt: Envoy does not send it, and an SSRF cannot speak
// gRPC streams over a Unix socket.
const securityHeader = "workload.spiffe.io"

func checkHeader(ctx context.Context, fullMethod string) error {
	if isSDSMethod(fullMethod) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := func() (any, error) {
		if err := checkHeader(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}()
	s.metrics.calls.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Inc()
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	err := func() error {
		if err := checkHeader(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}()
	s.metrics.calls.WithLabelValues(path.Base(info.FullMethod), status.Code(err).String()).Inc()
	return err
}
