package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-mesh/loom/internal/testutil/otlptest"
	"github.com/loom-mesh/loom/samples/bookinfo"
)

// tracedZipkin is the Zipkin receiver startTracedBookinfo started last.
var tracedZipkin *otlptest.Zipkin

// tracingPrefix is the loopback /24 of the tracing tests.
const tracingPrefix = "127.141.0"

// tracingMeshConfig sends every proxy's spans to the OTLP collector
// service at 100 %, as Istio's mesh config does it.
const tracingMeshConfig = `
defaultProviders:
  tracing: [otel]
extensionProviders:
- name: otel
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
defaultConfig:
  tracing:
    sampling: 100
`

// collectorServiceEntry registers the test's collector, as a collector
// outside the mesh is registered for Istio's LookupCluster.
func collectorServiceEntry(ip, zipkinIP string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: otel-collector, namespace: observability}
spec:
  hosts: [otel-collector.observability.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 4317, name: grpc-otlp, protocol: GRPC}]
  endpoints: [{address: %[1]s}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: zipkin, namespace: istio-system}
spec:
  hosts: [zipkin.istio-system.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 9411, name: http-zipkin, protocol: HTTP}]
  endpoints: [{address: %[2]s}]
`, ip, zipkinIP)
}

// startTracedBookinfo runs Bookinfo's productpage, details, reviews-v2 and
// ratings (the Go samples, served by the test process) behind real
// sidecars and an ingress gateway, with tracing to an OTLP receiver.
func startTracedBookinfo(t *testing.T, meshConfig string) (*appMesh, *otlptest.OTLP, string) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	ip := func(octet int) string { return fmt.Sprintf("%s.%d", tracingPrefix, octet) }
	collector := otlptest.StartOTLP(t, ip(200)+":4317")
	tracedZipkin = otlptest.StartZipkin(t, ip(201)+":9411")
	// An app's calls go through its own sidecar (explicit mode).
	via := func(octet int) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: ip(octet) + ":15001"}),
			MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
	}
	productpage, err := bookinfo.NewProductPage(bookinfo.ProductPageOptions{Client: via(11)})
	if err != nil {
		t.Fatal(err)
	}
	details, err := bookinfo.NewDetails(bookinfo.DetailsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reviews, err := bookinfo.NewReviews(bookinfo.ReviewsOptions{Version: "v2", Client: via(13)})
	if err != nil {
		t.Fatal(err)
	}
	ratings, err := bookinfo.NewRatings(bookinfo.RatingsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := os.ReadFile(filepath.Join(samplesDir, "bookinfo-gateway.yaml"))
	if err != nil {
		t.Fatalf("Istio's Bookinfo samples are missing (%v)", err)
	}
	m := startAppMesh(t, tracingPrefix, []appWorkload{
		{Name: "istio-ingressgateway", App: "istio-ingressgateway", Octet: 10, Gateway: true},
		{Name: "productpage-v1", App: "productpage", Version: "v1", Octet: 11, Handler: productpage},
		{Name: "details-v1", App: "details", Version: "v1", Octet: 12, Handler: details},
		{Name: "reviews-v2", App: "reviews", Version: "v2", Octet: 13, Handler: reviews},
		{Name: "ratings-v1", App: "ratings", Version: "v1", Octet: 14, Handler: ratings},
	}, string(gw)+"\n---\n"+collectorServiceEntry(ip(200), ip(201)))
	if strings.Contains(meshConfig, "defaultProviders") {
		m.setMeshConfig(meshConfig) // tracing on: every proxy gets a push
	} else {
		// No proxy's config changes: nothing to wait for here (see
		// applyWhenAccepted).
		tmp := m.meshConfig + ".tmp"
		if err := os.WriteFile(tmp, []byte(meshConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, m.meshConfig); err != nil {
			t.Fatal(err)
		}
	}
	return m, collector, "http://" + ip(10) + ":8080/productpage"
}

// pageView GETs url with hdr and checks that the page rendered reviews
// with ratings (every hop answered).
func pageView(t *testing.T, pageURL string, hdr map[string]string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, pageURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "reviews-v2") || strings.Contains(string(body), "Ratings service is currently unavailable") {
		t.Fatalf("page view: %d, want 200 with reviews-v2's ratings:\n%.600s", resp.StatusCode, body)
	}
}

// hop finds the span of trace with kind whose parent is parent and whose
// service (the proxy's app.namespace) is service.
func hop(spans []otlptest.Span, trace, kind, service, parent string) (otlptest.Span, bool) {
	for _, s := range spans {
		if s.TraceID == trace && s.Kind == kind && s.Service == service && s.ParentSpanID == parent {
			return s, true
		}
	}
	return otlptest.Span{}, false
}

// checkPageTrace waits for the spans of one page view in trace and checks
// the chain gateway -> productpage -> reviews -> ratings: each client span
// is the parent of the next hop's server span. root is the gateway span's
// expected parent ("" for a new trace).
func checkPageTrace(t *testing.T, col *otlptest.OTLP, trace, root string) []otlptest.Span {
	t.Helper()
	return checkTrace(t, col, trace, root, otlpServices)
}

// spanWaiter is a receiver of spans (OTLP or Zipkin).
type spanWaiter interface {
	Wait(t testing.TB, timeout time.Duration, what string, cond func([]otlptest.Span) bool) []otlptest.Span
}

// otlpServices are the OTLP service names of the page view's proxies
// (OpenTelemetryConfig.service_name: app.namespace).
var otlpServices = map[string]string{"gateway": "istio-ingressgateway.istio-system", "productpage": "productpage.default",
	"details": "details.default", "reviews": "reviews.default", "ratings": "ratings.default"}

// checkTrace is checkPageTrace on any receiver, with the proxies' service
// names svc.
func checkTrace(t *testing.T, col spanWaiter, trace, root string, svc map[string]string) []otlptest.Span {
	t.Helper()
	// 2 gateway spans, then a server span per service (4) and productpage's
	// and reviews' client spans (3): 9.
	spans := col.Wait(t, 30*time.Second, "the 9 spans of trace "+trace, func(ss []otlptest.Span) bool {
		n := 0
		for _, s := range ss {
			if s.TraceID == trace {
				n++
			}
		}
		return n >= 9
	})
	var all []otlptest.Span
	for _, s := range spans {
		if s.TraceID == trace {
			all = append(all, s)
		}
	}
	if len(all) != 9 {
		t.Errorf("trace %s has %d spans, want 9: %+v", trace, len(all), all)
	}
	gwServer, ok := hop(all, trace, "SERVER", svc["gateway"], root)
	if !ok {
		t.Fatalf("no gateway server span with parent %q in %+v", root, all)
	}
	gwClient, ok := hop(all, trace, "CLIENT", svc["gateway"], gwServer.SpanID)
	if !ok || gwClient.Attrs["upstream_cluster"] != "outbound|9080||productpage.default.svc.cluster.local" {
		t.Fatalf("no gateway upstream span under %s to productpage: %+v", gwServer.SpanID, all)
	}
	ppServer, ok := hop(all, trace, "SERVER", svc["productpage"], gwClient.SpanID)
	if !ok {
		t.Fatalf("productpage's server span is not a child of the gateway's client span %s: %+v", gwClient.SpanID, all)
	}
	var ppToReviews, ppToDetails otlptest.Span
	for _, s := range all {
		if s.Kind == "CLIENT" && s.Service == svc["productpage"] && s.ParentSpanID == ppServer.SpanID {
			switch {
			case strings.HasPrefix(s.Attrs["upstream_cluster"], "outbound|9080||reviews."):
				ppToReviews = s
			case strings.HasPrefix(s.Attrs["upstream_cluster"], "outbound|9080||details."):
				ppToDetails = s
			}
		}
	}
	if ppToReviews.SpanID == "" || ppToDetails.SpanID == "" {
		t.Fatalf("productpage's client spans to details and reviews are not children of its server span %s: %+v", ppServer.SpanID, all)
	}
	if _, ok := hop(all, trace, "SERVER", svc["details"], ppToDetails.SpanID); !ok {
		t.Errorf("details' server span is not a child of productpage's client span %s", ppToDetails.SpanID)
	}
	rvServer, ok := hop(all, trace, "SERVER", svc["reviews"], ppToReviews.SpanID)
	if !ok {
		t.Fatalf("reviews' server span is not a child of productpage's client span %s: %+v", ppToReviews.SpanID, all)
	}
	rvToRatings, ok := hop(all, trace, "CLIENT", svc["reviews"], rvServer.SpanID)
	if !ok {
		t.Fatalf("reviews' client span is not a child of its server span %s: %+v", rvServer.SpanID, all)
	}
	rtServer, ok := hop(all, trace, "SERVER", svc["ratings"], rvToRatings.SpanID)
	if !ok {
		t.Fatalf("ratings' server span is not a child of reviews' client span %s: %+v", rvToRatings.SpanID, all)
	}
	// Istio's tags on the way.
	for _, s := range []otlptest.Span{gwServer, ppServer, rvToRatings, rtServer} {
		if s.Attrs["http.status_code"] != "200" || s.Attrs["component"] != "proxy" || s.Attrs["node_id"] == "" ||
			s.Attrs["guid:x-request-id"] == "" || s.Attrs["response_flags"] != "-" {
			t.Errorf("span %s %s of %s: tags %v", s.Kind, s.Name, s.Service, s.Attrs)
		}
	}
	// Istio's span names, its route decorators "HOST:PORT/PATH": a server
	// span takes its client's (x-envoy-decorator-operation).
	for _, c := range []struct {
		s    otlptest.Span
		want string
	}{
		{gwServer, "productpage.default.svc.cluster.local:9080/productpage"},
		{ppServer, "productpage.default.svc.cluster.local:9080/productpage"},
		{ppToReviews, "reviews.default.svc.cluster.local:9080/*"},
		{rvServer, "reviews.default.svc.cluster.local:9080/*"},
		{rvToRatings, "ratings.default.svc.cluster.local:9080/*"},
		{rtServer, "ratings.default.svc.cluster.local:9080/*"},
	} {
		if c.s.Name != c.want {
			t.Errorf("%s span of %s named %q, want %q", c.s.Kind, c.s.Service, c.s.Name, c.want)
		}
	}
	if rtServer.Attrs["istio.canonical_service"] != "ratings" || rtServer.Attrs["istio.namespace"] != "default" {
		t.Errorf("ratings' Istio tags %v", rtServer.Attrs)
	}
	if rtServer.Attrs["guid:x-request-id"] != gwServer.Attrs["guid:x-request-id"] {
		t.Errorf("x-request-id changed on the way: gateway %q, ratings %q", gwServer.Attrs["guid:x-request-id"], rtServer.Attrs["guid:x-request-id"])
	}
	return all
}

// TestTracingBookinfo: with 100 % sampling to an OTLP receiver, one page
// view through the ingress gateway is one connected trace; a page view
// arriving with a W3C traceparent or with B3 headers continues that trace.
func TestTracingBookinfo(t *testing.T) {
	_, col, pageURL := startTracedBookinfo(t, tracingMeshConfig)

	t.Run("new trace", func(t *testing.T) {
		pageView(t, pageURL, map[string]string{"X-Request-Id": "e2e-trace-new"})
		var trace string
		col.Wait(t, 30*time.Second, "the gateway's root span", func(ss []otlptest.Span) bool {
			for _, s := range ss {
				if s.Kind == "SERVER" && s.ParentSpanID == "" && s.Attrs["guid:x-request-id"] == "e2e-trace-new" {
					trace = s.TraceID
					return true
				}
			}
			return false
		})
		checkPageTrace(t, col, trace, "")
	})
	t.Run("w3c traceparent", func(t *testing.T) {
		const trace, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
		pageView(t, pageURL, map[string]string{"Traceparent": "00-" + trace + "-" + parent + "-01"})
		checkPageTrace(t, col, trace, parent)
	})
	t.Run("b3 multi header", func(t *testing.T) {
		const trace, parent = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
		pageView(t, pageURL, map[string]string{"X-B3-Traceid": trace, "X-B3-Spanid": parent, "X-B3-Sampled": "1"})
		checkPageTrace(t, col, trace, parent)
	})
	t.Run("b3 single header", func(t *testing.T) {
		const trace, parent = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
		pageView(t, pageURL, map[string]string{"B3": trace + "-" + parent + "-1"})
		checkPageTrace(t, col, trace, parent)
	})
}

// TestTracingTelemetryAPI drives tracing with Telemetry resources at the
// three scopes, on a mesh whose config only defines the provider: a
// mesh-wide Telemetry turns tracing on with custom tags, a namespace's
// replaces the tags of its workloads only, and a workload's
// disableSpanReporting silences that workload only.
func TestTracingTelemetryAPI(t *testing.T) {
	const providerOnly = `
