package config

import (
	"strconv"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Envoy's tracer names (HttpConnectionManager.tracing.provider.name) this
// version serves.
const (
	TracerOpenTelemetry = "envoy.tracers.opentelemetry"
	TracerZipkin        = "envoy.tracers.zipkin"
)

// DefaultMaxPathTagLength is Envoy's max_path_tag_length default: the
// http.url tag is cut to 256 bytes.
const DefaultMaxPathTagLength = 256

// TracerKind is the tracing provider's kind.
type TracerKind int

// Tracer kinds.
const (
	TracerKindOpenTelemetry TracerKind = iota + 1 // OTLP over gRPC
	TracerKindZipkin                              // Zipkin v2 JSON over HTTP
)

// TraceProvider is where and how spans are exported: Envoy's
// OpenTelemetryConfig (grpc_service.envoy_grpc) or ZipkinConfig. It is
// comparable: the proxy keeps one exporter per distinct provider, across
// generations.
type TraceProvider struct {
	Kind TracerKind
	// Cluster is the collector's cluster (envoy_grpc.cluster_name or
	// collector_cluster); it need not exist yet: spans are dropped while
	// it does not.
	Cluster string
	// Authority is the gRPC :authority (envoy_grpc.authority) or the
	// Zipkin Host header (collector_hostname); "" means the cluster name.
	Authority string
	// ServiceName is OpenTelemetryConfig.service_name, the resource's
	// service.name; Zipkin spans carry the node's cluster.
	ServiceName string
	// Timeout bounds one export (grpc_service.timeout); 0 means 5s.
	Timeout time.Duration
	// Path is the Zipkin collector_endpoint ("/api/v2/spans").
	Path string
	// ZipkinW3C is trace_context_option USE_B3_WITH_W3C_PROPAGATION: W3C
	// trace context is injected beside B3.
	ZipkinW3C bool
	// ZipkinTraceID64 is trace_id_128bit false: new traces get 64-bit ids.
	ZipkinTraceID64 bool
}

// CustomTagKind is where a custom tag's value comes from.
type CustomTagKind int

// Custom tag kinds (envoy.type.tracing.v3.CustomTag's type).
const (
	TagLiteral CustomTagKind = iota + 1
	TagEnvironment
	TagRequestHeader
	TagMetadata
)

// CustomTag is one of HttpConnectionManager.tracing.custom_tags.
type CustomTag struct {
	Tag  string
	Kind CustomTagKind
	// Value is a literal's value; Name the environment variable or the
	// request header (lower case); Default the value when it is absent
	// ("" with no default: the tag is not set).
	Value, Name, Default string
	// MetadataKey and MetadataPath name request metadata (a TagMetadata).
	MetadataKey  string
	MetadataPath []string
}

// Tracing is HttpConnectionManager.tracing, validated: nil on a chain
// means no tracing (Envoy's absent tracing).
type Tracing struct {
	Provider TraceProvider
	// Percentages 0-100 (Envoy's defaults 100, 100, 100).
	ClientSampling, RandomSampling, OverallSampling float64
	// SpawnUpstreamSpan makes the router start a client span per request
	// under the connection manager's span (Istio sets it on gateways).
	SpawnUpstreamSpan bool
	// MaxPathTagLength bounds the http.url tag (default 256).
	MaxPathTagLength int
	CustomTags       []CustomTag
	// Egress is the listener's traffic_direction OUTBOUND (Envoy's
	// operation name Egress: client spans named "egress HOST"); any other
	// direction is Ingress (server spans named "ingress").
	Egress bool
}

// buildTracing validates an HCM's tracing. Providers other than
// OpenTelemetry over envoy_grpc and Zipkin HTTP_JSON are refused.
func buildTracing(t *hcmv3.HttpConnectionManager_Tracing) (*Tracing, error) {
	if t == nil {
		return nil, nil
	}
	const at = "tracing"
	if err := onlyFields(at, t, "client_sampling", "random_sampling", "overall_sampling", "verbose",
		"max_path_tag_length", "custom_tags", "provider", "spawn_upstream_span"); err != nil {
		return nil, err
	}
	out := &Tracing{MaxPathTagLength: DefaultMaxPathTagLength, SpawnUpstreamSpan: t.GetSpawnUpstreamSpan().GetValue()}
	var err error
	if out.ClientSampling, err = percent(at+".client_sampling", t.GetClientSampling()); err != nil {
		return nil, err
	}
	if out.RandomSampling, err = percent(at+".random_sampling", t.GetRandomSampling()); err != nil {
		return nil, err
	}
	if out.OverallSampling, err = percent(at+".overall_sampling", t.GetOverallSampling()); err != nil {
		return nil, err
	}
	if n := t.GetMaxPathTagLength(); n != nil {
		out.MaxPathTagLength = int(n.GetValue())
	}
	for i, ct := range t.GetCustomTags() {
		tag, err := buildCustomTag(ct)
		if err != nil {
			return nil, under(idx(at+".custom_tags", i), err)
		}
		out.CustomTags = append(out.CustomTags, tag)
	}
	p := t.GetProvider()
	if p == nil {
		// Envoy would use the bootstrap's tracer; a Loom proxy has none.
		return nil, ferr(at+".provider", "must be set")
	}
	switch p.GetName() {
	case TracerOpenTelemetry:
		var oc tracev3.OpenTelemetryConfig
		if err := anyTo(p.GetTypedConfig(), &oc); err != nil {
			return nil, ferr(at+".provider.typed_config", "%v", err)
		}
		const ap = at + ".provider.typed_config"
		if err := onlyFields(ap, &oc, "grpc_service", "service_name"); err != nil {
			return nil, err
		}
		g := oc.GetGrpcService()
		if err := onlyFields(ap+".grpc_service", g, "envoy_grpc", "timeout", "initial_metadata"); err != nil {
			return nil, err
		}
		if len(g.GetInitialMetadata()) > 0 {
			return nil, ferr(ap+".grpc_service.initial_metadata", "not supported by this version of Loom")
		}
		eg := g.GetEnvoyGrpc()
		if eg.GetClusterName() == "" {
			return nil, ferr(ap+".grpc_service.envoy_grpc.cluster_name", "must be set")
		}
		out.Provider = TraceProvider{Kind: TracerKindOpenTelemetry, Cluster: eg.GetClusterName(), Authority: eg.GetAuthority(),
			ServiceName: oc.GetServiceName(), Timeout: g.GetTimeout().AsDuration()}
	case TracerZipkin:
		var zc tracev3.ZipkinConfig
		if err := anyTo(p.GetTypedConfig(), &zc); err != nil {
			return nil, ferr(at+".provider.typed_config", "%v", err)
		}
		const ap = at + ".provider.typed_config"
		if err := onlyFields(ap, &zc, "collector_cluster", "collector_endpoint", "collector_hostname",
			"collector_endpoint_version", "trace_id_128bit", "shared_span_context", "trace_context_option"); err != nil {
			return nil, err
		}
		if zc.GetCollectorEndpointVersion() != tracev3.ZipkinConfig_HTTP_JSON {
			return nil, verr(ap+".collector_endpoint_version", zc.GetCollectorEndpointVersion().String(), "must be HTTP_JSON")
		}
		if zc.GetSharedSpanContext() == nil || zc.GetSharedSpanContext().GetValue() {
			// Envoy's default (true) makes client and server of one hop
			// share a span id; Loom's spans are always separate.
			return nil, ferr(ap+".shared_span_context", "must be false")
		}
		if zc.GetCollectorCluster() == "" {
			return nil, ferr(ap+".collector_cluster", "must be set")
		}
		if ep := zc.GetCollectorEndpoint(); ep == "" || ep[0] != '/' {
			return nil, verr(ap+".collector_endpoint", ep, "must be a path beginning with /")
		}
		out.Provider = TraceProvider{Kind: TracerKindZipkin, Cluster: zc.GetCollectorCluster(), Authority: zc.GetCollectorHostname(),
			Path: zc.GetCollectorEndpoint(), ZipkinTraceID64: !zc.GetTraceId_128Bit(),
			ZipkinW3C: zc.GetTraceContextOption() == tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION}
	default:
		return nil, verr(at+".provider.name", p.GetName(), "must be %s or %s", TracerOpenTelemetry, TracerZipkin)
	}
	return out, nil
}

// percent reads an envoy.type.v3.Percent, nil meaning 100.
func percent(path string, p *typev3.Percent) (float64, error) {
	if p == nil {
		return 100, nil
	}
	v := p.GetValue()
	if v < 0 || v > 100 {
		return 0, verr(path, strconv.FormatFloat(v, 'g', -1, 64), "must be 0-100")
	}
	return v, nil
}

func buildCustomTag(ct *tracingv3.CustomTag) (CustomTag, error) {
	out := CustomTag{Tag: ct.GetTag()}
	if out.Tag == "" {
		return out, ferr("tag", "must not be empty")
	}
	switch v := ct.GetType().(type) {
	case *tracingv3.CustomTag_Literal_:
		out.Kind, out.Value = TagLiteral, v.Literal.GetValue()
	case *tracingv3.CustomTag_Environment_:
		out.Kind, out.Name, out.Default = TagEnvironment, v.Environment.GetName(), v.Environment.GetDefaultValue()
		if out.Name == "" {
			return out, ferr("environment.name", "must not be empty")
		}
	case *tracingv3.CustomTag_RequestHeader:
		out.Kind, out.Name, out.Default = TagRequestHeader, lowerASCII(v.RequestHeader.GetName()), v.RequestHeader.GetDefaultValue()
		if out.Name == "" {
			return out, ferr("request_header.name", "must not be empty")
		}
	case *tracingv3.CustomTag_Metadata_:
		if _, ok := v.Metadata.GetKind().GetKind().(*metadatav3.MetadataKind_Request_); !ok {
			return out, ferr("metadata.kind", "must be request")
		}
		out.Kind, out.MetadataKey, out.Default = TagMetadata, v.Metadata.GetMetadataKey().GetKey(), v.Metadata.GetDefaultValue()
		for _, s := range v.Metadata.GetMetadataKey().GetPath() {
			out.MetadataPath = append(out.MetadataPath, s.GetKey())
		}
	default:
		return out, ferr("type", "must be literal, environment, request_header or metadata")
	}
	return out, nil
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
