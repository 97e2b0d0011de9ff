package translate

import (
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	telemetryv1alpha1 "istio.io/api/telemetry/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
)

const otelMesh = `
defaultProviders: {tracing: [otel]}
extensionProviders:
- name: otel
  opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317}
- name: zipkin
  zipkin: {service: istio-system/zipkin.istio-system.svc.cluster.local, port: 9411}
- name: nowhere
  opentelemetry: {service: nowhere.example.com, port: 4317}
defaultConfig:
  tracing:
    sampling: 10
    customTags:
      env: {literal: {value: prod}}
      user: {header: {name: x-user, defaultValue: anon}}
`

func parseMesh(t *testing.T, y string) *meshv1alpha1.MeshConfig {
	t.Helper()
	m, err := meshconfig.Parse("mesh.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// hcmTracings returns each listener's HCM tracing (nil: none) by
// listener name and chain index.
func hcmTracings(t *testing.T, r *Resources) map[string]*hcmv3.HttpConnectionManager_Tracing {
	t.Helper()
	out := map[string]*hcmv3.HttpConnectionManager_Tracing{}
	eachHCM(t, r, func(key string, h *hcmv3.HttpConnectionManager) { out[key] = h.GetTracing() })
	return out
}

// eachHCM calls f with every HTTP connection manager of r's listeners,
// keyed by listener name ("NAME#CHAIN" past a listener's first chain).
func eachHCM(t *testing.T, r *Resources, f func(key string, h *hcmv3.HttpConnectionManager)) {
	t.Helper()
	for _, l := range r.Listeners {
		for i, fc := range l.GetFilterChains() {
			for _, nf := range fc.GetFilters() {
				if nf.GetName() != httpConnectionManagerFilter {
					continue
				}
				var h hcmv3.HttpConnectionManager
				if err := nf.GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				key := l.GetName()
				if i > 0 {
					key += "#" + fc.GetName()
				}
				f(key, &h)
			}
		}
	}
}

func TestTracingFromMeshConfig(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "tracing", "input.yaml"))
	mesh := parseMesh(t, otelMesh)
	var warns []string
	r, err := GenerateWith(pc, productpageSidecar(), Options{Mesh: mesh, Warn: func(m string) { warns = append(warns, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings %v", warns)
	}
	tr := hcmTracings(t, r)
	out, in := tr["virtualOutbound"], tr["virtualInbound"]
	if out == nil || in == nil {
		t.Fatalf("tracing outbound %v inbound %v, want both", out, in)
	}
	if out.GetProvider().GetName() != TracerOpenTelemetry {
		t.Errorf("provider %q", out.GetProvider().GetName())
	}
	var oc tracev3.OpenTelemetryConfig
	if err := out.GetProvider().GetTypedConfig().UnmarshalTo(&oc); err != nil {
		t.Fatal(err)
	}
	want := &tracev3.OpenTelemetryConfig{
		ServiceName: "productpage.default",
		GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: "outbound|4317||otel-collector.observability.svc.cluster.local",
			Authority:   "otel-collector.observability.svc.cluster.local",
		}}},
	}
	if d := cmp.Diff(want, &oc, protocmp.Transform()); d != "" {
		t.Errorf("OpenTelemetryConfig (-want +got):\n%s", d)
	}
	if got := out.GetRandomSampling().GetValue(); got != 10 {
		t.Errorf("random_sampling %v, want defaultConfig's 10", got)
	}
	if out.GetClientSampling().GetValue() != 100 || out.GetOverallSampling().GetValue() != 100 {
		t.Errorf("client/overall sampling %v/%v, want 100/100", out.GetClientSampling(), out.GetOverallSampling())
	}
	if out.GetSpawnUpstreamSpan() != nil {
		t.Errorf("a sidecar spawns no upstream span: %v", out.GetSpawnUpstreamSpan())
	}
	tags := map[string]string{}
	var names []string
	for _, ct := range out.GetCustomTags() {
		names = append(names, ct.GetTag())
		switch {
		case ct.GetLiteral() != nil:
			tags[ct.GetTag()] = ct.GetLiteral().GetValue()
		case ct.GetRequestHeader() != nil:
			tags[ct.GetTag()] = "header:" + ct.GetRequestHeader().GetName() + "|" + ct.GetRequestHeader().GetDefaultValue()
		case ct.GetMetadata() != nil:
			tags[ct.GetTag()] = "metadata:" + ct.GetMetadata().GetMetadataKey().GetKey()
		}
	}
	for tag, v := range map[string]string{
		"istio.canonical_service":  "productpage",
		"istio.canonical_revision": "v1",
		"istio.namespace":          "default",
		"istio.mesh_id":            "cluster.local",
		"env":                      "prod",
		"user":                     "header:x-user|anon",
		"istio.authorization.dry_run.allow_policy.name": "metadata:envoy.filters.http.rbac",
	} {
		if tags[tag] != v {
			t.Errorf("tag %s = %q, want %q", tag, tags[tag], v)
		}
	}
	if !sortedStrings(names) {
		t.Errorf("custom tags not sorted: %v", names)
	}
	// The same provider on both sides.
	if d := cmp.Diff(out, in, protocmp.Transform()); d != "" {
		t.Errorf("inbound tracing differs from outbound:\n%s", d)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] > s[i] {
			return false
		}
	}
	return true
}