extensionProviders:
- name: otel
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
`
	m, col, pageURL := startTracedBookinfo(t, providerOnly)
	wl := []string{"productpage-v1", "details-v1", "reviews-v2", "ratings-v1"}

	// traceOf waits for the gateway's root span of request rid.
	traceOf := func(t *testing.T, rid string) string {
		t.Helper()
		var trace string
		col.Wait(t, 30*time.Second, "the root span of "+rid, func(ss []otlptest.Span) bool {
			for _, s := range ss {
				if s.Kind == "SERVER" && s.ParentSpanID == "" && s.Attrs["guid:x-request-id"] == rid {
					trace = s.TraceID
					return true
				}
			}
			return false
		})
		return trace
	}

	t.Run("mesh-wide", func(t *testing.T) {
		applyWhenAccepted(t, m, `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 100
    customTags:
      team: {literal: {value: bookinfo}}
      rid: {header: {name: x-request-id, defaultValue: none}}
      home: {environment: {name: LOOM_E2E_UNSET_VARIABLE, defaultValue: none}}
`)
		pageView(t, pageURL, map[string]string{"X-Request-Id": "e2e-tel-mesh"})
		spans := checkPageTrace(t, col, traceOf(t, "e2e-tel-mesh"), "")
		for _, s := range spans {
			if s.Attrs["team"] != "bookinfo" || s.Attrs["rid"] != "e2e-tel-mesh" || s.Attrs["home"] != "none" {
				t.Errorf("span %s of %s: custom tags %v", s.Name, s.Service, s.Attrs)
			}
		}
	})
	t.Run("namespace", func(t *testing.T) {
		m.applyFor(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns-default, namespace: default}
spec:
  tracing:
  - customTags:
      ns: {literal: {value: default-namespace}}
`, wl...)
		pageView(t, pageURL, map[string]string{"X-Request-Id": "e2e-tel-ns"})
		spans := checkPageTrace(t, col, traceOf(t, "e2e-tel-ns"), "")
		for _, s := range spans {
			inDefault := s.Service != "istio-ingressgateway.istio-system"
			if inDefault && (s.Attrs["ns"] != "default-namespace" || s.Attrs["team"] != "") {
				t.Errorf("span %s of %s (namespace default): tags %v, want the namespace's tags only", s.Name, s.Service, s.Attrs)
			}
			if !inDefault && (s.Attrs["team"] != "bookinfo" || s.Attrs["ns"] != "") {
				t.Errorf("gateway span %s: tags %v, want the mesh's", s.Name, s.Attrs)
			}
		}
	})
	t.Run("workload", func(t *testing.T) {
		m.applyFor(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ratings-quiet, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  tracing:
  - disableSpanReporting: true
`, "ratings-v1")
		pageView(t, pageURL, map[string]string{"X-Request-Id": "e2e-tel-wl"})
		trace := traceOf(t, "e2e-tel-wl")
		// Everything but ratings' server span: 8 spans.
		col.Wait(t, 30*time.Second, "the 8 spans outside ratings", func(ss []otlptest.Span) bool {
			n := 0
			for _, s := range ss {
				if s.TraceID == trace && s.Service != "ratings.default" {
					n++
				}
			}
			return n >= 8
		})
		// ratings' proxy exports within its 1 s batch timeout; give it
		// several to show that it does not.
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) {
			for _, s := range col.Spans() {
				if s.TraceID == trace && s.Service == "ratings.default" {
					t.Fatalf("ratings reported a span with disableSpanReporting: %+v", s)
				}
			}
			<-time.After(100 * time.Millisecond) // polling for an absence over a bounded window
		}
		// And reviews' client span to ratings is still there.
		found := false
		for _, s := range col.Spans() {
			if s.TraceID == trace && s.Service == "reviews.default" && s.Kind == "CLIENT" {
				found = true
			}
		}
		if !found {
			t.Error("reviews' client span to ratings is missing")
		}
	})
}

// applyWhenAccepted applies yaml once loomd accepts it (a Telemetry naming
// a provider is refused until loomd has read the mesh config defining it)
// and waits for every proxy to ACK the push that follows.
func applyWhenAccepted(t *testing.T, m *appMesh, yaml string) {
	t.Helper()
	before := m.ackedVersions()
	var lastErr error
	if !poll(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, lastErr = m.loomd.Apply(ctx, "e2e", []byte(yaml))
		return lastErr == nil
	}) {
		t.Fatalf("apply: %v", lastErr)
	}
	m.waitPushedSince(before)
}

// TestTracingZipkin: with the zipkin provider (Istio's default B3
// propagation, no traceparent injected), a page view is still one
// connected trace at a real Zipkin v2 JSON receiver: Bookinfo carries the
// x-b3-* headers.
func TestTracingZipkin(t *testing.T) {
	_, _, pageURL := startTracedBookinfo(t, `
defaultProviders:
  tracing: [zipkin]
extensionProviders:
- name: zipkin
  zipkin:
    service: zipkin.istio-system.svc.cluster.local
    port: 9411
defaultConfig:
  tracing:
    sampling: 100
`)
	z := tracedZipkin
	pageView(t, pageURL, map[string]string{"X-Request-Id": "e2e-zipkin"})
	var trace string
	z.Wait(t, 30*time.Second, "the gateway's root span", func(ss []otlptest.Span) bool {
		for _, s := range ss {
			if s.Kind == "SERVER" && s.ParentSpanID == "" && s.Attrs["guid:x-request-id"] == "e2e-zipkin" {
				trace = s.TraceID
				return true
			}
		}
		return false
	})
	// Zipkin's service name is the node's cluster: the workload's name.
	checkTrace(t, z, trace, "", map[string]string{"gateway": "istio-ingressgateway", "productpage": "productpage-v1",
		"details": "details-v1", "reviews": "reviews-v2", "ratings": "ratings-v1"})
}

// TestOTelAccessLogBookinfo: Istio's otel-loki-accesslog sample, applied
// unchanged, with an envoyOtelAls provider named otel in mesh config: every
// proxy on a page view's path exports its access log entry as an OTLP log
// record to the collector, the body in Istio's text format.
func TestOTelAccessLogBookinfo(t *testing.T) {
	const meshConfig = `
extensionProviders:
- name: otel
  envoyOtelAls:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
`
	m, col, pageURL := startTracedBookinfo(t, meshConfig)
	sample, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "istio-samples", "telemetry", "otel-loki-accesslog-telemetry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	applyWhenAccepted(t, m, string(sample))
	// The gateway, productpage (in and out), details, reviews (in and
	// out) and ratings log the request, each with the page's request id.
	const rid = "e2e-otel-accesslog"
	deadline := time.Now().Add(30 * time.Second)
	for {
		pageView(t, pageURL, map[string]string{"X-Request-Id": rid})
		logs := col.WaitLogs(t, 30*time.Second, "access log records", func(ls []otlptest.Log) bool { return len(ls) > 0 })
		nodes := map[string]bool{}
		for _, l := range logs {
			if strings.Contains(l.Body, `"`+rid+`"`) {
				nodes[l.Resource["node_name"]] = true
				if !strings.HasPrefix(l.Body, "[") || !strings.Contains(l.Body, `"GET /`) || strings.HasSuffix(l.Body, "\n") {
					t.Fatalf("record body %q, want one line in Istio's text format", l.Body)
				}
				if l.Resource["log_name"] != "otel_envoy_accesslog" {
					t.Fatalf("record resource %v, want log_name otel_envoy_accesslog", l.Resource)
				}
			}
		}
		// 5 proxies: ingress gateway, productpage, details, reviews, ratings.
		if len(nodes) >= 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("records of %s from %d proxies (%v), want all 5", rid, len(nodes), nodes)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestOTelAccessLogTraceContextBookinfo: with tracing and Istio's
