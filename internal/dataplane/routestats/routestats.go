// Package routestats keeps Envoy's route-level statistics: the counters
// and histogram a route with a stat_prefix (envoy.config.route.v3
// Route.stat_prefix, Istio's HTTPMatchRequest.statPrefix) emits under
// vhost.<virtual host name>.route.<stat_prefix>. (Envoy's ALL_ROUTE_STATS
// and the route branch of its CodeStatsImpl).
//
// The config package resolves one *Stats per such route when it builds a
// generation, so that the router counts with no map lookup and no string
// built; routes without a stat_prefix hold nil and pay nothing. Stats are
// keyed by virtual host and stat prefix and survive generations, as
// Envoy's stats do. It imports only the Prometheus client: telemetry
// registers its families, config and http use its handles.
package routestats

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Labels are the Prometheus labels Envoy's default tag extractors give a
// route stat: envoy.virtual_host ("vhost.$.**") and envoy.route
// ("vhost.*.route.$.**").
const (
	LabelVirtualHost = "envoy_virtual_host"
	LabelRoute       = "envoy_route"
)

// Buckets are upstream_rq_time's upper bounds in milliseconds, Envoy's
// default histogram buckets.
var Buckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
	30000, 60000, 300000, 600000, 1800000, 3600000}

// Families are the metric families of every route's stats. Register
// Collectors once; For is safe for concurrent use.
type Families struct {
	total, retry, retrySuccess, retryLimit, retryOverflow, timeout, completed *prometheus.CounterVec
	class, code                                                               *prometheus.CounterVec
	time                                                                      *prometheus.HistogramVec
	cache                                                                     sync.Map // key -> *Stats
}

type key struct{ vhost, prefix string }

// NewFamilies makes the families: Envoy's route stat names under the
// Prometheus prefix envoy_vhost_route_, the response code and its class as
// the envoy_response_code and envoy_response_code_class labels, as Loom's
// cluster stats name them.
func NewFamilies() *Families {
	labels := []string{LabelVirtualHost, LabelRoute}
	counter := func(stat, help string, extra ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_vhost_route_" + stat, Help: help},
			append(append([]string(nil), labels...), extra...))
	}
	return &Families{
		total:         counter("upstream_rq_total", "Requests the router sent upstream on a route with a stat_prefix, retries included."),
		retry:         counter("upstream_rq_retry", "Retries on a route with a stat_prefix."),
		retrySuccess:  counter("upstream_rq_retry_success", "Requests on a route with a stat_prefix whose retry succeeded."),
		retryLimit:    counter("upstream_rq_retry_limit_exceeded", "Requests on a route with a stat_prefix not retried because the retries were used up."),
		retryOverflow: counter("upstream_rq_retry_overflow", "Requests on a route with a stat_prefix not retried because the max_retries circuit breaker was full."),
		timeout:       counter("upstream_rq_timeout", "Requests on a route with a stat_prefix that timed out waiting for a response (the route timeout)."),
		completed:     counter("upstream_rq_completed", "Requests on a route with a stat_prefix that completed upstream, with a response or the router's local reply."),
		class:         counter("upstream_rq_xx", "Completed requests on a route with a stat_prefix by response code class.", "envoy_response_code_class"),
		code:          counter("upstream_rq", "Completed requests on a route with a stat_prefix by response code.", "envoy_response_code"),
		time: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "envoy_vhost_route_upstream_rq_time",
			Help:    "Milliseconds from the downstream request's start to the end of the upstream response, on a route with a stat_prefix.",
			Buckets: Buckets}, labels),
	}
}

// Collectors are the families, to register.
func (f *Families) Collectors() []prometheus.Collector {
	return []prometheus.Collector{f.total, f.retry, f.retrySuccess, f.retryLimit, f.retryOverflow,
		f.timeout, f.completed, f.class, f.code, f.time}
}

// For returns the Stats of the routes with stat prefix prefix in the
// virtual host named vhost: the same *Stats for the same pair, so that
// routes sharing a name share counters (as Envoy's stat names do) and
// counts survive config generations. As Envoy's route stats, the counters
// of ALL_ROUTE_STATS exist (at 0) from then on; the response code
// counters and upstream_rq_time appear at their first count.
func (f *Families) For(vhost, prefix string) *Stats {
	k := key{vhost, prefix}
	if s, ok := f.cache.Load(k); ok {
		return s.(*Stats)
	}
	s := &Stats{f: f, vhost: vhost, prefix: prefix,
		total: f.total.WithLabelValues(vhost, prefix), retry: f.retry.WithLabelValues(vhost, prefix),
		retrySuccess: f.retrySuccess.WithLabelValues(vhost, prefix), retryLimit: f.retryLimit.WithLabelValues(vhost, prefix),
		retryOverflow: f.retryOverflow.WithLabelValues(vhost, prefix), timeout: f.timeout.WithLabelValues(vhost, prefix),
		completed: f.completed.WithLabelValues(vhost, prefix)}
	got, _ := f.cache.LoadOrStore(k, s)
	return got.(*Stats)
}

