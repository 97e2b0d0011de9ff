package istiostats

import (
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Buckets are the histograms' upper bounds, Envoy's default histogram
// buckets, which Istio's proxies use for istio_request_duration_milliseconds,
// istio_request_bytes and istio_response_bytes alike.
var Buckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
	30000, 60000, 300000, 600000, 1800000, 3600000}

// DefaultMaxSeries bounds the label sets Metrics keeps (per metric group);
// past it new label sets are not counted but counted in
// loom_istio_stats_overflow_total, so that no client can grow the proxy's
// memory without bound.
const DefaultMaxSeries = 20000

// Labels are one request's or connection's standard tag values, indexed by
// tagID. A removed tag (tags_to_remove) is left out of the exported series
// by the series' label names, not by its value.
type Labels [numTags]string

// seriesKey identifies one exported label set of one metric group.
type seriesKey struct {
	group  uint8 // groupHTTP, groupTCP, or 2+metricID for an overridden metric
	labels Labels
	// names says which labels the series has: bit t for standard tag t;
	// extras are "name=value" pairs joined by "\xff".
	names  uint32
	extras string
}

const (
	groupHTTP uint8 = iota
	groupTCP
	groupMetric // + metricID
)

// histogram is a lock-free cumulative histogram over Buckets.
type histogram struct {
	counts [20]atomic.Uint64 // per bucket (not cumulative); [19] is +Inf
	sum    atomic.Uint64     // float64 bits
	count  atomic.Uint64
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(Buckets, v)
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// series holds every metric of one label set; a group's metrics share it.
type series struct {
	key      seriesKey
	names    []string // label names, sorted as exported
	values   []string
	requests atomic.Uint64
	grpc     atomic.Bool // a gRPC request was counted: export the message counters
	reqMsgs  atomic.Uint64
	respMsgs atomic.Uint64
	duration histogram
	reqSize  histogram
	respSize histogram
	tcpSent  atomic.Uint64
	tcpRecv  atomic.Uint64
	opened   atomic.Uint64
	closed   atomic.Uint64
	descs    [numMetrics]*prometheus.Desc
}

// Metrics holds Istio's standard metrics of one proxy and exports them as
// a prometheus.Collector. It is safe for concurrent use. A request of a
// label set already seen costs a read-locked map lookup and atomic adds;
// nothing is allocated for it. A nil *Metrics counts nothing.
type Metrics struct {
	max      int
	overflow atomic.Uint64
	// mu guards series; writers only add.
	mu     sync.RWMutex
	series map[seriesKey]*series
}

// NewMetrics returns empty metrics keeping at most maxSeries label sets
// (0: DefaultMaxSeries).
func NewMetrics(maxSeries int) *Metrics {
	if maxSeries <= 0 {
		maxSeries = DefaultMaxSeries
	}
	return &Metrics{max: maxSeries, series: map[seriesKey]*series{}}
}

// httpTags are the tags of the HTTP metrics; tcpTags leave out
// response_code and grpc_response_status, as Istio's TCP metrics do.
const (
	allTagBits  = uint32(1)<<numTags - 1
	httpTagBits = allTagBits
	tcpTagBits  = allTagBits &^ (1<<tResponseCode | 1<<tGRPCResponseStatus)
)

func (m *Metrics) get(k *seriesKey) *series {
	m.mu.RLock()
	s := m.series[*k]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.series[*k]; s != nil {
		return s
	}
	if len(m.series) >= m.max {
		m.overflow.Add(1)
		return nil
	}
	s = newSeries(*k)
	m.series[*k] = s
	return s
}

func newSeries(k seriesKey) *series {
	s := &series{key: k}
	type lv struct{ n, v string }
	var ls []lv
	for t := tagID(0); t < numTags; t++ {
		if k.names&(1<<t) != 0 {
			ls = append(ls, lv{tagNames[t], k.labels[t]})
		}
	}
	if k.extras != "" {
		for _, p := range splitExtras(k.extras) {
			n, v, _ := cutByte(p, '=')
			ls = append(ls, lv{n, v})
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].n < ls[j].n })
	for _, l := range ls {
		s.names = append(s.names, l.n)
		s.values = append(s.values, l.v)
	}
	for id := metricID(0); id < numMetrics; id++ {
		s.descs[id] = prometheus.NewDesc(metricNames[id].exported, metricHelp[id], s.names, nil)
	}
	return s
}

func splitExtras(s string) []string {
	var out []string
	for s != "" {
		p, rest, _ := cutByte(s, 0xff)
		out = append(out, p)
		s = rest
	}
	return out
}

