package config

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
	"github.com/loom-mesh/loom/internal/xdsapi"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func testHCM(t testing.TB) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_15001",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "http_proxy", ConfigSource: xdstest.ADS()}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}},
	}
}

func testListener(t testing.TB, hcm *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             "virtualOutbound",
		Address:          xdstest.SocketAddress("127.0.0.13", 15001),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       HCMFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)},
		}}}},
	}
}

func prefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

const reviewsV1 = "outbound|9080|v1|reviews.default.svc.cluster.local"

func testRouteConfig() *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: "http_proxy",
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "reviews.default.svc.cluster.local:9080",
			Domains: []string{"reviews.default.svc.cluster.local", "reviews:9080", "reviews"},
			Routes: []*routev3.Route{
				prefixRoute("/a", reviewsV1),
				prefixRoute("/b", reviewsV1),
				prefixRoute("/", reviewsV1),
			},
		}},
	}
}

func testCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 reviewsV1,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: xdstest.ADS()},
		ConnectTimeout:       durationpb.New(2 * time.Second),
	}
}

func testCLA(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: xdstest.SocketAddress(a, 15006)}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: name,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func testResources(t testing.TB) Resources {
	return Resources{
		Listeners: []proto.Message{testListener(t, testHCM(t))},
		Routes:    []proto.Message{testRouteConfig()},
		Clusters:  []proto.Message{testCluster()},
		Endpoints: []proto.Message{testCLA(reviewsV1, "127.0.0.13")},
	}
}

func TestBuildGood(t *testing.T) {
	res := testResources(t)
	res.Versions = map[string]string{xdsapi.ClusterType: "3"}
	g, err := Build(res, &Generation{Number: 6})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if g.Number != 7 {
		t.Errorf("Number = %d, want 7", g.Number)
	}
	gotL := g.Listeners["virtualOutbound"]
	wantL := &Listener{Name: "virtualOutbound", Address: "127.0.0.13:15001", Direction: DirectionOutbound, BindToPort: true,
		ListenerFiltersTimeout: DefaultListenerFiltersTimeout,
		FilterChains: []*FilterChain{{Key: "", Hash: gotL.FilterChains[0].Hash, StatPrefix: "outbound_0.0.0.0_15001", RouteConfigName: "http_proxy",
			MaxRequestHeaderBytes: DefaultMaxRequestHeaderBytes, MaxRequestHeaders: DefaultMaxRequestHeaders}}}
	if diff := cmp.Diff(wantL, gotL, cmpopts.IgnoreUnexported(Listener{})); diff != "" {
		t.Errorf("listener (-want +got):\n%s", diff)
	}
	wantC := &Cluster{Name: reviewsV1, ConnectTimeout: 2 * time.Second, LBPolicy: "ROUND_ROBIN",
		Endpoints: []Endpoint{{Address: "127.0.0.13:15006", Health: Healthy, Weight: 1}}}
	if diff := cmp.Diff(wantC, g.Clusters[reviewsV1]); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
	rt := g.Routes["http_proxy"]
	if rt == nil || len(rt.VirtualHosts) != 1 || len(rt.VirtualHosts[0].Routes) != 3 {
		t.Fatalf("route table = %+v", rt)
	}
	r := rt.VirtualHosts[0].Routes[0]
	if r.Timeout != DefaultRouteTimeout || r.TotalWeight != 1 || r.Retry != nil {
		t.Errorf("route = %+v", r)
	}
	if g.Versions[xdsapi.ClusterType] != "3" {
		t.Errorf("Versions = %v", g.Versions)
	}
	first, err := Build(testResources(t), nil)
	if err != nil || first.Number != 1 {
		t.Errorf("Build(nil prev) = %v, %v; want Number 1", first, err)
	}
}

