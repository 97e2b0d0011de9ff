package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakePrometheus speaks Prometheus's HTTP query API
// (/api/v1/query and /api/v1/query_range, JSON) and answers each PromQL
// expression with the result the test set for it; it records the queries
// it got.
type fakePrometheus struct {
	srv *httptest.Server

	mu      sync.Mutex
	answers map[string]string // query -> JSON "data" member
	queries []string
}

func newFakePrometheus(t *testing.T) *fakePrometheus {
	f := &fakePrometheus{answers: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" && r.URL.Path != "/api/v1/query_range" {
			http.NotFound(w, r)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		q := r.Form.Get("query")
		f.mu.Lock()
		f.queries = append(f.queries, q)
		data, ok := f.answers[q]
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"unexpected query %s"}`, strings.ReplaceAll(q, `"`, `'`))
			return
		}
		fmt.Fprintf(w, `{"status":"success","data":%s}`, data)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakePrometheus) answer(query, data string) {
	f.mu.Lock()
	f.answers[query] = data
	f.mu.Unlock()
}

// vector renders an instant vector result.
func vector(samples ...map[string]any) string {
	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	var out []sample
	for _, s := range samples {
		m := map[string]string{}
		var v string
		for k, x := range s {
			if k == "_value" {
				v = fmt.Sprint(x)
				continue
			}
			m[k] = x.(string)
		}
		out = append(out, sample{Metric: m, Value: [2]any{1800000000.0, v}})
	}
	b, _ := json.Marshal(map[string]any{"resultType": "vector", "result": out})
	return string(b)
}

