package config

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func TestBuildTracing(t *testing.T) {
	otel := func(oc *tracev3.OpenTelemetryConfig) *tracev3.Tracing_Http {
		return &tracev3.Tracing_Http{Name: TracerOpenTelemetry, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: xdstest.MustAny(t, oc)}}
	}
	goodOtel := otel(&tracev3.OpenTelemetryConfig{ServiceName: "pp.default", GrpcService: &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "c", Authority: "col"}},
		Timeout:         durationpb.New(3e9)}})
	zipkin := func(zc *tracev3.ZipkinConfig) *tracev3.Tracing_Http {
		return &tracev3.Tracing_Http{Name: TracerZipkin, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: xdstest.MustAny(t, zc)}}
	}
	tests := []struct {
		name    string
		in      *hcmv3.HttpConnectionManager_Tracing
		want    *Tracing
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"otel", &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 1}, Provider: goodOtel,
			SpawnUpstreamSpan: wrapperspb.Bool(true), MaxPathTagLength: wrapperspb.UInt32(100),
			CustomTags: []*tracingv3.CustomTag{{Tag: "h", Type: &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: "X-User"}}}}},
			&Tracing{Provider: TraceProvider{Kind: TracerKindOpenTelemetry, Cluster: "c", Authority: "col", ServiceName: "pp.default", Timeout: 3e9},
				ClientSampling: 100, RandomSampling: 1, OverallSampling: 100, SpawnUpstreamSpan: true, MaxPathTagLength: 100,
				CustomTags: []CustomTag{{Tag: "h", Kind: TagRequestHeader, Name: "x-user"}}}, ""},
		{"zipkin", &hcmv3.HttpConnectionManager_Tracing{Provider: zipkin(&tracev3.ZipkinConfig{CollectorCluster: "z", CollectorEndpoint: "/api/v2/spans",
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON, TraceId_128Bit: true, SharedSpanContext: wrapperspb.Bool(false)})},
			&Tracing{Provider: TraceProvider{Kind: TracerKindZipkin, Cluster: "z", Path: "/api/v2/spans"},
				ClientSampling: 100, RandomSampling: 100, OverallSampling: 100, MaxPathTagLength: DefaultMaxPathTagLength}, ""},
		{"no provider", &hcmv3.HttpConnectionManager_Tracing{}, nil, "tracing.provider: must be set"},
		{"unknown tracer", &hcmv3.HttpConnectionManager_Tracing{Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.datadog"}}, nil,
			`tracing.provider.name = "envoy.tracers.datadog": must be envoy.tracers.opentelemetry or envoy.tracers.zipkin`},
		{"bad percent", &hcmv3.HttpConnectionManager_Tracing{RandomSampling: &typev3.Percent{Value: 101}, Provider: goodOtel}, nil,
			`tracing.random_sampling = "101": must be 0-100`},
		{"otel google_grpc", &hcmv3.HttpConnectionManager_Tracing{Provider: otel(&tracev3.OpenTelemetryConfig{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{TargetUri: "x"}}}})}, nil,
			"google_grpc"},
		{"zipkin shared span context", &hcmv3.HttpConnectionManager_Tracing{Provider: zipkin(&tracev3.ZipkinConfig{CollectorCluster: "z",
			CollectorEndpoint: "/api/v2/spans", CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON})}, nil,
			"shared_span_context: must be false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := buildTracing(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}
