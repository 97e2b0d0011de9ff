package config

import (
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/proxy_protocol/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TransportSocketMatchKey is the filter_metadata namespace of an endpoint
// (or its locality) that transport_socket_matches read.
const TransportSocketMatchKey = "envoy.transport_socket_match"

// UpstreamProxyProtocolName is the transport socket that writes a PROXY
// protocol header on each upstream connection before the socket it wraps
// (Istio's DestinationRule trafficPolicy.proxyProtocol).
const UpstreamProxyProtocolName = "envoy.transport_sockets.upstream_proxy_protocol"

const upstreamProxyProtocolTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.proxy_protocol.v3.ProxyProtocolUpstreamTransport"

// UpstreamTransport is one way of connecting to a cluster's endpoints:
// plaintext (TLS nil) or TLS origination, either of them after a PROXY
// protocol header (ProxyProtocol).
type UpstreamTransport struct {
	// Name is the transport_socket_matches entry's name, "" for the
	// cluster's own transport_socket.
	Name string
	// TLS is the UpstreamTlsContext; nil for raw_buffer.
	TLS *UpstreamTLS
	// ProxyProtocol is the PROXY protocol version (1 or 2) written first
	// on each connection, when the socket is an
	// envoy.transport_sockets.upstream_proxy_protocol
	// (ProxyProtocolUpstreamTransport) wrapping the TLS or raw_buffer
	// socket; 0: none. As Envoy's UpstreamProxyProtocolSocket, the header
	// carries the downstream connection's source and destination
	// addresses, and without a downstream connection (a filter's own
	// call) version 1 carries the upstream connection's own addresses and
	// version 2 is a LOCAL header.
	ProxyProtocol uint8
	// Key tells connection pools apart: "" for plaintext, else a digest of
	// the transport socket's config. Connections to one address over two
	// transports, or over one transport before and after its config
	// changed, never share a pool.
	Key string
}

// Transport returns the transport of endpoint ep of c: c.Transports
// indexed by ep.Transport, or plaintext when c has none.
func (c *Cluster) Transport(ep *Endpoint) *UpstreamTransport {
	if ep == nil || ep.Transport >= len(c.Transports) {
		if len(c.Transports) > 0 {
			return &c.Transports[0]
		}
		return &plaintext
	}
	return &c.Transports[ep.Transport]
}

var plaintext UpstreamTransport

// endpointMeta is what transport_socket_matches read of one endpoint: the
// envoy.transport_socket_match metadata of the endpoint and of its
// locality (nil when absent).
type endpointMeta struct {
	endpoint, locality *structpb.Struct
}

// buildClusterTransports reads transport_socket and
// transport_socket_matches into rc.Transports and sets each endpoint's
// Transport (Envoy's TransportSocketMatcher: the first match whose labels
// all equal the endpoint's, else its locality's, metadata values; else
// the cluster's transport_socket). meta is parallel to rc.Endpoints.
func buildClusterTransports(c *clusterv3.Cluster, rc *Cluster, meta []endpointMeta) error {
	if c.GetTransportSocketMatcher() != nil {
		return ferr("transport_socket_matcher", "not supported; use transport_socket_matches")
	}
	if c.GetTransportSocket() == nil && len(c.GetTransportSocketMatches()) == 0 {
		return nil
	}
	def, err := buildUpstreamTransport("", c.GetTransportSocket())
	if err != nil {
		return under("transport_socket", err)
	}
	rc.Transports = []UpstreamTransport{def}
	var labels []*structpb.Struct
	for i, m := range c.GetTransportSocketMatches() {
		p := idx("transport_socket_matches", i)
		if err := onlyFields(p, m, "name", "match", "transport_socket"); err != nil {
			return err
		}
		if m.GetName() == "" {
			return ferr(p+".name", "must not be empty")
		}
		if m.GetTransportSocket() == nil {
			return ferr(p+".transport_socket", "must be set")
		}
		t, err := buildUpstreamTransport(m.GetName(), m.GetTransportSocket())
		if err != nil {
			return under(p+".transport_socket", err)
		}
		rc.Transports = append(rc.Transports, t)
		labels = append(labels, m.GetMatch())
	}
	if len(labels) == 0 || len(rc.Endpoints) == 0 {
		return nil
	}
	eps := make([]Endpoint, len(rc.Endpoints)) // the CLA's slice may be shared with other clusters
	copy(eps, rc.Endpoints)
	for i := range eps {
		var em endpointMeta
		if i < len(meta) {
			em = meta[i]
		}
		for j, l := range labels {
			if labelsMatch(l, em.endpoint) || labelsMatch(l, em.locality) {
				eps[i].Transport = j + 1
				break
			}
		}
	}
	rc.Endpoints = eps
	return nil
}

// labelsMatch is Envoy's metadataLabelMatch: every field of want is in
// got with an equal value; an empty want matches everything, even no
// metadata.
func labelsMatch(want, got *structpb.Struct) bool {
	for k, v := range want.GetFields() {
		gv, ok := got.GetFields()[k]
		if !ok || !proto.Equal(v, gv) {
			return false
		}
	}
	return true
}

// buildUpstreamTransport reads a cluster's transport socket; nil is
// plaintext. An upstream_proxy_protocol socket wraps one of the others.
func buildUpstreamTransport(name string, ts *corev3.TransportSocket) (UpstreamTransport, error) {
	t := UpstreamTransport{Name: name}
	if ts == nil {
		return t, nil
	}
	if ts.GetTypedConfig().GetTypeUrl() == upstreamProxyProtocolTypeURL {
		return buildUpstreamProxyProtocol(name, ts)
	}
	tc, err := transportSocketConfig(ts, upstreamTLSTypeURL)
	if err != nil || tc == nil {
		return t, err
	}
	var uc tlsv3.UpstreamTlsContext
	if err := anyTo(tc, &uc); err != nil {
		return t, ferr("typed_config", "%v", err)
	}
	if t.TLS, err = buildUpstreamTLS(&uc); err != nil {
		return t, under("typed_config", err)
	}
	t.Key = "tls-" + strconv.FormatUint(chainDigest(ts), 16)
	return t, nil
}

// buildUpstreamProxyProtocol reads an upstream_proxy_protocol transport
// socket (ProxyProtocolUpstreamTransport): its version and the TLS or
// raw_buffer socket it wraps. TLVs, passed through or added, are refused:
// Loom writes none.
func buildUpstreamProxyProtocol(name string, ts *corev3.TransportSocket) (UpstreamTransport, error) {
	var pp proxyprotocolv3.ProxyProtocolUpstreamTransport
	if err := anyTo(ts.GetTypedConfig(), &pp); err != nil {
		return UpstreamTransport{}, ferr("typed_config", "%v", err)
	}
	if err := onlyFields("typed_config", &pp, "config", "transport_socket"); err != nil {
		return UpstreamTransport{}, err
	}
	if err := onlyFields("typed_config.config", pp.GetConfig(), "version"); err != nil {
		return UpstreamTransport{}, err
	}
	if err := envoyValidate(&pp); err != nil {
		return UpstreamTransport{}, ferr("typed_config", "%v", err)
	}
	inner := pp.GetTransportSocket()
	if inner.GetTypedConfig().GetTypeUrl() == upstreamProxyProtocolTypeURL {
		return UpstreamTransport{}, ferr("typed_config.transport_socket", "must not be another upstream_proxy_protocol socket")
	}
	t, err := buildUpstreamTransport(name, inner)
	if err != nil {
		return UpstreamTransport{}, under("typed_config.transport_socket", err)
	}
	switch v := pp.GetConfig().GetVersion(); v {
	case corev3.ProxyProtocolConfig_V1:
		t.ProxyProtocol = 1
	case corev3.ProxyProtocolConfig_V2:
		t.ProxyProtocol = 2
	default:
		return UpstreamTransport{}, verr("typed_config.config.version", v.String(), "must be V1 or V2")
	}
	// Connections with and without the header, or with another version,
	// never share a pool.
	t.Key = "pp" + strconv.Itoa(int(t.ProxyProtocol)) + "|" + t.Key
	return t, nil
}

// transportSocketMeta returns the envoy.transport_socket_match metadata
// of m, nil when absent.
func transportSocketMeta(m *corev3.Metadata) *structpb.Struct {
	return m.GetFilterMetadata()[TransportSocketMatchKey]
}
