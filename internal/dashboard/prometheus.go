package dashboard

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// DefaultPrometheusTimeout bounds one query to Prometheus.
const DefaultPrometheusTimeout = 10 * time.Second

// minRateWindow is the shortest range the PromQL rates take: Prometheus
// scrapes every 15 s by default, and rate needs two samples.
const minRateWindow = time.Minute

// PrometheusOptions configure a Prometheus traffic source.
type PrometheusOptions struct {
	// URL is the Prometheus server, "http://prometheus:9090". Required.
	URL string
	// Timeout bounds each query. Default DefaultPrometheusTimeout.
	Timeout time.Duration
	// Client makes the requests. Default: a client that ignores proxy
	// environment variables.
	Client *http.Client
}

// Prometheus is the traffic source for a mesh whose metrics a Prometheus
// server scrapes (loomd --prometheus-url): it asks that server's HTTP API
// with the PromQL Kiali uses for its graph. Safe for concurrent use.
type Prometheus struct {
	api     promv1.API
	timeout time.Duration
}

var _ TrafficSource = (*Prometheus)(nil)

// NewPrometheus checks opts (URL must be http or https with a host); it
// does not contact the server.
func NewPrometheus(opts PrometheusOptions) (*Prometheus, error) {
	if opts.URL == "" {
		return nil, errors.New("dashboard: prometheus: URL is required")
	}
	// Without this check "prometheus:9090" parses (scheme "prometheus")
	// and fails only at the first query.
	if u, err := url.Parse(opts.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("dashboard: prometheus URL %q: must be http://HOST[:PORT][/PATH] or https://...", opts.URL)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultPrometheusTimeout
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Transport: &http.Transport{Proxy: nil}}
	}
	c, err := promapi.NewClient(promapi.Config{Address: opts.URL, Client: opts.Client})
	if err != nil {
		return nil, fmt.Errorf("dashboard: prometheus URL %q: %w", opts.URL, err)
	}
	return &Prometheus{api: promv1.NewAPI(c), timeout: opts.Timeout}, nil
}

// Kind implements TrafficSource.
func (p *Prometheus) Kind() string { return "prometheus" }

// promDuration renders d as a PromQL duration ("1m", "90s").
func promDuration(d time.Duration) string { return model.Duration(d).String() }

// graphQueries are the instant queries of Edges over window w: requests
// as the source reports them (Kiali's graph query), requests as the
// destination reports them (for mutual TLS and callers outside the mesh),
// the 95th percentile of the duration histogram per reporter, and TCP
// bytes.
func graphQueries(w string) (source, dest, p95, tcp string) {
	by := strings.Join(edgeLabels, ",")
	source = fmt.Sprintf(`sum(rate(%s{reporter="source"}[%s])) by (%s,%s,%s)`, metricRequests, w, by, labelProtocol, labelResponseCode)
	dest = fmt.Sprintf(`sum(rate(%s{reporter="destination"}[%s])) by (%s,%s,%s,%s)`, metricRequests, w, by, labelProtocol, labelResponseCode, labelSecurityPolicy)
	p95 = fmt.Sprintf(`histogram_quantile(0.95, sum(rate(%s_bucket[%s])) by (le,%s,%s))`, metricDuration, w, labelReporter, by)
	tcp = fmt.Sprintf(`sum(rate({__name__=~"%s|%s",reporter="source"}[%s])) by (%s)`, metricTCPSent, metricTCPReceived, w, by)
	return source, dest, p95, tcp
}

// Edges implements TrafficSource with four instant queries (see
// graphQueries); the window is at least one minute.
func (p *Prometheus) Edges(ctx context.Context, window time.Duration) ([]EdgeStats, error) {
	src, dst, p95, tcp := graphQueries(promDuration(max(window, minRateWindow)))
	now := time.Now()
	set := edgeSet{}
	for _, q := range []string{src, dst} {
		vec, err := p.vector(ctx, q, now)
		if err != nil {
			return nil, err
		}
		reporter := reporterSource
		if q == dst {
			reporter = reporterDestination
		}
		for _, s := range vec {
			l := labelsOf(s.Metric)
			set.addRequests(edgeOf(l), reporter, l(labelProtocol), l(labelResponseCode), l(labelSecurityPolicy), float64(s.Value))
		}
	}
	vec, err := p.vector(ctx, tcp, now)
	if err != nil {
		return nil, err
	}
	for _, s := range vec {
		set.addTCP(edgeOf(labelsOf(s.Metric)), float64(s.Value))
	}
	vec, err = p.vector(ctx, p95, now)
	if err != nil {
		return nil, err
	}
	// The source's percentile wins; the destination's stands in for edges
	// only a destination reported.
	for _, s := range vec {
		l := labelsOf(s.Metric)
		a := set[idOf(edgeOf(l))]
		v := float64(s.Value)
		if a == nil || math.IsNaN(v) {
			continue
		}
		srcSide := l(labelReporter) == reporterSource
		if (srcSide && a.srcReq > 0) || (!srcSide && a.srcReq == 0) {
			a.p95 = v
		}
	}
	return set.stats(1), nil
}

