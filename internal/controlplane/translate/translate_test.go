package translate

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name string
		in   *networking.HTTPRetry
		want *routev3.RetryPolicy
	}{
		{"unset is Istio's default", nil, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503}}},
		{"attempts 0 disables", &networking.HTTPRetry{Attempts: 0}, nil},
		{"attempts and per-try timeout", &networking.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(2 * time.Second)}, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(3), RetriableStatusCodes: []uint32{503},
			PerTryTimeout: durationpb.New(2 * time.Second)}},
		{"retryOn with codes", &networking.HTTPRetry{Attempts: 1, RetryOn: "5xx, 502,gateway-error"}, &routev3.RetryPolicy{
			RetryOn: "5xx,gateway-error,retriable-status-codes", NumRetries: wrapperspb.UInt32(1), RetriableStatusCodes: []uint32{502}}},
		{"retryOn without codes", &networking.HTTPRetry{Attempts: 1, RetryOn: "connect-failure"}, &routev3.RetryPolicy{
			RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(1)}},
		{"retryOn numbers are codes only, out of range dropped", &networking.HTTPRetry{Attempts: 2, RetryOn: "503,700,429,503,reset"}, &routev3.RetryPolicy{
			RetryOn: "reset,retriable-status-codes", NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503, 429}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, retryPolicy(tt.in), protocmp.Transform()); diff != "" {
				t.Errorf("retryPolicy (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteMatch(t *testing.T) {
	m := &networking.HTTPMatchRequest{
		Uri:            &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: "/api/v[0-9]+/.*"}},
		IgnoreUriCase:  true,
		Headers:        map[string]*networking.StringMatch{"X-B": {MatchType: &networking.StringMatch_Prefix{Prefix: "b"}}, "x-a": {}},
		WithoutHeaders: map[string]*networking.StringMatch{"x-c": {MatchType: &networking.StringMatch_Exact{Exact: "c"}}},
		Method:         &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: "GET"}},
	}
	want := `safe_regex:{regex:"/api/v[0-9]+/.*"} case_sensitive:{} headers:{name:":method" string_match:{exact:"GET"}} headers:{name:"x-a" present_match:true} headers:{name:"x-b" string_match:{prefix:"b"}} headers:{name:"x-c" string_match:{exact:"c"} invert_match:true treat_missing_header_as_empty:true}`
	got := &routev3.RouteMatch{}
	if err := prototextUnmarshal(want, got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, routeMatch(m), protocmp.Transform()); diff != "" {
		t.Errorf("routeMatch (-want +got):\n%s", diff)
	}
}

