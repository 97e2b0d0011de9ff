package http_test

import (
	"cmp"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	celv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/filters/cel/v3"
	grpcalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otelalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	dphttp "github.com/loom-mesh/loom/internal/dataplane/http"
	"github.com/loom-mesh/loom/internal/dataplane/telemetry"
	"github.com/loom-mesh/loom/internal/dataplane/upstream"
	"github.com/loom-mesh/loom/internal/testutil/otlptest"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const logCollector = "outbound|4317||opentelemetry-collector.observability.svc.cluster.local"

// otelAccessLog is Istio's envoyOtelAls access log (buildOpenTelemetryAccessLogConfig)
// with body, one attribute and, when filter is set, a CEL filter.
func otelAccessLog(t testing.TB, body, filter string) *accesslogv3.AccessLog {
	cfg := &otelalsv3.OpenTelemetryAccessLogConfig{
		CommonConfig: &grpcalsv3.CommonGrpcAccessLogConfig{
			LogName: "otel_envoy_accesslog",
			GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
				ClusterName: logCollector, Authority: "opentelemetry-collector.observability.svc.cluster.local"}}},
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		Body: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: body}},
		Attributes: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{
			{Key: "status", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "%RESPONSE_CODE%"}}},
		}},
		ResourceAttributes: &commonpb.KeyValueList{Values: []*commonpb.KeyValue{
			{Key: "team", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "bookinfo"}}},
		}},
	}
	al := &accesslogv3.AccessLog{Name: config.OTelAccessLogName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: xdstest.MustAny(t, cfg)}}
	if filter != "" {
		al.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_ExtensionFilter{ExtensionFilter: &accesslogv3.ExtensionFilter{
			Name: config.CELFilterName, ConfigType: &accesslogv3.ExtensionFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &celv3.ExpressionFilter{Expression: filter})}}}}
	}
	return al
}