// Retain drops the Stats, and their series, of every virtual host and
// prefix pair keep does not hold: routes gone from the published config,
// or made for a generation that was refused. Envoy drops a route's stats
// with its route configuration. A request still on an older generation
// may count on a dropped Stats; that count is lost, and makes no series
// (which would then never be dropped). Call it after publishing a
// generation; keep must not block.
func (f *Families) Retain(keep func(vhost, prefix string) bool) {
	f.cache.Range(func(k, v any) bool {
		kk := k.(key)
		if keep(kk.vhost, kk.prefix) {
			return true
		}
		f.cache.Delete(k)
		s := v.(*Stats)
		// Under mu, so that no lazy series is made between the delete
		// and dead: one made before is deleted, none is made after.
		s.mu.Lock()
		defer s.mu.Unlock()
		s.dead = true
		labels := prometheus.Labels{LabelVirtualHost: kk.vhost, LabelRoute: kk.prefix}
		for _, v := range []*prometheus.CounterVec{f.total, f.retry, f.retrySuccess, f.retryLimit,
			f.retryOverflow, f.timeout, f.completed, f.class, f.code} {
			v.DeletePartialMatch(labels)
		}
		f.time.DeletePartialMatch(labels)
		return true
	})
}

// Stats are one route's stats. A nil *Stats counts nothing, so that the
// router calls it on every route. Safe for concurrent use; a count is an
// atomic add, and a response code's first count on the route makes its
// series.
type Stats struct {
	f                                                                         *Families
	vhost, prefix                                                             string
	total, retry, retrySuccess, retryLimit, retryOverflow, timeout, completed prometheus.Counter
	class                                                                     [6]lazy[prometheus.Counter] // 1xx-5xx at 1-5
	code                                                                      [500]lazy[prometheus.Counter]
	time                                                                      lazy[prometheus.Observer]

	mu   sync.Mutex // orders the making of lazy series with Retain
	dead bool       // Retain dropped the Stats: make no series (under mu)
}

// lazy is a metric child made at its first use.
type lazy[T any] struct{ p atomic.Pointer[T] }

// get returns the child, made by mk at the first call; on a dead s it
// makes none and returns dead, which counts into nothing.
func (l *lazy[T]) get(s *Stats, mk func() T, dead T) T {
	if p := l.p.Load(); p != nil {
		return *p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead {
		return dead
	}
	if p := l.p.Load(); p != nil {
		return *p
	}
	m := mk()
	l.p.Store(&m)
	return m
}

// Unregistered sinks for the counts of a dead Stats.
var (
	deadCounter  prometheus.Counter  = prometheus.NewCounter(prometheus.CounterOpts{Name: "dead"})
	deadObserver prometheus.Observer = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dead"})
)

// UpstreamRequest counts upstream_rq_total: one request sent upstream
// (each retry again).
func (s *Stats) UpstreamRequest() {
	if s != nil {
		s.total.Inc()
	}
}

// Retry counts upstream_rq_retry: one retry made.
func (s *Stats) Retry() {
	if s != nil {
		s.retry.Inc()
	}
}

// RetrySuccess counts upstream_rq_retry_success: a retried request whose
// last attempt's result was not one to retry.
func (s *Stats) RetrySuccess() {
	if s != nil {
		s.retrySuccess.Inc()
	}
}

// RetryLimitExceeded counts upstream_rq_retry_limit_exceeded: a result the
// policy would retry, with no retries left.
func (s *Stats) RetryLimitExceeded() {
	if s != nil {
		s.retryLimit.Inc()
	}
}

// RetryOverflow counts upstream_rq_retry_overflow: a retry the max_retries
// circuit breaker refused.
func (s *Stats) RetryOverflow() {
	if s != nil {
		s.retryOverflow.Inc()
	}
}

// Timeout counts upstream_rq_timeout: the route timeout ended the request.
func (s *Stats) Timeout() {
	if s != nil {
		s.timeout.Inc()
	}
}

// Completed counts upstream_rq_completed, upstream_rq_<code> and
// upstream_rq_<class>xx of the request's final response code: the
// upstream's, or the router's local reply to an upstream failure. A code
// outside 100-599 counts as completed only.
func (s *Stats) Completed(code int) {
	if s == nil {
		return
	}
	s.completed.Inc()
	if code < 100 || code > 599 {
		return
	}
	class := code / 100
	s.class[class].get(s, func() prometheus.Counter {
		return s.f.class.WithLabelValues(s.vhost, s.prefix, strconv.Itoa(class)+"xx")
	}, deadCounter).Inc()
	s.code[code-100].get(s, func() prometheus.Counter {
		return s.f.code.WithLabelValues(s.vhost, s.prefix, strconv.Itoa(code))
	}, deadCounter).Inc()
}

// Time records upstream_rq_time, d in milliseconds.
func (s *Stats) Time(d time.Duration) {
	if s == nil {
		return
	}
	s.time.get(s, func() prometheus.Observer {
		return s.f.time.WithLabelValues(s.vhost, s.prefix)
	}, deadObserver).Observe(float64(d) / float64(time.Millisecond))
}