func cutByte(s string, b byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

var metricHelp = [numMetrics]string{
	"Requests, by Istio's standard labels.",
	"Request durations in milliseconds, from the first request byte to the last response byte.",
	"Request sizes in bytes: headers and body (Envoy's request.total_size).",
	"Response sizes in bytes: headers, body and trailers (Envoy's response.total_size).",
	"gRPC messages sent by the client.",
	"gRPC messages sent by the server.",
	"Bytes sent to the downstream of a TCP connection.",
	"Bytes received from the downstream of a TCP connection.",
	"TCP connections opened.",
	"TCP connections closed.",
}

// Request is one finished HTTP request as the stats read it.
type Request struct {
	Labels         *Labels
	DurationMillis float64
	// RequestBytes and ResponseBytes are the sizes istio_request_bytes
	// and istio_response_bytes record: Envoy's request.total_size and
	// response.total_size (the header maps' byte sizes plus the body, the
	// response's trailers too), as Istio's stats plugin recorded them.
	RequestBytes  int64
	ResponseBytes int64
	// RequestMessages and ResponseMessages are gRPC messages (counted
	// only for gRPC requests).
	RequestMessages, ResponseMessages uint64
	GRPC                              bool
	// Attributes are read by dimension expressions; nil when the config
	// has no overrides.
	Attributes *Attributes
}

// RecordRequest counts one finished request under c.
func (m *Metrics) RecordRequest(c *Config, r *Request) {
	if m == nil || c == nil {
		return
	}
	if c.metrics == nil {
		k := seriesKey{group: groupHTTP, labels: *r.Labels, names: httpTagBits}
		s := m.get(&k)
		if s == nil {
			return
		}
		s.requests.Add(1)
		s.duration.observe(r.DurationMillis)
		s.reqSize.observe(float64(r.RequestBytes))
		s.respSize.observe(float64(r.ResponseBytes))
		if r.GRPC {
			s.grpc.Store(true)
			s.reqMsgs.Add(r.RequestMessages)
			s.respMsgs.Add(r.ResponseMessages)
		}
		return
	}
	for _, id := range [...]metricID{mRequests, mDuration, mRequestBytes, mResponseBytes, mRequestMessages, mResponseMessages} {
		if (id == mRequestMessages || id == mResponseMessages) && !r.GRPC {
			continue
		}
		s := m.overridden(c, id, r.Labels, httpTagBits, r.Attributes)
		if s == nil {
			continue
		}
		switch id {
		case mRequests:
			s.requests.Add(1)
		case mDuration:
			s.duration.observe(r.DurationMillis)
		case mRequestBytes:
			s.reqSize.observe(float64(r.RequestBytes))
		case mResponseBytes:
			s.respSize.observe(float64(r.ResponseBytes))
		case mRequestMessages:
			s.grpc.Store(true)
			s.reqMsgs.Add(r.RequestMessages)
		case mResponseMessages:
			s.grpc.Store(true)
			s.respMsgs.Add(r.ResponseMessages)
		}
	}
}

// overridden is metric id's series under c's overrides; nil when dropped
// or over the bound.
func (m *Metrics) overridden(c *Config, id metricID, l *Labels, base uint32, a *Attributes) *series {
	o := &c.metrics[id]
	if o.drop {
		return nil
	}
	k := seriesKey{group: groupMetric + uint8(id), labels: *l, names: base}
	for t := tagID(0); t < numTags; t++ {
		switch {
		case o.removed[t]:
			k.names &^= 1 << t
			k.labels[t] = ""
		case o.set[t] != nil && base&(1<<t) != 0:
			k.labels[t] = o.set[t].Eval(attrsOrEmpty(a))
		}
	}
	if len(o.extra) > 0 {
		b := make([]byte, 0, 64)
		for i, x := range o.extra {
			if i > 0 {
				b = append(b, 0xff)
			}
			b = append(b, x.name...)
			b = append(b, '=')
			b = append(b, x.expr.Eval(attrsOrEmpty(a))...)
		}
		k.extras = string(b)
	}
	return m.get(&k)
}

var emptyAttrs Attributes

func attrsOrEmpty(a *Attributes) *Attributes {
	if a == nil {
		return &emptyAttrs
	}
	return a
}

// TCPEvent is a TCP connection's report: opened once, bytes since the
// previous report, closed once.
type TCPEvent struct {
	Labels               *Labels
	Opened, Closed       bool
	SentBytes, RecvBytes uint64
	Attributes           *Attributes
}

// RecordTCP counts a TCP connection's report under c.
func (m *Metrics) RecordTCP(c *Config, e *TCPEvent) {
	if m == nil || c == nil {
		return
	}
	if c.metrics == nil {
		k := seriesKey{group: groupTCP, labels: *e.Labels, names: tcpTagBits}
		k.labels[tResponseCode], k.labels[tGRPCResponseStatus] = "", ""
		if s := m.get(&k); s != nil {
			addTCP(s, e, metricID(255))
		}
		return
	}
	for _, id := range [...]metricID{mTCPOpened, mTCPClosed, mTCPSent, mTCPReceived} {
		l := *e.Labels
		l[tResponseCode], l[tGRPCResponseStatus] = "", ""
		if s := m.overridden(c, id, &l, tcpTagBits, e.Attributes); s != nil {
			addTCP(s, e, id)
		}
	}
}

func addTCP(s *series, e *TCPEvent, only metricID) {
	all := only == metricID(255)
	if e.Opened && (all || only == mTCPOpened) {
		s.opened.Add(1)
	}
	if e.Closed && (all || only == mTCPClosed) {
		s.closed.Add(1)
	}
	if all || only == mTCPSent {
		s.tcpSent.Add(e.SentBytes)
	}
	if all || only == mTCPReceived {
		s.tcpRecv.Add(e.RecvBytes)
	}
}

// Series is how many label sets are kept.
func (m *Metrics) Series() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.series)
}

