package config

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/loom-mesh/loom/internal/dataplane/istiostats"
	"github.com/loom-mesh/loom/internal/xdsapi/statspb"
	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

func packStats(t *testing.T, c *statspb.PluginConfig) *anypb.Any {
	t.Helper()
	a, err := statspb.Pack(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// tcpStatsListener is a TCP listener whose chain is [istio.stats, tcp_proxy].
func tcpStatsListener(t *testing.T, dir corev3.TrafficDirection, stats *anypb.Any) *listenerv3.Listener {
	l := tcpListener(t, &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "a"}})
	l.TrafficDirection = dir
	l.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: statspb.FilterName,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: stats}}}, l.FilterChains[0].Filters...)
	return l
}

// The stats filter istiod sends (a TypedStruct) is compiled onto the
// chain, with the reporter given by the listener's direction, and does not
// join the chain of network filters.
func TestBuildStatsFilters(t *testing.T) {
	for _, tt := range []struct {
		dir  corev3.TrafficDirection
		cfg  *statspb.PluginConfig
		want istiostats.Reporter
	}{
		{corev3.TrafficDirection_OUTBOUND, nil, istiostats.ReporterSource},
		{corev3.TrafficDirection_INBOUND, &statspb.PluginConfig{DisableHostHeaderFallback: true}, istiostats.ReporterDestination},
		{corev3.TrafficDirection_INBOUND, &statspb.PluginConfig{Reporter: statspb.Reporter_SERVER_GATEWAY}, istiostats.ReporterServerGateway},
	} {
		g, err := Build(Resources{Listeners: []proto.Message{tcpStatsListener(t, tt.dir, packStats(t, tt.cfg))}}, nil)
		if err != nil {
			t.Fatalf("%v: Build: %v", tt.dir, err)
		}
		fc := g.Listeners["0.0.0.0_9000"].FilterChains[0]
		if fc.TCPStats == nil || fc.TCPStats.Reporter != tt.want || len(fc.NetworkFilters) != 0 {
			t.Fatalf("%v: TCPStats %+v, network filters %v: want reporter %v and no network filter", tt.dir, fc.TCPStats, fc.NetworkFilters, tt.want)
		}
		if fc.TCPStats.DisableHostHeaderFallback != tt.cfg.GetDisableHostHeaderFallback() {
			t.Errorf("%v: disable_host_header_fallback not carried", tt.dir)
		}
	}
}

func TestBuildStatsFilterErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  *statspb.PluginConfig
		want string
	}{
		{"unsupported expression", &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{Dimensions: map[string]string{"x": "request.headers['a'] + 'b'"}}}},
			`filters[0].typed_config.value: metrics[0].dimensions["x"]`},
		{"unknown tag removed", &statspb.PluginConfig{Metrics: []*statspb.MetricConfig{{TagsToRemove: []string{"nope"}}}},
			`metrics[0].tags_to_remove[0] = "nope"`},
		{"definitions", &statspb.PluginConfig{Definitions: []*statspb.MetricDefinition{{Name: "x", Value: "1"}}}, "definitions"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(Resources{Listeners: []proto.Message{tcpStatsListener(t, corev3.TrafficDirection_OUTBOUND, packStats(t, tt.cfg))}}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	// A TypedStruct of another type is not the stats filter: unknown.
	other := xdstest.MustAny(t, &tcpv3.TcpProxy{})
	other.TypeUrl = "type.googleapis.com/other.Config"
	if _, err := Build(Resources{Listeners: []proto.Message{tcpStatsListener(t, corev3.TrafficDirection_OUTBOUND, other)}}, nil); err == nil {
		t.Fatal("Build accepted an unknown network filter")
	}
}
