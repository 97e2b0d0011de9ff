package upstream

import (
	"context"
	"net"
	"net/http"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/loom-mesh/loom/internal/dataplane/filter"
)

// proxyHeader is the PROXY protocol header a new upstream connection of a
// transport socket with config.UpstreamTransport.ProxyProtocol starts
// with, as Envoy's UpstreamProxyProtocolSocket writes it: the downstream
// connection's source (the client) and destination (its original
// destination on an intercepted listener) addresses. Without a
// downstream connection (down false: a filter's own call) version 1
// carries the upstream connection's own local and remote addresses and
// version 2 is a LOCAL header. It is immutable.
type proxyHeader struct {
	version  uint8 // 1 or 2
	down     bool
	src, dst netip.AddrPort
	// key tells the connections of one downstream connection's addresses
	// apart in a pool: Envoy keys its connection pools by the PROXY
	// protocol options (UpstreamProxyProtocolSocketFactory::hashKey), so a
	// connection carrying one client's addresses never carries another
	// client's requests.
	key string
}

// newProxyHeader returns the header of version for the downstream
// connection conn (nil: none).
func newProxyHeader(version uint8, conn *filter.Connection) *proxyHeader {
	h := &proxyHeader{version: version}
	if conn != nil && conn.Source.IsValid() && conn.Destination.IsValid() {
		h.down, h.src, h.dst = true, conn.Source, conn.Destination
		h.key = "|pp" + string('0'+version) + "=" + h.src.String() + ">" + h.dst.String()
	} else {
		h.key = "|pp" + string('0'+version)
	}
	return h
}

type proxyHeaderKey struct{}

// withProxyHeader returns ctx carrying h, which the cluster's dial writes
// first on the connection it makes (before any TLS handshake).
func withProxyHeader(ctx context.Context, h *proxyHeader) context.Context {
	return context.WithValue(ctx, proxyHeaderKey{}, h)
}

func proxyHeaderFrom(ctx context.Context) *proxyHeader {
	h, _ := ctx.Value(proxyHeaderKey{}).(*proxyHeader)
	return h
}

// write writes the header on nc, a connection just made.
func (h *proxyHeader) write(nc net.Conn) error {
	var hdr *proxyproto.Header
	switch {
	case h.down:
		src, dst := h.src, h.dst
		fam := proxyproto.TCPv4
		if src.Addr().Unmap().Is4() && dst.Addr().Unmap().Is4() {
			src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
			dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		} else if h.version == 1 && src.Addr().Unmap().Is4() != dst.Addr().Unmap().Is4() {
			// One socket never has two families; should the addresses
			// have them, version 1's text has no way to say it:
			// "PROXY UNKNOWN", whose addresses the receiver ignores.
			hdr = &proxyproto.Header{Version: 1, Command: proxyproto.PROXY, TransportProtocol: proxyproto.UNSPEC}
			break
		} else {
			// One family for both, as the header has one: an IPv4
			// address as IPv4-mapped IPv6.
			fam = proxyproto.TCPv6
			src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
			dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
		}
		hdr = &proxyproto.Header{Version: h.version, Command: proxyproto.PROXY, TransportProtocol: fam,
			SourceAddr: net.TCPAddrFromAddrPort(src), DestinationAddr: net.TCPAddrFromAddrPort(dst)}
	case h.version == 1:
		hdr = proxyproto.HeaderProxyFromAddrs(1, nc.LocalAddr(), nc.RemoteAddr())
	default:
		hdr = &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	_, err := hdr.WriteTo(nc)
	return err
}

// proxyProtocolRT is the round tripper of a host reached over a transport
// socket with a PROXY protocol header: each request's connection carries
// the header of its own downstream connection (filter.ConnectionFrom of
// the request's context) and is pooled apart from the connections of
// other downstream addresses.
type proxyProtocolRT struct {
	version uint8
	// roundTrip is the pool's round trip (HTTP/1.1 or HTTP/2, plaintext
	// or over one TLS transport) over connections starting with hdr.
	roundTrip func(req *http.Request, hdr *proxyHeader) (*http.Response, error)
}

func (p *proxyProtocolRT) RoundTrip(req *http.Request) (*http.Response, error) {
	h := newProxyHeader(p.version, filter.ConnectionFrom(req.Context()))
	return p.roundTrip(req.WithContext(withProxyHeader(req.Context(), h)), h)
}
