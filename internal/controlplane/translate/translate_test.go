package translate

import (
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previousprioritiesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/validation"
	"github.com/loom-mesh/loom/internal/xdsapi"
)

func TestRetryPolicy(t *testing.T) {
	prevHosts := []*routev3.RetryPolicy_RetryHostPredicate{previousHostsPredicate()}
	priorities, err := anypb.New(&previousprioritiesv3.PreviousPrioritiesConfig{UpdateFrequency: 2})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		in             *networking.HTTPRetry
		consistentHash bool
		want           *routev3.RetryPolicy
	}{
		{"unset is Istio's default", nil, false, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503},
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"unset with a consistent hash keeps the host", nil, true, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503},
			HostSelectionRetryMaxAttempts: 5}},
		{"attempts 0 disables", &networking.HTTPRetry{Attempts: 0}, false, nil},
		{"attempts and per-try timeout", &networking.HTTPRetry{Attempts: 3, PerTryTimeout: durationpb.New(2 * time.Second)}, false, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(3), RetriableStatusCodes: []uint32{503},
			PerTryTimeout: durationpb.New(2 * time.Second), RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"retryOn with codes", &networking.HTTPRetry{Attempts: 1, RetryOn: "5xx, 502,gateway-error"}, false, &routev3.RetryPolicy{
			RetryOn: "5xx,gateway-error,retriable-status-codes", NumRetries: wrapperspb.UInt32(1), RetriableStatusCodes: []uint32{502},
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"retryOn without codes", &networking.HTTPRetry{Attempts: 1, RetryOn: "connect-failure"}, false, &routev3.RetryPolicy{
			RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(1), RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"retryOn numbers are codes only, out of range dropped", &networking.HTTPRetry{Attempts: 2, RetryOn: "503,700,429,503,reset"}, false, &routev3.RetryPolicy{
			RetryOn: "reset,retriable-status-codes", NumRetries: wrapperspb.UInt32(2), RetriableStatusCodes: []uint32{503, 429},
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"gRPC conditions pass through", &networking.HTTPRetry{Attempts: 2, RetryOn: "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"}, false, &routev3.RetryPolicy{
			RetryOn: "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable", NumRetries: wrapperspb.UInt32(2),
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"retryIgnorePreviousHosts false drops the predicate", &networking.HTTPRetry{Attempts: 1, RetryIgnorePreviousHosts: wrapperspb.Bool(false)}, false, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(1), RetriableStatusCodes: []uint32{503}, HostSelectionRetryMaxAttempts: 5}},
		{"retryIgnorePreviousHosts true wins over a consistent hash", &networking.HTTPRetry{Attempts: 1, RetryIgnorePreviousHosts: wrapperspb.Bool(true)}, true, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(1), RetriableStatusCodes: []uint32{503},
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
		{"retryRemoteLocalities and backoff", &networking.HTTPRetry{Attempts: 4, RetryRemoteLocalities: wrapperspb.Bool(true), Backoff: durationpb.New(25 * time.Millisecond)}, false, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(4), RetriableStatusCodes: []uint32{503},
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5,
			RetryPriority: &routev3.RetryPolicy_RetryPriority{
				Name:       "envoy.retry_priorities.previous_priorities",
				ConfigType: &routev3.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: priorities},
			},
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(25 * time.Millisecond)}}},
		{"retryRemoteLocalities false adds nothing", &networking.HTTPRetry{Attempts: 1, RetryRemoteLocalities: wrapperspb.Bool(false)}, false, &routev3.RetryPolicy{
			RetryOn: defaultRetryOn, NumRetries: wrapperspb.UInt32(1), RetriableStatusCodes: []uint32{503},
			RetryHostPredicate: prevHosts, HostSelectionRetryMaxAttempts: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := retryPolicy(tt.in, tt.consistentHash)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("retryPolicy (-want +got):\n%s", diff)
			}
		})
	}
	// The predicate's config must be Envoy's PreviousHostsPredicate.
	var ph previoushostsv3.PreviousHostsPredicate
	if err := previousHostsPredicate().GetTypedConfig().UnmarshalTo(&ph); err != nil {
		t.Errorf("previous_hosts typed_config: %v", err)
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
		// DNS clusters: host names in the cluster's own load_assignment.
		{"outbound|80||external.example.com", []string{"foo.example.com:80"}},
		{"outbound|80||vm.example.com", []string{"vm-1.example.com:80"}},
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
	if _, err := httpListener("l", "127.0.0.1", 8080, corev3.TrafficDirection_OUTBOUND, "\xff", "r", hcmOptions{}); err == nil {
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
	if len(r.Listeners) != 2 || len(r.Routes) != 2 || len(r.Clusters) != 2 {
		t.Errorf("empty mesh: %d listeners, %d routes, %d clusters; want 2, 2, 2 (BlackHoleCluster, PassthroughCluster)", len(r.Listeners), len(r.Routes), len(r.Clusters))
	}
}

// TestHTTPRouteActions checks the Envoy fields of issue 3's route actions
// (testdata/route-actions) on the sidecar's reviews virtual host: rewrite,
// host rewrite, headers at route and destination level, mirrors, CORS and
// retries, as Istio's translateRoute emits them.
func TestHTTPRouteActions(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "route-actions", "input.yaml"))
	r := mustGenerate(t, pc, productpageSidecar())
	routes := map[string]*routev3.Route{}
	for _, vh := range routeConfig(t, r, xdsapi.HTTPProxyRoute).GetVirtualHosts() {
		if vh.GetName() == "reviews.default.svc.cluster.local:9080" {
			for _, rt := range vh.GetRoutes() {
				routes[rt.GetName()] = rt
			}
		}
	}
	const (
		mirrorRatings = `cluster:"outbound|9080||ratings.default.svc.cluster.local" trace_sampled:{}`
		prevHosts     = `retry_host_predicate:{name:"envoy.retry_host_predicates.previous_hosts" typed_config:{[type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate]:{}}} host_selection_retry_max_attempts:5`
		defaultRetry  = `retry_policy:{retry_on:"connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes" num_retries:{value:2} retriable_status_codes:503 ` + prevHosts + `}`
	)
	tests := []struct {
		route string
		want  string // the Route without name and match, in prototext; the decorator is Istio's getRouteOperation
	}{
		{"moved", `decorator:{operation:"reviews:9080/old"} redirect:{host_redirect:"reviews.example.com" path_redirect:"/new" response_code:FOUND}`},
		{"teapot", `decorator:{operation:"reviews:9080/teapot*"} direct_response:{status:418 body:{inline_string:"short and stout"}}`},
		{"api", `decorator:{operation:"reviews.default.svc.cluster.local:9080/api*"} route:{cluster:"outbound|9080|v2|reviews.default.svc.cluster.local" timeout:{} max_grpc_timeout:{}
			prefix_rewrite:"/v2/api" host_rewrite_literal:"reviews-v2.default.svc.cluster.local"
			request_mirror_policies:{` + mirrorRatings + ` runtime_fraction:{default_value:{numerator:250000 denominator:MILLION}}}
			retry_policy:{retry_on:"cancelled,unavailable,retriable-status-codes" num_retries:{value:3} retriable_status_codes:503 ` + prevHosts + `
				retry_priority:{name:"envoy.retry_priorities.previous_priorities" typed_config:{[type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig]:{update_frequency:2}}}}}
			request_headers_to_add:{header:{key:"x-route" value:"api"} append_action:OVERWRITE_IF_EXISTS_OR_ADD}
			request_headers_to_add:{header:{key:"x-trace" value:"1"} append_action:APPEND_IF_EXISTS_OR_ADD}
			request_headers_to_remove:"x-debug"
			response_headers_to_add:{header:{key:"cache-control" value:"no-store"} append_action:OVERWRITE_IF_EXISTS_OR_ADD}
			response_headers_to_remove:"server"
			typed_per_filter_config:{key:"envoy.filters.http.cors" value:{[type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy]:{
				allow_origin_string_match:{exact:"https://bookinfo.example"} allow_methods:"GET,POST" allow_headers:"x-user" max_age:"3600"
				allow_credentials:{value:true} filter_enabled:{default_value:{numerator:100}} forward_not_matching_preflights:{value:true}}}}`},
		{"numbered", `stat_prefix:"reviews-numbered" decorator:{operation:"reviews:9080/r/[0-9]+"} route:{timeout:{} max_grpc_timeout:{} regex_rewrite:{pattern:{regex:"^/r/([0-9]+)$"} substitution:"/reviews/\\1"}
			weighted_clusters:{
				clusters:{name:"outbound|9080|v1|reviews.default.svc.cluster.local" weight:{value:50}
					request_headers_to_add:{header:{key:"x-version" value:"v1"} append_action:OVERWRITE_IF_EXISTS_OR_ADD}}
				clusters:{name:"outbound|9080|v3|reviews.default.svc.cluster.local" weight:{value:50}
					request_headers_to_add:{header:{key:"x-version" value:"v3"} append_action:OVERWRITE_IF_EXISTS_OR_ADD}
					host_rewrite_literal:"reviews-v3"}}
			` + defaultRetry + `}`},
		{"default", `decorator:{operation:"reviews.default.svc.cluster.local:9080/*"} route:{cluster:"outbound|9080|v1|reviews.default.svc.cluster.local" timeout:{} max_grpc_timeout:{}
			request_mirror_policies:{cluster:"outbound|9080||details.default.svc.cluster.local" trace_sampled:{} runtime_fraction:{default_value:{numerator:100000 denominator:MILLION}}}
			request_mirror_policies:{` + mirrorRatings + ` runtime_fraction:{default_value:{numerator:100}}}
			` + defaultRetry + `}
			response_headers_to_add:{header:{key:"x-served-by" value:"v1"} append_action:APPEND_IF_EXISTS_OR_ADD}`},
	}
	for _, tt := range tests {
		t.Run(tt.route, func(t *testing.T) {
			got := routes[tt.route]
			if got == nil {
				t.Fatalf("no route %q in %v", tt.route, slices.Collect(maps.Keys(routes)))
			}
			got = proto.Clone(got).(*routev3.Route)
			got.Name, got.Match = "", nil
			want := &routev3.Route{}
			if err := prototextUnmarshal(tt.want, want); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("route %q (-want +got):\n%s", tt.route, diff)
			}
		})
	}
}