func TestRouteMatchFields(t *testing.T) {
	exact := func(v string) *networking.StringMatch {
		return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: v}}
	}
	tests := []struct {
		name string
		in   *networking.HTTPMatchRequest
		want string // RouteMatch in prototext
	}{
		{"query params exact, prefix, regex, present", &networking.HTTPMatchRequest{QueryParams: map[string]*networking.StringMatch{
			"d": exact("1"),
			"c": {MatchType: &networking.StringMatch_Prefix{Prefix: "x"}},
			"b": {MatchType: &networking.StringMatch_Regex{Regex: "[0-9]+"}},
			"a": {},
		}}, `prefix:"/" query_parameters:{name:"a" present_match:true} query_parameters:{name:"b" string_match:{safe_regex:{regex:"[0-9]+"}}} query_parameters:{name:"c" string_match:{prefix:"x"}} query_parameters:{name:"d" string_match:{exact:"1"}}`},
		{"withoutHeaders value treats a missing header as empty", &networking.HTTPMatchRequest{
			WithoutHeaders: map[string]*networking.StringMatch{"End-User": exact("jason")},
		}, `prefix:"/" headers:{name:"end-user" string_match:{exact:"jason"} invert_match:true treat_missing_header_as_empty:true}`},
		{"withoutHeaders presence stays a present match", &networking.HTTPMatchRequest{
			WithoutHeaders: map[string]*networking.StringMatch{"x-debug": {}},
		}, `prefix:"/" headers:{name:"x-debug" present_match:true invert_match:true}`},
		{"scheme, method and authority are pseudo-headers", &networking.HTTPMatchRequest{
			Scheme: exact("https"), Method: exact("POST"), Authority: &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: "api."}},
		}, `prefix:"/" headers:{name:":authority" string_match:{prefix:"api."}} headers:{name:":method" string_match:{exact:"POST"}} headers:{name:":scheme" string_match:{exact:"https"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := &routev3.RouteMatch{}
			if err := prototextUnmarshal(tt.want, want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, routeMatch(tt.in), protocmp.Transform()); diff != "" {
				t.Errorf("routeMatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMatchApplies(t *testing.T) {
	sidecar, router := productpageSidecar(), ingressRouter()
	mesh := []string{model.MeshGateway}
	tests := []struct {
		name     string
		m        *networking.HTTPMatchRequest
		p        *model.Proxy
		gateways []string
		want     bool
	}{
		{"empty", &networking.HTTPMatchRequest{}, sidecar, mesh, true},
		{"sourceNamespace equal", &networking.HTTPMatchRequest{SourceNamespace: "default"}, sidecar, mesh, true},
		{"sourceNamespace other", &networking.HTTPMatchRequest{SourceNamespace: "prod"}, sidecar, mesh, false},
		{"sourceNamespace on a router", &networking.HTTPMatchRequest{SourceNamespace: "istio-system"}, router, []string{"istio-system/gw"}, false},
		{"sourceLabels contained", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "productpage"}}, sidecar, mesh, true},
		{"sourceLabels not contained", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"app": "reviews"}}, sidecar, mesh, false},
		{"sourceLabels on a router", &networking.HTTPMatchRequest{SourceLabels: map[string]string{"istio": "ingressgateway"}}, router, []string{"istio-system/gw"}, false},
		{"gateways names the second", &networking.HTTPMatchRequest{Gateways: []string{"gw-b"}}, router, []string{"default/gw-a", "default/gw-b"}, true},
		{"gateways names neither", &networking.HTTPMatchRequest{Gateways: []string{"gw-c"}}, router, []string{"default/gw-a", "default/gw-b"}, false},
		{"port other", &networking.HTTPMatchRequest{Port: 80}, sidecar, mesh, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchApplies(tt.m, tt.p, "default", tt.gateways, 9080); got != tt.want {
				t.Errorf("matchApplies = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestGatewayVirtualServiceOnce checks that a VirtualService bound to two
// Gateways on one router port is emitted once, with every route.
func TestGatewayVirtualServiceOnce(t *testing.T) {
	r := mustGenerate(t, loadPushContext(t, meshFile, filepath.Join("testdata", "two-gateways", "input.yaml")), ingressRouter())
	rc := routeConfig(t, r, xdsapi.GatewayRouteName(8080))
	var got []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			got = append(got, vh.GetName()+" "+rt.GetMatch().GetPrefix())
		}
	}
	if diff := cmp.Diff([]string{"*:8080 /b", "*:8080 /a"}, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// TestEndpointsOnlyIPs checks that endpoints with a host name or a unix://
// address never reach EDS, where the proxy would NACK the whole update.
func TestEndpointsOnlyIPs(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "bookinfo", "input.yaml"), filepath.Join("testdata", "dns-endpoints", "input.yaml"))
	r := mustGenerate(t, pc, productpageSidecar())
	for _, cla := range r.Endpoints {
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				a := e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()
				if _, err := netip.ParseAddr(a); err != nil {
					t.Errorf("cluster %q: endpoint address %q is not an IP", cla.GetClusterName(), a)
				}
			}
		}
	}
	tests := []struct {
		cluster string
		want    []string
	}{
		{"outbound|80||external.example.com", []string{}},
		{"outbound|80||vm.example.com", []string{}},
		{"outbound|80||local.example.com", []string{"127.0.0.20:80"}},
		{"outbound|9080||reviews.default.svc.cluster.local", []string{"127.0.0.13:15006", "127.0.0.14:15006", "127.0.0.15:15006"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, endpointsOf(t, r, tt.cluster)); diff != "" {
			t.Errorf("%s endpoints (-want +got):\n%s", tt.cluster, diff)
		}
	}
}

// TestPackErrors checks that a message that cannot be marshalled (a string
// field with invalid UTF-8) gives an error, not a panic.
func TestPackErrors(t *testing.T) {
	if _, err := packAny(&routev3.Route{Name: "\xff"}); err == nil {
		t.Error("packAny: want error for invalid UTF-8")
	}
	if _, err := httpListener("l", "127.0.0.1", 8080, corev3.TrafficDirection_OUTBOUND, "\xff", "r"); err == nil {
		t.Error("httpListener: want error for invalid UTF-8 stat prefix")
	}
}

func TestMatchPortAndTimeout(t *testing.T) {
	const in = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 9000, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: api}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - match: [{port: 9000, uri: {prefix: /pkg.Svc/}}]
    timeout: 3s
    route: [{destination: {host: api}}]
`
	rs, errs := config.Decode("in.yaml", []byte(in))
	if err := errs.Err(); err != nil {
		t.Fatal(err)
	}
	p := productpageSidecar()
	r := mustGenerate(t, model.NewPushContext(config.NewSnapshot(1, rs)), p)
	rc := routeConfig(t, r, "http_proxy")
	// Port 9000: the VirtualService's match applies, with its timeout, to
	// the listener port (the service has two ports).
	if got := simulate(t, rc, request{"api:9000", "/pkg.Svc/Get", nil}); got != "outbound|9000||api.default.svc.cluster.local" {
		t.Errorf("api:9000 routed to %q", got)
	}
	if got := simulate(t, rc, request{"api:9000", "/other", nil}); got != "NR" {
		t.Errorf("api:9000/other routed to %q, want NR", got)
	}
	// Port 80: no match of the VirtualService applies: default route.
	if got := simulate(t, rc, request{"api", "/anything", nil}); got != "outbound|80||api.default.svc.cluster.local" {
		t.Errorf("api:80 routed to %q", got)
	}
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() == "api.default.svc.cluster.local:9000" {
			if got := vh.GetRoutes()[0].GetRoute().GetTimeout().AsDuration(); got != 3*time.Second {
				t.Errorf("timeout = %v, want 3s", got)
			}
		}
	}
	// GRPC port: h2c upstream; HTTP port: none.
	for _, c := range r.Clusters {
		opts := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]
		switch c.GetName() {
		case "outbound|9000||api.default.svc.cluster.local":
			hpo := &upstreamhttpv3.HttpProtocolOptions{}
			if err := opts.UnmarshalTo(hpo); err != nil {
				t.Fatalf("%s: %v", c.GetName(), err)
			}
			if hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
				t.Errorf("%s: no explicit http2 options", c.GetName())
			}
		case "outbound|80||api.default.svc.cluster.local":
			if opts != nil {
				t.Errorf("%s: has protocol options %v, want none", c.GetName(), opts)
			}
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	pc := model.NewPushContext(config.NewSnapshot(1, nil))
	for _, p := range []*model.Proxy{nil, {Type: model.SidecarProxy}, {Type: "waypoint", IP: "127.0.0.1"},
		{Type: model.SidecarProxy, IP: "productpage.local"}} {
		if _, err := Generate(pc, p); err == nil {
			t.Errorf("Generate(%+v): want error", p)
		}
	}
	// An empty mesh still gives a sidecar its listeners and both tables.
	r := mustGenerate(t, pc, productpageSidecar())
	if len(r.Listeners) != 2 || len(r.Routes) != 2 || len(r.Clusters) != 1 {
		t.Errorf("empty mesh: %d listeners, %d routes, %d clusters; want 2, 2, 1 (BlackHoleCluster)", len(r.Listeners), len(r.Routes), len(r.Clusters))
	}
}
