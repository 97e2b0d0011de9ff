// Package xdstest builds the small envoy messages that tests of both planes
// write by hand: Any wrappers, socket addresses and the ADS config source.
// Like its parent xdsapi it imports only envoy protos and the standard
// library; it is for tests only.
package xdstest

import (
	"net"
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// MustAny wraps m in an Any, failing the test if it cannot.
func MustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// SocketAddress is an envoy Address for ip and port.
func SocketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// HostPortAddress is SocketAddress for "ip:port", failing the test when
// hostport does not parse.
func HostPortAddress(t testing.TB, hostport string) *corev3.Address {
	t.Helper()
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return SocketAddress(host, uint32(p))
}

// ADS is the config source that says "over the ADS stream".
func ADS() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

// SDS is an SdsSecretConfig that fetches name over the ADS stream.
func SDS(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: ADS()}
}

// SDSGRPC is an SdsSecretConfig as Istio writes it for its agent's
// secrets ("default", "ROOTCA", "file-cert:...", "file-root:..."): an
// api_config_source to the sds-grpc cluster.
func SDSGRPC(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:                   corev3.ApiConfigSource_GRPC,
			TransportApiVersion:       corev3.ApiVersion_V3,
			SetNodeOnFirstMessageOnly: true,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"}}}},
		}},
	}}
}

// TLSSocket is an envoy.transport_sockets.tls transport socket with
// context (a DownstreamTlsContext or an UpstreamTlsContext).
func TLSSocket(t testing.TB, context proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: MustAny(t, context)}}
}

// InlineBytes is a DataSource holding b.
func InlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}