// TestOTelAccessLog: an OpenTelemetry access log (Istio's envoyOtelAls)
// exports one OTLP log record per request to the collector's cluster,
// body and attributes formatted from the request, the resource carrying
// Envoy's builtin labels and the configured attributes; its CEL filter
// keeps out what it does not match.
func TestOTelAccessLog(t *testing.T) {
	col := otlptest.StartOTLP(t, "127.0.0.1:0")
	app := startBackend(t, "reviews", false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	})
	lAddr := closedAddr(t)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "l",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "out",
			ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: config.RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}},
		AccessLog: []*accesslogv3.AccessLog{otelAccessLog(t, `%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE% "%UPSTREAM_CLUSTER_RAW%"`,
			"response.code != 204")},
	}
	g := build(t, nil,
		[]*listenerv3.Listener{{Name: "l", Address: xdstest.HostPortAddress(t, lAddr), TrafficDirection: corev3.TrafficDirection_OUTBOUND,
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: config.HCMFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)}}}}}}},
		[]*routev3.RouteConfiguration{routeConfig("out", vhost("reviews", []string{"*"}, prefixRoute("reviews", "/", "outbound|9080||reviews")))},
		[]*clusterv3.Cluster{staticCluster(t, "outbound|9080||reviews", false, app.addr), staticCluster(t, logCollector, true, col.Addr)})

	sinks := telemetry.NewSinks(nil, nil, nil)
	ctx, stopSinks := context.WithCancel(context.Background())
	sinksDone := make(chan struct{})
	p := startProxyOpts(t, g, nil, func(clusters *upstream.ClusterManager) dphttp.Options {
		sinks.ExportOTel(telemetry.OTelLogOptions{Collectors: clusters, NodeID: "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local",
			Zone: "zone-a", ServiceCluster: "productpage.default", ExportInterval: 20 * time.Millisecond})
		go func() { defer close(sinksDone); sinks.Run(ctx) }()
		return dphttp.Options{Sinks: sinks}
	}, func() {
		stopSinks()
		<-sinksDone
	})

	if r := p.do("GET", "reviews:9080", "/teapot", nil, nil); r.code != http.StatusTeapot {
		t.Fatalf("status %d", r.code)
	}
	if r := p.do("POST", "reviews:9080", "/ok", nil, strings.NewReader("x")); r.code != http.StatusOK {
		t.Fatalf("status %d", r.code)
	}
	logs := col.WaitLogs(t, 10*time.Second, "two log records", func(ls []otlptest.Log) bool { return len(ls) >= 2 })
	want := map[string]string{
		`GET /teapot 418 "outbound|9080||reviews"`: "418",
		`POST /ok 200 "outbound|9080||reviews"`:    "200",
	}
	for _, l := range logs {
		status, ok := want[l.Body]
		if !ok {
			t.Errorf("unexpected record body %q", l.Body)
			continue
		}
		delete(want, l.Body)
		if l.Attrs["status"] != status {
			t.Errorf("record %q: attributes %v, want status %s", l.Body, l.Attrs, status)
		}
		for k, v := range map[string]string{"log_name": "otel_envoy_accesslog", "zone_name": "zone-a", "cluster_name": "productpage.default",
			"node_name": "sidecar~127.0.0.11~productpage-v1.default~default.svc.cluster.local", "team": "bookinfo"} {
			if l.Resource[k] != v {
				t.Errorf("record %q: resource %s = %q, want %q", l.Body, k, l.Resource[k], v)
			}
		}
		if l.Time.IsZero() || time.Since(l.Time) > time.Minute {
			t.Errorf("record %q: time %v, want the request's start", l.Body, l.Time)
		}
	}
	if len(want) > 0 {
		t.Errorf("records missing: %v", want)
	}

	// The filter keeps a 204 out; a later request shows the exporter is
	// still running and nothing else arrived.
	if r := p.do("GET", "reviews:9080", "/empty", nil, nil); r.code != http.StatusNoContent {
		t.Fatalf("status %d", r.code)
	}
	if r := p.do("GET", "reviews:9080", "/teapot", nil, nil); r.code != http.StatusTeapot {
		t.Fatalf("status %d", r.code)
	}
	col.WaitLogs(t, 10*time.Second, "the third record", func(ls []otlptest.Log) bool { return len(ls) >= 3 })
	for _, l := range col.Logs() {
		if strings.Contains(l.Body, " 204 ") {
			t.Errorf("the filter let through %q", l.Body)
		}
	}
}

