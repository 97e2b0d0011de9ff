package meshconfig

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    meshv1alpha1.MeshConfig_OutboundTrafficPolicy_Mode
		wantErr string
	}{
		{"empty is ALLOW_ANY", "", meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY, ""},
		{"other fields only", "enableTracing: true\n", meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY, ""},
		{"registry only", "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n", meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY, ""},
		{"allow any", "outboundTrafficPolicy: {mode: ALLOW_ANY}\n", meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY, ""},
		{"policy without mode", "outboundTrafficPolicy: {}\n", meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY, ""},
		{"unknown field", "outboundTrafficPolicy:\n  mod: REGISTRY_ONLY\n", 0, `unknown field "mod"`},
		{"bad mode", "outboundTrafficPolicy:\n  mode: SOMETIMES\n", 0, `SOMETIMES`},
		{"not yaml", "a: [\n", 0, "mesh config m.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("m.yaml", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m := got.GetOutboundTrafficPolicy().GetMode(); m != tt.want {
				t.Errorf("mode %v, want %v", m, tt.want)
			}
		})
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling, not waiting for a fixed time
	}
}

func TestWatcherReloadsAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mesh.yaml")
	write := func(s string) {
		// Written beside and renamed, as an editor or kubelet does.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("outboundTrafficPolicy: {mode: ALLOW_ANY}\n")
	w, err := NewWatcher(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	mode := func() meshv1alpha1.MeshConfig_OutboundTrafficPolicy_Mode {
		return w.Current().GetOutboundTrafficPolicy().GetMode()
	}
	// The watch may start after the first write below: write until seen.
	waitFor(t, "REGISTRY_ONLY", func() bool {
		write("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
		return mode() == meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY
	})
	select {
	case <-w.Changes():
	default:
		t.Fatal("no change signalled")
	}
	write("outboundTrafficPolicy: {mode: NEVER}\n")
	waitFor(t, "the bad file's error", func() bool { return w.Err() != nil })
	if mode() != meshv1alpha1.MeshConfig_OutboundTrafficPolicy_REGISTRY_ONLY {
		t.Fatalf("a bad file replaced the last good config: %v", mode())
	}
	write("")
	waitFor(t, "the default after an empty file", func() bool {
		return mode() == meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY && w.Err() == nil
	})
}

func TestNewWatcherRefusesBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte("outboundTrafficPolicy: {mode: NEVER}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWatcher(path, nil); err == nil {
		t.Fatal("NewWatcher accepted a bad file")
	}
	w, err := NewWatcher("", nil)
	if err != nil || w.Current().GetOutboundTrafficPolicy().GetMode() != meshv1alpha1.MeshConfig_OutboundTrafficPolicy_ALLOW_ANY {
		t.Fatalf("no path: %v, %v", w, err)
	}
}

func TestParseAuthz(t *testing.T) {
	mc, err := Parse("m.yaml", []byte(`
trustDomainAliases: [old-td]
extensionProviders:
- name: ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: [x-ext-authz]
- name: ext-authz-grpc
  envoyExtAuthzGrpc: {service: foo/ext-authz.foo.svc.cluster.local, port: 9000, timeout: 0.5s, statusOnError: "503"}
- name: otel
  opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
`))
	if err != nil {
		t.Fatal(err)
	}
	if mc.GetTrustDomain() != DefaultTrustDomain || mc.GetTrustDomainAliases()[0] != "old-td" || len(mc.GetExtensionProviders()) != 3 ||
		mc.GetExtensionProviders()[0].GetEnvoyExtAuthzHttp().GetIncludeRequestHeadersInCheck()[0] != "x-ext-authz" {
		t.Errorf("mesh config = %v", mc)
	}
	if td := Default().GetTrustDomain(); td != "cluster.local" {
		t.Errorf("default trust domain %q", td)
	}
	for _, tt := range []struct{ in, want string }{
		{"extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: s, port: 1}}, {name: a, envoyExtAuthzGrpc: {service: s, port: 1}}]",
			`extensionProviders[1].name: "a": must be unique`},
		{"extensionProviders: [{envoyExtAuthzGrpc: {service: s, port: 1}}]", "extensionProviders[0].name: must not be empty"},
		{"extensionProviders: [{name: a, envoyExtAuthzHttp: {service: s, port: 999999, pathPrefix: check, statusOnError: \"999\"}}]",
			"extensionProviders[0].envoyExtAuthzHttp.port: 999999: must be 1-65535"},
		{"extensionProviders: [{name: a, envoyExtAuthzHttp: {service: s, port: 1, pathPrefix: check}}]", `pathPrefix: "check": must begin with /`},
		{"extensionProviders: [{name: a, envoyExtAuthzHttp: {service: s, port: 1, statusOnError: \"999\"}}]", `statusOnError: "999": must be an HTTP status code`},
		{"extensionProviders: [{name: a, envoyExtAuthzGrpc: {port: 1}}]", "envoyExtAuthzGrpc.service: must not be empty"},
		{"extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: s, port: 1, clearRouteCache: true}}]", "clearRouteCache: not supported"},
	} {
		if _, err := Parse("m.yaml", []byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s) = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestParseTracingProviders(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"otel grpc", `
defaultProviders: {tracing: [otel]}
extensionProviders:
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317, maxTagLength: 100}
defaultConfig:
  tracing: {sampling: 10, customTags: {env: {literal: {value: prod}}}}
`, ""},
		{"zipkin", "extensionProviders:\n- name: z\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411, path: /api/v2/spans}\n", ""},
		{"otel without service", "extensionProviders:\n- name: otel\n  opentelemetry: {port: 4317}\n", "extensionProviders[0].opentelemetry.service: must not be empty"},
		{"otel bad port", "extensionProviders:\n- name: otel\n  opentelemetry: {service: a.b, port: 70000}\n", "extensionProviders[0].opentelemetry.port: 70000"},
		{"otel http", "extensionProviders:\n- name: otel\n  opentelemetry: {service: a.b, port: 4318, http: {path: /v1/traces}}\n", "extensionProviders[0].opentelemetry.http: not supported"},
		{"zipkin relative path", "extensionProviders:\n- name: z\n  zipkin: {service: a.b, port: 9411, path: api}\n", "extensionProviders[0].zipkin.path"},
		{"zipkin headers", "extensionProviders:\n- name: z\n  zipkin: {service: a.b, port: 9411, headers: [{name: a, value: b}]}\n", "headers and timeout are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("m.yaml", []byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}
