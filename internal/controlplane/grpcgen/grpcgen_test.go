package grpcgen

import (
	"maps"
	"os"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/model"
	"github.com/loom-mesh/loom/internal/controlplane/translate"
)

// loadPushContext decodes files and indexes them; any error fails t.
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

// grpcClient is a proxyless client in namespace default.
func grpcClient() *model.Proxy {
	return &model.Proxy{
		Type:      model.SidecarProxy,
		ID:        "sidecar~127.0.0.20~client.default~default.svc.cluster.local",
		IP:        "127.0.0.20",
		Name:      "client",
		Namespace: "default",
	}
}

const (
	reviews   = "reviews.default.svc.cluster.local"
	v1Cluster = "outbound|9080|v1|" + reviews
	v2Cluster = "outbound|9080|v2|" + reviews
)

func mustGenerate(t *testing.T) *translate.Resources {
	t.Helper()
	r, err := Generate(loadPushContext(t, "testdata/reviews.yaml"), grpcClient())
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return r
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := packAny(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestListeners checks the api_listener grpc-go asks for by the dial
// target's name; the TCP service gets none.
func TestListeners(t *testing.T) {
	r := mustGenerate(t)
	hcm := mustAny(t, &hcmv3.HttpConnectionManager{
		StatPrefix: reviews + ":9080",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "outbound|9080||" + reviews,
			ConfigSource: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
				ResourceApiVersion:    corev3.ApiVersion_V3,
			},
		}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: faultFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &faultv3.HTTPFault{})}},
			{Name: routerFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}},
		},
	})
	want := []*listenerv3.Listener{{Name: reviews + ":9080", ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}}
	if d := cmp.Diff(want, r.Listeners, protocmp.Transform()); d != "" {
		t.Fatalf("listeners (-want +got)\n%s", d)
	}
}

// TestRoutes checks the route configuration of the listener: the
// VirtualService's routes, with the timeout as max_stream_duration, the
// fault override kept and the CORS override (which grpc-go NACKs) gone.
func TestRoutes(t *testing.T) {
	r := mustGenerate(t)
	if len(r.Routes) != 1 {
		t.Fatalf("got %d route configurations, want 1", len(r.Routes))
	}
	rc := r.Routes[0]
	if rc.GetName() != "outbound|9080||"+reviews || len(rc.GetVirtualHosts()) != 1 {
		t.Fatalf("route configuration %q with %d virtual hosts, want outbound|9080||%s with 1", rc.GetName(), len(rc.GetVirtualHosts()), reviews)
	}
	vh := rc.GetVirtualHosts()[0]
	if !slices.Contains(vh.GetDomains(), reviews+":9080") {
		t.Errorf("domains %v lack the dial target %s:9080", vh.GetDomains(), reviews)
	}
	if len(vh.GetRoutes()) != 2 {
		t.Fatalf("got %d routes, want 2", len(vh.GetRoutes()))
	}
	jason, split := vh.GetRoutes()[0], vh.GetRoutes()[1]
	if d := cmp.Diff([]string{faultFilter}, slices.Sorted(maps.Keys(jason.GetTypedPerFilterConfig()))); d != "" {
		t.Errorf("jason route per-filter configs (-want +got)\n%s", d)
	}
	if got := jason.GetRoute().GetCluster(); got != v2Cluster {
		t.Errorf("jason route cluster = %q, want %q", got, v2Cluster)
	}
	if n := len(split.GetTypedPerFilterConfig()); n != 0 {
		t.Errorf("split route keeps %d per-filter configs (CORS), want 0", n)
	}
	wantAction := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: v1Cluster, Weight: wrapperspb.UInt32(80)},
				{Name: v2Cluster, Weight: wrapperspb.UInt32(20)},
			},
		}},
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(3 * time.Second)},
	}
	if d := cmp.Diff(wantAction, split.GetRoute(), protocmp.Transform(),
		protocmp.IgnoreFields(&routev3.RouteAction{}, "retry_policy", "hash_policy")); d != "" {
		t.Errorf("split route action (-want +got)\n%s", d)
	}
	if got := split.GetRoute().GetRetryPolicy(); got.GetRetryOn() != "unavailable,cancelled" || got.GetNumRetries().GetValue() != 2 {
		t.Errorf("split retry policy = %v, want retry_on unavailable,cancelled and 2 retries", got)
	}
}

// TestClustersAndEndpoints checks the EDS clusters (only fields grpc-go
// reads, its LB policies) and that endpoints are the apps' own ports with
// a weighted locality, not the sidecar's :15006.
func TestClustersAndEndpoints(t *testing.T) {
	r := mustGenerate(t)
	var got []string
	for _, c := range r.Clusters {
		if c.GetTransportSocket() != nil || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			t.Errorf("cluster %s: transport socket %v, eds config %v", c.GetName(), c.GetTransportSocket(), c.GetEdsClusterConfig())
		}
		got = append(got, c.GetName()+" "+c.GetLbPolicy().String())
	}
	want := []string{
		v1Cluster + " LEAST_REQUEST",
		v2Cluster + " RING_HASH",
		"outbound|9080||" + reviews + " LEAST_REQUEST",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("clusters (-want +got)\n%s", d)
	}

	ep := func(ip string, w uint32) *endpointv3.LbEndpoint {
		return &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50051}}}},
			}},
			HealthStatus:        corev3.HealthStatus_HEALTHY,
			LoadBalancingWeight: wrapperspb.UInt32(w),
		}
	}
	locality := func(w uint32, lbs ...*endpointv3.LbEndpoint) []*endpointv3.LocalityLbEndpoints {
		return []*endpointv3.LocalityLbEndpoints{{Locality: &corev3.Locality{}, LbEndpoints: lbs, LoadBalancingWeight: wrapperspb.UInt32(w)}}
	}
	wantCLA := []*endpointv3.ClusterLoadAssignment{
		{ClusterName: v1Cluster, Endpoints: locality(1, ep("127.0.0.13", 1))},
		{ClusterName: v2Cluster, Endpoints: locality(3, ep("127.0.0.14", 3))},
		{ClusterName: "outbound|9080||" + reviews, Endpoints: locality(4, ep("127.0.0.13", 1), ep("127.0.0.14", 3))},
	}
	if d := cmp.Diff(wantCLA, r.Endpoints, protocmp.Transform()); d != "" {
		t.Errorf("endpoints (-want +got)\n%s", d)
	}
}

// TestGRPCCluster checks the LB policy mapping to what grpc-go implements.
func TestGRPCCluster(t *testing.T) {
	tests := []struct {
		name string
		in   clusterv3.Cluster_LbPolicy
		want clusterv3.Cluster_LbPolicy
	}{
		{"round robin", clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_ROUND_ROBIN},
		{"random", clusterv3.Cluster_RANDOM, clusterv3.Cluster_ROUND_ROBIN},
		{"maglev", clusterv3.Cluster_MAGLEV, clusterv3.Cluster_RING_HASH},
		{"ring hash", clusterv3.Cluster_RING_HASH, clusterv3.Cluster_RING_HASH},
		{"least request", clusterv3.Cluster_LEAST_REQUEST, clusterv3.Cluster_LEAST_REQUEST},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := grpcCluster(&clusterv3.Cluster{Name: "c", LbPolicy: tt.in})
			if got.GetLbPolicy() != tt.want {
				t.Fatalf("lb_policy = %v, want %v", got.GetLbPolicy(), tt.want)
			}
		})
	}
}