func TestBuildMissingReferences(t *testing.T) {
	// A listener whose RDS has not arrived, an EDS cluster without CLA, a
	// CLA for an unknown cluster: all fine.
	res := Resources{
		Listeners: []proto.Message{testListener(t, testHCM(t))},
		Clusters:  []proto.Message{testCluster()},
		Endpoints: []proto.Message{testCLA("outbound|9080||nowhere", "127.0.0.1")},
	}
	g, err := Build(res, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if g.Routes["http_proxy"] != nil || len(g.Clusters[reviewsV1].Endpoints) != 0 {
		t.Errorf("got routes %v, endpoints %v", g.Routes, g.Clusters[reviewsV1].Endpoints)
	}
}

func TestBuildStaticInlineH2(t *testing.T) {
	hcm := testHCM(t)
	rc := testRouteConfig()
	rc.Name = "local"
	hcm.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	c := testCluster()
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	c.EdsClusterConfig = nil
	c.LoadAssignment = testCLA(reviewsV1, "127.0.0.20", "127.0.0.21")
	c.LoadAssignment.Endpoints[0].LbEndpoints[1].HealthStatus = corev3.HealthStatus_UNHEALTHY
	c.LoadAssignment.Endpoints[0].LbEndpoints[1].LoadBalancingWeight = wrapperspb.UInt32(5)
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
	g, err := Build(Resources{Listeners: []proto.Message{testListener(t, hcm)}, Clusters: []proto.Message{c}}, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	l := g.Listeners["virtualOutbound"].FilterChains[0]
	if l.RouteConfigName != InlineRouteName("virtualOutbound", "") || g.Routes[l.RouteConfigName] == nil {
		t.Errorf("inline route: listener %+v, routes %v", l, g.Routes)
	}
	want := &Cluster{Name: reviewsV1, ConnectTimeout: 2 * time.Second, LBPolicy: "ROUND_ROBIN", HTTP2: true,
		Endpoints: []Endpoint{{Address: "127.0.0.20:15006", Health: Healthy, Weight: 1}, {Address: "127.0.0.21:15006", Health: Unhealthy, Weight: 5}}}
	if diff := cmp.Diff(want, g.Clusters[reviewsV1]); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
}

func TestBuildErrors(t *testing.T) {
	type mut func(t testing.TB, r *Resources)
	listenerWith := func(f func(l *listenerv3.Listener)) mut {
		return func(t testing.TB, r *Resources) { f(r.Listeners[0].(*listenerv3.Listener)) }
	}
	hcmWith := func(f func(h *hcmv3.HttpConnectionManager)) mut {
		return func(t testing.TB, r *Resources) {
			h := testHCM(t)
			f(h)
			r.Listeners[0] = testListener(t, h)
		}
	}
	routeWith := func(f func(rc *routev3.RouteConfiguration)) mut {
		return func(t testing.TB, r *Resources) { f(r.Routes[0].(*routev3.RouteConfiguration)) }
	}
	clusterWith := func(f func(c *clusterv3.Cluster)) mut {
		return func(t testing.TB, r *Resources) { f(r.Clusters[0].(*clusterv3.Cluster)) }
	}
	claWith := func(f func(c *endpointv3.ClusterLoadAssignment)) mut {
		return func(t testing.TB, r *Resources) { f(r.Endpoints[0].(*endpointv3.ClusterLoadAssignment)) }
	}
	route2 := func(rc *routev3.RouteConfiguration) *routev3.Route { return rc.VirtualHosts[0].Routes[2] }
	tests := []struct {
		name    string
		mutate  mut
		wantErr string
	}{
		{"filter not HCM", listenerWith(func(l *listenerv3.Listener) { l.FilterChains[0].Filters[0].Name = "envoy.filters.network.redis_proxy" }),
			`listener "virtualOutbound": filter_chains[0].filters[0].name = "envoy.filters.network.redis_proxy": must be envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy`},
		{"two filter chains with one match", listenerWith(func(l *listenerv3.Listener) { l.FilterChains = append(l.FilterChains, l.FilterChains[0]) }),
			`listener "virtualOutbound": filter_chains[1].filter_chain_match: must differ from filter_chains[0]'s (multiple filter chains with the same matching rules)`},
		{"HCM typed_config wrong type", listenerWith(func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}
		}), `listener "virtualOutbound": filter_chains[0].filters[0].typed_config: type_url "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router": must be type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`},
		{"listener port 0", listenerWith(func(l *listenerv3.Listener) { l.Address = xdstest.SocketAddress("127.0.0.1", 0) }),
			`listener "virtualOutbound": address.socket_address.port_value = "0": must be 1-65535`},
		{"listener hostname", listenerWith(func(l *listenerv3.Listener) { l.Address = xdstest.SocketAddress("localhost", 80) }),
			`listener "virtualOutbound": address.socket_address.address = "localhost": must be an IP address`},
		{"listener filter", listenerWith(func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
		}), `listener "virtualOutbound": listener_filters[0].name = "envoy.filters.listener.proxy_protocol": must be envoy.filters.listener.tls_inspector, envoy.filters.listener.http_inspector or envoy.filters.listener.original_dst`},
		{"unknown http filter", hcmWith(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.lua"}}, h.HttpFilters...)
		}), `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.http_filters[0].name = "envoy.filters.http.lua": unknown HTTP filter (not is_optional)`},
		{"http filter not router", hcmWith(func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters[0].Name = "envoy.filters.http.cors"
			h.HttpFilters[0].ConfigType = nil
		}),
			`listener "virtualOutbound": filter_chains[0].filters[0].typed_config.http_filters[0].name = "envoy.filters.http.cors": must be envoy.filters.http.router (the last filter must be the router)`},
		{"codec HTTP2", hcmWith(func(h *hcmv3.HttpConnectionManager) { h.CodecType = hcmv3.HttpConnectionManager_HTTP2 }),
			`listener "virtualOutbound": filter_chains[0].filters[0].typed_config.codec_type = "HTTP2": must be AUTO`},
		{"rds not ads", hcmWith(func(h *hcmv3.HttpConnectionManager) { h.GetRds().ConfigSource = &corev3.ConfigSource{} }),
			`listener "virtualOutbound": filter_chains[0].filters[0].typed_config.rds.config_source: must be ads`},
		{"inline route bad regex", hcmWith(func(h *hcmv3.HttpConnectionManager) {
			rc := testRouteConfig()
			rc.VirtualHosts[0].Routes[1].Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "["}}
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
		}), `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1].match.safe_regex.regex = "[": must be RE2: error parsing regexp: missing closing ]: ` + "`[`"},
		{"xfcc issuer", hcmWith(func(h *hcmv3.HttpConnectionManager) {
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Issuer: true}
		}), `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.set_current_client_cert_details.issuer = "true": not supported`},
		{"empty stat_prefix", hcmWith(func(h *hcmv3.HttpConnectionManager) { h.StatPrefix = "" }),
			`listener "virtualOutbound": filter_chains[0].filters[0].typed_config.stat_prefix: must not be empty`},
		{"route regex", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.safe_regex.regex = "(": must be RE2: error parsing regexp: missing closing ): ` + "`(`"},
		{"header regex", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.Headers = []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a**"}}}}}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.headers[0].string_match.safe_regex.regex = "a**": must be RE2: error parsing regexp: invalid nested repetition operator: ` + "`**`"},
		{"header contains", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.Headers = []*routev3.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "a"}}}}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.headers[0].string_match: must be exact, prefix, suffix or safe_regex`},
		{"dynamic_metadata regex", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.DynamicMetadata = []*matcherv3.MetadataMatcher{{Filter: "envoy.filters.http.jwt_authn",
				Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}}},
				Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.dynamic_metadata[0]: value.string_match.safe_regex.regex = "(": must be RE2: error parsing regexp: missing closing ): ` + "`(`"},
		{"bad pseudo header", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.Headers = []*routev3.HeaderMatcher{{Name: ":protocol"}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.headers[0].name = ":protocol": must be a header or :authority, :method, :path or :scheme`},
		{"no path specifier", routeWith(func(rc *routev3.RouteConfiguration) { route2(rc).Match.PathSpecifier = nil }),
			`route_config "http_proxy": virtual_hosts[0].routes[2].match.path_specifier: must be prefix, path or safe_regex`},
		{"query param regex", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "ok"}, {Name: "q",
				QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}}}}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.query_parameters[1].string_match.safe_regex.regex = "(": must be RE2: error parsing regexp: missing closing ): ` + "`(`"},
		{"inline route query param regex", hcmWith(func(h *hcmv3.HttpConnectionManager) {
			rc := testRouteConfig()
			rc.VirtualHosts[0].Routes[0].Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "q",
				QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a**"}}}}}}
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
		}), `listener "virtualOutbound": filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].match.query_parameters[0].string_match.safe_regex.regex = "a**": must be RE2: error parsing regexp: invalid nested repetition operator: ` + "`**`"},
		{"query param no name", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.QueryParameters = []*routev3.QueryParameterMatcher{{}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.query_parameters[0].name: must not be empty`},
		{"query param contains", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).Match.QueryParameters = []*routev3.QueryParameterMatcher{{Name: "q",
				QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "a"}}}}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].match.query_parameters[0].string_match: must be exact, prefix, suffix or safe_regex`},
		{"zero weights", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(0)}}}}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].route.weighted_clusters = "0": sum of weights must be 1 to 4294967295`},
		{"retry_on unknown", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx,sometimes"}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].route.retry_policy.retry_on = "5xx,sometimes": condition "sometimes" is not supported`},
		{"max_stream_duration", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).GetRoute().MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(time.Second)}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].route.max_stream_duration.max_stream_duration = "1s": not supported; use timeout`},
		{"two gRPC timeout maxima", routeWith(func(rc *routev3.RouteConfiguration) {
			a := route2(rc).GetRoute()
			a.MaxGrpcTimeout = durationpb.New(time.Second) //nolint:staticcheck // deprecated, still read
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(time.Second)}
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].route.max_stream_duration.grpc_timeout_header_max: must not be set with max_grpc_timeout`},
		{"negative gRPC timeout", routeWith(func(rc *routev3.RouteConfiguration) {
			route2(rc).GetRoute().MaxGrpcTimeout = durationpb.New(-time.Second) //nolint:staticcheck // deprecated, still read
		}), `route_config "http_proxy": virtual_hosts[0].routes[2].route.max_grpc_timeout = "-1s": must not be negative`},
		{"duplicate domain", routeWith(func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "other", Domains: []string{"x", "REVIEWS"}})
		}), `route_config "http_proxy": virtual_hosts[1].domains[1] = "REVIEWS": must be unique in the route configuration`},
		{"bad wildcard", routeWith(func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Domains[1] = "a.*.com" }),
			`route_config "http_proxy": virtual_hosts[0].domains[1] = "a.*.com": must be "*", a host, or have one wildcard at its start or end`},
		{"vhost no domains", routeWith(func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Domains = nil }),
			`route_config "http_proxy": virtual_hosts[0].domains: must not be empty`},
		{"lb_policy", clusterWith(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }),
			`cluster "outbound|9080|v1|reviews.default.svc.cluster.local": lb_policy = "CLUSTER_PROVIDED": must be ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV`},
		{"cluster type", clusterWith(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_DiscoveryType(99)}
		}), `cluster "outbound|9080|v1|reviews.default.svc.cluster.local": type = "99": must be EDS, STATIC, STRICT_DNS, LOGICAL_DNS or ORIGINAL_DST`},
		{"eds not ads", clusterWith(func(c *clusterv3.Cluster) { c.EdsClusterConfig = nil }),
			`cluster "outbound|9080|v1|reviews.default.svc.cluster.local": eds_cluster_config.eds_config: must be ads`},
		{"protocol options key", clusterWith(func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions": xdstest.MustAny(t, &httpv3.HttpProtocolOptions{})}
		}), `cluster "outbound|9080|v1|reviews.default.svc.cluster.local": typed_extension_protocol_options["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"]: must be envoy.extensions.upstreams.http.v3.HttpProtocolOptions`},
		{"upstream TLS without config", clusterWith(func(c *clusterv3.Cluster) { c.TransportSocket = &corev3.TransportSocket{Name: "tls"} }),
			`cluster "outbound|9080|v1|reviews.default.svc.cluster.local": transport_socket.typed_config: must be set`},
		{"static bad endpoint", clusterWith(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
			c.LoadAssignment = testCLA(c.Name, "not-an-ip")
		}), `cluster "outbound|9080|v1|reviews.default.svc.cluster.local": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = "not-an-ip": must be an IP address`},
		{"cla weight 0", claWith(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
		}), `cluster_load_assignment "outbound|9080|v1|reviews.default.svc.cluster.local": endpoints[0].lb_endpoints[0].load_balancing_weight = "0": must be at least 1`},
		{"cla locality weight 0", claWith(func(c *endpointv3.ClusterLoadAssignment) { c.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0) }),
			`cluster_load_assignment "outbound|9080|v1|reviews.default.svc.cluster.local": endpoints[0].load_balancing_weight = "0": must be at least 1`},
		{"cla duplicate locality", claWith(func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].Locality = &corev3.Locality{Region: "region1", Zone: "zone1"}
			c.Endpoints = append(c.Endpoints, &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Region: "region1", Zone: "zone1"}})
		}), `cluster_load_assignment "outbound|9080|v1|reviews.default.svc.cluster.local": endpoints[1].locality = "region1/zone1/": must not repeat a locality of priority 0`},
		{"cla overprovisioning factor", claWith(func(c *endpointv3.ClusterLoadAssignment) {
			c.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(100)}
		}), `cluster_load_assignment "outbound|9080|v1|reviews.default.svc.cluster.local": policy.overprovisioning_factor.value = "100": must be 140 (unset)`},
		{"duplicate cluster", func(t testing.TB, r *Resources) { r.Clusters = append(r.Clusters, testCluster()) },
			`cluster "outbound|9080|v1|reviews.default.svc.cluster.local": name: duplicate`},
		{"wrong message type", func(t testing.TB, r *Resources) { r.Routes[0] = testCluster() },
			`routes[0]: got *clusterv3.Cluster, want RouteConfiguration`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testResources(t)
			tc.mutate(t, &res)
			g, err := Build(res, nil)
			if err == nil {
				t.Fatalf("Build = generation %d, want error %q", g.Number, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantErr, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRouteFields(t *testing.T) {
	rc := testRouteConfig()
	r := route2(rc)
	r.Match.CaseSensitive = wrapperspb.Bool(false)
	r.Match.Headers = []*routev3.HeaderMatcher{
		{Name: "End-User", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "jason"}}}},
		{Name: "host", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}},
		{Name: "x-v", InvertMatch: true, TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "v1"}}}},
	}
	r.Match.QueryParameters = []*routev3.QueryParameterMatcher{
		{Name: "u", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "Nor"}, IgnoreCase: true}}},
		{Name: "debug", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: false}},
		{Name: "any"},
	}
	a := r.GetRoute()
	a.Timeout = durationpb.New(0)
	a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
		Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(80)}, {Name: "b", Weight: wrapperspb.UInt32(20)}}}}
	a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "gateway-error,connect-failure,retriable-status-codes", NumRetries: wrapperspb.UInt32(3),
		PerTryTimeout: durationpb.New(2 * time.Second), RetriableStatusCodes: []uint32{503}}
	rt, err := buildRouteTable(testFilterBuilder(t), "http_proxy", rc)
	if err != nil {
		t.Fatal(err)
	}
	want := &Route{
		Match: RouteMatch{PathKind: PathPrefix, Prefix: "/", CaseInsensitive: true, Headers: []HeaderMatcher{
			{Name: "End-User", Kind: MatchExact, Value: "jason"},
			{Name: ":authority", Kind: MatchPresent, Present: false, Invert: true},
			{Name: "X-V", Kind: MatchExact, Value: "v1", Invert: true, TreatMissingAsEmpty: true},
		}, Query: []QueryMatcher{
			{Name: "u", Kind: MatchPrefix, Value: "Nor", IgnoreCase: true},
			{Name: "debug", Kind: MatchPresent, Present: false},
			{Name: "any", Kind: MatchPresent, Present: true},
		}},
		Clusters:    []WeightedCluster{{Name: "a", Weight: 80}, {Name: "b", Weight: 20}},
		TotalWeight: 100,
		Retry: &RetryPolicy{RetryOn: []string{"gateway-error", "connect-failure", "retriable-status-codes"}, NumRetries: 3,
			PerTryTimeout: 2 * time.Second, RetriableStatusCodes: []uint32{503}},
	}
	got := rt.VirtualHosts[0].Routes[2]
	if got.picks == nil {
		t.Error("weighted route has no pick counter")
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(Route{})); diff != "" {
		t.Errorf("route (-want +got):\n%s", diff)
	}
}

