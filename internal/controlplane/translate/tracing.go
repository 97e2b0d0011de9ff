package translate

import (
	"fmt"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

// Envoy's tracer names, as Istio writes them in HttpConnectionManager
// tracing.provider.name.
const (
	TracerOpenTelemetry = "envoy.tracers.opentelemetry"
	TracerZipkin        = "envoy.tracers.zipkin"
)

// defaultTraceSampling is PILOT_TRACE_SAMPLING's default: 1 % of requests
// are sampled when neither a Telemetry nor defaultConfig.tracing.sampling
// says otherwise.
const defaultTraceSampling = 1.0

// defaultZipkinPath is Istio's Zipkin collector path (v2 JSON API) when the
// provider names none.
const defaultZipkinPath = "/api/v2/spans"

// TracingSpec is what the spans of one side of a proxy (client: a
// sidecar's outbound listeners and a gateway's; server: a sidecar's
// inbound listener) get: Istio's model.TracingSpec. A nil *TracingSpec, or
// one with a nil Provider, means no tracing on that side.
type TracingSpec struct {
	// Provider is the extensionProviders entry spans are sent to.
	Provider *meshv1alpha1.MeshConfig_ExtensionProvider
	// Disabled is Telemetry's disableSpanReporting: no tracing config.
	Disabled bool
	// RandomSamplingPercentage (0-100), nil: defaultConfig.tracing.sampling,
	// else PILOT_TRACE_SAMPLING's default of 1 %.
	RandomSamplingPercentage *float64
	// CustomTags are Telemetry's customTags by tag name; empty: those of
	// defaultConfig.tracing.customTags.
	CustomTags map[string]*telemetryv1alpha1.Tracing_CustomTag
	// EnableIstioTags adds Istio's own tags (istio.canonical_service, ...).
	EnableIstioTags bool
}

// TracingSpecs are a proxy's client and server tracing specs.
type TracingSpecs struct {
	Client, Server *TracingSpec
}

// MeshTracingSpecs returns the tracing specs mesh config alone gives, as
// Istio's Telemetries.Tracing does with no Telemetry resource: the first
// of defaultProviders.tracing, looked up by name in extensionProviders,
// on both sides, with Istio's tags. With no default provider, or one no
// extension provider is named after, tracing is off (Istio would fall back
// to the bootstrap's tracer, which Loom's proxies do not have).
func MeshTracingSpecs(mesh *meshv1alpha1.MeshConfig) TracingSpecs {
	names := mesh.GetDefaultProviders().GetTracing()
	if len(names) == 0 {
		return TracingSpecs{}
	}
	var prov *meshv1alpha1.MeshConfig_ExtensionProvider
	for _, p := range mesh.GetExtensionProviders() {
		if p.GetName() == names[0] {
			prov = p
			break
		}
	}
	if prov == nil {
		return TracingSpecs{}
	}
	return TracingSpecs{
		Client: &TracingSpec{Provider: prov, EnableIstioTags: true},
		Server: &TracingSpec{Provider: prov, EnableIstioTags: true},
	}
}

// applyTracing sets the tracing of every HTTP connection manager of r's
// listeners for proxy p, as Istio's configureTracingFromTelemetry: a
// gateway's and a sidecar's outbound managers take specs.Client, a
// sidecar's inbound ones specs.Server. A gateway's spans spawn an upstream
// span (PILOT_SPAWN_UPSTREAM_SPAN_FOR_GATEWAY, on by default). A provider
// whose service is not in the registry leaves that side untraced, as
// Istio does ("could not find cluster for tracing provider"); the
// returned warnings say so, for loomd's log.
func applyTracing(r *Resources, pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, specs TracingSpecs) ([]string, error) {
	if specs.Client == nil && specs.Server == nil {
		return nil, nil
	}
	var warnings []string
	build := func(s *TracingSpec) *hcmv3.HttpConnectionManager_Tracing {
		if s == nil || s.Disabled || s.Provider == nil {
			return nil
		}
		t, err := hcmTracing(pc, p, mesh, s)
		if err != nil {
			warnings = append(warnings, err.Error())
			return nil
		}
		return t
	}
	client, server := build(specs.Client), build(specs.Server)
	for _, l := range r.Listeners {
		t := client
		if p.Type == model.SidecarProxy && l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
			t = server
		}
		if t == nil {
			continue
		}
		if err := patchHCMs(l, func(h *hcmv3.HttpConnectionManager) { h.Tracing = t }); err != nil {
			return warnings, err
		}
	}
	return warnings, nil
}

