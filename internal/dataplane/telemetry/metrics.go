package telemetry

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/dataplane/routestats"
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
	overflow     *prometheus.CounterVec
	retryOver    *prometheus.CounterVec
	mirrorDrop   *prometheus.CounterVec
	abandoned    *prometheus.CounterVec
	routes       *routestats.Families
	requestCache sync.Map // requestKey -> prometheus.Counter
	clusterCache sync.Map // string (cluster name) -> *clusterCounters
}

type requestKey struct {
	listener string
	code     int
	flags    string
}

type clusterCounters struct {
	total, connectFail, retry       prometheus.Counter
	overflow, retryOver, mirrorDrop prometheus.Counter
	abandoned                       prometheus.Counter
	xx                              [6]prometheus.Counter // by code/100; [0] for unknown
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
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_pending_overflow",
			Help: "Requests to a cluster refused because a circuit breaker was full (response flag UO).",
		}, []string{"cluster_name"}),
		retryOver: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq_retry_overflow",
			Help: "Retries to a cluster not made because the max_retries circuit breaker was full.",
		}, []string{"cluster_name"}),
		mirrorDrop: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_mirror_dropped_total",
			Help: "Mirrored (shadow) requests to a cluster dropped: too many in flight, or its body fell too far behind the primary's.",
		}, []string{"cluster_name"}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_retry_or_shadow_abandoned",
			Help: "Requests to a cluster whose body outgrew the retry buffer, so that they were no longer retried.",
		}, []string{"cluster_name"}),
	}
	m.routes = routestats.NewFamilies()
	m.Registry.MustRegister(m.routes.Collectors()...)
	m.Registry.MustRegister(m.requests, m.upstreamRq, m.upstreamXX, m.connectFail, m.retries,
		m.overflow, m.retryOver, m.mirrorDrop, m.abandoned,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RouteStats returns the route-level stats (Envoy's
// vhost.<vhost>.route.<statPrefix>.*, exported as envoy_vhost_route_*
// with envoy_virtual_host and envoy_route labels) of the routes with stat
// prefix statPrefix in the virtual host named vhost; the same handle for
// the same pair, across generations. A nil m returns nil, which counts
// nothing. It is filter.Deps.RouteStats.
func (m *Metrics) RouteStats(vhost, statPrefix string) *routestats.Stats {
	if m == nil {
		return nil
	}
	return m.routes.For(vhost, statPrefix)
}

// RetainRouteStats drops the route stats of every route that has a
// stat_prefix in no route table of g, so that removed routes do not grow
// the series forever. Call it after publishing g. A nil m or g is a no-op.
func (m *Metrics) RetainRouteStats(g *config.Generation) {
	if m == nil || g == nil {
		return
	}
	type key struct{ vhost, prefix string }
	live := map[key]bool{}
	for _, rt := range g.Routes {
		for _, vh := range rt.VirtualHosts {
			for _, r := range vh.Routes {
				if r.StatPrefix != "" {
					live[key{vh.Name, r.StatPrefix}] = true
				}
			}
		}
	}
	m.routes.Retain(func(vhost, prefix string) bool { return live[key{vhost, prefix}] })
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

// ClusterPolicyStats are the circuit-breaker and outlier-detection
// counters of one cluster, as the upstream cluster manager keeps them.
type ClusterPolicyStats struct {
	CxOverflow        uint64 // upstream_cx_overflow
	EjectionsEnforced uint64 // outlier_detection.ejections_enforced_total
	EjectionsOverflow uint64 // outlier_detection.ejections_overflow
	EjectionsActive   uint64 // outlier_detection.ejections_active (a gauge)
}

// WatchClusterPolicies exports, at each scrape, the ClusterPolicyStats of
// every cluster names returns, under Envoy's stat names with a
// cluster_name label. get must not block. Call it once per Metrics.
func (m *Metrics) WatchClusterPolicies(names func() []string, get func(cluster string) ClusterPolicyStats) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&policyCollector{names: names, get: get})
}

var (
	cxOverflowDesc = prometheus.NewDesc("envoy_cluster_upstream_cx_overflow",
		"Connections refused by the max_connections circuit breaker.", []string{"cluster_name"}, nil)
	ejectionsEnforcedDesc = prometheus.NewDesc("envoy_cluster_outlier_detection_ejections_enforced_total",
		"Hosts ejected by outlier detection.", []string{"cluster_name"}, nil)
	ejectionsOverflowDesc = prometheus.NewDesc("envoy_cluster_outlier_detection_ejections_overflow",
		"Ejections max_ejection_percent prevented.", []string{"cluster_name"}, nil)
	ejectionsActiveDesc = prometheus.NewDesc("envoy_cluster_outlier_detection_ejections_active",
		"Hosts ejected now.", []string{"cluster_name"}, nil)
)

// policyCollector reads the cluster manager's counters at scrape time,
// so that the request path keeps only its own atomics.
type policyCollector struct {
	names func() []string
	get   func(string) ClusterPolicyStats
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cxOverflowDesc
	ch <- ejectionsEnforcedDesc
	ch <- ejectionsOverflowDesc
	ch <- ejectionsActiveDesc
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range c.names() {
		s := c.get(name)
		ch <- prometheus.MustNewConstMetric(cxOverflowDesc, prometheus.CounterValue, float64(s.CxOverflow), name)
		ch <- prometheus.MustNewConstMetric(ejectionsEnforcedDesc, prometheus.CounterValue, float64(s.EjectionsEnforced), name)
		ch <- prometheus.MustNewConstMetric(ejectionsOverflowDesc, prometheus.CounterValue, float64(s.EjectionsOverflow), name)
		ch <- prometheus.MustNewConstMetric(ejectionsActiveDesc, prometheus.GaugeValue, float64(s.EjectionsActive), name)
	}
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
		overflow:    m.overflow.WithLabelValues(name),
		retryOver:   m.retryOver.WithLabelValues(name),
		mirrorDrop:  m.mirrorDrop.WithLabelValues(name),
		abandoned:   m.abandoned.WithLabelValues(name),
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

// UpstreamOverflow counts one request to cluster refused by a full
// circuit breaker (envoy_cluster_upstream_rq_pending_overflow, flag UO).
func (m *Metrics) UpstreamOverflow(cluster string) {
	if m == nil {
		return
	}
	m.cluster(cluster).overflow.Inc()
}

// RetryOverflow counts one retry to cluster not made because its
// max_retries circuit breaker was full (envoy_cluster_upstream_rq_retry_overflow).
func (m *Metrics) RetryOverflow(cluster string) {
	if m == nil {
		return
	}
	m.cluster(cluster).retryOver.Inc()
}

// MirrorDropped counts one mirrored request to cluster that was not sent
// (loom_mirror_dropped_total).
func (m *Metrics) MirrorDropped(cluster string) {
	if m == nil {
		return
	}
	m.cluster(cluster).mirrorDrop.Inc()
}

// RetryOrShadowAbandoned counts one request to cluster whose body outgrew
// the retry buffer, so that it was no longer retried (Envoy's cluster stat
// retry_or_shadow_abandoned).
func (m *Metrics) RetryOrShadowAbandoned(cluster string) {
	if m == nil {
		return
	}
	m.cluster(cluster).abandoned.Inc()
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
	m.overflow.DeleteLabelValues(name)
	m.retryOver.DeleteLabelValues(name)
	m.mirrorDrop.DeleteLabelValues(name)
	m.abandoned.DeleteLabelValues(name)
	m.upstreamXX.DeletePartialMatch(prometheus.Labels{"cluster_name": name})
}