func route2(rc *routev3.RouteConfiguration) *routev3.Route { return rc.VirtualHosts[0].Routes[2] }

func TestVirtualHostFor(t *testing.T) {
	vh := func(name string, domains ...string) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: domains, Routes: []*routev3.Route{prefixRoute("/", "c")}}
	}
	build := func(vhs ...*routev3.VirtualHost) *RouteTable {
		rt, err := buildRouteTable(testFilterBuilder(t), "t", &routev3.RouteConfiguration{Name: "t", VirtualHosts: vhs})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	full := build(
		vh("exact", "reviews", "reviews:9080", "www.foo.com"),
		vh("suffix", "*.foo.com"),
		vh("longsuffix", "*-bar.foo.com"),
		vh("suffixport", "*.foo.com:80"),
		vh("prefix", "foo.*"),
		vh("longprefix", "foo.bar.*"),
		vh("all", "*"),
		vh("v6", "[::1]"),
	)
	noCatchAll := build(vh("exact", "details"), vh("suffix", "*.svc.cluster.local"))
	// What the control plane emits for a Service: both "host" and
	// "host:port" domains, and no catch-all.
	service := build(vh("reviews", "reviews", "reviews:9080"), vh("ratings", "ratings", "ratings:9080"))
	tests := []struct {
		name  string
		table *RouteTable
		host  string
		want  string
	}{
		{"exact", full, "reviews", "exact"},
		{"exact with port", full, "reviews:9080", "exact"},
		{"exact case-insensitive", full, "ReViews", "exact"},
		{"exact beats suffix", full, "www.foo.com", "exact"},
		{"suffix", full, "api.foo.com", "suffix"},
		{"longest suffix", full, "baz-bar.foo.com", "longsuffix"},
		{"suffix needs one char", full, "-bar.foo.com", "suffix"},
		{"suffix excludes bare", noCatchAll, "svc.cluster.local", ""},
		{"prefix wildcard", full, "foo.com", "prefix"},
		{"suffix beats prefix", full, "foo.x.foo.com", "suffix"},
		{"prefix", full, "foo.example", "prefix"},
		{"longest prefix", full, "foo.bar.baz", "longprefix"},
		{"catch-all", full, "ratings", "all"},
		// Envoy never strips the port: "host:port" matches domains
		// written with that port, else falls to "*".
		{"other port to catch-all", full, "reviews:1234", "all"},
		{"port not stripped", full, "www.foo.com:8080", "all"},
		{"suffix with port", full, "api.foo.com:80", "suffixport"},
		{"suffix other port", full, "api.foo.com:81", "all"},
		{"ipv6 exact", full, "[::1]", "v6"},
		{"ipv6 port not stripped", full, "[::1]:8080", "all"},
		{"no match", noCatchAll, "ratings", ""},
		{"no match port", noCatchAll, "ratings:9080", ""},
		{"port not stripped no catch-all", noCatchAll, "details:9080", ""},
		{"suffix excludes port", noCatchAll, "details.default.svc.cluster.local:9080", ""},
		{"non-numeric port", noCatchAll, "details:http", ""},
		{"service host", service, "reviews", "reviews"},
		{"service host:port", service, "reviews:9080", "reviews"},
		{"service other port", service, "reviews:1234", ""},
		{"service other host's port", service, "ratings:9080", "ratings"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ""
			if v := tc.table.VirtualHostFor(tc.host); v != nil {
				got = v.Name
			}
			if got != tc.want {
				t.Errorf("VirtualHostFor(%q) = %q, want %q", tc.host, got, tc.want)
			}
		})
	}
	var nilTable *RouteTable
	if nilTable.VirtualHostFor("x") != nil {
		t.Error("nil table matched")
	}
}