// TestOTelAccessLogTraceContext: as Envoy's OpenTelemetry access logger,
// a record's trace_id and span_id are the connection manager's span's
// (its active span): the span exported for the request, the HCM's server
// span and not the router's upstream span under spawn_upstream_span, and
// an unsampled span's ids too (those propagated upstream); a request on a
// chain without tracing has none. %TRACE_ID% in the body is the same
// trace id.
func TestOTelAccessLogTraceContext(t *testing.T) {
	col := otlptest.StartOTLP(t, "127.0.0.1:0")
	app := startBackend(t, "reviews", false, nil)
	listeners := []struct {
		name string
		tr   *hcmv3.HttpConnectionManager_Tracing
	}{
		{"l", otelTracing(t, 100, false)},
		{"spawn", otelTracing(t, 100, true)},
		{"unsampled", otelTracing(t, 0, false)},
		{"untraced", nil},
	}
	var ls []*listenerv3.Listener
	for _, l := range listeners {
		tl := tracedListener(t, l.name, closedAddr(t), "out", corev3.TrafficDirection_OUTBOUND, l.tr)
		var hcm hcmv3.HttpConnectionManager
		if err := tl.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		hcm.AccessLog = []*accesslogv3.AccessLog{otelAccessLog(t, l.name+" %REQ(X-REQUEST-ID)% %TRACE_ID%", "")}
		tl.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &hcm)}
		ls = append(ls, tl)
	}
	g := build(t, nil, ls,
		[]*routev3.RouteConfiguration{routeConfig("out", vhost("reviews", []string{"*"}, prefixRoute("reviews", "/", "outbound|9080||reviews")))},
		[]*clusterv3.Cluster{staticCluster(t, "outbound|9080||reviews", false, app.addr),
			staticCluster(t, collectorCluster, true, col.Addr), staticCluster(t, logCollector, true, col.Addr)})

	sinks := telemetry.NewSinks(nil, nil, nil)
	ctx, stopSinks := context.WithCancel(context.Background())
	sinksDone := make(chan struct{})
	var tracing *telemetry.Tracing
	p := startProxyOpts(t, g, nil, func(clusters *upstream.ClusterManager) dphttp.Options {
		var err error
		if tracing, err = telemetry.NewTracing(telemetry.TracingOptions{Collectors: clusters, BatchTimeout: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		sinks.ExportOTel(telemetry.OTelLogOptions{Collectors: clusters, ExportInterval: 20 * time.Millisecond})
		go func() { defer close(sinksDone); sinks.Run(ctx) }()
		return dphttp.Options{Sinks: sinks, Tracing: tracing}
	}, func() {
		stopSinks()
		<-sinksDone
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tracing.Shutdown(sctx)
	})

	// One request per listener; the app records the traceparent each
	// brought upstream.
	upstreamTP := map[string]string{}
	for _, l := range listeners {
		req, err := http.NewRequest("GET", "http://"+p.addr(l.name)+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "reviews:9080"
		req.Header.Set("X-Request-Id", "rid-"+l.name)
		resp, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", l.name, resp.StatusCode)
		}
		upstreamTP[l.name] = app.last.Load().Header.Get("Traceparent")
	}
	spans := col.Wait(t, 10*time.Second, "the spans of two sampled requests", func(s []otlptest.Span) bool { return len(s) == 3 })
	logs := col.WaitLogs(t, 10*time.Second, "four log records", func(ls []otlptest.Log) bool { return len(ls) == 4 })
	byRequest := map[string]otlptest.Log{}
	for _, l := range logs {
		byRequest[strings.Join(strings.Fields(l.Body)[:2], " ")] = l
	}
	spanOf := func(requestID, kind string) otlptest.Span {
		t.Helper()
		for _, s := range spans {
			if s.Attrs["guid:x-request-id"] == requestID && s.Kind == kind {
				return s
			}
		}
		t.Fatalf("no %s span for %s in %+v", kind, requestID, spans)
		return otlptest.Span{}
	}
	check := func(name, wantTrace, wantSpan string) {
		t.Helper()
		l, ok := byRequest[name+" rid-"+name]
		if !ok {
			t.Fatalf("no record for %s in %+v", name, logs)
		}
		if l.TraceID != wantTrace || l.SpanID != wantSpan {
			t.Errorf("%s: record trace_id/span_id %q/%q, want %q/%q", name, l.TraceID, l.SpanID, wantTrace, wantSpan)
		}
		// %TRACE_ID% is the same span's.
		if want := name + " rid-" + name + " " + cmp.Or(wantTrace, "-"); l.Body != want {
			t.Errorf("%s: body %q, want %q", name, l.Body, want)
		}
	}
	egress := spanOf("rid-l", "CLIENT")
	check("l", egress.TraceID, egress.SpanID)
	server := spanOf("rid-spawn", "SERVER")
	upstreamSpans := 0
	for _, s := range spans {
		if s.Kind == "CLIENT" && s.ParentSpanID == server.SpanID {
			upstreamSpans++
		}
	}
	if upstreamSpans != 1 {
		t.Fatalf("the router's upstream span under %s: %d in %+v", server.SpanID, upstreamSpans, spans)
	}
	check("spawn", server.TraceID, server.SpanID)
	// traceparent: 00-<trace id>-<span id>-<flags>
	if tp := strings.Split(upstreamTP["unsampled"], "-"); len(tp) != 4 || tp[3] != "00" {
		t.Errorf("unsampled request's traceparent %q", upstreamTP["unsampled"])
	} else {
		check("unsampled", tp[1], tp[2])
	}
	check("untraced", "", "")
}