// edgeMetric is the edge labels of src -> dst through service.
func edgeMetric(src, dst, service string, extra ...string) map[string]any {
	s, d := wl(src), wl(dst)
	m := map[string]any{"source_workload": s.Name, "source_workload_namespace": s.Namespace, "source_app": s.App, "source_version": s.Version,
		"destination_workload": d.Name, "destination_workload_namespace": d.Namespace, "destination_app": d.App, "destination_version": d.Version,
		"destination_service": service + ".default.svc.cluster.local"}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

// TestPrometheusEdges: with --prometheus-url the graph comes from Kiali's
// PromQL against the server's query API.
func TestPrometheusEdges(t *testing.T) {
	fp := newFakePrometheus(t)
	p, err := NewPrometheus(PrometheusOptions{URL: fp.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	const by = "source_workload,source_workload_namespace,source_app,source_version," +
		"destination_workload,destination_workload_namespace,destination_app,destination_version,destination_service"
	// The queries as Kiali writes them for its graph.
	qSource := `sum(rate(istio_requests_total{reporter="source"}[2m])) by (` + by + `,request_protocol,response_code)`
	qDest := `sum(rate(istio_requests_total{reporter="destination"}[2m])) by (` + by + `,request_protocol,response_code,connection_security_policy)`
	qP95 := `histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket[2m])) by (le,reporter,` + by + `))`
	qTCP := `sum(rate({__name__=~"istio_tcp_sent_bytes_total|istio_tcp_received_bytes_total",reporter="source"}[2m])) by (` + by + `)`

	pr := edgeMetric("productpage-v1", "reviews-v2", "reviews")
	rr := edgeMetric("reviews-v2", "ratings-v1", "ratings")
	abort := edgeMetric("reviews-v2", unknown, "ratings")
	fp.answer(qSource, vector(
		with(pr, "request_protocol", "http", "response_code", "200", "_value", 4.5),
		with(pr, "request_protocol", "http", "response_code", "503", "_value", 0.5),
		with(rr, "request_protocol", "http", "response_code", "200", "_value", 2),
		with(abort, "request_protocol", "http", "response_code", "500", "_value", 1),
	))
	fp.answer(qDest, vector(
		with(pr, "request_protocol", "http", "response_code", "200", "connection_security_policy", "mutual_tls", "_value", 4),
		with(rr, "request_protocol", "http", "response_code", "200", "connection_security_policy", "none", "_value", 2),
	))
	fp.answer(qP95, vector(
		with(pr, "reporter", "source", "_value", 42.5),
		with(pr, "reporter", "destination", "_value", 40),
		with(rr, "reporter", "source", "_value", "NaN"),
	))
	fp.answer(qTCP, vector())

	got, err := p.Edges(context.Background(), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := []EdgeStats{
		{EdgeKey: EdgeKey{Source: wl("productpage-v1"), Dest: wl("reviews-v2"), Service: "reviews.default.svc.cluster.local"},
			Protocol: "http", RequestRate: 5, ErrorRate: 0.5, P95: 42.5, MTLS: 1},
		{EdgeKey: EdgeKey{Source: wl("reviews-v2"), Dest: wl("ratings-v1"), Service: "ratings.default.svc.cluster.local"},
			Protocol: "http", RequestRate: 2, P95: math.NaN(), MTLS: 0},
		{EdgeKey: EdgeKey{Source: wl("reviews-v2"), Dest: wl(unknown), Service: "ratings.default.svc.cluster.local"},
			Protocol: "http", RequestRate: 1, ErrorRate: 1, P95: math.NaN(), MTLS: math.NaN()},
	}
	if d := cmp.Diff(want, got, nanEqual); d != "" {
		t.Fatalf("edges (-want +got)\n%s", d)
	}

	// A window under a minute is asked for over a minute: rate needs two
	// of Prometheus's samples.
	if _, err := p.Edges(context.Background(), 5*time.Second); err == nil || !strings.Contains(err.Error(), "[1m]") {
		t.Errorf("5s window: %v, want the 1m queries (unanswered here)", err)
	}
}

// TestPrometheusSeries: a service's and a workload's series are range
// queries with Kiali's selectors, merged by timestamp.
func TestPrometheusSeries(t *testing.T) {
	fp := newFakePrometheus(t)
	p, err := NewPrometheus(PrometheusOptions{URL: fp.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	matrix := func(vals ...string) string {
		var pts []string
		for i, v := range vals {
			pts = append(pts, fmt.Sprintf(`[%d,"%s"]`, 1800000000+15*i, v))
		}
		return `{"resultType":"matrix","result":[{"metric":{},"values":[` + strings.Join(pts, ",") + `]}]}`
	}
	sel := `reporter="destination",destination_service="reviews.default.svc.cluster.local"`
	fp.answer(`sum(rate(istio_requests_total{`+sel+`}[1m]))`, matrix("3", "4"))
	fp.answer(`sum(rate(istio_requests_total{`+sel+`,response_code=~"5..|0"}[1m]))`, matrix("0", "1"))
	fp.answer(`histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket{`+sel+`}[1m])) by (le))`, matrix("12", "NaN"))
	got, err := p.Series(context.Background(), Query{Direction: Inbound, Namespace: "default", Service: "reviews.default.svc.cluster.local"},
		time.Minute, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []Point{
		{Time: time.Unix(1800000000, 0), RequestRate: 3, ErrorRate: 0, P95: 12},
		{Time: time.Unix(1800000015, 0), RequestRate: 4, ErrorRate: 1, P95: math.NaN()},
	}
	if d := cmp.Diff(want, got, nanEqual); d != "" {
		t.Fatalf("series (-want +got)\n%s", d)
	}

	// A workload's outbound series selects its source labels; regex
	// metacharacters in names are quoted.
	q := Query{Direction: Outbound, Namespace: "default", Workloads: []string{"reviews-v2", "a.b"}}
	rps, _, _ := seriesQueries(q, "1m")
	if want := `sum(rate(istio_requests_total{reporter="source",source_workload_namespace="default",source_workload=~"reviews-v2|a\\.b"}[1m]))`; rps != want {
		t.Errorf("outbound query\n got %s\nwant %s", rps, want)
	}
	if _, err := p.Series(context.Background(), q, time.Minute, 15*time.Second); err == nil || !strings.Contains(err.Error(), "unexpected query") {
		t.Errorf("unanswered query: %v", err)
	}
}

// TestNewPrometheusURL: a URL that is not http(s) with a host fails at
// start, not at the first query.
func TestNewPrometheusURL(t *testing.T) {
	for _, u := range []string{"", "prometheus:9090", "ftp://prometheus:9090", "http://", "http://a b"} {
		if _, err := NewPrometheus(PrometheusOptions{URL: u}); err == nil {
			t.Errorf("URL %q: no error", u)
		}
	}
	for _, u := range []string{"http://prometheus:9090", "https://10.0.0.1/prom"} {
		if _, err := NewPrometheus(PrometheusOptions{URL: u}); err != nil {
			t.Errorf("URL %q: %v", u, err)
		}
	}
}