func TestTracingGatewaySpawnsUpstreamSpan(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "gateway", "input.yaml"), filepath.Join("testdata", "tracing", "input.yaml"))
	r, err := GenerateWith(pc, ingressRouter(), Options{Mesh: parseMesh(t, otelMesh)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, tr := range hcmTracings(t, r) {
		n++
		if tr == nil || !tr.GetSpawnUpstreamSpan().GetValue() {
			t.Errorf("listener %s: tracing %v, want spawn_upstream_span", name, tr)
		}
	}
	if n == 0 {
		t.Fatal("no HTTP listener on the gateway")
	}
}

func TestTracingZipkinAndRedirect(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "tracing", "input.yaml"))
	mesh := parseMesh(t, strings.Replace(otelMesh, "tracing: [otel]", "tracing: [zipkin]", 1))
	r, err := GenerateWith(pc, redirectSidecar(productpageSidecar()), Options{Mesh: mesh})
	if err != nil {
		t.Fatal(err)
	}
	inbound, outbound := 0, 0
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				if f.GetName() != httpConnectionManagerFilter {
					continue
				}
				var h hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&h); err != nil {
					t.Fatal(err)
				}
				if h.GetTracing() == nil {
					t.Errorf("listener %s chain %s: no tracing", l.GetName(), fc.GetName())
					continue
				}
				if l.GetTrafficDirection() == corev3.TrafficDirection_INBOUND {
					inbound++
				} else {
					outbound++
				}
				var zc tracev3.ZipkinConfig
				if err := h.GetTracing().GetProvider().GetTypedConfig().UnmarshalTo(&zc); err != nil {
					t.Fatalf("zipkin config: %v", err)
				}
				want := &tracev3.ZipkinConfig{
					CollectorCluster:         "outbound|9411||zipkin.istio-system.svc.cluster.local",
					CollectorEndpoint:        "/api/v2/spans",
					CollectorHostname:        "zipkin.istio-system.svc.cluster.local",
					CollectorEndpointVersion: tracev3.ZipkinConfig_HTTP_JSON,
					TraceId_128Bit:           true,
					SharedSpanContext:        zc.SharedSpanContext,
				}
				if d := cmp.Diff(want, &zc, protocmp.Transform()); d != "" || zc.GetSharedSpanContext().GetValue() {
					t.Errorf("ZipkinConfig (-want +got):\n%s", d)
				}
			}
		}
	}
	if inbound == 0 || outbound == 0 {
		t.Errorf("traced HCMs: %d inbound, %d outbound; want both", inbound, outbound)
	}
}

func TestTracingOff(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "tracing", "input.yaml"))
	for _, tt := range []struct {
		name, mesh string
		warn       string
	}{
		{"no default provider", "enableTracing: true\n", ""},
		{"unknown default provider", "defaultProviders: {tracing: [missing]}\n", ""},
		{"service not in the registry", strings.Replace(otelMesh, "tracing: [otel]", "tracing: [nowhere]", 1), "could not find service nowhere.example.com"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var warns []string
			r, err := GenerateWith(pc, productpageSidecar(), Options{Mesh: parseMesh(t, tt.mesh), Warn: func(m string) { warns = append(warns, m) }})
			if err != nil {
				t.Fatal(err)
			}
			for name, tr := range hcmTracings(t, r) {
				if tr != nil {
					t.Errorf("listener %s traced: %v", name, tr)
				}
			}
			if tt.warn != "" && (len(warns) == 0 || !strings.Contains(warns[0], tt.warn)) {
				t.Errorf("warnings %v, want %q", warns, tt.warn)
			}
		})
	}
}

// TestTracingSpecs checks what the Telemetry API's resolution controls:
// sampling, custom tags replacing defaultConfig's, disabled sides.
func TestTracingSpecs(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "tracing", "input.yaml"))
	mesh := parseMesh(t, otelMesh)
	prov := mesh.GetExtensionProviders()[1] // zipkin
	pct := 42.5
	specs := &TracingSpecs{
		Client: &TracingSpec{Provider: prov, RandomSamplingPercentage: &pct, CustomTags: map[string]*telemetryv1alpha1.Tracing_CustomTag{
			"region": {Type: &telemetryv1alpha1.Tracing_CustomTag_Environment{Environment: &telemetryv1alpha1.Tracing_Environment{Name: "REGION", DefaultValue: "none"}}},
		}},
		Server: &TracingSpec{Provider: prov, Disabled: true},
	}
	r, err := GenerateWith(pc, productpageSidecar(), Options{Mesh: mesh, Tracing: specs})
	if err != nil {
		t.Fatal(err)
	}
	tr := hcmTracings(t, r)
	if tr["virtualInbound"] != nil {
		t.Errorf("server side disabled, got %v", tr["virtualInbound"])
	}
	out := tr["virtualOutbound"]
	if out.GetProvider().GetName() != TracerZipkin || out.GetRandomSampling().GetValue() != 42.5 {
		t.Errorf("outbound tracing %v", out)
	}
	if len(out.GetCustomTags()) != 1 || out.GetCustomTags()[0].GetEnvironment().GetName() != "REGION" {
		t.Errorf("custom tags %v, want only the spec's (no Istio tags: EnableIstioTags false)", out.GetCustomTags())
	}
}
