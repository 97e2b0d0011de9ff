package authzoracle

import (
	"os"
	"path/filepath"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
)

// authzOracle is Istio's authz builder test data: AuthorizationPolicy
// inputs and the Envoy filters Istio generates for them.
var authzOracle = "../../../shared/istio-samples/authz-builder"

// AuthzOracleCase is one case of the oracle's CASES.md.
type AuthzOracleCase struct {
	Name string
	TCP  bool
	In   string   // input file
	Out  []string // expected filters, in order; none for "no filters"
	Mesh *meshv1alpha1.MeshConfig
}

// loadPushContext decodes files and indexes them; any decode error fails t.
func loadPushContext(t *testing.T, files ...string) *model.PushContext {
	t.Helper()
	var rs []*config.Resource
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, errs := config.Decode(f, data)
		if err := errs.Err(); err != nil {
			t.Fatalf("decode: %v", err)
		}
		rs = append(rs, got...)
	}
	return model.NewPushContext(config.NewSnapshot(1, rs))
}

// extAuthzServiceYAML registers the provider's service (Istio's test adds
// it to the push context): my-custom-ext-authz.foo.svc.cluster.local.
const extAuthzServiceYAML = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-custom-ext-authz, namespace: foo}
spec:
  hosts: [my-custom-ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: grpc, protocol: GRPC}]
  endpoints: [{address: 10.0.0.99}]
