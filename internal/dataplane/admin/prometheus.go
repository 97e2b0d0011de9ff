package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// StatsHandler serves g on /stats/prometheus alone: the proxy's
// Prometheus port (Envoy's 15090 listener, which exposes only that path
// of its admin).
func StatsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", promhttpHandler(g))
	return mux
}

// MergedOptions configures MergedHandler.
type MergedOptions struct {
	// Gatherer is the proxy's own metrics. Required.
	Gatherer prometheus.Gatherer
	// AppURL is the app's metrics endpoint ("http://127.0.0.1:8080/metrics",
	// Istio's prometheus.io/port and prometheus.io/path annotations); ""
	// merges none.
	AppURL string
	// Client fetches AppURL; nil uses a client of its own that ignores
	// HTTP_PROXY. Its Timeout, if any, applies on top of AppTimeout.
	Client *http.Client
	// AppTimeout bounds one fetch of AppURL; 0 means 5s. A scraper's
	// X-Prometheus-Scrape-Timeout-Seconds shortens it to 9/10 of that, so
	// that a slow app never costs the scraper the proxy's metrics.
	AppTimeout time.Duration
	// MaxAppBytes bounds the app's body; 0 means 16 MiB.
	MaxAppBytes int64
	Logger      *slog.Logger
}

// agentPrefix is what Istio's agent puts before its own Go runtime and
// process metrics on 15020 (istio/istio#24798): a Go app exports the same
// go_* and process_* families, and two families of one name make the page
// unparseable.
const agentPrefix = "istio_agent_"

// appAccept asks the app for the two formats expfmt decodes: delimited
// protobuf, else text 0.0.4; never OpenMetrics, which it cannot. Names
// outside the legacy charset come back escaped with underscores.
const appAccept = `application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;escaping=underscores;q=0.7,` +
	`text/plain;version=0.0.4;escaping=underscores;q=0.3`

