package admin

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
)

// proxyGatherer is a registry shaped as loom-proxy's: telemetry's (Go and
// process collectors included) with Istio's standard metrics after one
// request.
func proxyGatherer(t *testing.T) prometheus.Gatherer {
	t.Helper()
	reg := telemetry.NewMetrics().Registry
	m := istiostats.NewMetrics(0)
	reg.MustRegister(m)
	c, err := istiostats.Compile(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	self := istiostats.Peer{Workload: "productpage-v1", Namespace: "default", App: "productpage", Version: "v1"}
	var l istiostats.Labels
	c.Fill(&self, &istiostats.Facts{Peer: &istiostats.Peer{Workload: "reviews-v1", Namespace: "default"},
		Service: istiostats.ServiceOfCluster("outbound|9080||reviews.default.svc.cluster.local"), Protocol: "http", Code: 200}, &l)
	m.RecordRequest(c, &istiostats.Request{Labels: &l, DurationMillis: 3, ResponseBytes: 100})
	return reg
}

// clientGolangApp is an ordinary Go app's registry: client_golang's Go
// and process collectors and one counter of its own at 42.
func clientGolangApp() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	orders := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_orders_total", Help: "Orders placed."})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), orders)
	orders.Add(42)
	return reg
}

// withAccept serves h as if the scraper had asked for accept.
func withAccept(accept string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Accept", accept)
		h.ServeHTTP(w, r)
	})
}

// page is one GET of the merged page, parsed as Prometheus parses text.
type page struct {
	status   int
	ctype    string
	fams     map[string]*dto.MetricFamily
	parseErr error
	types    map[string]int // # TYPE lines per family name
	elapsed  time.Duration
}

func scrape(t *testing.T, url string, hdr http.Header) page {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := page{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), types: map[string]int{}, elapsed: time.Since(start)}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	p.fams, p.parseErr = parser.TextToMetricFamilies(bytes.NewReader(body))
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			p.types[f[2]]++
		}
	}
	return p
}