// vector runs an instant query that must give a vector.
func (p *Prometheus) vector(ctx context.Context, q string, at time.Time) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.Query(ctx, q, at)
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("prometheus query %s: got a %s, want a vector", q, v.Type())
	}
	return vec, nil
}

func labelsOf(m model.Metric) func(string) string {
	return func(n string) string { return string(m[model.LabelName(n)]) }
}

// selector is q's PromQL label matchers, without braces.
func (q Query) selector() string {
	quote := strconv.Quote
	anyOf := func(vals []string) string {
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = regexp.QuoteMeta(v)
		}
		return quote(strings.Join(parts, "|"))
	}
	switch {
	case q.Direction == Inbound && q.Service != "":
		return fmt.Sprintf(`reporter="destination",%s=%s`, labelDestService, quote(q.Service))
	case q.Direction == Inbound:
		return fmt.Sprintf(`reporter="destination",%s=%s,%s=~%s`, labelDestNamespace, quote(q.Namespace), labelDestWorkload, anyOf(q.Workloads))
	}
	return fmt.Sprintf(`reporter="source",%s=%s,%s=~%s`, labelSourceNamespace, quote(q.Namespace), labelSourceWorkload, anyOf(q.Workloads))
}

// seriesQueries are the range queries of Series: request rate, error
// rate and the 95th percentile of the duration, over rate window w.
func seriesQueries(q Query, w string) (rps, errs, p95 string) {
	sel := q.selector()
	rps = fmt.Sprintf(`sum(rate(%s{%s}[%s]))`, metricRequests, sel, w)
	errs = fmt.Sprintf(`sum(rate(%s{%s,%s=~"5..|0"}[%s]))`, metricRequests, sel, labelResponseCode, w)
	p95 = fmt.Sprintf(`histogram_quantile(0.95, sum(rate(%s_bucket{%s}[%s])) by (le))`, metricDuration, sel, w)
	return rps, errs, p95
}

// Series implements TrafficSource with three range queries (see
// seriesQueries); rates are over max(step, 1m).
func (p *Prometheus) Series(ctx context.Context, q Query, span, step time.Duration) ([]Point, error) {
	if step <= 0 || span <= 0 {
		return nil, errors.New("span and step must be positive")
	}
	if q.Service == "" && len(q.Workloads) == 0 {
		return nil, nil
	}
	end := time.Now().Truncate(step)
	r := promv1.Range{Start: end.Add(-span + step), End: end, Step: step}
	rps, errs, p95 := seriesQueries(q, promDuration(max(step, minRateWindow)))
	points := map[int64]*Point{}
	var order []int64
	for i, query := range []string{rps, errs, p95} {
		m, err := p.matrix(ctx, query, r)
		if err != nil {
			return nil, err
		}
		for _, ss := range m {
			for _, v := range ss.Values {
				t := v.Timestamp.Unix()
				pt := points[t]
				if pt == nil {
					pt = &Point{Time: v.Timestamp.Time(), P95: math.NaN()}
					points[t] = pt
					order = append(order, t)
				}
				switch i {
				case 0:
					pt.RequestRate = float64(v.Value)
				case 1:
					pt.ErrorRate = float64(v.Value)
				case 2:
					pt.P95 = float64(v.Value)
				}
			}
		}
	}
	out := make([]Point, 0, len(order))
	slices.Sort(order)
	for _, t := range order {
		out = append(out, *points[t])
	}
	return out, nil
}

// matrix runs a range query that must give a matrix.
func (p *Prometheus) matrix(ctx context.Context, q string, r promv1.Range) (model.Matrix, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.QueryRange(ctx, q, r)
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("prometheus query %s: got a %s, want a matrix", q, v.Type())
	}
	return m, nil
}
