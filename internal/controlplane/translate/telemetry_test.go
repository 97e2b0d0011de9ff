package translate

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	otelv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
)

// telemetryMesh is a mesh config with the providers the cases name.
func telemetryMesh(t *testing.T) *meshv1alpha1.MeshConfig {
	t.Helper()
	mc, err := meshconfig.Parse("mesh.yaml", []byte(`
extensionProviders:
- name: otel
  envoyOtelAls: {service: opentelemetry-collector.observability.svc.cluster.local, port: 4317}
- name: otel-tracing
  opentelemetry: {service: opentelemetry-collector.observability.svc.cluster.local, port: 4317}
- name: json-log
  envoyFileAccessLog: {path: /dev/stdout, logFormat: {labels: {code: "%RESPONSE_CODE%"}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// telemetrySummary renders what EffectiveTelemetry decided, one line per
// setting, for readable expectations.
func telemetrySummary(tc *TelemetryConfig) []string {
	var out []string
	for _, m := range []struct {
		name string
		mode WorkloadMode
	}{{"client", ModeClient}, {"server", ModeServer}} {
		logs := tc.Logs(m.mode)
		switch {
		case logs == nil:
			out = append(out, m.name+" logs: mesh config")
		case len(logs) == 0:
			out = append(out, m.name+" logs: none")
		}
		for _, l := range logs {
			out = append(out, m.name+" log: "+l.Provider.GetName()+" filter="+l.Filter)
		}
	}
	for _, prov := range sortedTagNamesForTest(tc.Metrics) {
		mc := tc.Metrics[prov]
		for _, m := range []struct {
			name string
			mode WorkloadMode
		}{{"client", ModeClient}, {"server", ModeServer}} {
			mm := mc.Mode(m.mode)
			if mm.Disabled {
				out = append(out, prov+" "+m.name+": disabled")
				continue
			}
			for _, o := range mm.Overrides {
				var tags []string
				for _, tg := range o.Tags {
					if tg.Remove {
						tags = append(tags, "-"+tg.Name)
					} else {
						tags = append(tags, tg.Name+"="+tg.Value)
					}
				}
				line := prov + " " + m.name + " " + PrometheusMetricName(o.Name)
				if o.Disabled {
					line += " drop"
				}
				if len(tags) > 0 {
					line += " " + strings.Join(tags, ",")
				}
				out = append(out, line)
			}
		}
		if mc.ReportingInterval > 0 {
			out = append(out, prov+" interval "+mc.ReportingInterval.String())
		}
	}
	if tc.Tracing != nil {
		for _, s := range []struct {
			name string
			spec *TracingSpec
		}{{"client", tc.Tracing.Client}, {"server", tc.Tracing.Server}} {
			line := s.name + " tracing: " + s.spec.Provider.GetName()
			if s.spec.Disabled {
				line += " disabled"
			}
			if p := s.spec.RandomSamplingPercentage; p != nil {
				line += " sampling=" + strconv.FormatFloat(*p, 'g', -1, 64)
			}
			out = append(out, line)
		}
	}
	return out
}

func sortedTagNamesForTest[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestEffectiveTelemetry(t *testing.T) {
	root := "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: mesh-default, namespace: istio-system}\nspec:\n"
	ns := "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: ns, namespace: default}\nspec:\n"
	wl := "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: pp, namespace: default}\nspec:\n  selector: {matchLabels: {app: productpage}}\n"
	other := "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: reviews, namespace: default}\nspec:\n  selector: {matchLabels: {app: reviews}}\n"
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"none: mesh config's access log, prometheus", "", []string{
			"client logs: mesh config", "server logs: mesh config"}},
		{"mesh-wide envoy log, workload turns it off", root + "  accessLogging: [{providers: [{name: envoy}]}]\n" +
			wl + "  accessLogging: [{disabled: true}]\n", []string{
			"client logs: none", "server logs: none"}},
		{"mesh-wide log, another workload's Telemetry does not apply", root + "  accessLogging: [{providers: [{name: envoy}]}]\n" +
			other + "  accessLogging: [{disabled: true}]\n", []string{
			"client log: envoy filter=", "server log: envoy filter="}},
		{"namespace provider replaces the mesh's; server only off", root + "  accessLogging: [{providers: [{name: envoy}]}]\n" +
			ns + "  accessLogging: [{providers: [{name: json-log}], filter: {expression: 'response.code >= 400'}}]\n" +
			wl + "  accessLogging: [{match: {mode: SERVER}, disabled: true}]\n", []string{
			"client log: json-log filter=response.code >= 400", "server logs: none"}},
		{"metrics: drop one, tags, per mode", root + `  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides: {request_protocol: {operation: REMOVE}}
` + wl + `  metrics:
  - reportingInterval: 5s
    overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: true
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {request_host: {value: request.host}}
`, []string{
			"client logs: mesh config", "server logs: mesh config",
			"prometheus client requests_total request_host=request.host,-request_protocol",
			"prometheus client request_duration_milliseconds drop",
			"prometheus server requests_total request_host=request.host",
			"prometheus server request_duration_milliseconds drop",
			"prometheus interval 5s",
		}},
		{"metrics: all off mesh-wide, back on for the server of one workload", root + `  metrics:
  - providers: [{name: prometheus}]
    overrides: [{disabled: true}]
` + wl + `  metrics:
  - overrides: [{match: {metric: REQUEST_COUNT, mode: SERVER}, disabled: false}]
`, []string{
			"client logs: mesh config", "server logs: mesh config",
			"prometheus client: disabled",
			"prometheus server requests_total",
		}},
		{"tracing: otel sample, client off", root + "  tracing: [{providers: [{name: otel-tracing}], randomSamplingPercentage: 10}]\n" +
			wl + "  tracing: [{match: {mode: CLIENT}, disableSpanReporting: true}]\n", []string{
			"client logs: mesh config", "server logs: mesh config",
			"client tracing: otel-tracing disabled sampling=10",
			"server tracing: otel-tracing sampling=10",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, errs := config.Decode("t.yaml", []byte(tt.yaml))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			pc := model.NewPushContext(config.NewSnapshot(1, rs))
			got := telemetrySummary(EffectiveTelemetry(pc, productpageSidecar(), telemetryMesh(t)))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestTelemetrySamples: Istio's OpenTelemetry samples apply (decode,
// validate against a mesh config defining their providers) and resolve
// for a proxy.
func TestTelemetrySamples(t *testing.T) {
	mesh := telemetryMesh(t)
	var rs []*config.Resource
	for _, f := range []string{"otel-loki-accesslog-telemetry.yaml", "otel-tracing-telemetry.yaml"} {
		data, err := os.ReadFile(filepath.Join(sharedSamples, "telemetry", f))
		if err != nil {
			t.Fatal(err)
		}
		got, errs := config.Decode(f, data)
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		rs = append(rs, got...)
	}
	pc := model.NewPushContext(config.NewSnapshot(1, rs))
	got := telemetrySummary(EffectiveTelemetry(pc, productpageSidecar(), mesh))
	want := []string{"client log: otel filter=", "server log: otel filter=",
		"client tracing: otel-tracing sampling=0", "server tracing: otel-tracing sampling=0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// TestTelemetryTracingReachesHCM: a mesh-wide Telemetry's tracing (zipkin,
// 25 %) and a workload's client-side disableSpanReporting end up in the
// proxy's HTTP connection managers.
func TestTelemetryTracingReachesHCM(t *testing.T) {
	rs, errs := config.Decode("t.yaml", []byte(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: zipkin}], randomSamplingPercentage: 25}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: pp, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  tracing: [{match: {mode: CLIENT}, disableSpanReporting: true}]
`))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	base := loadPushContext(t, meshFile, filepath.Join("testdata", "tracing", "input.yaml"))
	pc := model.NewPushContext(config.NewSnapshot(2, append(base.Config.All(), rs...)))
	r, err := GenerateWith(pc, productpageSidecar(), Options{Mesh: parseMesh(t, otelMesh)})
	if err != nil {
		t.Fatal(err)
	}
	tr := hcmTracings(t, r)
	if tr["virtualOutbound"] != nil {
		t.Errorf("client side disabled by the workload's Telemetry, got %v", tr["virtualOutbound"])
	}
	in := tr["virtualInbound"]
	if in.GetProvider().GetName() != TracerZipkin || in.GetRandomSampling().GetValue() != 25 {
		t.Errorf("server side: provider %q sampling %v, want zipkin 25", in.GetProvider().GetName(), in.GetRandomSampling().GetValue())
	}
}

