package e2e

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// TestMergedMetricsClientGolangApp checks a real loom-proxy's merged
// page (15020, Istio's agent's) in front of an ordinary client_golang app
// that exports go_* and process_* as the proxy does: after requests
// through the mesh, the page parses with Prometheus' text parser and
// holds the proxy's istio_requests_total (destination reporter), its own
// Go metrics as istio_agent_go_*, and the app's counter and go_* as the
// app exported them.
func TestMergedMetricsClientGolangApp(t *testing.T) {
	const prefix, octet, calls = "127.153.0", 10, 3
	reg := prometheus.NewRegistry()
	orders := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_orders_total", Help: "Orders placed."})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), orders)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /order", func(w http.ResponseWriter, _ *http.Request) {
		orders.Inc()
		_, _ = io.WriteString(w, "ordered")
	})
	m := startAppMesh(t, prefix, []appWorkload{{Name: "shop-v1", App: "shop", Version: "v1", Octet: octet, Handler: mux,
		ProxyArgs: []string{"--app-metrics-url", "http://127.153.0.10:9080/metrics"}}}, "")
	c := m.client(5 * time.Second)
	for range calls {
		resp, err := c.Get("http://shop.default.svc.cluster.local:9080/order")
		if err != nil {
			t.Fatalf("GET /order: %v\n%s", err, m.tails())
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /order = %d, want 200\n%s", resp.StatusCode, m.tails())
		}
	}

	merged := "http://127.153.0.10:15020/stats/prometheus"
	dst := map[string]string{"reporter": "destination", "destination_workload": "shop-v1", "response_code": "200"}
	var fams promtest.Families
	var lastErr error
	// The destination reporter counts a request once its response is
	// done, which may trail the client's read by a moment.
	if !poll(10*time.Second, func() bool {
		fams, lastErr = promtest.Scrape(merged)
		if lastErr != nil {
			return false
		}
		v, _ := fams.Value("istio_requests_total", dst)
		return v == calls
	}) {
		v, _ := fams.Value("istio_requests_total", dst)
		t.Fatalf("%s: error %v; istio_requests_total%v = %v, want %d\n%s", merged, lastErr, dst, v, calls, m.tails())
	}
	if v, ok := fams.Value("shop_orders_total", nil); !ok || v != calls {
		t.Errorf("app's shop_orders_total = %v (present %v), want %d", v, ok, calls)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds", "istio_agent_go_goroutines",
		"istio_agent_process_start_time_seconds", "istio_request_duration_milliseconds"} {
		if fams[name] == nil {
			t.Errorf("%s is not on the merged page", name)
		}
	}
	if v, _ := fams.Value("istio_agent_scrape_failures_total", map[string]string{"type": "application"}); v != 0 {
		t.Errorf("istio_agent_scrape_failures_total{type=application} = %v, want 0", v)
	}
}
