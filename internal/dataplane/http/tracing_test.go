package http_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil/otlptest"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const collectorCluster = "outbound|4317||otel-collector.observability.svc.cluster.local"

// otelTracing is an HCM tracing to the OTLP collector cluster at
// randomPct percent.
func otelTracing(t testing.TB, randomPct float64, spawn bool) *hcmv3.HttpConnectionManager_Tracing {
	oc := &tracev3.OpenTelemetryConfig{ServiceName: "productpage.default", GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: collectorCluster, Authority: "otel-collector.observability.svc.cluster.local"}}}}
	tr := &hcmv3.HttpConnectionManager_Tracing{
		ClientSampling:  &typev3.Percent{Value: 100},
		RandomSampling:  &typev3.Percent{Value: randomPct},
		OverallSampling: &typev3.Percent{Value: 100},
		CustomTags: []*tracingv3.CustomTag{
			{Tag: "istio.canonical_service", Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "productpage"}}},
			{Tag: "user", Type: &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: "x-user", DefaultValue: "anon"}}},
			{Tag: "region", Type: &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{Name: "LOOM_TEST_REGION", DefaultValue: "nowhere"}}},
		},
		Provider: &tracev3.Tracing_Http{Name: config.TracerOpenTelemetry, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: xdstest.MustAny(t, oc)}},
	}
	if spawn {
		tr.SpawnUpstreamSpan = wrapperspb.Bool(true)
	}
	return tr
}

// tracedListener is httpListener with traffic direction dir and tracing tr.
func tracedListener(t testing.TB, name, addr, route string, dir corev3.TrafficDirection, tr *hcmv3.HttpConnectionManager_Tracing) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: route,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: config.RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}},
		Tracing: tr,
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          xdstest.HostPortAddress(t, addr),
		TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: config.HCMFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)}}}}},
	}
}

// tracingProxy is a proxy whose connection manager traces.
type tracingProxy struct {
	*proxy
	tracing *telemetry.Tracing
}

func startTracingProxy(t testing.TB, g *config.Generation) *tracingProxy {
	t.Helper()
	var tracing *telemetry.Tracing
	p := startProxyOpts(t, g, nil, func(clusters *upstream.ClusterManager) dphttp.Options {
		var err error
		tracing, err = telemetry.NewTracing(telemetry.TracingOptions{Collectors: clusters, NodeID: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local",
			Zone: "zone-a", ServiceCluster: "productpage.default", BatchTimeout: 20 * time.Millisecond,
			Getenv: func(k string) string {
				if k == "LOOM_TEST_REGION" {
					return "eu-west"
				}
				return ""
			}})
		if err != nil {
			t.Fatal(err)
		}
		return dphttp.Options{Tracing: tracing}
	}, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(ctx); err != nil {
			t.Logf("tracing shutdown: %v", err)
		}
	})
	return &tracingProxy{proxy: p, tracing: tracing}
}

// twoHops is one proxy with an egress listener "l" (a sidecar's outbound)
// routing to its own ingress listener "in" (the next sidecar's inbound),
// which routes to app: two hops of a mesh in one process.
func twoHops(t *testing.T, collector string, pct float64, app *backend) *tracingProxy {
	return twoHopsDecorated(t, collector, pct, app, nil, nil, false)
}

