package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// istioLabels are Istio's standard metric labels, as a proxy exports them
// (Istio's docs: "Istio Standard Metrics").
var istioLabels = []string{"reporter",
	"source_workload", "source_canonical_service", "source_canonical_revision", "source_workload_namespace",
	"source_principal", "source_app", "source_version", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
	"destination_version", "destination_service", "destination_canonical_service", "destination_canonical_revision",
	"destination_service_name", "destination_service_namespace", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy"}

// istioBuckets are Envoy's default histogram buckets, which Istio's
// istio_request_duration_milliseconds uses.
var istioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// fakeProxy is a real HTTP endpoint serving Istio's standard metrics in
// the Prometheus text format, as a proxy's :15090/stats/prometheus does,
// made with client_golang; the test records requests into it.
type fakeProxy struct {
	srv *httptest.Server

	mu       sync.Mutex // guards the fields below
	status   int        // answer this status instead of metrics when set
	text     bool       // answer the text format whatever the client asks
	handler  http.Handler
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newFakeProxy(t testing.TB) *fakeProxy {
	t.Helper()
	p := &fakeProxy{}
	p.restart()
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		st, h, text := p.status, p.handler, p.text
		p.mu.Unlock()
		if text {
			r.Header.Del("Accept") // promhttp then answers text
		}
		if st != 0 {
			http.Error(w, "unavailable", st)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// restart starts the proxy's counters afresh, as a new process would.
func (p *fakeProxy) restart() {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "requests"}, istioLabels)
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds", Help: "duration",
		Buckets: istioBuckets}, istioLabels)
	reg.MustRegister(requests, duration)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.handler, p.requests, p.duration = promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), requests, duration
}

func (p *fakeProxy) url() string { return p.srv.URL + "/stats/prometheus" }

// textOnly makes the proxy answer the text format only, as a server
// without protobuf negotiation does.
func (p *fakeProxy) textOnly() {
	p.mu.Lock()
	p.text = true
	p.mu.Unlock()
}

func (p *fakeProxy) fail(status int) {
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
}

// wl is a bookinfo workload in namespace default: "reviews-v2" is app
// reviews, version v2.
func wl(name string) Workload {
	if name == unknown {
		return Workload{Name: unknown, Namespace: unknown, App: unknown, Version: unknown}
	}
	i := strings.LastIndex(name, "-")
	return Workload{Name: name, Namespace: "default", App: name[:i], Version: name[i+1:]}
}

// call is n requests from src to dst (workload names, or "unknown")
// through service (a short name in default), as one reporter saw them.
type call struct {
	reporter, src, dst, service string
	code                        string
	mtls                        bool
	ms                          float64 // each request's duration
	n                           int
	// bareSource leaves the source's app and version labels "unknown", as
	// a destination reports a peer whose metadata lacked them.
	bareSource bool
}

func (c call) labels() prometheus.Labels {
	s, d := wl(c.src), wl(c.dst)
	if c.bareSource {
		s.App, s.Version = unknown, unknown
	}
	host := c.service + ".default.svc.cluster.local"
	sec := "unknown"
	if c.mtls && c.reporter == reporterDestination {
		sec = "mutual_tls"
	}
	flags := "-"
	if c.code == "500" && c.dst == unknown {
		flags = "FI"
	}
	return prometheus.Labels{"reporter": c.reporter,
		"source_workload": s.Name, "source_canonical_service": s.App, "source_canonical_revision": s.Version,
		"source_workload_namespace": s.Namespace, "source_principal": "spiffe://cluster.local/ns/default/sa/" + s.App,
		"source_app": s.App, "source_version": s.Version, "source_cluster": "Kubernetes",
		"destination_workload": d.Name, "destination_workload_namespace": d.Namespace, "destination_principal": "unknown",
		"destination_app": d.App, "destination_version": d.Version, "destination_service": host,
		"destination_canonical_service": d.App, "destination_canonical_revision": d.Version,
		"destination_service_name": c.service, "destination_service_namespace": "default", "destination_cluster": "Kubernetes",
		"request_protocol": "http", "response_code": c.code, "grpc_response_status": "", "response_flags": flags,
		"connection_security_policy": sec}
}

// record counts c.
func (p *fakeProxy) record(c call) {
	l := c.labels()
	p.mu.Lock()
	requests, duration := p.requests, p.duration
	p.mu.Unlock()
	requests.With(l).Add(float64(c.n))
	for range c.n {
		duration.With(l).Observe(c.ms)
	}
}