// A match's statPrefix is the stat_prefix of the Envoy route that match
// becomes, as Istio's translateRoute: not of its sibling match's route.
func TestMatchStatPrefix(t *testing.T) {
	pc := loadPushContext(t, meshFile, filepath.Join("testdata", "route-actions", "input.yaml"))
	r := mustGenerate(t, pc, productpageSidecar())
	got := map[string]string{}
	for _, vh := range routeConfig(t, r, xdsapi.HTTPProxyRoute).GetVirtualHosts() {
		if vh.GetName() == "reviews.default.svc.cluster.local:9080" {
			for _, rt := range vh.GetRoutes() {
				got[rt.GetName()] = rt.GetStatPrefix()
			}
		}
	}
	want := map[string]string{"moved": "", "teapot": "", "api": "", "numbered": "reviews-numbered", "numbered.bare": "", "default": ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stat_prefix by route name (-want +got):\n%s", diff)
	}
}

// TestRouteActionInputsValid keeps the route-action inputs valid Istio
// config, so the translation tests never test what Loom refuses.
func TestRouteActionInputsValid(t *testing.T) {
	for _, c := range []string{"route-actions", "gateway-redirect"} {
		var rs []*config.Resource
		for _, f := range []string{meshFile, filepath.Join("testdata", c, "input.yaml")} {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			got, errs := config.Decode(f, data)
			if err := errs.Err(); err != nil {
				t.Fatal(err)
			}
			rs = append(rs, got...)
		}
		if errs := validation.ValidateAll(rs); len(errs) > 0 {
			t.Errorf("%s: %v", c, errs.Err())
		}
	}
}

func TestIsCatchAll(t *testing.T) {
	tests := []struct {
		match string // RouteMatch in prototext
		want  bool
	}{
		{`prefix:"/"`, true},
		{`prefix:"/" case_sensitive:{}`, true},
		{`safe_regex:{regex:".*"}`, true},
		{`prefix:"/a"`, false},
		{`path:"/"`, false},
		{`prefix:"/" headers:{name:"x" present_match:true}`, false},
		{`prefix:"/" query_parameters:{name:"q" present_match:true}`, false},
		// A JWT claim match (Istio's IsCatchAllRoute counts dynamic_metadata).
		{`prefix:"/" dynamic_metadata:{filter:"envoy.filters.http.jwt_authn" path:{key:"payload"} path:{key:"groups"} value:{string_match:{exact:"group1"}}}`, false},
	}
	for _, tt := range tests {
		m := &routev3.RouteMatch{}
		if err := prototextUnmarshal(tt.match, m); err != nil {
			t.Fatal(err)
		}
		if got := isCatchAll(m); got != tt.want {
			t.Errorf("isCatchAll(%s) = %v, want %v", tt.match, got, tt.want)
		}
	}
}