// hcmTracing is Istio's configureFromProviderConfig plus its sampling and
// custom tags for spec s.
func hcmTracing(pc *model.PushContext, p *model.Proxy, mesh *meshv1alpha1.MeshConfig, s *TracingSpec) (*hcmv3.HttpConnectionManager_Tracing, error) {
	t := &hcmv3.HttpConnectionManager_Tracing{}
	if p.Type == model.RouterProxy {
		t.SpawnUpstreamSpan = wrapperspb.Bool(true)
	}
	var maxTagLength uint32
	switch pr := s.Provider.GetProvider().(type) {
	case *meshv1alpha1.MeshConfig_ExtensionProvider_Opentelemetry:
		o := pr.Opentelemetry
		maxTagLength = o.GetMaxTagLength()
		host, cluster, err := lookupProviderCluster(pc, o.GetService(), o.GetPort())
		if err != nil {
			return nil, fmt.Errorf("tracing provider %q: %w", s.Provider.GetName(), err)
		}
		oc := &tracev3.OpenTelemetryConfig{
			ServiceName: serviceCluster(p),
			GrpcService: &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
					ClusterName: cluster,
					Authority:   host,
				}},
				Timeout: o.GetGrpc().GetTimeout(),
			},
		}
		for _, h := range o.GetGrpc().GetInitialMetadata() {
			if v, ok := h.GetHeaderValue().(*meshv1alpha1.MeshConfig_ExtensionProvider_HttpHeader_Value); ok {
				oc.GrpcService.InitialMetadata = append(oc.GrpcService.InitialMetadata, &corev3.HeaderValue{Key: h.GetName(), Value: v.Value})
			}
		}
		a, err := packAny(oc)
		if err != nil {
			return nil, err
		}
		t.Provider = &tracev3.Tracing_Http{Name: TracerOpenTelemetry, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}
	case *meshv1alpha1.MeshConfig_ExtensionProvider_Zipkin:
		z := pr.Zipkin
		maxTagLength = z.GetMaxTagLength()
		host, cluster, err := lookupProviderCluster(pc, z.GetService(), z.GetPort())
		if err != nil {
			return nil, fmt.Errorf("tracing provider %q: %w", s.Provider.GetName(), err)
		}
		path := z.GetPath()
		if path == "" {
			path = defaultZipkinPath
		}
		zc := &tracev3.ZipkinConfig{
			CollectorCluster:         cluster,
			CollectorEndpoint:        path,
			CollectorHostname:        host,
			CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
			TraceId_128Bit:           !z.GetEnable_64BitTraceId(),
			SharedSpanContext:        wrapperspb.Bool(false),
		}
		if z.GetTraceContextOption() == meshv1alpha1.MeshConfig_ExtensionProvider_ZipkinTracingProvider_USE_B3_WITH_W3C_PROPAGATION {
			zc.TraceContextOption = tracev3.ZipkinConfig_USE_B3_WITH_W3C_PROPAGATION
		}
		a, err := packAny(zc)
		if err != nil {
			return nil, err
		}
		t.Provider = &tracev3.Tracing_Http{Name: TracerZipkin, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: a}}
	default:
		return nil, fmt.Errorf("tracing provider %q: %T does not support tracing in this version of Loom", s.Provider.GetName(), pr)
	}
	if maxTagLength != 0 {
		t.MaxPathTagLength = wrapperspb.UInt32(maxTagLength)
	} else if n := mesh.GetDefaultConfig().GetTracing().GetMaxPathTagLength(); n != 0 {
		t.MaxPathTagLength = wrapperspb.UInt32(n)
	}
	// Istio's order: telemetry's randomSamplingPercentage, then
	// defaultConfig.tracing.sampling, then PILOT_TRACE_SAMPLING.
	sampling := proxyConfigSampling(mesh)
	if s.RandomSamplingPercentage != nil {
		sampling = *s.RandomSamplingPercentage
	}
	t.ClientSampling = &typev3.Percent{Value: 100}
	t.RandomSampling = &typev3.Percent{Value: sampling}
	t.OverallSampling = &typev3.Percent{Value: 100}
	t.CustomTags = customTags(p, mesh, s)
	return t, nil
}