// MergedHandler serves /stats/prometheus (and /metrics) as Istio's agent
// serves 15020: the proxy's metrics, its Go runtime and process families
// renamed istio_agent_go_* and istio_agent_process_*, then the app's
// metrics from AppURL, all in the Prometheus text format 0.0.4. The page
// always parses: the app's families are decoded (expfmt) and re-encoded,
// and one whose name or sample names (name_sum, name_count, name_bucket)
// collide with a family already on the page is left out and counted in
// loom_merged_app_families_dropped_total. An app that fails, times out,
// answers another status than 200 or a format other than protobuf or text,
// or sends a body that does not decode is left out whole, counted in
// istio_agent_scrape_failures_total{type="application"} and logged at
// Debug; the page is still 200 with the proxy's part, as Istio's.
// istio_agent_scrapes_total counts the page's scrapes. Safe for
// concurrent use; a request blocks for at most the app's timeout.
func MergedHandler(o MergedOptions) http.Handler {
	if o.Client == nil {
		// The app is beside the proxy: never through HTTP_PROXY, which in
		// explicit-proxy mode may name the proxy itself.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		o.Client = &http.Client{Transport: tr}
	}
	if o.AppTimeout <= 0 {
		o.AppTimeout = 5 * time.Second
	}
	if o.MaxAppBytes <= 0 {
		o.MaxAppBytes = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	m := &merger{o: o, log: o.Logger.With("component", "merged-metrics"), own: prometheus.NewRegistry(),
		scrapes: prometheus.NewCounter(prometheus.CounterOpts{Name: agentPrefix + "scrapes_total",
			Help: "Scrapes of the merged metrics page (15020)."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: agentPrefix + "scrape_failures_total",
			Help: "Scrapes of the merged metrics page that left out a part: type is envoy (the proxy's own) or application."},
			[]string{"type"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "loom_merged_app_families_dropped_total",
			Help: "App metric families left out of the merged metrics page because their names collide with the proxy's, or they do not encode."}),
	}
	m.own.MustRegister(m.scrapes, m.failures, m.dropped)
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", m)
	mux.Handle("GET /metrics", m)
	return mux
}

// merger is MergedHandler's state: its own counters, in own.
type merger struct {
	o                MergedOptions
	log              *slog.Logger
	own              *prometheus.Registry
	scrapes, dropped prometheus.Counter
	failures         *prometheus.CounterVec
}

func (m *merger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.scrapes.Inc()
	proxy, err := m.o.Gatherer.Gather()
	if err != nil {
		// Gather returns what it could; serve that.
		m.failures.WithLabelValues("envoy").Inc()
		m.log.Debug("gathering the proxy's metrics", "error", err)
	}
	proxy = agentNamed(proxy)
	var app []*dto.MetricFamily
	if m.o.AppURL != "" {
		if app, err = m.fetchApp(r); err != nil {
			m.failures.WithLabelValues("application").Inc()
			m.log.Debug("app metrics not merged", "url", m.o.AppURL, "error", err)
		}
	}
	// The counters above are final for this scrape now, except dropped,
	// whose name is claimed before the app's families are looked at.
	claimed := map[string]bool{}
	for _, mf := range proxy {
		claim(claimed, mf)
	}
	for _, name := range []string{agentPrefix + "scrapes_total", agentPrefix + "scrape_failures_total", "loom_merged_app_families_dropped_total"} {
		claimed[name] = true
	}
	var buf, one bytes.Buffer
	var dropped []string
	for _, mf := range app {
		if len(mf.GetMetric()) == 0 {
			continue
		}
		if collides(claimed, mf) {
			dropped = append(dropped, mf.GetName())
			continue
		}
		one.Reset()
		if _, err := expfmt.MetricFamilyToText(&one, mf); err != nil {
			dropped = append(dropped, mf.GetName())
			continue
		}
		claim(claimed, mf)
		buf.Write(one.Bytes())
	}
	if len(dropped) > 0 {
		m.dropped.Add(float64(len(dropped)))
		m.log.Debug("app metric families left out of the merged page", "url", m.o.AppURL, "families", dropped)
	}
	own, err := m.own.Gather()
	if err != nil {
		m.log.Debug("gathering the merged page's counters", "error", err)
	}
	// The proxy's and the handler's families first, sorted; the app's after.
	var head bytes.Buffer
	for _, mf := range sortedFamilies(append(proxy, own...)) {
		if _, err := expfmt.MetricFamilyToText(&head, mf); err != nil {
			http.Error(w, fmt.Sprintf("encode %s: %v", mf.GetName(), err), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	_, _ = w.Write(head.Bytes())
	_, _ = w.Write(buf.Bytes())
}

// fetchApp gets and decodes the app's metrics, sorted by name.
func (m *merger) fetchApp(r *http.Request) ([]*dto.MetricFamily, error) {
	timeout := m.o.AppTimeout
	if s := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); s != "" {
		if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
			// In float: a huge header must not overflow into a negative
			// timeout.
			if d := secs * 0.9; d < timeout.Seconds() {
				timeout = time.Duration(d * float64(time.Second))
			}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.o.AppURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", appAccept)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(timeout.Seconds(), 'f', -1, 64))
	resp, err := m.o.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format == expfmt.FmtUnknown {
		return nil, fmt.Errorf("content type %q is neither the Prometheus text format 0.0.4 nor delimited protobuf", resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, m.o.MaxAppBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > m.o.MaxAppBytes {
		return nil, fmt.Errorf("body over %d bytes", m.o.MaxAppBytes)
	}
	dec := expfmt.NewDecoder(bytes.NewReader(body), format)
	var mfs []*dto.MetricFamily
	for {
		mf := &dto.MetricFamily{}
		if err := dec.Decode(mf); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("decode %s: %w", format, err)
		}
		mfs = append(mfs, mf)
	}
	return sortedFamilies(mfs), nil
}

// agentNamed is mfs with the Go collector's go_* and the process
// collector's process_* families renamed istio_agent_*, as Istio's agent
// names its own.
func agentNamed(mfs []*dto.MetricFamily) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		if name := mf.GetName(); strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			// A copy: a Gatherer may hand out families it keeps.
			mf = &dto.MetricFamily{Name: proto.String(agentPrefix + name), Help: mf.Help, Type: mf.Type, Unit: mf.Unit, Metric: mf.Metric}
		}
		out = append(out, mf)
	}
	return out
}

// textNames are the names a family's lines carry in the text format. The
// text parser files a line under the family one of them names, so two
// families sharing any of them cannot both be on one page.
func textNames(mf *dto.MetricFamily) []string {
	n := mf.GetName()
	switch mf.GetType() {
	case dto.MetricType_SUMMARY:
		return []string{n, n + "_sum", n + "_count"}
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		return []string{n, n + "_bucket", n + "_sum", n + "_count"}
	default:
		return []string{n}
	}
}

func claim(claimed map[string]bool, mf *dto.MetricFamily) {
	for _, n := range textNames(mf) {
		claimed[n] = true
	}
}

func collides(claimed map[string]bool, mf *dto.MetricFamily) bool {
	for _, n := range textNames(mf) {
		if claimed[n] {
			return true
		}
	}
	return false
}

func sortedFamilies(mfs []*dto.MetricFamily) []*dto.MetricFamily {
	slices.SortStableFunc(mfs, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return mfs
}

func promhttpHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}
