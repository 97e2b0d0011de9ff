package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/loom-mesh/loom/internal/metricnames"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
)

// The metrics mesh runs beside the others, on its own subnet.
const (
	metricsSubnet    = "127.123.0.0/24"
	metricsLoomdAddr = "127.123.0.1:15014"
)

// metricsProxy is the Prometheus endpoint (15090) of the demo's workload
// at host octet.
func metricsProxy(octet int) string {
	return fmt.Sprintf("http://127.123.0.%d:15090/stats/prometheus", octet)
}

// Bookinfo's workloads' host octets (samples/bookinfo.Workloads).
const (
	octetGateway     = 10
	octetProductpage = 11
	octetReviewsV1   = 13
	octetReviewsV2   = 14
	octetRatings     = 16
)

// TestIstioMetricsBookinfo checks Istio's standard metrics on the real
// demo: every proxy's 15090 /stats/prometheus parses with the Prometheus
// text parser and lists only families internal/metricnames knows; after a
// known number of page views, istio_requests_total for productpage ->
// reviews has grown by exactly that number on both reporters (productpage's
// proxy as source, reviews-v1's as destination) with Istio's labels, the
// peers' identities coming from the metadata exchange, and the GETs'
// istio_request_bytes count their headers (Envoy's request.total_size),
// not only their empty bodies; with Istio's ratings
// fault abort for jason, reviews-v2's proxy reports the aborted calls with
// response_code 500 and response_flags FI, exactly as many as jason's page
// views.
func TestIstioMetricsBookinfo(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	if _, err := os.Stat(samplesDir); err != nil {
		t.Fatalf("Istio's Bookinfo samples are missing (%v): check out shared/istio-samples beside the module", err)
	}
	m := startDemo(t, metricsSubnet)
	anon := newClient(t)
	applyAt(t, metricsLoomdAddr, sample("destination-rule-all.yaml"), "destinationrule.networking.istio.io/reviews ")
	applyAt(t, metricsLoomdAddr, sample("virtual-service-all-v1.yaml"), "virtualservice.networking.istio.io/reviews ")
	pollUntil(t, "10 requests in a row served by reviews-v1", func() bool { return allServedBy(t, anon, m.pageURL, 10, "v1") })

	// The labels both reporters give a productpage -> reviews-v1 request.
	edge := map[string]string{
		"source_workload": "productpage-v1", "source_workload_namespace": "default", "source_app": "productpage",
		"source_version": "v1", "source_cluster": "Kubernetes",
		"destination_workload": "reviews-v1", "destination_workload_namespace": "default", "destination_app": "reviews",
		"destination_version": "v1", "destination_service_name": "reviews", "destination_service_namespace": "default",
		"destination_cluster": "Kubernetes", "request_protocol": "http", "response_code": "200", "response_flags": "-",
		"grpc_response_status": "",
		// mTLS between the sidecars: the source reporter reads both
		// principals off its upstream connection, the destination off
		// its downstream one.
		"source_principal":      "spiffe://cluster.local/ns/default/sa/bookinfo-productpage",
		"destination_principal": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
	}
	edge["destination_service"] = "reviews.default.svc.cluster.local"
	src := with(edge, map[string]string{"reporter": "source", "connection_security_policy": "unknown"})
	dst := with(edge, map[string]string{"reporter": "destination", "connection_security_policy": "mutual_tls"})

	before := func(url string, labels map[string]string) float64 {
		t.Helper()
		fams, err := promtest.Scrape(url)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := fams.Value("istio_requests_total", labels)
		return v
	}
	reqBytes := func(url string, labels map[string]string) float64 {
		t.Helper()
		fams, err := promtest.Scrape(url)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := fams.HistogramSum("istio_request_bytes", labels)
		return v
	}
	src0, dst0 := before(metricsProxy(octetProductpage), src), before(metricsProxy(octetReviewsV1), dst)
	srcBytes0, dstBytes0 := reqBytes(metricsProxy(octetProductpage), src), reqBytes(metricsProxy(octetReviewsV1), dst)
	const views = 40
	for i := range views {
		if v, err := version(anon, m.pageURL); err != nil || v != "v1" {
			t.Fatalf("page view %d: %q, %v", i+1, v, err)
		}
	}
	// Counted when the request ends, before the response's last byte
	// reaches the client: no wait is needed, but poll a little for
	// the destination's count, which ends after the source's response.
	var srcN, dstN float64
	ok := poll(5e9, func() bool {
		srcN = before(metricsProxy(octetProductpage), src) - src0
		dstN = before(metricsProxy(octetReviewsV1), dst) - dst0
		return srcN == views && dstN == views
	})
	if !ok {
		t.Errorf("after %d page views: productpage's proxy counted %v (reporter=source), reviews-v1's %v (reporter=destination); want %d each with labels %v",
			views, srcN, dstN, views, edge)
		dumpSeries(t, metricsProxy(octetProductpage), "istio_requests_total")
		dumpSeries(t, metricsProxy(octetReviewsV1), "istio_requests_total")
	}
	// The GETs have no body; their sizes are at least the pseudo-headers'
	// names and the fixed values (:method GET, :path /..., :scheme http).
	const minHeaders = float64(len(":method") + len("GET") + len(":path") + len("/") + len(":authority") + len(":scheme") + len("http"))
	var srcBytes, dstBytes float64
	if !poll(5e9, func() bool {
		srcBytes = reqBytes(metricsProxy(octetProductpage), src) - srcBytes0
		dstBytes = reqBytes(metricsProxy(octetReviewsV1), dst) - dstBytes0
		return srcBytes >= views*minHeaders && dstBytes >= views*minHeaders
	}) {
		t.Errorf("after %d page views: istio_request_bytes grew by %v (reporter=source) and %v (reporter=destination); want at least %v each (the GETs' headers)",
			views, srcBytes, dstBytes, views*minHeaders)
	}

	// Every proxy's endpoint parses; its Istio families are the known ones.
	for _, octet := range []int{octetGateway, octetProductpage, 12, octetReviewsV1, octetReviewsV2, 15, octetRatings} {
		fams, err := promtest.Scrape(metricsProxy(octet))
		if err != nil {
			t.Errorf("proxy .%d: %v", octet, err)
			continue
		}
		for name, fam := range fams {
			if !strings.HasPrefix(name, "istio_") {
				continue
			}
			typ, known := metricnames.Proxy[name]
			if got := strings.ToLower(fam.GetType().String()); !known || string(typ) != got {
				t.Errorf("proxy .%d exports %s (%s), which internal/metricnames.Proxy lists as %q", octet, name, got, typ)
			}
		}
		if v, ok := fams.Value("envoy_control_plane_connected_state", nil); !ok || v != 1 {
			t.Errorf("proxy .%d: envoy_control_plane_connected_state = %v (present %v), want 1", octet, v, ok)
		}
		if v, ok := fams.Value("loom_proxy_config_age_seconds", nil); !ok || v < 0 {
			t.Errorf("proxy .%d: loom_proxy_config_age_seconds = %v (present %v), want >= 0", octet, v, ok)
		}
		if octet == octetGateway {
			if _, ok := fams.Value("istio_requests_total", map[string]string{"reporter": "source", "destination_workload": "productpage-v1",
				"destination_service_name": "productpage", "response_code": "200"}); !ok {
				t.Errorf("the ingress gateway reports no request to productpage-v1")
				dumpSeries(t, metricsProxy(octet), "istio_requests_total")
			}
		}
	}

	// Istio's fault-injection task: jason's calls from reviews-v2 to
	// ratings are aborted with 500 by reviews-v2's sidecar (FI); the
	// destination was never reached, so its workload is unknown.
	applyAt(t, metricsLoomdAddr, sample("virtual-service-reviews-test-v2.yaml"), "virtualservice.networking.istio.io/reviews ")
	applyAt(t, metricsLoomdAddr, sample("virtual-service-ratings-test-abort.yaml"), "virtualservice.networking.istio.io/ratings ")
	jason := newClient(t)
	login(t, jason, m.pageURL, "jason")
	fi := map[string]string{"reporter": "source", "source_workload": "reviews-v2", "destination_service_name": "ratings",
		"destination_workload": "unknown", "response_code": "500", "response_flags": "FI"}
	pollUntil(t, "an aborted call to ratings counted on reviews-v2's proxy", func() bool {
		_, _ = version(jason, m.pageURL)
		fams, err := promtest.Scrape(metricsProxy(octetReviewsV2))
		if err != nil {
			return false
		}
		_, ok := fams.Value("istio_requests_total", fi)
		return ok
	})
	fi0 := before(metricsProxy(octetReviewsV2), fi)
	const jasonViews = 15
	for i := range jasonViews {
		if v, err := version(jason, m.pageURL); err != nil || v != "v2" {
			t.Fatalf("jason's page view %d: %q, %v", i+1, v, err)
		}
	}
	var fiN float64
	if !poll(5e9, func() bool { fiN = before(metricsProxy(octetReviewsV2), fi) - fi0; return fiN == jasonViews }) {
		t.Errorf("after %d page views as jason, reviews-v2's proxy counted %v requests with %v; want %d", jasonViews, fiN, fi, jasonViews)
		dumpSeries(t, metricsProxy(octetReviewsV2), "istio_requests_total")
	}
}

// with returns a copy of base with extra's entries added.
func with(base, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// dumpSeries logs the series of family name at url, for a failure's
// diagnosis.
func dumpSeries(t *testing.T, url, name string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Logf("%s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	body := tryGetBody(resp)
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+"{") {
			t.Logf("%s: %s", url, line)
		}
	}
}

func tryGetBody(resp *http.Response) string {
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for b.Len() < 8<<20 {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
