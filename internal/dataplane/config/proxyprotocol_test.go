package config

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	rawbufv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loom-mesh/loom/internal/xdsapi/xdstest"
)

// ppSocket is the upstream_proxy_protocol socket Istio writes for a
// DestinationRule's proxyProtocol, wrapping inner.
func ppSocket(t *testing.T, pp *proxyprotocolv3.ProxyProtocolUpstreamTransport) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: UpstreamProxyProtocolName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, pp)}}
}

func rawSocket(t *testing.T) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdstest.MustAny(t, &rawbufv3.RawBuffer{})}}
}

// TestBuildUpstreamProxyProtocol: Istio's applyUpstreamProxyProtocol
// wraps the cluster's transport socket and each transport_socket_matches
// entry's; each keeps its TLS or plaintext and gains the version, and its
// pool key tells it from the same socket without the header.
func TestBuildUpstreamProxyProtocol(t *testing.T) {
	c := testCluster()
	c.TransportSocket = ppSocket(t, &proxyprotocolv3.ProxyProtocolUpstreamTransport{
		Config: &corev3.ProxyProtocolConfig{Version: corev3.ProxyProtocolConfig_V2}, TransportSocket: rawSocket(t)})
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{Name: "tlsMode-istio",
		Match: &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}},
		TransportSocket: ppSocket(t, &proxyprotocolv3.ProxyProtocolUpstreamTransport{
			Config: &corev3.ProxyProtocolConfig{}, TransportSocket: xdstest.TLSSocket(t, istioUpstream())})}}
	g, err := Build(Resources{Clusters: []proto.Message{c}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := g.Clusters[reviewsV1].Transports
	if len(ts) != 2 {
		t.Fatalf("Transports = %+v", ts)
	}
	if ts[0].TLS != nil || ts[0].ProxyProtocol != 2 || ts[0].Key != "pp2|" {
		t.Errorf("transport_socket = %+v, want plaintext after a v2 header", ts[0])
	}
	if ts[1].TLS == nil || ts[1].TLS.SNI != "outbound_.9080_.v1_.reviews.default.svc.cluster.local" || ts[1].ProxyProtocol != 1 ||
		!strings.HasPrefix(ts[1].Key, "pp1|tls-") {
		t.Errorf("tlsMode-istio = %+v, want ISTIO_MUTUAL TLS after a v1 header", ts[1])
	}
}

func TestBuildUpstreamProxyProtocolErrors(t *testing.T) {
	const p = `cluster "outbound|9080|v1|reviews.default.svc.cluster.local": transport_socket.typed_config`
	tests := []struct {
		name string
		pp   *proxyprotocolv3.ProxyProtocolUpstreamTransport
		want string
	}{
		{"added TLVs", &proxyprotocolv3.ProxyProtocolUpstreamTransport{TransportSocket: rawSocket(t), Config: &corev3.ProxyProtocolConfig{
			AddedTlvs: []*corev3.TlvEntry{{Type: 0xe0, Value: []byte("x")}}}}, p + `.config.added_tlvs: not supported`},
		{"passed-through TLVs", &proxyprotocolv3.ProxyProtocolUpstreamTransport{TransportSocket: rawSocket(t), Config: &corev3.ProxyProtocolConfig{
			PassThroughTlvs: &corev3.ProxyProtocolPassThroughTLVs{}}}, p + `.config.pass_through_tlvs: not supported`},
		{"unknown version", &proxyprotocolv3.ProxyProtocolUpstreamTransport{TransportSocket: rawSocket(t), Config: &corev3.ProxyProtocolConfig{
			Version: 7}}, p + `.config.version = "7": must be V1 or V2`},
		{"no inner socket", &proxyprotocolv3.ProxyProtocolUpstreamTransport{}, p + `: violates Envoy's constraints`},
		{"nested", &proxyprotocolv3.ProxyProtocolUpstreamTransport{TransportSocket: ppSocket(t, &proxyprotocolv3.ProxyProtocolUpstreamTransport{
			TransportSocket: rawSocket(t)})}, p + `.transport_socket: must not be another upstream_proxy_protocol socket`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCluster()
			c.TransportSocket = ppSocket(t, tt.pp)
			_, err := Build(Resources{Clusters: []proto.Message{c}}, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error:\n got %v\nwant %s", err, tt.want)
			}
		})
	}
}