// twoHopsDecorated is twoHops whose outbound and inbound routes carry the
// decorators out and in (nil: none); with inLocal the inbound route
// answers 418 itself (a direct response) instead of routing to app.
func twoHopsDecorated(t *testing.T, collector string, pct float64, app *backend, out, in *routev3.Decorator, inLocal bool) *tracingProxy {
	t.Helper()
	lAddr, inAddr := closedAddr(t), closedAddr(t)
	outRoute, inRoute := prefixRoute("reviews", "/", "outbound|9080||reviews"), prefixRoute("app", "/", "inbound|9080||")
	if inLocal {
		inRoute.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: http.StatusTeapot}}
	}
	outRoute.Decorator, inRoute.Decorator = out, in
	g := build(t, nil,
		[]*listenerv3.Listener{
			tracedListener(t, "l", lAddr, "out", corev3.TrafficDirection_OUTBOUND, otelTracing(t, pct, false)),
			tracedListener(t, "in", inAddr, "inbound", corev3.TrafficDirection_INBOUND, otelTracing(t, pct, false)),
		},
		[]*routev3.RouteConfiguration{
			routeConfig("out", vhost("reviews", []string{"*"}, outRoute)),
			routeConfig("inbound", vhost("inbound", []string{"*"}, inRoute)),
		},
		[]*clusterv3.Cluster{
			staticCluster(t, "outbound|9080||reviews", false, inAddr),
			staticCluster(t, "inbound|9080||", false, app.addr),
			staticCluster(t, collectorCluster, true, collector),
		})
	return startTracingProxy(t, g)
}

func byKind(spans []otlptest.Span, traceID, kind string) []otlptest.Span {
	var out []otlptest.Span
	for _, s := range spans {
		if s.TraceID == traceID && s.Kind == kind {
			out = append(out, s)
		}
	}
	return out
}

// TestTracingW3C: a request with a sampled traceparent continues its
// trace through both hops; the client span is the server span's parent,
// the app sees the server span as its parent, and the spans carry
// Envoy's tags.
func TestTracingW3C(t *testing.T) {
	col := otlptest.StartOTLP(t, "127.0.0.1:0")
	app := startBackend(t, "reviews", false, nil)
	p := twoHops(t, col.Addr, 0, app) // 0 %: only the incoming flag samples
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parent = "00f067aa0ba902b7"
	r := p.do("GET", "reviews:9080", "/reviews/0?x=1", map[string]string{
		"Traceparent": "00-" + traceID + "-" + parent + "-01", "Tracestate": "vendor=abc",
		"X-Request-Id": "rid-w3c", "X-User": "jason", "User-Agent": "tracing-test",
	}, nil)
	if r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	spans := col.Wait(t, 10*time.Second, "a client and a server span", func(s []otlptest.Span) bool {
		return len(byKind(s, traceID, "CLIENT")) == 1 && len(byKind(s, traceID, "SERVER")) == 1
	})
	client, server := byKind(spans, traceID, "CLIENT")[0], byKind(spans, traceID, "SERVER")[0]
	if client.ParentSpanID != parent {
		t.Errorf("client span's parent %q, want the incoming %q", client.ParentSpanID, parent)
	}
	if server.ParentSpanID != client.SpanID {
		t.Errorf("server span's parent %q, want the client span %q", server.ParentSpanID, client.SpanID)
	}
	if client.Name != "egress reviews:9080" || server.Name != "ingress" {
		t.Errorf("span names %q, %q; want Envoy's %q, %q", client.Name, server.Name, "egress reviews:9080", "ingress")
	}
	if client.Service != "productpage.default" {
		t.Errorf("service.name %q", client.Service)
	}
	for k, v := range map[string]string{
		"component": "proxy", "node_id": "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local", "zone": "zone-a",
		"guid:x-request-id": "rid-w3c", "http.method": "GET", "http.url": "http://reviews:9080/reviews/0?x=1",
		"http.status_code": "200", "response_flags": "-", "upstream_cluster": "outbound|9080||reviews",
		"http.protocol": "HTTP/1.1", "user_agent": "tracing-test", "request_size": "0", "response_size": "7",
		"istio.canonical_service": "productpage", "user": "jason", "region": "eu-west", "downstream_cluster": "-",
	} {
		if got := client.Attrs[k]; got != v {
			t.Errorf("client span tag %s = %q, want %q", k, got, v)
		}
	}
	if server.Attrs["upstream_cluster"] != "inbound|9080||" {
		t.Errorf("server span upstream_cluster %q", server.Attrs["upstream_cluster"])
	}
	last := app.last.Load()
	tp := last.Header.Get("Traceparent")
	if want := "00-" + traceID + "-" + server.SpanID + "-01"; tp != want {
		t.Errorf("app got traceparent %q, want %q", tp, want)
	}
	if ts := last.Header.Get("Tracestate"); ts != "vendor=abc" {
		t.Errorf("app got tracestate %q, want it carried", ts)
	}
	if got := last.Header.Get("X-B3-Traceid"); got != traceID {
		t.Errorf("app got x-b3-traceid %q, want %q", got, traceID)
	}
	if got := last.Header.Get("X-B3-Parentspanid"); got != client.SpanID {
		t.Errorf("app got x-b3-parentspanid %q, want %q", got, client.SpanID)
	}
}

