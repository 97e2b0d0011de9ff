package validation

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/meshconfig"
)

// telDoc is a Telemetry "t" in namespace default whose spec is body.
func telDoc(body string) string {
	return "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\nspec:\n" + body
}

func TestTelemetry(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		{"istio's tasks", telDoc(`  selector: {matchLabels: {app: reviews}}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
  - match: {mode: SERVER}
    disabled: true
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 10s
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        request_host: {value: "request.host"}
    - match: {metric: ALL_METRICS}
      disabled: true
  tracing:
  - randomSamplingPercentage: 10
    customTags: {a: {literal: {value: x}}, b: {header: {name: x-b}}, c: {environment: {name: HOME}}}
`), nil},
		{"bad filter", telDoc("  accessLogging: [{filter: {expression: 'response.code >='}}]\n"),
			[]string{`spec.accessLogging[0].filter.expression: Invalid value: "response.code >=": must be a valid CEL expression, 1:17: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`}},
		{"tag overrides", telDoc(`  metrics:
  - overrides:
    - tagOverrides:
        a: {operation: UPSERT}
        b: {operation: REMOVE, value: x}
        c: {value: "request.host +"}
`), []string{
			"spec.metrics[0].overrides[0].tagOverrides[a]: Invalid value: value must be set when operation is UPSERT",
			"spec.metrics[0].overrides[0].tagOverrides[b]: Invalid value: value must not be set when operation is REMOVE",
			`spec.metrics[0].overrides[0].tagOverrides[c].value: Invalid value: "request.host +": must be a valid CEL expression: 1:15: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}`,
		}},
		{"sampling and empty names", telDoc(`  tracing:
  - randomSamplingPercentage: 101
    providers: [{name: ""}]
    customTags: {a: {literal: {value: ""}}}
  metrics:
  - reportingInterval: 0.0001s
    overrides: [{match: {customMetric: ""}}]
`), []string{
			`spec.metrics[0].overrides[0].match.customMetric: Invalid value: "": spec.metrics[0].overrides[0].match.customMetric in body should be at least 1 chars long`,
			`spec.metrics[0].reportingInterval: Invalid value: "100µs": must be a valid duration greater than 1ms`,
			`spec.tracing[0].providers[0].name: Invalid value: "": spec.tracing[0].providers[0].name in body should be at least 1 chars long`,
			`spec.tracing[0].randomSamplingPercentage: Invalid value: 101: spec.tracing[0].randomSamplingPercentage in body should be less than or equal to 100`,
			`spec.tracing[0].customTags[a].literal.value: Required value: spec.tracing[0].customTags[a].literal.value in body should be at least 1 chars long`,
		}},
		{"selector and targetRef", telDoc(`  selector: {matchLabels: {app: a}}
  targetRef: {kind: Service, name: s}
`), []string{"spec: Invalid value: only one of targetRefs or selector can be set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fieldErrors(t, tt.doc)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTelemetryProviders: a provider must be one of the mesh config's
// extensionProviders or Istio's defaults, compared case-insensitively;
// the error names the field.
func TestTelemetryProviders(t *testing.T) {
	rs, errs := config.Decode("t.yaml", []byte(telDoc(`  accessLogging: [{providers: [{name: envoy}, {name: otel}]}]
  metrics: [{providers: [{name: Prometheus}]}]
  tracing: [{providers: [{name: zipkin}]}]
`)))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	got := TelemetryProviders(rs, meshconfig.Default()).Error()
	want := `t.yaml:1: Telemetry default/t: spec.tracing[0].providers[0].name: Invalid value: "zipkin": no such provider in the mesh config's extensionProviders (prometheus, envoy)` + "\n" +
		`t.yaml:1: Telemetry default/t: spec.accessLogging[0].providers[1].name: Invalid value: "otel": no such provider in the mesh config's extensionProviders (prometheus, envoy)`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	mc := &meshv1alpha1.MeshConfig{ExtensionProviders: []*meshv1alpha1.MeshConfig_ExtensionProvider{
		{Name: "otel", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyOtelAls{EnvoyOtelAls: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyOpenTelemetryLogProvider{Service: "otel.x", Port: 4317}}},
		{Name: "zipkin", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_Zipkin{Zipkin: &meshv1alpha1.MeshConfig_ExtensionProvider_ZipkinTracingProvider{Service: "z", Port: 9411}}},
	}}
	if errs := TelemetryProviders(rs, mc); len(errs) > 0 {
		t.Errorf("with the providers defined: %v", errs)
	}
}