// proxyConfigSampling is Istio's proxyConfigSamplingValue: mesh
// defaultConfig.tracing.sampling when set (a value over 100 is taken as
// 1, as Istio does), else 1 %.
func proxyConfigSampling(mesh *meshv1alpha1.MeshConfig) float64 {
	s := mesh.GetDefaultConfig().GetTracing().GetSampling()
	switch {
	case s == 0:
		return defaultTraceSampling
	case s > 100:
		return 1
	}
	return s
}

// lookupProviderCluster is Istio's model.LookupCluster: service is a
// hostname, or "namespace/hostname", of a service in the registry, and the
// collector is reached through that service's outbound cluster for port.
func lookupProviderCluster(pc *model.PushContext, service string, port uint32) (host, cluster string, err error) {
	if service == "" {
		return "", "", fmt.Errorf("service must not be empty")
	}
	ns, name, qualified := strings.Cut(service, "/")
	if !qualified {
		name, ns = service, ""
	}
	svc := pc.ServiceForHost(name)
	if svc == nil || (qualified && svc.Namespace != ns) {
		return "", "", fmt.Errorf("could not find service %s in the service registry", service)
	}
	return svc.Hostname, xdsapi.ClusterName(xdsapi.Outbound, port, "", svc.Hostname), nil
}

// serviceCluster is the span's service name: the node's cluster as Istio's
// agent sets it (ServiceCluster: canonical name, or app label, or the
// workload name, then "." and the namespace).
func serviceCluster(p *model.Proxy) string {
	name := p.Labels["service.istio.io/canonical-name"]
	if name == "" {
		name = p.Labels["app"]
	}
	if name == "" {
		name = p.Name
	}
	ns := p.Namespace
	if ns == "" {
		ns = "default"
	}
	return name + "." + ns
}