// TestTracingDecorator: route decorators name the spans as Envoy's do
// (Istio's "HOST:PORT/PATH" span names). The egress route's operation
// names the client span and, propagated in x-envoy-decorator-operation,
// the server span; without propagation the ingress route names its own
// span and returns its operation, which renames the client span. Neither
// the app nor the client ever sees the header.
func TestTracingDecorator(t *testing.T) {
	const outOp, inOp = "reviews.default.svc.cluster.local:9080/*", "reviews.default.svc.cluster.local:9080/inbound*"
	tests := []struct {
		name                 string
		propagate, inLocal   bool
		wantClient, wantServ string
	}{
		{"propagate", true, false, outOp, outOp},
		{"no propagate", false, false, inOp, inOp},
		// A local reply carries the ingress operation back too.
		{"no propagate, local reply", false, true, inOp, inOp},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := otlptest.StartOTLP(t, "127.0.0.1:0")
			app := startBackend(t, "reviews", false, nil)
			out := &routev3.Decorator{Operation: outOp}
			if !tt.propagate {
				out.Propagate = wrapperspb.Bool(false)
			}
			p := twoHopsDecorated(t, col.Addr, 100, app, out, &routev3.Decorator{Operation: inOp}, tt.inLocal)
			traceID := fmt.Sprintf("%032x", i+1)
			r := p.do("GET", "reviews:9080", "/", map[string]string{"Traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}, nil)
			if want := map[bool]int{false: 200, true: http.StatusTeapot}[tt.inLocal]; r.code != want {
				t.Fatalf("status %d, want %d", r.code, want)
			}
			if v, ok := r.header[telemetry.HeaderDecoratorOperation]; ok {
				t.Errorf("client got %s: %q; the egress proxy must remove it", telemetry.HeaderDecoratorOperation, v)
			}
			if last := app.last.Load(); last != nil && last.Header[telemetry.HeaderDecoratorOperation] != nil {
				v := last.Header[telemetry.HeaderDecoratorOperation]
				t.Errorf("app got %s: %q; the ingress proxy must remove it", telemetry.HeaderDecoratorOperation, v)
			}
			spans := col.Wait(t, 10*time.Second, "a client and a server span", func(s []otlptest.Span) bool {
				return len(byKind(s, traceID, "CLIENT")) == 1 && len(byKind(s, traceID, "SERVER")) == 1
			})
			client, server := byKind(spans, traceID, "CLIENT")[0], byKind(spans, traceID, "SERVER")[0]
			if client.Name != tt.wantClient || server.Name != tt.wantServ {
				t.Errorf("span names client %q, server %q; want %q, %q", client.Name, server.Name, tt.wantClient, tt.wantServ)
			}
		})
	}
}

