package health

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "signet_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Inc()
	ready := errors.New("store unreachable")
	s := &Server{
		Live:     func(context.Context) error { return nil },
		Ready:    func(context.Context) error { return ready },
		Registry: reg,
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/live"); code != 200 {
		t.Errorf("/live = %d, want 200", code)
	}
	if code, body := get("/ready"); code != 503 || !strings.Contains(body, "store unreachable") {
		t.Errorf("/ready = %d %q, want 503 with the reason", code, body)
	}
	ready = nil
	if code, _ := get("/ready"); code != 200 {
		t.Errorf("/ready after recovery = %d, want 200", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "signet_test_total 1") {
		t.Errorf("/metrics = %d %q", code, body)
	}
}
