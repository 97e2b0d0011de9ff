package config

import (
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

const tcpEchoV1 = "outbound|9000|v1|tcp-echo.default.svc.cluster.local"

func tcpListener(t testing.TB, tp *tcpv3.TcpProxy) *listenerv3.Listener {
	return tcpListenerAny(xdstest.MustAny(t, tp))
}

func tcpListenerAny(a *anypb.Any) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             "0.0.0.0_9000",
		Address:          xdstest.SocketAddress("127.0.0.13", 9000),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       TCPProxyFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a},
		}}}},
	}
}

func weighted(ws ...*tcpv3.TcpProxy_WeightedCluster_ClusterWeight) *tcpv3.TcpProxy_WeightedClusters {
	return &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: ws}}
}

// sourceIPHashPolicy is the tcp_proxy hash_policy Istio writes for
// consistentHash useSourceIp.
func sourceIPHashPolicy() []*typev3.HashPolicy {
	return []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
}

func TestBuildTCPProxy(t *testing.T) {
	tests := []struct {
		name string
		in   *tcpv3.TcpProxy
		want *TCPProxy
	}{
		{"cluster, default idle timeout",
			&tcpv3.TcpProxy{StatPrefix: tcpEchoV1, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: tcpEchoV1}},
			&TCPProxy{StatPrefix: tcpEchoV1, Clusters: []WeightedCluster{{Name: tcpEchoV1, Weight: 1}}, TotalWeight: 1, IdleTimeout: time.Hour}},
		{"weighted clusters, idle timeout 0 disables",
			&tcpv3.TcpProxy{StatPrefix: "s", IdleTimeout: durationpb.New(0), ClusterSpecifier: weighted(
				&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "a", Weight: 80},
				&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "b", Weight: 20})},
			&TCPProxy{StatPrefix: "s", Clusters: []WeightedCluster{{Name: "a", Weight: 80}, {Name: "b", Weight: 20}}, TotalWeight: 100}},
		{"max_connect_attempts 1 and idle timeout",
			&tcpv3.TcpProxy{StatPrefix: "s", IdleTimeout: durationpb.New(3 * time.Second), MaxConnectAttempts: wrapperspb.UInt32(1),
				ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}},
			&TCPProxy{StatPrefix: "s", Clusters: []WeightedCluster{{Name: "a", Weight: 1}}, TotalWeight: 1, IdleTimeout: 3 * time.Second}},
		{"max_downstream_connection_duration",
			&tcpv3.TcpProxy{StatPrefix: "s", MaxDownstreamConnectionDuration: durationpb.New(90 * time.Second),
				ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}},
			&TCPProxy{StatPrefix: "s", Clusters: []WeightedCluster{{Name: "a", Weight: 1}}, TotalWeight: 1, IdleTimeout: time.Hour,
				MaxDownstreamConnectionDuration: 90 * time.Second}},
		{"tunneling_config CONNECT (Istio's tunnel)",
			&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"},
				TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "example.com:443"}},
			&TCPProxy{StatPrefix: "s", Clusters: []WeightedCluster{{Name: "a", Weight: 1}}, TotalWeight: 1, IdleTimeout: time.Hour,
				Tunneling: &Tunneling{Hostname: "example.com:443"}}},
		{"tunneling_config POST, default path /",
			&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"},
				TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "10.0.0.1:5432", UsePost: true}},
			&TCPProxy{StatPrefix: "s", Clusters: []WeightedCluster{{Name: "a", Weight: 1}}, TotalWeight: 1, IdleTimeout: time.Hour,
				Tunneling: &Tunneling{Hostname: "10.0.0.1:5432", UsePost: true, PostPath: "/"}}},
		{"hash_policy source_ip (Istio's useSourceIp)",
			&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}, HashPolicy: sourceIPHashPolicy()},
			&TCPProxy{StatPrefix: "s", Clusters: []WeightedCluster{{Name: "a", Weight: 1}}, TotalWeight: 1, IdleTimeout: time.Hour,
				HashSourceIP: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Build(Resources{Listeners: []proto.Message{tcpListener(t, tt.in)}}, nil)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			l := g.Listeners["0.0.0.0_9000"].FilterChains[0]
			if diff := cmp.Diff(tt.want, l.TCPProxy, cmpopts.IgnoreUnexported(TCPProxy{})); diff != "" {
				t.Errorf("TCPProxy (-want +got):\n%s", diff)
			}
			if l.StatPrefix != tt.want.StatPrefix || l.RouteConfigName != "" || len(g.Routes) != 0 {
				t.Errorf("listener %+v, routes %v: want the TCP proxy's stat prefix and no route", l, g.Routes)
			}
		})
	}
}