// TestTracingB3 continues B3 multi- and single-header contexts.
func TestTracingB3(t *testing.T) {
	col := otlptest.StartOTLP(t, "127.0.0.1:0")
	app := startBackend(t, "reviews", false, nil)
	p := twoHops(t, col.Addr, 0, app)
	tests := []struct {
		name, traceID, parent string
		hdr                   map[string]string
	}{
		{"multi", "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1", map[string]string{
			"X-B3-Traceid": "80f198ee56343ba864fe8b2a57d3eff7", "X-B3-Spanid": "e457b5a2e4d86bd1", "X-B3-Sampled": "1"}},
		{"single", "a1b2c3d4e5f60718293a4b5c6d7e8f90", "1122334455667788", map[string]string{
			"B3": "a1b2c3d4e5f60718293a4b5c6d7e8f90-1122334455667788-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := p.do("GET", "reviews:9080", "/", tt.hdr, nil); r.code != 200 {
				t.Fatalf("status %d", r.code)
			}
			spans := col.Wait(t, 10*time.Second, "both spans of "+tt.traceID, func(s []otlptest.Span) bool {
				return len(byKind(s, tt.traceID, "CLIENT")) == 1 && len(byKind(s, tt.traceID, "SERVER")) == 1
			})
			client, server := byKind(spans, tt.traceID, "CLIENT")[0], byKind(spans, tt.traceID, "SERVER")[0]
			if client.ParentSpanID != tt.parent || server.ParentSpanID != client.SpanID {
				t.Errorf("parents: client %q (want %q), server %q (want %q)", client.ParentSpanID, tt.parent, server.ParentSpanID, client.SpanID)
			}
			last := app.last.Load()
			if tt.name == "single" {
				if want := tt.traceID + "-" + server.SpanID + "-1"; last.Header.Get("B3") != want {
					t.Errorf("app got b3 %q, want it rewritten to %q", last.Header.Get("B3"), want)
				}
			}
		})
	}
}

// TestTracingSamplingOff: at 0 % and no incoming context nothing is
// exported, yet the app gets an unsampled context and a request id; an
// unsampled incoming context stays unsampled at 100 %.
func TestTracingSamplingOff(t *testing.T) {
	col := otlptest.StartOTLP(t, "127.0.0.1:0")
	app := startBackend(t, "reviews", false, nil)
	p := twoHops(t, col.Addr, 0, app)
	for range 20 {
		if r := p.do("GET", "reviews:9080", "/", nil, nil); r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
	}
	last := app.last.Load()
	tp := last.Header.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("app got traceparent %q, want an unsampled context", tp)
	}
	if last.Header.Get("X-Request-Id") == "" {
		t.Error("no x-request-id generated")
	}
	// Flushing exports whatever was recorded: nothing.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.tracing.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(col.Spans()); n != 0 {
		t.Errorf("%d spans exported at 0 %% sampling", n)
	}

	p100 := twoHops(t, col.Addr, 100, app)
	r := p100.do("GET", "reviews:9080", "/", map[string]string{"Traceparent": "00-11111111111111111111111111111111-2222222222222222-00"}, nil)
	if r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	if err := p100.tracing.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(col.Spans()); n != 0 {
		t.Errorf("%d spans exported for an unsampled parent", n)
	}
	if tp := app.last.Load().Header.Get("Traceparent"); !strings.HasPrefix(tp, "00-11111111111111111111111111111111-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("app got %q, want the trace continued unsampled", tp)
	}
	// At 100 % a request without context starts a sampled trace.
	if r := p100.do("GET", "reviews:9080", "/", nil, nil); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	col.Wait(t, 10*time.Second, "a new trace's two spans", func(s []otlptest.Span) bool { return len(s) == 2 && s[0].TraceID == s[1].TraceID })
}

// TestTracingCollectorDown: with the collector's endpoint refusing
// connections every request still succeeds at once.
func TestTracingCollectorDown(t *testing.T) {
	app := startBackend(t, "reviews", false, nil)
	p := twoHops(t, closedAddr(t), 100, app)
	start := time.Now()
	for i := range 200 {
		if r := p.do("GET", "reviews:9080", "/", nil, nil); r.code != 200 {
			t.Fatalf("request %d: status %d", i, r.code)
		}
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("200 requests took %v with the collector down", d)
	}
}

