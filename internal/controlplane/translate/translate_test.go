package translate

import (
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
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
	want := `safe_regex:{regex:"/api/v[0-9]+/.*"} case_sensitive:{} headers:{name:":method" string_match:{exact:"GET"}} headers:{name:"x-a" present_match:true} headers:{name:"x-b" string_match:{prefix:"b"}} headers:{name:"x-c" string_match:{exact:"c"} invert_match:true}`
	got := &routev3.RouteMatch{}
	if err := prototextUnmarshal(want, got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, routeMatch(m), protocmp.Transform()); diff != "" {
		t.Errorf("routeMatch (-want +got):\n%s", diff)
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
	if got := simulate(rc, request{"api:9000", "/pkg.Svc/Get", nil}); got != "outbound|9000||api.default.svc.cluster.local" {
		t.Errorf("api:9000 routed to %q", got)
	}
	if got := simulate(rc, request{"api:9000", "/other", nil}); got != "NR" {
		t.Errorf("api:9000/other routed to %q, want NR", got)
	}
	// Port 80: no match of the VirtualService applies: default route.
	if got := simulate(rc, request{"api", "/anything", nil}); got != "outbound|80||api.default.svc.cluster.local" {
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
	for _, p := range []*model.Proxy{nil, {Type: model.SidecarProxy}, {Type: "waypoint", IP: "127.0.0.1"}} {
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