// envoyOtelAls access log both on, every proxy's log record of a page view
// carries the page's trace id and the span id of a span that proxy
// exported for it (Envoy's active span), so a log backend joins the
// records to the trace.
func TestOTelAccessLogTraceContextBookinfo(t *testing.T) {
	const meshConfig = `
defaultProviders:
  tracing: [otel-tracing]
extensionProviders:
- name: otel-tracing
  opentelemetry:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
- name: otel
  envoyOtelAls:
    service: otel-collector.observability.svc.cluster.local
    port: 4317
defaultConfig:
  tracing:
    sampling: 100
`
	m, col, pageURL := startTracedBookinfo(t, meshConfig)
	sample, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "istio-samples", "telemetry", "otel-loki-accesslog-telemetry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	applyWhenAccepted(t, m, string(sample))
	const rid = "e2e-otel-accesslog-trace"
	// Page views until one trace has the records of all 5 proxies (the
	// Telemetry reaches them one by one).
	var records []otlptest.Log
	deadline := time.Now().Add(30 * time.Second)
	for done := false; !done; {
		pageView(t, pageURL, map[string]string{"X-Request-Id": rid})
		records = records[:0]
		nodes := map[string]map[string]bool{} // trace id -> node names
		for _, l := range col.WaitLogs(t, 30*time.Second, "access log records", func(ls []otlptest.Log) bool { return len(ls) > 0 }) {
			if strings.Contains(l.Body, `"`+rid+`"`) {
				records = append(records, l)
				if nodes[l.TraceID] == nil {
					nodes[l.TraceID] = map[string]bool{}
				}
				nodes[l.TraceID][l.Resource["node_name"]] = true
			}
		}
		for _, n := range nodes {
			done = done || len(n) >= 5
		}
		if !done && time.Now().After(deadline) {
			t.Fatalf("records of %s by trace and proxy: %v, want one trace from all 5", rid, nodes)
		}
		if !done {
			time.Sleep(500 * time.Millisecond)
		}
	}
	// The page views before every proxy logged are traces of their own:
	// each record's trace must hold its span.
	spanIDs := map[string]string{} // span id -> trace id
	col.Wait(t, 30*time.Second, "the spans of every record", func(ss []otlptest.Span) bool {
		for _, s := range ss {
			spanIDs[s.SpanID] = s.TraceID
		}
		for _, l := range records {
			if _, ok := spanIDs[l.SpanID]; !ok {
				return false
			}
		}
		return true
	})
	for _, l := range records {
		if len(l.TraceID) != 32 || spanIDs[l.SpanID] != l.TraceID {
			t.Errorf("record from %s: trace_id %q, span_id %q (exported in trace %q)", l.Resource["node_name"], l.TraceID, l.SpanID, spanIDs[l.SpanID])
		}
	}

	// Istio's otel-tracing sample, unchanged, applies too: loomd accepts
	// it (its provider is this mesh config's; no namespace, so the
	// default namespace's) and Bookinfo's proxies there ACK the push that
	// sets their sampling to 0 %; the mesh goes on serving and logging.
	tracingSample, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "istio-samples", "telemetry", "otel-tracing-telemetry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m.applyFor(string(tracingSample), "productpage-v1", "details-v1", "reviews-v2", "ratings-v1")
	const after = "e2e-otel-tracing-sample"
	pageView(t, pageURL, map[string]string{"X-Request-Id": after})
	col.WaitLogs(t, 30*time.Second, "a record of the page view after the otel-tracing sample", func(ls []otlptest.Log) bool {
		for _, l := range ls {
			if strings.Contains(l.Body, `"`+after+`"`) {
				return true
			}
		}
		return false
	})
}