// value is the value of name's series with labels want (all of them, any
// others), and whether there is one.
func (p page) value(name string, want map[string]string) (float64, bool) {
	mf := p.fams[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// closedURL is an http URL of a loopback port nobody listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/metrics"
}

func TestMergedHandler(t *testing.T) {
	app := clientGolangApp()
	promApp := promhttp.HandlerFor(app, promhttp.HandlerOpts{EnableOpenMetrics: true})
	// slow answers only when the request is given up (the proxy's
	// timeout) or the test ends.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	clash := prometheus.NewRegistry()
	clashReq := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "The app's own."}, []string{"app_label"})
	clashCount := prometheus.NewCounter(prometheus.CounterOpts{Name: "istio_request_duration_milliseconds_count", Help: "Suffix of the proxy's histogram."})
	clashGo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "istio_agent_go_goroutines", Help: "The proxy's renamed family."})
	clashReq.WithLabelValues("x").Add(7)
	clashCount.Add(9)
	clashGo.Set(1e6)
	clash.MustRegister(clashReq, clashCount, clashGo, collectors.NewGoCollector())
	clashOrders := prometheus.NewCounter(prometheus.CounterOpts{Name: "shop_orders_total", Help: "Orders placed."})
	clashOrders.Add(42)
	clash.MustRegister(clashOrders)

	tests := []struct {
		name string
		app  http.Handler // nil: nobody listens
		hdr  http.Header
		opts MergedOptions
		// wantApp: the app's counter is on the page; else the app's part
		// is left out and counted as an application scrape failure.
		wantApp     bool
		wantDropped float64
		maxElapsed  time.Duration
	}{
		{name: "client_golang app answering protobuf", app: promApp, wantApp: true},
		{name: "client_golang app answering text", app: withAccept("text/plain;version=0.0.4", promApp), wantApp: true},
		{name: "app answering OpenMetrics whatever asked", app: withAccept("application/openmetrics-text;version=1.0.0", promApp)},
		{name: "app answering 500", app: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		})},
		{name: "app answering JSON", app: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"shop_orders_total": 42}`))
		})},
		{name: "app answering broken text", app: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write([]byte("# TYPE shop_orders_total counter\nshop_orders_total{ 42\n"))
		})},
		{name: "app unreachable"},
		{name: "slow app bounded by AppTimeout", app: slow, opts: MergedOptions{AppTimeout: 200 * time.Millisecond},
			maxElapsed: 3 * time.Second},
		{name: "slow app bounded by the scraper's timeout", app: slow,
			opts: MergedOptions{AppTimeout: time.Minute},
			hdr:  http.Header{"X-Prometheus-Scrape-Timeout-Seconds": {"0.3"}}, maxElapsed: 10 * time.Second},
		{name: "app families colliding with the proxy's are left out", wantApp: true, wantDropped: 3,
			app: withAccept("text/plain;version=0.0.4", promhttp.HandlerFor(clash, promhttp.HandlerOpts{}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var accepts []string
			o := tt.opts
			o.Gatherer = proxyGatherer(t)
			if tt.app == nil {
				o.AppURL = closedURL(t)
			} else {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					accepts = append(accepts, r.Header.Get("Accept"))
					mu.Unlock()
					tt.app.ServeHTTP(w, r)
				}))
				t.Cleanup(srv.Close)
				o.AppURL = srv.URL + "/metrics"
			}
			merged := httptest.NewServer(MergedHandler(o))
			t.Cleanup(merged.Close)

			p := scrape(t, merged.URL+"/stats/prometheus", tt.hdr)
			if p.status != http.StatusOK {
				t.Fatalf("status %d, want 200", p.status)
			}
			if p.parseErr != nil {
				t.Fatalf("merged page does not parse: %v", p.parseErr)
			}
			if mt := strings.SplitN(p.ctype, ";", 2)[0]; mt != "text/plain" {
				t.Errorf("Content-Type %q, want the text format", p.ctype)
			}
			for name, n := range p.types {
				if n > 1 {
					t.Errorf("family %s is on the page %d times", name, n)
				}
			}
			if v, ok := p.value("istio_requests_total", map[string]string{"destination_workload": "reviews-v1"}); !ok || v != 1 {
				t.Errorf("proxy's istio_requests_total = %v (present %v), want 1", v, ok)
			}
			if _, ok := p.value("istio_request_duration_milliseconds", nil); !ok {
				t.Error("proxy's istio_request_duration_milliseconds missing")
			}
			for _, name := range []string{"istio_agent_go_goroutines", "istio_agent_process_start_time_seconds"} {
				if p.fams[name] == nil {
					t.Errorf("proxy's %s missing", name)
				}
			}
			if v, ok := p.value("istio_agent_scrapes_total", nil); !ok || v != 1 {
				t.Errorf("istio_agent_scrapes_total = %v (present %v), want 1", v, ok)
			}
			v, ok := p.value("shop_orders_total", nil)
			failures, _ := p.value("istio_agent_scrape_failures_total", map[string]string{"type": "application"})
			if tt.wantApp {
				if !ok || v != 42 {
					t.Errorf("app's shop_orders_total = %v (present %v), want 42", v, ok)
				}
				if p.fams["go_goroutines"] == nil {
					t.Error("app's go_goroutines missing")
				}
				if failures != 0 {
					t.Errorf("application scrape failures = %v, want 0", failures)
				}
			} else {
				if ok {
					t.Errorf("app's shop_orders_total = %v on the page, want none", v)
				}
				if failures != 1 {
					t.Errorf("application scrape failures = %v, want 1", failures)
				}
			}
			dropped, _ := p.value("loom_merged_app_families_dropped_total", nil)
			if dropped != tt.wantDropped {
				t.Errorf("loom_merged_app_families_dropped_total = %v, want %v", dropped, tt.wantDropped)
			}
			if tt.maxElapsed > 0 && p.elapsed > tt.maxElapsed {
				t.Errorf("page took %v with a slow app, want under %v", p.elapsed, tt.maxElapsed)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range accepts {
				if !strings.Contains(a, "encoding=delimited") || !strings.Contains(a, "text/plain;version=0.0.4") || strings.Contains(a, "openmetrics") {
					t.Errorf("proxy asked the app with Accept %q, want delimited protobuf or text 0.0.4, not OpenMetrics", a)
				}
			}
		})
	}
}

// TestMergedHandlerCollisionsKeepProxy checks that where an app's family
// collides, the page carries the proxy's series, not the app's.
func TestMergedHandlerCollisionsKeepProxy(t *testing.T) {
	app := prometheus.NewRegistry()
	own := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "The app's own."}, []string{"app_label"})
	own.WithLabelValues("x").Add(7)
	app.MustRegister(own)
	srv := httptest.NewServer(promhttp.HandlerFor(app, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	merged := httptest.NewServer(MergedHandler(MergedOptions{Gatherer: proxyGatherer(t), AppURL: srv.URL}))
	t.Cleanup(merged.Close)
	p := scrape(t, merged.URL+"/metrics", nil)
	if p.parseErr != nil {
		t.Fatalf("merged page does not parse: %v", p.parseErr)
	}
	if v, ok := p.value("istio_requests_total", map[string]string{"app_label": "x"}); ok {
		t.Errorf("app's istio_requests_total{app_label=x} = %v on the page, want the proxy's family only", v)
	}
	if v, ok := p.value("istio_requests_total", map[string]string{"reporter": "source"}); !ok || v != 1 {
		t.Errorf("proxy's istio_requests_total = %v (present %v), want 1", v, ok)
	}
}