func TestRouteMatches(t *testing.T) {
	compile := func(t *testing.T, m *routev3.RouteMatch) *Route {
		t.Helper()
		rm, err := buildMatch(m)
		if err != nil {
			t.Fatal(err)
		}
		return &Route{Match: rm}
	}
	str := func(kind string, v string) *routev3.HeaderMatcher_StringMatch {
		sm := &matcherv3.StringMatcher{}
		switch kind {
		case "exact":
			sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: v}
		case "prefix":
			sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: v}
		case "suffix":
			sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: v}
		case "regex":
			sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}
		}
		return &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	}
	prefix := func(p string) *routev3.RouteMatch_Prefix { return &routev3.RouteMatch_Prefix{Prefix: p} }
	hdr := func(name string, spec any, invert bool) *routev3.RouteMatch {
		h := &routev3.HeaderMatcher{Name: name, InvertMatch: invert}
		switch s := spec.(type) {
		case *routev3.HeaderMatcher_StringMatch:
			h.HeaderMatchSpecifier = s
		case bool:
			h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: s}
		}
		return &routev3.RouteMatch{PathSpecifier: prefix("/"), Headers: []*routev3.HeaderMatcher{h}}
	}
	treat := func(m *routev3.RouteMatch) *routev3.RouteMatch {
		m.Headers[0].TreatMissingHeaderAsEmpty = true
		return m
	}
	qstr := func(kind, v string, ignoreCase bool) *routev3.QueryParameterMatcher_StringMatch {
		sm := str(kind, v).StringMatch
		sm.IgnoreCase = ignoreCase
		return &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}
	}
	// qry is a "/" prefix match with one query parameter matcher; spec is
	// a string match, a bool for present_match, or nil.
	qry := func(name string, spec any) *routev3.RouteMatch {
		q := &routev3.QueryParameterMatcher{Name: name}
		switch s := spec.(type) {
		case *routev3.QueryParameterMatcher_StringMatch:
			q.QueryParameterMatchSpecifier = s
		case bool:
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: s}
		}
		return &routev3.RouteMatch{PathSpecifier: prefix("/"), QueryParameters: []*routev3.QueryParameterMatcher{q}}
	}
	and := func(m *routev3.RouteMatch, path string, h *routev3.HeaderMatcher) *routev3.RouteMatch {
		m.PathSpecifier = prefix(path)
		m.Headers = append(m.Headers, h)
		return m
	}
	userJason := &routev3.HeaderMatcher{Name: "end-user", HeaderMatchSpecifier: str("exact", "jason")}
	type req struct {
		method, target string
		headers        map[string][]string
	}
	tests := []struct {
		name  string
		match *routev3.RouteMatch
		req   req
		want  bool
	}{
		{"prefix", &routev3.RouteMatch{PathSpecifier: prefix("/reviews")}, req{"GET", "/reviews/1?x=1", nil}, true},
		{"prefix miss", &routev3.RouteMatch{PathSpecifier: prefix("/reviews")}, req{"GET", "/ratings", nil}, false},
		{"empty prefix", &routev3.RouteMatch{PathSpecifier: prefix("")}, req{"GET", "/x", nil}, true},
		{"prefix case-sensitive", &routev3.RouteMatch{PathSpecifier: prefix("/Reviews")}, req{"GET", "/reviews", nil}, false},
		{"prefix case-insensitive", &routev3.RouteMatch{PathSpecifier: prefix("/Reviews"), CaseSensitive: wrapperspb.Bool(false)}, req{"GET", "/reviews/2", nil}, true},
		{"path exact ignores query", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/productpage"}}, req{"GET", "/productpage?u=normal", nil}, true},
		{"path exact no prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/productpage"}}, req{"GET", "/productpage/x", nil}, false},
		{"absolute-form target", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/details/0"}}, req{"GET", "http://details:9080/details/0", nil}, true},
		{"regex anchored", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/api/v[0-9]+"}}}, req{"GET", "/api/v1/x", nil}, false},
		{"regex whole path", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/api/v[0-9]+/.*"}}}, req{"GET", "/api/v1/x?q", nil}, true},
		{"regex alternation anchored", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/a|/b"}}}, req{"GET", "/bc", nil}, false},
		{"header exact", hdr("end-user", str("exact", "jason"), false), req{"GET", "/", map[string][]string{"End-User": {"jason"}}}, true},
		{"header exact miss", hdr("end-user", str("exact", "jason"), false), req{"GET", "/", map[string][]string{"End-User": {"json"}}}, false},
		{"header absent", hdr("end-user", str("exact", "jason"), false), req{"GET", "/", nil}, false},
		{"header absent inverted", hdr("end-user", str("exact", "jason"), true), req{"GET", "/", nil}, false},
		{"header inverted", hdr("end-user", str("exact", "jason"), true), req{"GET", "/", map[string][]string{"End-User": {"bob"}}}, true},
		{"header prefix", hdr("x-v", str("prefix", "ab"), false), req{"GET", "/", map[string][]string{"X-V": {"abc"}}}, true},
		{"header suffix", hdr("x-v", str("suffix", "bc"), false), req{"GET", "/", map[string][]string{"X-V": {"abc"}}}, true},
		{"header regex anchored", hdr("x-v", str("regex", "b"), false), req{"GET", "/", map[string][]string{"X-V": {"abc"}}}, false},
		{"header regex", hdr("x-v", str("regex", "a.c"), false), req{"GET", "/", map[string][]string{"X-V": {"abc"}}}, true},
		{"header multi-value joined", hdr("x-v", str("exact", "a,b"), false), req{"GET", "/", map[string][]string{"X-V": {"a", "b"}}}, true},
		{"present", hdr("x-v", true, false), req{"GET", "/", map[string][]string{"X-V": {""}}}, true},
		{"present absent", hdr("x-v", true, false), req{"GET", "/", nil}, false},
		{"not present", hdr("x-v", false, false), req{"GET", "/", nil}, true},
		{"present inverted absent", hdr("x-v", true, true), req{"GET", "/", nil}, true},
		{"authority", hdr(":authority", str("exact", "reviews:9080"), false), req{"GET", "http://reviews:9080/", nil}, true},
		{"host is authority", hdr("Host", str("prefix", "reviews"), false), req{"GET", "http://reviews:9080/", nil}, true},
		{"method", hdr(":method", str("exact", "POST"), false), req{"POST", "/", nil}, true},
		{"method miss", hdr(":method", str("exact", "POST"), false), req{"GET", "/", nil}, false},
		{"path header has query", hdr(":path", str("exact", "/p?x=1"), false), req{"GET", "/p?x=1", nil}, true},
		{"scheme", hdr(":scheme", str("exact", "http"), false), req{"GET", "/", nil}, true},

		// treat_missing_header_as_empty: an absent header is "".
		{"missing as empty inverted exact", treat(hdr("end-user", str("exact", "jason"), true)), req{"GET", "/", nil}, true},
		{"missing as empty exact", treat(hdr("end-user", str("exact", "jason"), false)), req{"GET", "/", nil}, false},
		{"missing as empty exact empty", treat(hdr("end-user", str("exact", ""), false)), req{"GET", "/", nil}, true},
		{"missing not empty exact empty", hdr("end-user", str("exact", ""), false), req{"GET", "/", nil}, false},
		{"missing as empty regex", treat(hdr("x-v", str("regex", "a*"), false)), req{"GET", "/", nil}, true},
		{"missing as empty prefix inverted", treat(hdr("x-v", str("prefix", "a"), true)), req{"GET", "/", nil}, true},
		{"missing as empty present sent", treat(hdr("end-user", str("exact", "jason"), true)), req{"GET", "/", map[string][]string{"End-User": {"jason"}}}, false},
		{"missing as empty ignored by present", treat(hdr("x-v", true, false)), req{"GET", "/", nil}, false},
		{"missing as empty ignored by not present", treat(hdr("x-v", false, false)), req{"GET", "/", nil}, true},

		// query_parameters: first value, raw (not decoded), AND with the rest.
		{"query exact", qry("u", qstr("exact", "normal", false)), req{"GET", "/p?x=1&u=normal", nil}, true},
		{"query exact miss", qry("u", qstr("exact", "normal", false)), req{"GET", "/p?u=normals", nil}, false},
		{"query absent", qry("u", qstr("exact", "normal", false)), req{"GET", "/p?x=normal", nil}, false},
		{"query no query", qry("u", qstr("exact", "", false)), req{"GET", "/p", nil}, false},
		{"query first value wins", qry("u", qstr("exact", "normal", false)), req{"GET", "/p?u=test&u=normal", nil}, false},
		{"query first value", qry("u", qstr("exact", "test", false)), req{"GET", "/p?u=test&u=normal", nil}, true},
		{"query key without value", qry("u", qstr("exact", "", false)), req{"GET", "/p?a=1&u", nil}, true},
		{"query empty value", qry("u", qstr("exact", "", false)), req{"GET", "/p?u=", nil}, true},
		{"query value keeps =", qry("u", qstr("exact", "a=b", false)), req{"GET", "/p?u=a=b", nil}, true},
		{"query not decoded", qry("u", qstr("exact", "a b", false)), req{"GET", "/p?u=a%20b", nil}, false},
		{"query raw", qry("u", qstr("exact", "a%20b", false)), req{"GET", "/p?u=a%20b", nil}, true},
		{"query key not decoded", qry("ab", true), req{"GET", "/p?a%62=1", nil}, false},
		{"query key case-sensitive", qry("u", true), req{"GET", "/p?U=1", nil}, false},
		{"query exact case-sensitive", qry("u", qstr("exact", "Normal", false)), req{"GET", "/p?u=normal", nil}, false},
		{"query exact ignore_case", qry("u", qstr("exact", "Normal", true)), req{"GET", "/p?u=nORMAL", nil}, true},
		{"query prefix", qry("u", qstr("prefix", "nor", false)), req{"GET", "/p?u=normal", nil}, true},
		{"query prefix miss", qry("u", qstr("prefix", "Nor", false)), req{"GET", "/p?u=normal", nil}, false},
		{"query prefix ignore_case", qry("u", qstr("prefix", "NOR", true)), req{"GET", "/p?u=normal", nil}, true},
		{"query prefix longer than value", qry("u", qstr("prefix", "normality", true)), req{"GET", "/p?u=normal", nil}, false},
		{"query suffix", qry("u", qstr("suffix", "mal", false)), req{"GET", "/p?u=normal", nil}, true},
		{"query suffix ignore_case", qry("u", qstr("suffix", "MAL", true)), req{"GET", "/p?u=norMal", nil}, true},
		{"query suffix miss", qry("u", qstr("suffix", "MAL", false)), req{"GET", "/p?u=normal", nil}, false},
		{"query regex anchored", qry("u", qstr("regex", "nor", false)), req{"GET", "/p?u=normal", nil}, false},
		{"query regex", qry("u", qstr("regex", "nor.*", false)), req{"GET", "/p?u=normal", nil}, true},
		{"query regex ignore_case has no effect", qry("u", qstr("regex", "NOR.*", true)), req{"GET", "/p?u=normal", nil}, false},
		{"query present", qry("debug", true), req{"GET", "/p?debug", nil}, true},
		{"query present absent", qry("debug", true), req{"GET", "/p?x=debug", nil}, false},
		{"query not present", qry("debug", false), req{"GET", "/p?x=1", nil}, true},
		{"query not present sent", qry("debug", false), req{"GET", "/p?debug=0", nil}, false},
		{"query no specifier is present", qry("debug", nil), req{"GET", "/p?debug=", nil}, true},
		{"query no specifier absent", qry("debug", nil), req{"GET", "/p", nil}, false},
		{"query absolute-form", qry("u", qstr("exact", "1", false)), req{"GET", "http://details:9080/d?u=1", nil}, true},
		{"query and header and path", and(qry("u", qstr("exact", "1", false)), "/api", userJason), req{"GET", "/api/x?u=1", map[string][]string{"End-User": {"jason"}}}, true},
		{"query and header miss", and(qry("u", qstr("exact", "1", false)), "/api", userJason), req{"GET", "/api/x?u=1", nil}, false},
		{"query and path miss", and(qry("u", qstr("exact", "1", false)), "/api", userJason), req{"GET", "/web?u=1", map[string][]string{"End-User": {"jason"}}}, false},
		{"query miss and header", and(qry("u", qstr("exact", "1", false)), "/api", userJason), req{"GET", "/api?u=2", map[string][]string{"End-User": {"jason"}}}, false},
		{"all query matchers", &routev3.RouteMatch{PathSpecifier: prefix("/"), QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "a", QueryParameterMatchSpecifier: qstr("exact", "1", false)}, {Name: "b", QueryParameterMatchSpecifier: qstr("exact", "2", false)}}},
			req{"GET", "/?b=2&a=1", nil}, true},
		{"all query matchers miss", &routev3.RouteMatch{PathSpecifier: prefix("/"), QueryParameters: []*routev3.QueryParameterMatcher{
			{Name: "a", QueryParameterMatchSpecifier: qstr("exact", "1", false)}, {Name: "b", QueryParameterMatchSpecifier: qstr("exact", "2", false)}}},
			req{"GET", "/?a=1", nil}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := compile(t, tc.match)
			hr := httptest.NewRequest(tc.req.method, tc.req.target, nil)
			if !strings.HasPrefix(tc.req.target, "http") {
				hr.Host = "reviews"
			}
			for k, vs := range tc.req.headers {
				hr.Header[k] = vs
			}
			if got := r.Matches(hr); got != tc.want {
				t.Errorf("Matches(%s %s %v) = %v, want %v", tc.req.method, tc.req.target, tc.req.headers, got, tc.want)
			}
		})
	}
	if (*Route)(nil).Matches(&http.Request{}) {
		t.Error("nil route matched")
	}
}

