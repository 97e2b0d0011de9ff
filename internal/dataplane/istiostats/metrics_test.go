package istiostats

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/loom-mesh/loom/internal/metricnames"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

var (
	productpage = Peer{Workload: "productpage-v1", Namespace: "default", App: "productpage", Version: "v1", Service: "productpage", Revision: "v1", Cluster: "Kubernetes"}
	reviews     = Peer{Workload: "reviews-v1", Namespace: "default", App: "reviews", Version: "v1", Service: "reviews", Revision: "v1", Cluster: "Kubernetes"}
)

func mustCompile(t *testing.T, c *statspb.PluginConfig, inbound bool) *Config {
	t.Helper()
	sc, err := Compile(c, inbound)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

// Both reporters of one productpage -> reviews request, as Istio labels
// them, and the exported text parses with the labels Istio's filter sets.
func TestFillAndRecord(t *testing.T) {
	m := NewMetrics(0)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)

	out := mustCompile(t, nil, false)
	var l Labels
	out.Fill(&productpage, &Facts{Peer: &reviews, Cluster: "outbound|9080|v1|reviews.default.svc.cluster.local",
		Service: ServiceOfCluster("outbound|9080|v1|reviews.default.svc.cluster.local"), Protocol: "http", Code: 200}, &l)
	for range 3 {
		m.RecordRequest(out, &Request{Labels: &l, DurationMillis: 3, RequestBytes: 0, ResponseBytes: 120})
	}
	in := mustCompile(t, &statspb.PluginConfig{DisableHostHeaderFallback: true}, true)
	var l2 Labels
	in.Fill(&reviews, &Facts{Peer: &productpage, Cluster: "inbound|9080||", Protocol: "http", Code: 503, Flags: "UF",
		PeerPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage", LocalPrincipal: "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"}, &l2)
	m.RecordRequest(in, &Request{Labels: &l2, DurationMillis: 7000})

	want := `
# HELP istio_requests_total Requests, by Istio's standard labels.
# TYPE istio_requests_total counter
istio_requests_total{connection_security_policy="mutual_tls",destination_app="reviews",destination_canonical_revision="v1",destination_canonical_service="reviews",destination_cluster="Kubernetes",destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews",destination_service="reviews",destination_service_name="reviews",destination_service_namespace="default",destination_version="v1",destination_workload="reviews-v1",destination_workload_namespace="default",grpc_response_status="",reporter="destination",request_protocol="http",response_code="503",response_flags="UF",source_app="productpage",source_canonical_revision="v1",source_canonical_service="productpage",source_cluster="Kubernetes",source_principal="spiffe://cluster.local/ns/default/sa/bookinfo-productpage",source_version="v1",source_workload="productpage-v1",source_workload_namespace="default"} 1
istio_requests_total{connection_security_policy="unknown",destination_app="reviews",destination_canonical_revision="v1",destination_canonical_service="reviews",destination_cluster="Kubernetes",destination_principal="unknown",destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews",destination_service_namespace="default",destination_version="v1",destination_workload="reviews-v1",destination_workload_namespace="default",grpc_response_status="",reporter="source",request_protocol="http",response_code="200",response_flags="-",source_app="productpage",source_canonical_revision="v1",source_canonical_service="productpage",source_cluster="Kubernetes",source_principal="unknown",source_version="v1",source_workload="productpage-v1",source_workload_namespace="default"} 3
`
	if got := gatherText(t, reg, "istio_requests_total"); got != strings.TrimLeft(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// The histogram: Envoy's buckets; 7000 ms falls in le=10000.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "istio_request_duration_milliseconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			h := mt.GetHistogram()
			if len(h.GetBucket()) != len(Buckets) {
				t.Errorf("%d buckets, want Envoy's %d", len(h.GetBucket()), len(Buckets))
			}
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 5000 && h.GetSampleCount() == 1 && b.GetCumulativeCount() != 0 {
					t.Errorf("7000 ms counted under le=5000")
				}
				if b.GetUpperBound() == 10000 && h.GetSampleCount() == 1 && b.GetCumulativeCount() != 1 {
					t.Errorf("7000 ms not counted under le=10000")
				}
			}
		}
	}
}

// Overrides: a tag removed, a tag added from an expression, a metric
// dropped; the exported series follow.
func TestOverrides(t *testing.T) {
	m := NewMetrics(0)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	c := mustCompile(t, &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{
		{Name: "requests_total", TagsToRemove: []string{"source_principal"}, Dimensions: map[string]string{"request_method": "request.method", "response_code": "'xxx'"}},
		{Name: "request_bytes", Drop: true},
	}}, false)
	var l Labels
	c.Fill(&productpage, &Facts{Protocol: "http", Code: 200}, &l)
	m.RecordRequest(c, &Request{Labels: &l, Attributes: &Attributes{}})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		if mf.GetName() != "istio_requests_total" {
			continue
		}
		labels := map[string]string{}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if _, ok := labels["source_principal"]; ok {
			t.Error("source_principal not removed")
		}
		if labels["request_method"] != "unknown" || labels["response_code"] != "xxx" {
			t.Errorf("labels %v: want request_method unknown (no request) and response_code xxx", labels)
		}
	}
	if seen["istio_request_bytes"] || !seen["istio_response_bytes"] {
		t.Errorf("families %v: want istio_request_bytes dropped, istio_response_bytes kept", seen)
	}
}

func TestMaxSeries(t *testing.T) {
	m := NewMetrics(2)
	c := mustCompile(t, nil, false)
	for _, code := range []int{200, 404, 503, 200} {
		var l Labels
		c.Fill(&productpage, &Facts{Protocol: "http", Code: code}, &l)
		m.RecordRequest(c, &Request{Labels: &l})
	}
	if m.Series() != 2 || m.overflow.Load() != 1 {
		t.Errorf("series %d, overflow %d: want 2 and 1", m.Series(), m.overflow.Load())
	}
}

// A request of a label set seen before allocates nothing.
func TestRecordAllocs(t *testing.T) {
	m := NewMetrics(0)
	c := mustCompile(t, nil, false)
	f := Facts{Peer: &reviews, Service: ServiceOfCluster("outbound|9080||reviews.default.svc.cluster.local"), Protocol: "http", Code: 200}
	var l Labels
	allocs := testing.AllocsPerRun(100, func() {
		c.Fill(&productpage, &f, &l)
		m.RecordRequest(c, &Request{Labels: &l, DurationMillis: 1})
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request, want 0", allocs)
	}
}

// gatherText is the text exposition of the family name in reg.
func gatherText(t *testing.T, reg prometheus.Gatherer, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if mf.GetName() == name {
			if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String()
}

// TestTagNamesAreProxyLabels: the proxy's tags are exactly the labels
// loomd validates Telemetry overrides against, none cut off.
func TestTagNamesAreProxyLabels(t *testing.T) {
	if !slices.Equal(tagNames[:], metricnames.ProxyLabels) {
		t.Errorf("tagNames %q\nProxyLabels %q", tagNames, metricnames.ProxyLabels)
	}
}