// TestStatsConfigFromTelemetry: metric overrides of the Telemetry API
// become the istio.stats config of each listener class, as Istio's
// generateStatsConfig makes them.
func TestStatsConfigFromTelemetry(t *testing.T) {
	rs, errs := config.Decode("t.yaml", []byte(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: pp, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  metrics:
  - reportingInterval: 10s
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      disabled: true
    - match: {metric: REQUEST_DURATION}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        not_a_tag: {operation: REMOVE}
        request_host: {value: request.host}
        foo: {value: add}
    - match: {metric: ALL_METRICS, mode: CLIENT}
      disabled: true
`))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if errs := validation.ValidateAll(rs); len(errs) > 0 {
		t.Fatal(errs)
	}
	pc := model.NewPushContext(config.NewSnapshot(1, rs))
	tel := EffectiveTelemetry(pc, productpageSidecar(), nil)
	if c := StatsConfig(tel, ClassSidecarOutbound); c != nil {
		t.Errorf("client side: ALL_METRICS disabled, got %v", c)
	}
	want := &statspb.PluginConfig{
		DisableHostHeaderFallback: true,
		TcpReportingDuration:      durationpb.New(10 * time.Second),
		Metrics: []*statspb.MetricConfig{
			{Name: "requests_total", Drop: true},
			{Name: "request_duration_milliseconds", TagsToRemove: []string{"request_protocol"},
				Dimensions: map[string]string{"request_host": "request.host", "foo": "'unknown'"}},
		},
	}
	if diff := cmp.Diff(want, StatsConfig(tel, ClassSidecarInbound), protocmp.Transform()); diff != "" {
		t.Errorf("server side (-want +got):\n%s", diff)
	}
	// Another workload keeps Istio's default.
	other := productpageSidecar()
	other.Labels = map[string]string{"app": "reviews"}
	if diff := cmp.Diff(&statspb.PluginConfig{}, StatsConfig(EffectiveTelemetry(pc, other, nil), ClassSidecarOutbound), protocmp.Transform()); diff != "" {
		t.Errorf("other workload (-want +got):\n%s", diff)
	}
}

// TestOTelAccessLogFromSample: Istio's otel-loki-accesslog sample with an
// envoyOtelAls provider named otel gives every HTTP connection manager
// Envoy's OpenTelemetry access log to the collector's outbound cluster,
// with Istio's default body and the provider's labels as attributes; a
// provider whose collector is not in the registry is left out with a
// warning.
func TestOTelAccessLogFromSample(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(sharedSamples, "telemetry", "otel-loki-accesslog-telemetry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rs, errs := config.Decode("otel-loki-accesslog-telemetry.yaml", data)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	base := loadPushContext(t, meshFile, filepath.Join("testdata", "tracing", "input.yaml"))
	pc := model.NewPushContext(config.NewSnapshot(2, append(base.Config.All(), rs...)))
	for _, tc := range []struct {
		name, service string
		wantLog       bool
	}{{"collector in the registry", "otel-collector.observability.svc.cluster.local", true}, {"unknown collector", "nowhere.example.com", false}} {
		t.Run(tc.name, func(t *testing.T) {
			mesh := parseMesh(t, `
extensionProviders:
- name: otel
  envoyOtelAls:
    service: `+tc.service+`
    port: 4317
    logFormat: {labels: {status: "%RESPONSE_CODE%"}}
`)
			var warnings []string
			r, err := GenerateWith(pc, productpageSidecar(), Options{Mesh: mesh, Warn: func(w string) { warnings = append(warnings, w) }})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			eachHCM(t, r, func(listener string, h *hcmv3.HttpConnectionManager) {
				for _, al := range h.GetAccessLog() {
					var o otelv3.OpenTelemetryAccessLogConfig
					if al.GetName() != otelAccessLogName || al.GetTypedConfig().UnmarshalTo(&o) != nil {
						t.Fatalf("listener %s: access log %v, want only Envoy's OpenTelemetry one", listener, al)
					}
					n++
					eg := o.GetCommonConfig().GetGrpcService().GetEnvoyGrpc()
					if eg.GetClusterName() != "outbound|4317||otel-collector.observability.svc.cluster.local" ||
						eg.GetAuthority() != "otel-collector.observability.svc.cluster.local" || o.GetCommonConfig().GetLogName() != "otel_envoy_accesslog" {
						t.Errorf("listener %s: common config %v", listener, o.GetCommonConfig())
					}
					if got := o.GetBody().GetStringValue(); got != strings.TrimSuffix(IstioTextLogFormat, "\n") {
						t.Errorf("listener %s: body %q, want Istio's text format", listener, got)
					}
					if a := o.GetAttributes().GetValues(); len(a) != 1 || a[0].GetKey() != "status" || a[0].GetValue().GetStringValue() != "%RESPONSE_CODE%" {
						t.Errorf("listener %s: attributes %v", listener, a)
					}
				}
			})
			if tc.wantLog && n == 0 {
				t.Error("no HTTP connection manager has the OpenTelemetry access log")
			}
			if !tc.wantLog && (n != 0 || !slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, "nowhere.example.com") })) {
				t.Errorf("%d OpenTelemetry logs, warnings %q; want none and a warning naming the collector", n, warnings)
			}
		})
	}
}
