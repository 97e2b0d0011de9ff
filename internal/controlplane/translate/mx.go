package translate

import (
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	mxpb "istio.io/api/envoy/config/filter/network/metadata_exchange"

	"github.com/loom-mesh/loom/internal/controlplane/model"
)

// Istio's TCP metadata exchange filter: on a TLS connection that
// negotiated ALPN "istio-peer-exchange" both ends send their node
// metadata first, so that TCP metrics know the peer's workload.
const (
	mxFilterName = "istio.metadata_exchange"
	mxProtocol   = "istio-peer-exchange"
)

// mxConfig is the filter's typed_config: a packed MetadataExchange
// (istiod sends the same message in a TypedStruct).
var mxConfig = func() *anypb.Any {
	a, err := packAny(&mxpb.MetadataExchange{Protocol: mxProtocol})
	if err != nil {
		panic(err)
	}
	return a
}()

// mxClusterFilter is the upstream filter istiod puts on every outbound
// cluster (TCPClusterMx); it acts only on connections that negotiate
// mxProtocol.
func mxClusterFilter() *clusterv3.Filter {
	return &clusterv3.Filter{Name: mxFilterName, TypedConfig: proto.Clone(mxConfig).(*anypb.Any)}
}

// addMetadataExchange puts the network filter istio.metadata_exchange
// first on the TCP filter chains where istiod does (TCPListenerMx): every
// tcp_proxy chain of a sidecar's inbound listeners (but the blackhole
// loop guard), and, on a gateway, the tcp_proxy chains that terminate
// ISTIO_MUTUAL (their TLS offers mxProtocol).
func addMetadataExchange(r *Resources, p *model.Proxy) {
	for _, l := range r.Listeners {
		class := listenerClass(p.Type, l)
		if class == ClassSidecarOutbound {
			continue
		}
		for _, fc := range allChains(l) {
			fs := fc.GetFilters()
			if len(fs) == 0 || fs[len(fs)-1].GetName() != tcpProxyFilter || strings.HasSuffix(fc.GetName(), "-blackhole") {
				continue
			}
			if class == ClassGateway && !offersMX(fc.GetTransportSocket()) {
				continue
			}
			fc.Filters = slices.Insert(fs, 0, &listenerv3.Filter{
				Name:       mxFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: proto.Clone(mxConfig).(*anypb.Any)},
			})
		}
	}
}

// offersMX reports whether a downstream transport socket terminates TLS
// with mxProtocol among its ALPN protocols.
func offersMX(ts *corev3.TransportSocket) bool {
	var ctx tlsv3.DownstreamTlsContext
	if ts.GetTypedConfig().UnmarshalTo(&ctx) != nil {
		return false
	}
	return slices.Contains(ctx.GetCommonTlsContext().GetAlpnProtocols(), mxProtocol)
}