var overflowDesc = prometheus.NewDesc("loom_istio_stats_overflow_total",
	"Requests and connections not counted in Istio's metrics because the proxy keeps its maximum of label sets.", nil, nil)

// Describe sends nothing: the label names of Istio's metrics depend on
// the config's overrides, so Metrics is an unchecked collector.
func (m *Metrics) Describe(chan<- *prometheus.Desc) {}

// Collect exports every series: the HTTP group's istio_requests_total and
// histograms (and the gRPC message counters once one was counted), the
// TCP group's four counters, and each overridden metric alone.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(overflowDesc, prometheus.CounterValue, float64(m.overflow.Load()))
	m.mu.RLock()
	all := make([]*series, 0, len(m.series))
	for _, s := range m.series {
		all = append(all, s)
	}
	m.mu.RUnlock()
	for _, s := range all {
		switch g := s.key.group; {
		case g == groupHTTP:
			emitHTTP(ch, s, mRequests, mDuration, mRequestBytes, mResponseBytes, mRequestMessages, mResponseMessages)
		case g == groupTCP:
			emitTCP(ch, s, mTCPOpened, mTCPClosed, mTCPSent, mTCPReceived)
		default:
			id := metricID(g - groupMetric)
			if id >= mTCPSent {
				emitTCP(ch, s, id)
			} else {
				emitHTTP(ch, s, id)
			}
		}
	}
}

func emitHTTP(ch chan<- prometheus.Metric, s *series, ids ...metricID) {
	for _, id := range ids {
		switch id {
		case mRequests:
			ch <- prometheus.MustNewConstMetric(s.descs[id], prometheus.CounterValue, float64(s.requests.Load()), s.values...)
		case mDuration:
			ch <- constHistogram(s.descs[id], &s.duration, s.values)
		case mRequestBytes:
			ch <- constHistogram(s.descs[id], &s.reqSize, s.values)
		case mResponseBytes:
			ch <- constHistogram(s.descs[id], &s.respSize, s.values)
		case mRequestMessages, mResponseMessages:
			n := s.reqMsgs.Load()
			if id == mResponseMessages {
				n = s.respMsgs.Load()
			}
			if s.grpc.Load() {
				ch <- prometheus.MustNewConstMetric(s.descs[id], prometheus.CounterValue, float64(n), s.values...)
			}
		}
	}
}

func emitTCP(ch chan<- prometheus.Metric, s *series, ids ...metricID) {
	for _, id := range ids {
		var v uint64
		switch id {
		case mTCPOpened:
			v = s.opened.Load()
		case mTCPClosed:
			v = s.closed.Load()
		case mTCPSent:
			v = s.tcpSent.Load()
		case mTCPReceived:
			v = s.tcpRecv.Load()
		}
		ch <- prometheus.MustNewConstMetric(s.descs[id], prometheus.CounterValue, float64(v), s.values...)
	}
}

func constHistogram(d *prometheus.Desc, h *histogram, values []string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(Buckets))
	var cum uint64
	for i, ub := range Buckets {
		cum += h.counts[i].Load()
		buckets[ub] = cum
	}
	count := cum + h.counts[len(Buckets)].Load()
	return prometheus.MustNewConstHistogram(d, count, math.Float64frombits(h.sum.Load()), buckets, values...)
}

// formatCode is a response code label: "0" outside 100-599, as Envoy
// reports no response.
func formatCode(code int) string {
	if code < 100 || code > 599 {
		return "0"
	}
	if code >= 100 && code < 600 {
		return codeStrings[code-100]
	}
	return strconv.Itoa(code)
}

var codeStrings = func() (out [500]string) {
	for i := range out {
		out[i] = strconv.Itoa(100 + i)
	}
	return
}()