// customTags is Istio's configureCustomTags: Istio's tags when s enables
// them, then s's custom tags, or when it has none
// defaultConfig.tracing.customTags; sorted by tag.
func customTags(p *model.Proxy, mesh *meshv1alpha1.MeshConfig, s *TracingSpec) []*tracingv3.CustomTag {
	var tags []*tracingv3.CustomTag
	if s.EnableIstioTags {
		if e := mesh.GetDefaultConfig().GetTracing().GetEnableIstioTags(); e == nil || e.GetValue() {
			tags = append(istioTags(p, mesh), dryRunPolicyTags()...)
		}
	}
	if len(s.CustomTags) > 0 {
		for name, ct := range s.CustomTags {
			t := &tracingv3.CustomTag{Tag: name}
			switch v := ct.GetType().(type) {
			case *telemetryv1alpha1.Tracing_CustomTag_Literal:
				t.Type = &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: v.Literal.GetValue()}}
			case *telemetryv1alpha1.Tracing_CustomTag_Environment:
				t.Type = &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{
					Name: v.Environment.GetName(), DefaultValue: v.Environment.GetDefaultValue()}}
			case *telemetryv1alpha1.Tracing_CustomTag_Header:
				t.Type = &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{
					Name: v.Header.GetName(), DefaultValue: v.Header.GetDefaultValue()}}
			default:
				continue // formatter tags: validation refuses them
			}
			tags = append(tags, t)
		}
	} else {
		for name, ct := range mesh.GetDefaultConfig().GetTracing().GetCustomTags() {
			t := &tracingv3.CustomTag{Tag: name}
			switch v := ct.GetType().(type) {
			case *meshv1alpha1.Tracing_CustomTag_Literal:
				t.Type = &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: v.Literal.GetValue()}}
			case *meshv1alpha1.Tracing_CustomTag_Environment:
				t.Type = &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{
					Name: v.Environment.GetName(), DefaultValue: v.Environment.GetDefaultValue()}}
			case *meshv1alpha1.Tracing_CustomTag_Header:
				t.Type = &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{
					Name: v.Header.GetName(), DefaultValue: v.Header.GetDefaultValue()}}
			default:
				continue
			}
			tags = append(tags, t)
		}
	}
	slices.SortFunc(tags, func(a, b *tracingv3.CustomTag) int { return strings.Compare(a.GetTag(), b.GetTag()) })
	return tags
}

// istioTags are Istio's buildServiceTags: literal tags naming the proxy's
// canonical service and revision, mesh, namespace and cluster. Where the
// node has no canonical labels, Istio's injector would have set them from
// app and version; Istio's own fallbacks ("unknown", "latest") follow.
func istioTags(p *model.Proxy, mesh *meshv1alpha1.MeshConfig) []*tracingv3.CustomTag {
	first := func(def string, vs ...string) string {
		for _, v := range vs {
			if v != "" {
				return v
			}
		}
		return def
	}
	lit := func(tag, v string) *tracingv3.CustomTag {
		return &tracingv3.CustomTag{Tag: tag, Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: v}}}
	}
	return []*tracingv3.CustomTag{
		lit("istio.canonical_revision", first("latest", p.Labels["service.istio.io/canonical-revision"], p.Labels["version"])),
		lit("istio.canonical_service", first("unknown", p.Labels["service.istio.io/canonical-name"], p.Labels["app"])),
		lit("istio.cluster_id", "unknown"),
		lit("istio.mesh_id", first("unknown", mesh.GetDefaultConfig().GetMeshId(), mesh.GetTrustDomain())),
		lit("istio.namespace", first("default", p.Namespace)),
	}
}

// dryRunPolicyTags are Istio's optionalPolicyTags: the RBAC filter's
// shadow-rule results, read from request metadata. A tag whose metadata
// is absent is not set, as in Envoy.
func dryRunPolicyTags() []*tracingv3.CustomTag {
	tag := func(name, key string) *tracingv3.CustomTag {
		return &tracingv3.CustomTag{Tag: name, Type: &tracingv3.CustomTag_Metadata_{Metadata: &tracingv3.CustomTag_Metadata{
			Kind: &metadatav3.MetadataKind{Kind: &metadatav3.MetadataKind_Request_{Request: &metadatav3.MetadataKind_Request{}}},
			MetadataKey: &metadatav3.MetadataKey{
				Key:  "envoy.filters.http.rbac",
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: key}}},
			},
		}}}
	}
	return []*tracingv3.CustomTag{
		tag("istio.authorization.dry_run.allow_policy.name", "istio_dry_run_allow_shadow_effective_policy_id"),
		tag("istio.authorization.dry_run.allow_policy.result", "istio_dry_run_allow_shadow_engine_result"),
		tag("istio.authorization.dry_run.deny_policy.name", "istio_dry_run_deny_shadow_effective_policy_id"),
		tag("istio.authorization.dry_run.deny_policy.result", "istio_dry_run_deny_shadow_engine_result"),
	}
}
