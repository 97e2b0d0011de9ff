package config

import (
	"strings"
	"testing"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	mxpb "istio.io/api/envoy/config/filter/network/metadata_exchange"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// mxConfigs are istio.metadata_exchange typed_configs: packed, and as
// istiod sends it (a TypedStruct with enable_discovery).
func mxConfigs(t *testing.T) map[string]*anypb.Any {
	v, err := structpb.NewStruct(map[string]any{"protocol": "istio-peer-exchange", "enable_discovery": true})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{
		"packed":      xdstest.MustAny(t, &mxpb.MetadataExchange{Protocol: "istio-peer-exchange"}),
		"TypedStruct": xdstest.MustAny(t, &xdstypev3.TypedStruct{TypeUrl: "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange", Value: v}),
	}
}

func TestMetadataExchangeFilters(t *testing.T) {
	for name, tc := range mxConfigs(t) {
		t.Run(name, func(t *testing.T) {
			res := testResources(t)
			c := testCluster()
			c.Filters = []*clusterv3.Filter{{Name: "istio.metadata_exchange", TypedConfig: tc}}
			res.Clusters[0] = c
			g, err := Build(res, nil)
			if err != nil {
				t.Fatal(err)
			}
			if p := g.Clusters[reviewsV1].MetadataExchange; p != "istio-peer-exchange" {
				t.Errorf("cluster MetadataExchange %q", p)
			}

			l := tcpListener(t, &tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}})
			fc := l.FilterChains[0]
			fc.Filters = append([]*listenerv3.Filter{{Name: "istio.metadata_exchange", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc}}}, fc.Filters...)
			rl, err := buildOneListener(t, l)
			if err != nil {
				t.Fatal(err)
			}
			if got := rl.FilterChains[0]; got.MetadataExchange != "istio-peer-exchange" || len(got.NetworkFilters) != 0 {
				t.Errorf("chain MetadataExchange %q, network filters %d", got.MetadataExchange, len(got.NetworkFilters))
			}
		})
	}
}

func TestMetadataExchangeErrors(t *testing.T) {
	mx := mxConfigs(t)["packed"]
	noProtocol := xdstest.MustAny(t, &mxpb.MetadataExchange{})
	for _, tc := range []struct {
		name    string
		filters []*clusterv3.Filter
		want    string
	}{
		{"other upstream filter", []*clusterv3.Filter{{Name: "envoy.filters.upstream_network.foo", TypedConfig: xdstest.MustAny(t, &structpb.Struct{})}},
			`filters[0].name = "envoy.filters.upstream_network.foo": not supported: the only upstream network filter is istio.metadata_exchange`},
		{"no protocol", []*clusterv3.Filter{{Name: "istio.metadata_exchange", TypedConfig: noProtocol}},
			`filters[0].typed_config.protocol: must be set (Istio's is istio-peer-exchange)`},
		{"twice", []*clusterv3.Filter{{Name: "istio.metadata_exchange", TypedConfig: mx}, {Name: "istio.metadata_exchange", TypedConfig: mx}},
			`filters[1].name = "istio.metadata_exchange": a second istio.metadata_exchange`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := testResources(t)
			c := testCluster()
			c.Filters = tc.filters
			res.Clusters[0] = c
			_, err := Build(res, nil)
			if err == nil || !strings.HasSuffix(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want ...%s", err, tc.want)
			}
		})
	}

	// Only before a tcp_proxy: the exchange's frames would corrupt HTTP.
	l := testListener(t, testHCM(t))
	fc := l.FilterChains[0]
	fc.Filters = append([]*listenerv3.Filter{{Name: "istio.metadata_exchange", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mx}}}, fc.Filters...)
	_, err := buildOneListener(t, l)
	if err == nil || !strings.Contains(err.Error(), `filters[0].name = "istio.metadata_exchange": only on a filter chain that ends with envoy.filters.network.tcp_proxy`) {
		t.Fatalf("MX before an HCM: %v", err)
	}
}
