package dashboard

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Istio's standard metrics the dashboard reads, and their labels.
const (
	metricRequests       = "istio_requests_total"
	metricDuration       = "istio_request_duration_milliseconds"
	metricTCPSent        = "istio_tcp_sent_bytes_total"
	metricTCPReceived    = "istio_tcp_received_bytes_total"
	reporterSource       = "source"
	reporterDestination  = "destination"
	unknown              = "unknown"
	securityMutualTLS    = "mutual_tls"
	labelReporter        = "reporter"
	labelResponseCode    = "response_code"
	labelProtocol        = "request_protocol"
	labelSecurityPolicy  = "connection_security_policy"
	labelDestService     = "destination_service"
	labelSourceWorkload  = "source_workload"
	labelSourceNamespace = "source_workload_namespace"
	labelDestWorkload    = "destination_workload"
	labelDestNamespace   = "destination_workload_namespace"
)

// edgeLabels are the labels that name an edge's two workloads and its
// service, in the order of Workload's fields: the "by" clause of the
// dashboard's PromQL.
var edgeLabels = []string{
	labelSourceWorkload, labelSourceNamespace, "source_app", "source_version",
	labelDestWorkload, labelDestNamespace, "destination_app", "destination_version",
	labelDestService,
}

// Workload is one end of an edge as Istio's metric labels name it
// (source_workload, source_workload_namespace, source_app,
// source_version, or their destination_ forms). Name is "unknown" when the
// reporting proxy did not know the peer: a client outside the mesh, or a
// request that never reached an upstream (a fault abort, no healthy
// host).
type Workload struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	App       string `json:"app"`
	Version   string `json:"version"`
}

// known reports whether the workload is named.
func (w Workload) known() bool { return w.Name != "" && w.Name != unknown }

// EdgeKey names an edge of the service graph: who called, whom, through
// which service (destination_service, an FQDN).
type EdgeKey struct {
	Source  Workload
	Dest    Workload
	Service string
}

// EdgeStats is the traffic of one edge over a window.
type EdgeStats struct {
	EdgeKey
	// Protocol is request_protocol ("http", "grpc") or "tcp".
	Protocol string
	// RequestRate is requests per second, as the source proxy reported
	// them (the destination's, for a source outside the mesh).
	RequestRate float64
	// ErrorRate is the requests per second of RequestRate that failed: a
	// response_code of 5xx, or 0 (no response).
	ErrorRate float64
	// P95 is the 95th percentile of istio_request_duration_milliseconds,
	// in milliseconds, as Prometheus's histogram_quantile computes it; NaN
	// when no request was measured.
	P95 float64
	// MTLS is the share (0 to 1) of the requests the destination proxy
	// reported with connection_security_policy="mutual_tls" (the source
	// reports "unknown"); NaN when no destination proxy reported any.
	MTLS float64
	// TCPBytesRate is istio_tcp_sent_bytes_total plus
	// istio_tcp_received_bytes_total, in bytes per second.
	TCPBytesRate float64
}

// Direction is the side of a workload or service a series counts.
type Direction string

// The directions of a Query.
const (
	// Inbound counts requests to the workloads or the service, as their
	// proxies reported them (reporter="destination").
	Inbound Direction = "inbound"
	// Outbound counts requests from the workloads, as their proxies
	// reported them (reporter="source").
	Outbound Direction = "outbound"
)

// Query selects the requests of a traffic series: those to (Inbound) or
// from (Outbound) the named workloads of Namespace, or, when Service is
// set and Direction is Inbound, those to that service (an FQDN).
type Query struct {
	Direction Direction
	Namespace string
	Workloads []string
	Service   string
}

// Point is one step of a series: rates over the step's smoothing window.
type Point struct {
	Time time.Time
	// RequestRate and ErrorRate are in requests per second.
	RequestRate float64
	ErrorRate   float64
	// P95 is in milliseconds; NaN when no request was measured.
	P95 float64
}

// TrafficSource gives the mesh's traffic. The embedded Scraper and the
// Prometheus client implement it. Methods are safe for concurrent use.
type TrafficSource interface {
	// Edges returns the traffic of every edge over the last window.
	Edges(ctx context.Context, window time.Duration) ([]EdgeStats, error)
	// Series returns the traffic q selects, one point per step over the
	// last span, oldest first.
	Series(ctx context.Context, q Query, span, step time.Duration) ([]Point, error)
	// Kind names the source in the API: "scrape" or "prometheus".
	Kind() string
}

// isError reports whether a response_code is an error on the graph: 5xx,
// or 0 (the request got no response). Kiali's default threshold counts
// the same codes.
func isError(code string) bool {
	return code == "0" || (len(code) == 3 && code[0] == '5')
}