`

func grpcProvider(service string, timeout *durationpb.Duration, body bool) *meshv1alpha1.MeshConfig_ExtensionProvider {
	g := &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider{
		Service: service, Port: 9000, Timeout: timeout, FailOpen: true, StatusOnError: "403",
	}
	if body {
		g.IncludeRequestBodyInCheck = &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody{MaxRequestBytes: 4096, AllowPartialMessage: true}
	}
	return &meshv1alpha1.MeshConfig_ExtensionProvider{Name: "default", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc{EnvoyExtAuthzGrpc: g}}
}

func httpProvider() *meshv1alpha1.MeshConfig_ExtensionProvider {
	hs := []string{"x-prefix-*", "*-suffix"}
	return &meshv1alpha1.MeshConfig_ExtensionProvider{Name: "default", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp{
		EnvoyExtAuthzHttp: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider{
			Service: "foo/my-custom-ext-authz.foo.svc.cluster.local", Port: 9000, Timeout: durationpb.New(10e9),
			PathPrefix: "/check", FailOpen: true, StatusOnError: "403",
			IncludeRequestHeadersInCheck:    append([]string{"x-custom-id"}, hs...),
			IncludeAdditionalHeadersInCheck: map[string]string{"x-header-1": "value-1", "x-header-2": "value-2"},
			IncludeRequestBodyInCheck: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody{
				MaxRequestBytes: 2048, AllowPartialMessage: true, PackAsBytes: true},
			HeadersToUpstreamOnAllow:   append([]string{"Authorization"}, hs...),
			HeadersToDownstreamOnDeny:  append([]string{"Set-cookie"}, hs...),
			HeadersToDownstreamOnAllow: append([]string{"Set-cookie"}, hs...),
		}}}
}

func meshWith(td string, aliases []string, providers ...*meshv1alpha1.MeshConfig_ExtensionProvider) *meshv1alpha1.MeshConfig {
	return &meshv1alpha1.MeshConfig{TrustDomain: td, TrustDomainAliases: aliases, ExtensionProviders: providers}
}

// AuthzOracleCases lists CASES.md: every case of Istio's builder test.
func AuthzOracleCases() []AuthzOracleCase {
	badProvider := &meshv1alpha1.MeshConfig_ExtensionProvider{Name: "default", Provider: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp{
		EnvoyExtAuthzHttp: &meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider{
			Service: "foo/my-custom-ext-authz.foo.svc.cluster.local", Port: 999999, PathPrefix: "check", StatusOnError: "999"}}}
	one := func(name string) []string { return []string{name + "-out.yaml"} }
	two := func(name string) []string { return []string{name + "-out1.yaml", name + "-out2.yaml"} }
	return []AuthzOracleCase{
		{Name: "allow-empty-rule", In: "allow-empty-rule-in.yaml", Out: one("allow-empty-rule")},
		{Name: "allow-full-rule", In: "allow-full-rule-in.yaml", Out: one("allow-full-rule")},
		{Name: "allow-nil-rule", In: "allow-nil-rule-in.yaml", Out: one("allow-nil-rule")},
		{Name: "allow-path", In: "allow-path-in.yaml", Out: one("allow-path")},
		{Name: "audit-full-rule", In: "audit-full-rule-in.yaml", Out: one("audit-full-rule")},
		{Name: "custom-grpc-provider-no-namespace", In: "custom-simple-http-in.yaml", Out: two("custom-grpc-provider-no-namespace"),
			Mesh: meshWith("", nil, grpcProvider("my-custom-ext-authz.foo.svc.cluster.local", nil, false))},
		{Name: "custom-grpc-provider", In: "custom-simple-http-in.yaml", Out: two("custom-grpc-provider"),
			Mesh: meshWith("", nil, grpcProvider("foo/my-custom-ext-authz.foo.svc.cluster.local", durationpb.New(2e6), true))},
		{Name: "custom-http-provider", In: "custom-simple-http-in.yaml", Out: two("custom-http-provider"), Mesh: meshWith("", nil, httpProvider())},
		{Name: "custom-bad-multiple-providers", In: "custom-bad-multiple-providers-in.yaml", Out: two("custom-bad-multiple-providers"), Mesh: meshWith("", nil, httpProvider())},
		{Name: "custom-bad-invalid-config", In: "custom-simple-http-in.yaml", Out: []string{"custom-bad-out.yaml"}, Mesh: meshWith("", nil, badProvider)},
		{Name: "deny-and-allow", In: "deny-and-allow-in.yaml", Out: two("deny-and-allow")},
		{Name: "deny-empty-rule", In: "deny-empty-rule-in.yaml", Out: one("deny-empty-rule")},
		{Name: "dry-run-allow-and-deny", In: "dry-run-allow-and-deny-in.yaml", Out: two("dry-run-allow-and-deny")},
		{Name: "dry-run-allow", In: "dry-run-allow-in.yaml", Out: one("dry-run-allow")},
		{Name: "dry-run-mix", In: "dry-run-mix-in.yaml", Out: one("dry-run-mix")},
		{Name: "multiple-policies", In: "multiple-policies-in.yaml", Out: one("multiple-policies")},
		{Name: "single-policy", In: "single-policy-in.yaml", Out: one("single-policy")},
		{Name: "trust-domain-one-alias", In: "simple-policy-td-aliases-in.yaml", Out: one("simple-policy-td-aliases"),
			Mesh: meshWith("td1", []string{"cluster.local"})},
		{Name: "trust-domain-multiple-aliases", In: "simple-policy-multiple-td-aliases-in.yaml", Out: one("simple-policy-multiple-td-aliases"),
			Mesh: meshWith("td1", []string{"cluster.local", "some-td"})},
		{Name: "trust-domain-wildcard-in-principal", In: "simple-policy-principal-with-wildcard-in.yaml", Out: one("simple-policy-principal-with-wildcard"),
			Mesh: meshWith("td1", []string{"foobar"})},
		{Name: "trust-domain-aliases-in-source-principal", In: "td-aliases-source-principal-in.yaml", Out: one("td-aliases-source-principal"),
			Mesh: meshWith("new-td", []string{"old-td", "some-trustdomain"})},
		{Name: "trust-domains-field", In: "trust-domains-in.yaml", Out: one("trust-domains")},

		{Name: "tcp/allow-both-http-tcp", TCP: true, In: "allow-both-http-tcp-in.yaml", Out: one("allow-both-http-tcp")},
		{Name: "tcp/allow-only-http", TCP: true, In: "allow-only-http-in.yaml", Out: one("allow-only-http")},
		{Name: "tcp/audit-both-http-tcp", TCP: true, In: "audit-both-http-tcp-in.yaml", Out: one("audit-both-http-tcp")},
		{Name: "tcp/custom-both-http-tcp", TCP: true, In: "custom-both-http-tcp-in.yaml", Out: two("custom-both-http-tcp"),
			Mesh: meshWith("", nil, grpcProvider("foo/my-custom-ext-authz.foo.svc.cluster.local", durationpb.New(2e6), true))},
		{Name: "tcp/custom-only-http", TCP: true, In: "custom-only-http-in.yaml", Out: nil, Mesh: meshWith("", nil, httpProvider())},
		{Name: "tcp/deny-both-http-tcp", TCP: true, In: "deny-both-http-tcp-in.yaml", Out: one("deny-both-http-tcp")},
		{Name: "tcp/dry-run-mix", TCP: true, In: "dry-run-mix-in.yaml", Out: one("dry-run-mix")},
	}
}

// oracleProxy is the proxy of Istio's builder test: namespace foo,
// labels app=httpbin, version=v1.
func oracleProxy() *model.Proxy {
	return &model.Proxy{Type: model.SidecarProxy, ID: "sidecar~10.0.0.1~httpbin-v1.foo~foo.svc.cluster.local", IP: "10.0.0.1",
		Name: "httpbin-v1", Namespace: "foo", Labels: map[string]string{"app": "httpbin", "version": "v1"}, ServiceAccount: "httpbin"}
}

func (c AuthzOracleCase) dir() string {
	if c.TCP {
		return filepath.Join(authzOracle, "tcp")
	}
	return filepath.Join(authzOracle, "http")
}

// oracleFilters translates the case's input for oracleProxy.
func oracleFilters(t *testing.T, c AuthzOracleCase) []proto.Message {
	t.Helper()
	svc := filepath.Join(t.TempDir(), "ext-authz-service.yaml")
	if err := os.WriteFile(svc, []byte(extAuthzServiceYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	pc := loadPushContext(t, filepath.Join(c.dir(), c.In), svc)
	got, err := translate.AuthorizationFilters(pc, oracleProxy(), c.Mesh)
	if err != nil {
		t.Fatal(err)
	}
	return asMessages(got, c.TCP)
}

// asMessages is got's TCP or HTTP filters.
func asMessages(got *translate.AuthzFilters, tcp bool) []proto.Message {
	var out []proto.Message
	if tcp {
		for _, f := range got.TCP {
			out = append(out, f)
		}
		return out
	}
	for _, f := range got.HTTP {
		out = append(out, f)
	}
	return out
}

// oracleExpected reads the case's expected filters.
func oracleExpected(t *testing.T, c AuthzOracleCase) []proto.Message {
	t.Helper()
	var out []proto.Message
	for _, f := range c.Out {
		data, err := os.ReadFile(filepath.Join(c.dir(), f))
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		var m proto.Message = &hcmv3.HttpFilter{}
		if c.TCP {
			m = &listenerv3.Filter{}
		}
		if err := protojson.Unmarshal(js, m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, m)
	}
	return out
}

// TestAuthzOracle translates every input of Istio's authz builder tests
// for the proxy Istio's test uses and compares the filters with Istio's
// own output, proto for proto (Any payloads compared as messages).
func TestAuthzOracle(t *testing.T) {
	for _, c := range AuthzOracleCases() {
		t.Run(c.Name, func(t *testing.T) {
			got := oracleFilters(t, c)
			want := oracleExpected(t, c)
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("filters (-istio +loom):\n%s", diff)
			}
		})
	}
}
