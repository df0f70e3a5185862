package server_test

import (
	"context"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/signetid/signet/server"
	"github.com/signetid/signet/server/api"
	"github.com/signetid/signet/server/federation"
	"github.com/signetid/signet/server/servertest"
)

// /metrics carries what an operator alerts on: when the active and
// prepared CAs and JWT keys expire, and how fetching each federated bundle
// goes.
func TestMetricsForAlerting(t *testing.T) {
	peer := spiffeid.RequireTrustDomainFromString("down.example")
	s := servertest.Start(t, td, func(c *server.Config) {
		c.HealthListen = "127.0.0.1:0"
		// Nothing listens on port 1: every fetch fails.
		c.Federation.Relationships = []federation.Relationship{{TrustDomain: peer, URL: "https://127.0.0.1:1", Profile: federation.ProfileWeb}}
	})
	want := map[string]float64{}
	for _, kind := range []string{"x509", "jwt"} {
		resp, err := s.Admin().GetLocalAuthorities(context.Background(), &api.GetLocalAuthoritiesRequest{Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.Authorities {
			if a.Status == "active" {
				want[`kind="`+kind+`",status="active"`] = float64(a.ExpiresAt)
			}
		}
	}
	if len(want) != 2 {
		t.Fatalf("active authorities: %v, want an X.509 CA and a JWT key", want)
	}

	var fam map[string]*dtoFamily
	deadline := time.Now().Add(30 * time.Second)
	for {
		fam = scrapeMetrics(t, s.HealthAddr())
		if f := fam["signet_server_federated_bundle_refresh_failures_total"]; f != nil && f.values[`trust_domain="down.example"`] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no failed fetch of down.example's bundle counted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := fam["signet_server_ca_expiry_timestamp_seconds"]
	if got == nil {
		t.Fatal("no signet_server_ca_expiry_timestamp_seconds")
	}
	for labels, v := range want {
		// The admin API gives whole seconds.
		if math.Floor(got.values[labels]) != v {
			t.Errorf("ca expiry {%s} = %v, want %v (all: %v)", labels, got.values[labels], v, got.values)
		}
	}
	// Never fetched: no last-refresh time to alert on as stale, only the
	// failures.
	if f := fam["signet_server_federated_bundle_last_refresh_timestamp_seconds"]; f != nil {
		t.Errorf("last refresh reported for a bundle never fetched: %v", f.values)
	}
}

type dtoFamily struct{ values map[string]float64 }

// scrapeMetrics reads /metrics into family -> `label="v",...` -> value.
func scrapeMetrics(t *testing.T, addr string) map[string]*dtoFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := make(map[string]*dtoFamily)
	for name, f := range families {
		d := &dtoFamily{values: map[string]float64{}}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := m.GetGauge().GetValue()
			if m.Counter != nil {
				v = m.GetCounter().GetValue()
			}
			d.values[strings.Join(labels, ",")] = v
		}
		out[name] = d
	}
	return out
}
