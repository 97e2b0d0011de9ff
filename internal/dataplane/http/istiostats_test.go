package http_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil/promtest"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// statsListener is httpListener with Istio's istio.stats HTTP filter
// with config pc (nil: the default) before the router: a source
// reporter, as on an outbound sidecar listener.
func statsListener(t testing.TB, name, addr, route string, pc *statspb.PluginConfig) *listenerv3.Listener {
	t.Helper()
	tc, err := statspb.Pack(pc)
	if err != nil {
		t.Fatal(err)
	}
	return withHCM(t, httpListener(t, name, addr, route), func(hcm *hcmv3.HttpConnectionManager) {
		hcm.HttpFilters = append([]*hcmv3.HttpFilter{{Name: statspb.FilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: tc}}}, hcm.HttpFilters...)
	})
}

// startStatsProxy is startProxy counting Istio's metrics in stats.
func startStatsProxy(t testing.TB, g *config.Generation, stats *istiostats.Metrics) *proxy {
	t.Helper()
	return startProxyOpts(t, g, nil, func(*upstream.ClusterManager) dphttp.Options {
		return dphttp.Options{IstioStats: stats}
	}, nil)
}

// histogramSums returns the sample sum and count of histogram family name
// in stats, over all its series.
func histogramSums(t testing.TB, stats *istiostats.Metrics, name string) (sum float64, count uint64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(stats)
	fams, err := promtest.Gather(reg)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ = fams.HistogramSum(name, nil)
	n, _ := fams.Value(name, nil)
	return sum, uint64(n)
}

// TestIstioStatsSizes checks istio_request_bytes and istio_response_bytes
// for one known request: Envoy's request.total_size and
// response.total_size, which Istio's stats filter records: the body bytes
// plus the header map's size (every name and value, pseudo-headers
// included, as Envoy's HeaderMap::byteSize counts), the response's
// trailers too. The request is written by hand so that every header the
// proxy reads is known. The same sizes are the attributes
// request.total_size and response.total_size; request.size and
// response.size stay the body bytes.
func TestIstioStatsSizes(t *testing.T) {
	const respBody = "0123456789" // 10 bytes
	up := startBackend(t, "up", false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h := w.Header()
		// Every response header fixed, so that net/http adds none but
		// Transfer-Encoding (a trailer makes the body chunked).
		h["Date"] = []string{"Thu, 03 Dec 2026 06:00:00 GMT"}
		h["Content-Type"] = []string{"text/plain"}
		h["Trailer"] = []string{"X-Sum"}
		io.WriteString(w, respBody)
		h["X-Sum"] = []string{"45"}
	})
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{statsListener(t, "l", lAddr, "rt", &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{
			Name: "requests_total",
			Dimensions: map[string]string{"req_size": "request.size", "req_total": "request.total_size",
				"resp_size": "response.size", "resp_total": "response.total_size"},
		}}})},
		[]*routev3.RouteConfiguration{routeConfig("rt", vhost("all", []string{"*"}, prefixRoute("r", "/", "up")))},
		[]*clusterv3.Cluster{staticCluster(t, "up", false, up.addr)})
	stats := istiostats.NewMetrics(0)
	startStatsProxy(t, g, stats)

	c, err := net.Dial("tcp", lAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const reqBody = "hello" // 5 bytes
	io.WriteString(c, "POST /p?q=1 HTTP/1.1\r\n"+
		"Host: svc\r\n"+
		"User-Agent: t\r\n"+
		"X-Request-Id: rid-1\r\n"+
		"Content-Length: 5\r\n"+
		"\r\n"+reqBody)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(b) != respBody {
		t.Fatalf("got %d %q, %v; want 200 %q", resp.StatusCode, b, err, respBody)
	}
	// The one header whose value the test does not choose.
	ust := resp.Header.Get("X-Envoy-Upstream-Service-Time")
	if ust == "" {
		t.Fatalf("no x-envoy-upstream-service-time in %v", resp.Header)
	}

	// The request's header map as the proxy forwarded it: the
	// pseudo-headers, the client's fields, and x-forwarded-proto, which
	// the router adds.
	wantReq := len(":method") + len("POST") + len(":path") + len("/p?q=1") + len(":authority") + len("svc") +
		len(":scheme") + len("http") +
		len("User-Agent") + len("t") + len("X-Request-Id") + len("rid-1") + len("Content-Length") + len("5") +
		len("X-Forwarded-Proto") + len("http") +
		len(reqBody)
	// The response's: :status, the upstream's fields (Trailer and
	// Transfer-Encoding are hop-by-hop), the proxy's
	// x-envoy-upstream-service-time; then the trailer and the body.
	wantResp := len(":status") + len("200") +
		len("Date") + len("Thu, 03 Dec 2026 06:00:00 GMT") + len("Content-Type") + len("text/plain") +
		len("X-Upstream") + len("up") + len("X-Upstream-Proto") + len("HTTP/1.1") +
		len("X-Envoy-Upstream-Service-Time") + len(ust) +
		len("X-Sum") + len("45") +
		len(respBody)

	var reqSum, respSum float64
	var n, respN uint64
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The request is counted when the handler returns, which can
		// be after the client has read the response; a histogram's
		// count moves before its sum.
		reqSum, n = histogramSums(t, stats, "istio_request_bytes")
		respSum, respN = histogramSums(t, stats, "istio_response_bytes")
		if (n == 1 && respN == 1 && int(reqSum) == wantReq && int(respSum) == wantResp) || time.Now().After(deadline) {
			break
		}
		pollPause()
	}
	if n != 1 || respN != 1 {
		t.Fatalf("istio_request_bytes counted %d requests, istio_response_bytes %d; want 1", n, respN)
	}
	if int(reqSum) != wantReq {
		t.Errorf("istio_request_bytes sum = %v, want %d (headers %d + body %d)", reqSum, wantReq, wantReq-len(reqBody), len(reqBody))
	}
	if int(respSum) != wantResp {
		t.Errorf("istio_response_bytes sum = %v, want %d (headers and trailers %d + body %d)", respSum, wantResp, wantResp-len(respBody), len(respBody))
	}
	var labels map[string]string
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(stats)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "istio_requests_total" && len(mf.GetMetric()) == 1 {
			labels = map[string]string{}
			for _, lp := range mf.GetMetric()[0].GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
		}
	}
	for k, want := range map[string]int{"req_size": len(reqBody), "req_total": wantReq, "resp_size": len(respBody), "resp_total": wantResp} {
		if got := labels[k]; got != strconv.Itoa(want) {
			t.Errorf("istio_requests_total label %s = %q, want %d", k, got, want)
		}
	}
	if got := resp.Trailer.Get("X-Sum"); got != "45" {
		t.Errorf("trailer X-Sum = %q, want 45", got)
	}
}