// matchCases are the common route shapes whose Matches must not allocate.
func matchCases(t testing.TB) []struct {
	name  string
	route *Route
	req   *http.Request
} {
	build := func(m *routev3.RouteMatch) *Route {
		rm, err := buildMatch(m)
		if err != nil {
			t.Fatal(err)
		}
		return &Route{Match: rm}
	}
	exact := func(v string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
	}
	req := httptest.NewRequest("GET", "/reviews/0?u=normal&x=1", nil)
	req.Header.Set("End-User", "jason")
	req.Header.Set("User-Agent", "curl/8")
	return []struct {
		name  string
		route *Route
		req   *http.Request
	}{
		{"prefix", build(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/reviews"}}), req},
		{"prefix case-insensitive", build(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/Reviews"},
			CaseSensitive: wrapperspb.Bool(false)}), req},
		{"exact header", build(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{Name: "end-user", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("jason")}}}}), req},
		{"missing header as empty", build(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{Name: "x-v", InvertMatch: true, TreatMissingHeaderAsEmpty: true,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("v1")}}}}), req},
		{"query exact", build(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			QueryParameters: []*routev3.QueryParameterMatcher{{Name: "x",
				QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: exact("1")}}}}), req},
	}
}

func TestRouteMatchAllocs(t *testing.T) {
	for _, tc := range matchCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.route.Matches(tc.req) {
				t.Fatal("Matches = false, want true")
			}
			if n := testing.AllocsPerRun(100, func() { tc.route.Matches(tc.req) }); n != 0 {
				t.Errorf("Matches allocates %v times per call, want 0", n)
			}
		})
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	for _, tc := range matchCases(b) {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tc.route.Matches(tc.req)
			}
		})
	}
}