// TestTracingSpawnUpstreamSpan: a gateway's HCM span is a server span
// whose child is the router's client span, the upstream's parent.
func TestTracingSpawnUpstreamSpan(t *testing.T) {
	col := otlptest.StartOTLP(t, "127.0.0.1:0")
	app := startBackend(t, "productpage", false, nil)
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{tracedListener(t, "l", lAddr, "gw", corev3.TrafficDirection_OUTBOUND, otelTracing(t, 100, true))},
		[]*routev3.RouteConfiguration{routeConfig("gw", vhost("pp", []string{"*"}, prefixRoute("pp", "/", "outbound|9080||productpage")))},
		[]*clusterv3.Cluster{
			staticCluster(t, "outbound|9080||productpage", false, app.addr),
			staticCluster(t, collectorCluster, true, col.Addr),
		})
	p := startTracingProxy(t, g)
	if r := p.do("GET", "bookinfo.example", "/productpage", nil, nil); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	spans := col.Wait(t, 10*time.Second, "server and upstream spans", func(s []otlptest.Span) bool { return len(s) == 2 })
	var server, client otlptest.Span
	for _, s := range spans {
		switch s.Kind {
		case "SERVER":
			server = s
		case "CLIENT":
			client = s
		}
	}
	if server.Name != "egress bookinfo.example" || client.Name != "router outbound|9080||productpage egress" {
		t.Errorf("names %q, %q", server.Name, client.Name)
	}
	if client.ParentSpanID != server.SpanID || server.ParentSpanID != "" {
		t.Errorf("client's parent %q (want %q), server's parent %q (want root)", client.ParentSpanID, server.SpanID, server.ParentSpanID)
	}
	if client.Attrs["http.status_code"] != "200" || client.Attrs["upstream_address"] != app.addr ||
		client.Attrs["istio.canonical_service"] != "productpage" || client.Attrs["user"] != "anon" {
		t.Errorf("upstream span tags %v", client.Attrs)
	}
	if tp := app.last.Load().Header.Get("Traceparent"); !strings.Contains(tp, "-"+client.SpanID+"-") {
		t.Errorf("app's traceparent %q, want the upstream span %s as parent", tp, client.SpanID)
	}
}

// TestTracingZipkin exports Zipkin v2 JSON through the collector's
// cluster, with 64-bit trace ids when trace_id_128bit is off.
func TestTracingZipkin(t *testing.T) {
	z := otlptest.StartZipkin(t, "127.0.0.1:0")
	app := startBackend(t, "reviews", false, nil)
	zc := &tracev3.ZipkinConfig{CollectorCluster: "outbound|9411||zipkin", CollectorEndpoint: "/api/v2/spans",
		CollectorHostname: "zipkin.istio-system", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
		SharedSpanContext: wrapperspb.Bool(false)}
	tr := &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 100},
		Provider: &tracev3.Tracing_Http{Name: config.TracerZipkin, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: xdstest.MustAny(t, zc)}}}
	lAddr := closedAddr(t)
	g := build(t, nil,
		[]*listenerv3.Listener{tracedListener(t, "l", lAddr, "out", corev3.TrafficDirection_OUTBOUND, tr)},
		[]*routev3.RouteConfiguration{routeConfig("out", vhost("r", []string{"*"}, prefixRoute("r", "/", "reviews")))},
		[]*clusterv3.Cluster{staticCluster(t, "reviews", false, app.addr), staticCluster(t, "outbound|9411||zipkin", false, z.Addr)})
	p := startTracingProxy(t, g)
	if r := p.do("GET", "reviews:9080", "/", nil, nil); r.code != 200 {
		t.Fatalf("status %d", r.code)
	}
	spans := z.Wait(t, 10*time.Second, "one zipkin span", func(s []otlptest.Span) bool { return len(s) == 1 })
	s := spans[0]
	if s.Kind != "CLIENT" || s.Service != "productpage.default" || len(s.TraceID) != 16 || s.Attrs["http.status_code"] != "200" {
		t.Errorf("zipkin span %+v", s)
	}
	h := app.last.Load().Header
	if h.Get("X-B3-Traceid") != s.TraceID || h.Get("X-B3-Spanid") != s.SpanID || h.Get("X-B3-Sampled") != "1" {
		t.Errorf("app's B3 headers %v, want span %s/%s", h, s.TraceID, s.SpanID)
	}
	if h.Get("Traceparent") != "" {
		t.Errorf("USE_B3 injects no traceparent, got %q", h.Get("Traceparent"))
	}
}
