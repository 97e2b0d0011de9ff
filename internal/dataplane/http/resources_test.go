package http_test

import (
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
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/dataplane/config"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// Builders of the xDS resources the tests feed to config.Build.

// httpListener is a listener on addr whose HCM uses RDS route.
func httpListener(t testing.TB, name, addr, route string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: route,
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: config.RouterFilterName,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdstest.MustAny(t, &routerv3.Router{})}}},
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: xdstest.HostPortAddress(t, addr),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: config.HCMFilterName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdstest.MustAny(t, hcm)}}}}},
	}
}

// staticCluster is a STATIC cluster with endpoints addrs; h2c when http2.
func staticCluster(t testing.TB, name string, http2 bool, addrs ...string) *clusterv3.Cluster {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: xdstest.HostPortAddress(t, a)}}})
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
	if http2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{config.HTTPProtocolOptionsKey: xdstest.MustAny(t, &httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
	}
	return c
}

func vhost(name string, domains []string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

func prefixRoute(name, prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

func withHeader(r *routev3.Route, name, exact string) *routev3.Route {
	r.Match.Headers = append(r.Match.Headers, &routev3.HeaderMatcher{Name: name,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: exact}})
	return r
}

func withTimeout(r *routev3.Route, d time.Duration) *routev3.Route {
	r.GetRoute().Timeout = durationpb.New(d)
	return r
}

func withRetry(r *routev3.Route, on string, n uint32, codes ...uint32) *routev3.Route {
	r.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: on, NumRetries: wrapperspb.UInt32(n), RetriableStatusCodes: codes}
	return r
}

func weightedRoute(name, prefix string, weights map[string]uint32) *routev3.Route {
	wc := &routev3.WeightedCluster{}
	for _, n := range sortedKeys(weights) {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: n, Weight: wrapperspb.UInt32(weights[n])})
	}
	return &routev3.Route{
		Name:  name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}},
	}
}

func sortedKeys(m map[string]uint32) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}

func routeConfig(name string, vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhs}
}

// resources gathers ls, rcs and cs into a config.Resources.
func resources(ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration, cs []*clusterv3.Cluster) config.Resources {
	var res config.Resources
	for _, l := range ls {
		res.Listeners = append(res.Listeners, l)
	}
	for _, r := range rcs {
		res.Routes = append(res.Routes, r)
	}
	for _, c := range cs {
		res.Clusters = append(res.Clusters, c)
	}
	return res
}

func build(t testing.TB, prev *config.Generation, ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration, cs []*clusterv3.Cluster) *config.Generation {
	t.Helper()
	g, err := config.Build(resources(ls, rcs, cs), prev)
	if err != nil {
		t.Fatalf("config.Build: %v", err)
	}
	return g
}