// edgeOf reads an edge from a series' labels.
func edgeOf(label func(string) string) EdgeKey {
	w := func(prefix string) Workload {
		return Workload{Name: orUnknown(label(prefix + "_workload")), Namespace: label(prefix + "_workload_namespace"),
			App: label(prefix + "_app"), Version: label(prefix + "_version")}
	}
	return EdgeKey{Source: w("source"), Dest: w("destination"), Service: label(labelDestService)}
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// edgeID identifies an edge by its workloads' names and namespaces and its
// service: the two reporters may disagree on the other labels (a peer's
// app or version label the metadata exchange did not carry), never on
// these.
type edgeID struct {
	srcNamespace, srcName, dstNamespace, dstName, service string
}

func idOf(k EdgeKey) edgeID {
	return edgeID{k.Source.Namespace, k.Source.Name, k.Dest.Namespace, k.Dest.Name, k.Service}
}

// merge fills w's unknown app and version from o.
func (w *Workload) merge(o Workload) {
	if w.App == "" || w.App == unknown {
		w.App = o.App
	}
	if w.Version == "" || w.Version == unknown {
		w.Version = o.Version
	}
}

// edgeAcc accumulates one edge's counts (or rates) before they are divided
// by the window.
type edgeAcc struct {
	// key names the edge with the labels the reporters gave, merged.
	key      EdgeKey
	protocol string
	// srcReq and srcErr are reported by the source; dstReq and dstErr by the
	// destination, used when no source reported the edge.
	srcReq, srcErr, dstReq, dstErr float64
	// dstMTLS is the part of dstReq over mutual TLS.
	dstMTLS float64
	// buckets are the source's cumulative duration buckets, by upper bound.
	buckets map[float64]float64
	// dstBuckets are the destination's, used when no source reported.
	dstBuckets map[float64]float64
	tcp        float64
	// p95, when set (not NaN), was computed elsewhere (PromQL).
	p95 float64
}

// edgeSet accumulates edges.
type edgeSet map[edgeID]*edgeAcc

func (s edgeSet) get(k EdgeKey) *edgeAcc {
	id := idOf(k)
	a := s[id]
	if a == nil {
		a = &edgeAcc{key: k, p95: math.NaN()}
		s[id] = a
		return a
	}
	a.key.Source.merge(k.Source)
	a.key.Dest.merge(k.Dest)
	return a
}

// addRequests adds n requests of one istio_requests_total series.
func (s edgeSet) addRequests(k EdgeKey, reporter, protocol, code, security string, n float64) {
	a := s.get(k)
	if protocol != "" {
		a.protocol = protocol
	}
	bad := isError(code)
	switch reporter {
	case reporterSource:
		a.srcReq += n
		if bad {
			a.srcErr += n
		}
	case reporterDestination:
		a.dstReq += n
		if bad {
			a.dstErr += n
		}
		if security == securityMutualTLS {
			a.dstMTLS += n
		}
	}
}

// addBucket adds n to the cumulative duration bucket le.
func (s edgeSet) addBucket(k EdgeKey, reporter string, le, n float64) {
	a := s.get(k)
	m := &a.buckets
	if reporter == reporterDestination {
		m = &a.dstBuckets
	}
	if *m == nil {
		*m = map[float64]float64{}
	}
	(*m)[le] += n
}

// addTCP adds n bytes of one TCP series.
func (s edgeSet) addTCP(k EdgeKey, n float64) {
	a := s.get(k)
	a.tcp += n
	if a.protocol == "" {
		a.protocol = "tcp"
	}
}

// stats turns the accumulated counts into rates over seconds (1 when the
// counts are rates already), sorted by source then destination. Edges
// with no traffic are left out.
func (s edgeSet) stats(seconds float64) []EdgeStats {
	out := make([]EdgeStats, 0, len(s))
	for _, a := range s {
		k := a.key
		req, errs, buckets := a.srcReq, a.srcErr, a.buckets
		if req == 0 && a.dstReq > 0 {
			// Only the destination saw it: a client outside the mesh.
			req, errs, buckets = a.dstReq, a.dstErr, a.dstBuckets
		}
		if req == 0 && a.tcp == 0 {
			continue
		}
		e := EdgeStats{EdgeKey: k, Protocol: a.protocol, RequestRate: req / seconds, ErrorRate: errs / seconds,
			P95: a.p95, MTLS: math.NaN(), TCPBytesRate: a.tcp / seconds}
		if math.IsNaN(e.P95) {
			e.P95 = quantile(0.95, buckets)
		}
		if a.dstReq > 0 {
			e.MTLS = a.dstMTLS / a.dstReq
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return edgeLess(out[i].EdgeKey, out[j].EdgeKey) })
	return out
}

func edgeLess(a, b EdgeKey) bool {
	ka := []string{a.Source.Namespace, a.Source.Name, a.Dest.Namespace, a.Dest.Name, a.Service}
	kb := []string{b.Source.Namespace, b.Source.Name, b.Dest.Namespace, b.Dest.Name, b.Service}
	for i := range ka {
		if ka[i] != kb[i] {
			return ka[i] < kb[i]
		}
	}
	return false
}

// quantile is Prometheus's histogram_quantile over cumulative buckets
// (upper bound -> count, +Inf included): the bucket where the q-th
// observation falls, interpolated linearly inside it, the lowest bucket
// starting at 0; a quantile in the +Inf bucket is the highest finite
// bound. NaN when there are no observations.
func quantile(q float64, buckets map[float64]float64) float64 {
	if len(buckets) == 0 {
		return math.NaN()
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	// Cumulative counts must not decrease (they may, by rounding or a
	// partial scrape): make them monotonic, as Prometheus does.
	counts := make([]float64, len(les))
	for i, le := range les {
		counts[i] = buckets[le]
		if i > 0 && counts[i] < counts[i-1] {
			counts[i] = counts[i-1]
		}
	}
	total := counts[len(counts)-1]
	if !math.IsInf(les[len(les)-1], 1) || total == 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.SearchFloat64s(counts, rank)
	if i == len(les)-1 {
		if len(les) < 2 {
			return math.NaN()
		}
		return les[len(les)-2]
	}
	start, prev := 0.0, 0.0
	if i > 0 {
		start, prev = les[i-1], counts[i-1]
	}
	inBucket := counts[i] - prev
	if inBucket == 0 {
		return les[i]
	}
	return start + (les[i]-start)*(rank-prev)/inBucket
}

// parseLE reads a bucket's le label ("+Inf" included).
func parseLE(s string) (float64, bool) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return v, err == nil
}