func TestPickCluster(t *testing.T) {
	weighted := &Route{Clusters: []WeightedCluster{{Name: "v1", Weight: 50}, {Name: "v2", Weight: 30}, {Name: "v3", Weight: 20}}, TotalWeight: 100}
	tests := []struct {
		name string
		r    *Route
		n    uint64
		want string
	}{
		{"nil", nil, 3, ""},
		{"none", &Route{}, 3, ""},
		{"single", &Route{Clusters: []WeightedCluster{{Name: "only", Weight: 1}}, TotalWeight: 1}, 12345, "only"},
		{"first share start", weighted, 0, "v1"},
		{"first share end", weighted, 49, "v1"},
		{"second share", weighted, 50, "v2"},
		{"second share end", weighted, 79, "v2"},
		{"third share", weighted, 80, "v3"},
		{"wraps", weighted, 199, "v3"},
		{"wraps to first", weighted, 1_000_000_000_000, "v1"},
		{"zero weight skipped", &Route{Clusters: []WeightedCluster{{Name: "a", Weight: 0}, {Name: "b", Weight: 1}}, TotalWeight: 1}, 0, "b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PickCluster(tc.r, tc.n); got != tc.want {
				t.Errorf("PickCluster(n=%d) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
	// Over one full cycle the shares equal the weights.
	counts := map[string]int{}
	for n := range uint64(100) {
		counts[PickCluster(weighted, n)]++
	}
	if diff := cmp.Diff(map[string]int{"v1": 50, "v2": 30, "v3": 20}, counts); diff != "" {
		t.Errorf("shares (-want +got):\n%s", diff)
	}
}

func TestConfigDump(t *testing.T) {
	res := testResources(t)
	res.Versions = map[string]string{xdsapi.ClusterType: "c1", xdsapi.ListenerType: "l1", xdsapi.RouteType: "r1", xdsapi.EndpointType: "e1"}
	g, err := Build(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, b)
	}
	var types []string
	for _, c := range dump.Configs {
		types = append(types, c["@type"].(string))
	}
	want := []string{
		"type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
		"type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
		"type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
		"type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
	}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Errorf("config types (-want +got):\n%s", diff)
	}
	s := strings.Join(strings.Fields(string(b)), "")
	for _, sub := range []string{`"versionInfo":"l1"`, `"name":"virtualOutbound"`, `"routeConfigName":"http_proxy"`,
		`"@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"`,
		`"versionInfo":"r1"`, `"clusterName":"outbound|9080|v1|reviews.default.svc.cluster.local"`} {
		if !strings.Contains(s, sub) {
			t.Errorf("config dump lacks %s:\n%s", sub, s)
		}
	}
	// Static (no versions): listed as static.
	g2, err := Build(testResources(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := g2.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b2), `"staticListeners"`) || strings.Contains(string(b2), `"dynamicListeners"`) {
		t.Errorf("static dump:\n%s", b2)
	}
}

// encode serializes ms as an xDS client keeps them (Encoded).
func encode(t testing.TB, ms []proto.Message) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range ms {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestBuildEncoded(t *testing.T) {
	res := testResources(t)
	res.Versions = map[string]string{xdsapi.ClusterType: "c1", xdsapi.ListenerType: "l1", xdsapi.RouteType: "r1", xdsapi.EndpointType: "e1"}
	enc := &Encoded{Listeners: encode(t, res.Listeners), Routes: encode(t, res.Routes), Clusters: encode(t, res.Clusters),
		Endpoints: encode(t, res.Endpoints), Versions: res.Versions}
	g, err := BuildEncoded(enc, nil, filter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := Build(res, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Listeners) != len(want.Listeners) || len(g.Routes) != len(want.Routes) ||
		!cmp.Equal(want.Clusters[reviewsV1].Endpoints, g.Clusters[reviewsV1].Endpoints) {
		t.Errorf("BuildEncoded = %+v, want as Build: %+v", g, want)
	}
	// The generation keeps the bytes, not the protos; Source decodes them
	// again, to the same config_dump.
	src, err := g.Source()
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Clusters) != 1 || !proto.Equal(src.Clusters[0], res.Clusters[0]) || !proto.Equal(src.Endpoints[0], res.Endpoints[0]) {
		t.Errorf("Source = %v, want the encoded resources", src)
	}
	gotDump, err := g.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	wantDump, err := want.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(wantDump), string(gotDump)); diff != "" {
		t.Errorf("config_dump (-Build +BuildEncoded):\n%s", diff)
	}

	// Bytes that are not the type: an error naming type and index.
	bad := *enc
	bad.Clusters = [][]byte{enc.Clusters[0], {0xff}}
	_, err = BuildEncoded(&bad, nil, filter.Deps{})
	if wantErr := "resources[1]: decode " + xdsapi.ClusterType + ": "; err == nil || !strings.HasPrefix(err.Error(), wantErr) {
		t.Errorf("BuildEncoded(bad cluster) = %v, want an error starting %q", err, wantErr)
	}
}

func testFilterBuilder(t testing.TB) *filterBuilder {
	t.Helper()
	fb, err := newFilterBuilder(filter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

// TestRoutePickHoldsSharesOverAnyWindow: weighted picks match the weights
// within a couple of requests over every window, not only on average, and
// alternate requests (a client's own A/B pattern) still split by weight.
func TestRoutePickHoldsSharesOverAnyWindow(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"50/50", []uint32{50, 50}},
		{"80/20", []uint32{80, 20}},
		{"99/1 canary", []uint32{99, 1}},
		{"50/30/20", []uint32{50, 30, 20}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Route{picks: new(atomic.Uint64)}
			for i, w := range tc.weights {
				r.Clusters = append(r.Clusters, WeightedCluster{Name: fmt.Sprint("c", i), Weight: w})
				r.TotalWeight += w
			}
			const window = 1000
			picks := make([]string, 20*window)
			for i := range picks {
				picks[i] = r.Pick()
			}
			check := func(what string, got map[string]int, n int) {
				t.Helper()
				for i, w := range tc.weights {
					want := float64(n) * float64(w) / float64(r.TotalWeight)
					if d := float64(got[fmt.Sprint("c", i)]) - want; d < -3 || d > 3 {
						t.Fatalf("%s: c%d got %d picks, want %.0f±3 (all: %v)", what, i, got[fmt.Sprint("c", i)], want, got)
					}
				}
			}
			for start := 0; start+window <= len(picks); start += 997 {
				counts := map[string]int{}
				for _, c := range picks[start : start+window] {
					counts[c]++
				}
				check(fmt.Sprintf("window at %d", start), counts, window)
			}
			for parity := range 2 {
				counts := map[string]int{}
				for i := parity; i < 2*window; i += 2 {
					counts[picks[i]]++
				}
				check(fmt.Sprintf("every other pick from %d", parity), counts, window)
			}
		})
	}
}