func TestBuildTCPProxyErrors(t *testing.T) {
	one := &tcpv3.TcpProxy_Cluster{Cluster: "a"}
	tests := []struct {
		name    string
		in      *tcpv3.TcpProxy
		wantErr string
	}{
		{"no stat prefix", &tcpv3.TcpProxy{ClusterSpecifier: one},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.stat_prefix: must not be empty`},
		{"no cluster", &tcpv3.TcpProxy{StatPrefix: "s"},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.cluster_specifier: must be cluster or weighted_clusters`},
		{"weight 0", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted(
			&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "a", Weight: 1},
			&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "b"})},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.weighted_clusters.clusters[1].weight = "0": must be at least 1`},
		{"weighted cluster without name", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted(
			&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Weight: 1})},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.weighted_clusters.clusters[0].name: must not be empty`},
		{"negative idle timeout", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one, IdleTimeout: durationpb.New(-time.Second)},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.idle_timeout = "-1s": must not be negative`},
		{"connect retries", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one, MaxConnectAttempts: wrapperspb.UInt32(3)},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.max_connect_attempts = "3": must be 1 (connect retries are not supported)`},
		{"tunneling headers_to_add", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one, TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1",
			HeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "a", Value: "b"}}}}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.tunneling_config.headers_to_add: not supported`},
		{"tunneling hostname with a command operator", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one,
			TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "%REQUESTED_SERVER_NAME%:443"}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.tunneling_config.hostname = "%REQUESTED_SERVER_NAME%:443": command operators are not supported`},
		{"tunneling post_path without use_post", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one,
			TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1", PostPath: "/p"}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.tunneling_config.post_path = "/p": needs use_post`},
		{"tunneling propagate_response_headers", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one,
			TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "h:1", PropagateResponseHeaders: true}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.tunneling_config.propagate_response_headers = "true": not supported`},
		{"max_downstream_connection_duration under 1ms", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one,
			MaxDownstreamConnectionDuration: durationpb.New(time.Microsecond)},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.max_downstream_connection_duration = "1µs": must be at least 1ms`},
		{"hash_policy filter_state", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one, HashPolicy: []*typev3.HashPolicy{{
			PolicySpecifier: &typev3.HashPolicy_FilterState_{FilterState: &typev3.HashPolicy_FilterState{Key: "k"}}}}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.hash_policy[0].filter_state: not supported`},
		{"hash_policy without policy", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one, HashPolicy: []*typev3.HashPolicy{{}}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.hash_policy[0].policy_specifier: must be source_ip`},
		{"two hash policies", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one, HashPolicy: append(sourceIPHashPolicy(), sourceIPHashPolicy()...)},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.hash_policy: must hold at most 1 policy, has 2`},
		{"max_downstream_connection_duration jitter", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: one,
			MaxDownstreamConnectionDuration:                 durationpb.New(time.Second),
			MaxDownstreamConnectionDurationJitterPercentage: &typev3.Percent{Value: 10}},
			`listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config.max_downstream_connection_duration_jitter_percentage: not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(Resources{Listeners: []proto.Message{tcpListener(t, tt.in)}}, nil)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Build error:\n got %v\nwant %s", err, tt.wantErr)
			}
		})
	}
	t.Run("typed config not TcpProxy", func(t *testing.T) {
		_, err := Build(Resources{Listeners: []proto.Message{tcpListenerAny(xdstest.MustAny(t, testHCM(t)))}}, nil)
		want := `listener "0.0.0.0_9000": filter_chains[0].filters[0].typed_config: type_url "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": must be type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`
		if err == nil || err.Error() != want {
			t.Fatalf("Build error:\n got %v\nwant %s", err, want)
		}
	})
}

// TestTCPProxyPick checks that weighted picks keep their shares over every
// window of connections, as HTTP routes' do.
func TestTCPProxyPick(t *testing.T) {
	tp, err := buildTCPProxy(&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: weighted(
		&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "a", Weight: 80},
		&tcpv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "b", Weight: 20})})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for range 100 {
		got[tp.Pick()]++
	}
	if got["a"] < 78 || got["a"] > 82 || got["a"]+got["b"] != 100 {
		t.Errorf("100 picks: %v, want 80 ±2 of a and the rest b", got)
	}
	single, err := buildTCPProxy(&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "only"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := single.Pick(); p != "only" {
		t.Errorf("single cluster Pick() = %q", p)
	}
}

// TestTCPProxyConnectionHash checks that source_ip hashes the client's IP
// as Envoy does (XXHash64 of its text), the same key as an HTTP route's
// connection_properties.source_ip, and nothing without the policy or an IP.
func TestTCPProxyConnectionHash(t *testing.T) {
	hashed, err := buildTCPProxy(&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"},
		HashPolicy: sourceIPHashPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := buildTCPProxy(&tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	httpRoute := &Route{HashPolicies: []HashPolicy{{Kind: HashSourceIP}}}
	for _, ip := range []string{"10.0.0.9", "127.0.0.2", "fd00::1"} {
		h, ok := hashed.ConnectionHash(ip)
		if !ok || h != XXHash64(ip, 0) {
			t.Errorf("ConnectionHash(%q) = %#x, %v; want %#x, true", ip, h, ok, XXHash64(ip, 0))
		}
		if hh, _, _ := httpRoute.RequestHash(httptest.NewRequest("GET", "/", nil), ip); hh != h {
			t.Errorf("ConnectionHash(%q) = %#x, HTTP source_ip hash %#x: want the same", ip, h, hh)
		}
		if _, ok := plain.ConnectionHash(ip); ok {
			t.Errorf("ConnectionHash(%q) without hash_policy: ok, want none", ip)
		}
	}
	if _, ok := hashed.ConnectionHash(""); ok {
		t.Error(`ConnectionHash("") ok, want none without an IP`)
	}
}
