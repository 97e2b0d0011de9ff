package telemetry

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds the proxy's request counters. It is safe for concurrent
// use; after the first request with a given label set, counting is a map
// load and an atomic add. A nil *Metrics counts nothing.
type Metrics struct {
	// Registry is what /stats/prometheus serves: these counters plus the
	// Go runtime and process collectors.
	Registry *prometheus.Registry

	requests     *prometheus.CounterVec
	upstreamRq   *prometheus.CounterVec
	upstreamXX   *prometheus.CounterVec
	connectFail  *prometheus.CounterVec
	retries      *prometheus.CounterVec
	requestCache sync.Map // requestKey -> prometheus.Counter
	clusterCache sync.Map // string (cluster name) -> *clusterCounters
}

type requestKey struct {
	listener string
	code     int
	flags    string
}

type clusterCounters struct {
	total, connectFail, retry prometheus.Counter
	xx                        [6]prometheus.Counter // by code/100; [0] for unknown
}

// NewMetrics makes the counters and registers them in a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_requests_total",
			Help: "Requests handled by a listener, by response code and Envoy response flags.",
		}, []string{"listener", "response_code", "response_flags"}),
		upstreamRq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_total",
			Help: "Requests sent to a cluster's endpoints, retries included.",
		}, []string{"cluster_name"}),
		upstreamXX: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_xx",
			Help: "Upstream responses by response code class.",
		}, []string{"cluster_name", "envoy_response_code_class"}),
		connectFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_cx_connect_fail",
			Help: "Connections to a cluster's endpoints that failed to connect.",
		}, []string{"cluster_name"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_retry",
			Help: "Retried requests to a cluster.",
		}, []string{"cluster_name"}),
	}
	m.Registry.MustRegister(m.requests, m.upstreamRq, m.upstreamXX, m.connectFail, m.retries,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WatchAccessLog exports a's dropped lines as the counter
// loom_access_log_dropped_total. Call it once per Metrics; a nil a or m is
// a no-op.
func (m *Metrics) WatchAccessLog(a *AccessLog) {
	if m == nil || a == nil {
		return
	}
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "loom_access_log_dropped_total",
		Help: "Access log lines dropped because the log writer was too slow.",
	}, func() float64 { return float64(a.Dropped()) }))
}

// Request counts one downstream request on listener. code outside
// 100-599 counts as "0"; flags is "" or a response flag string.
func (m *Metrics) Request(listener string, code int, flags string) {
	if m == nil {
		return
	}
	if code < 100 || code > 599 {
		code = 0
	}
	k := requestKey{listener, code, flags}
	c, ok := m.requestCache.Load(k)
	if !ok {
		c, _ = m.requestCache.LoadOrStore(k, m.requests.WithLabelValues(listener, strconv.Itoa(code), flags))
	}
	c.(prometheus.Counter).Inc()
}

func (m *Metrics) cluster(name string) *clusterCounters {
	c, ok := m.clusterCache.Load(name)
	if ok {
		return c.(*clusterCounters)
	}
	cc := &clusterCounters{
		total:       m.upstreamRq.WithLabelValues(name),
		connectFail: m.connectFail.WithLabelValues(name),
		retry:       m.retries.WithLabelValues(name),
	}
	for i := range cc.xx {
		class := "unknown"
		if i > 0 {
			class = strconv.Itoa(i) + "xx"
		}
		cc.xx[i] = m.upstreamXX.WithLabelValues(name, class)
	}
	c, _ = m.clusterCache.LoadOrStore(name, cc)
	return c.(*clusterCounters)
}

// UpstreamRequest counts one attempt to cluster that got a response with
// code, or no response when code is 0.
func (m *Metrics) UpstreamRequest(cluster string, code int) {
	if m == nil {
		return
	}
	cc := m.cluster(cluster)
	cc.total.Inc()
	class := code / 100
	if class < 1 || class > 5 {
		class = 0
	}
	cc.xx[class].Inc()
}

// UpstreamConnectFail counts one failed connection attempt to cluster.
func (m *Metrics) UpstreamConnectFail(cluster string) {
	if m == nil {
		return
	}
	m.cluster(cluster).connectFail.Inc()
}

// UpstreamRetry counts one retry to cluster.
func (m *Metrics) UpstreamRetry(cluster string) {
	if m == nil {
		return
	}
	m.cluster(cluster).retry.Inc()
}

// ForgetCluster drops the cached counters of a cluster no longer
// configured, so that removed clusters do not grow the label set forever.
func (m *Metrics) ForgetCluster(name string) {
	if m == nil {
		return
	}
	m.clusterCache.Delete(name)
	m.upstreamRq.DeleteLabelValues(name)
	m.connectFail.DeleteLabelValues(name)
	m.retries.DeleteLabelValues(name)
	m.upstreamXX.DeletePartialMatch(prometheus.Labels{"cluster_name": name})
}
