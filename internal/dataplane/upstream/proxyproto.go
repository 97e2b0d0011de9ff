package upstream

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

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
	// key is the pool key of the HTTP connections to an endpoint that
	// start with this header: the endpoint's address, then the version
	// and, for a downstream's header, its addresses. Envoy keys its
	// connection pools by the PROXY protocol options
	// (UpstreamProxyProtocolSocketFactory::hashKey), so a connection
	// carrying one client's addresses never carries another client's
	// requests. "" for the TCP proxy's connections, which are pooled
	// nowhere.
	key string
}

// newProxyHeader returns the header of version for the downstream
// connection conn (nil: none), keyed for a pool of connections to addr
// ("": none). It allocates the header and its key, nothing else.
func newProxyHeader(version uint8, conn *filter.Connection, addr string) *proxyHeader {
	h := &proxyHeader{version: version}
	if conn != nil && conn.Source.IsValid() && conn.Destination.IsValid() {
		h.down, h.src, h.dst = true, conn.Source, conn.Destination
	}
	if addr == "" {
		return h
	}
	var b strings.Builder
	b.Grow(len(addr) + 4 + 2*len("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%zone]:65535"))
	b.WriteString(addr)
	b.WriteString("|pp")
	b.WriteByte('0' + version)
	if h.down {
		var scratch [64]byte
		b.WriteByte('=')
		b.Write(h.src.AppendTo(scratch[:0]))
		b.WriteByte('>')
		b.Write(h.dst.AppendTo(scratch[:0]))
	}
	h.key = b.String()
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
// other downstream addresses. It is made once per cluster (plaintext) or
// TLS transport socket, so that a pick boxes nothing.
type proxyProtocolRT struct {
	version uint8
	// h2 is the HTTP/2 pool the requests go to; nil for HTTP/1.1 over
	// h1, through TLS transport tt (nil: plaintext).
	h2 *h2Pool
	h1 *h1Transport
	tt *tlsTransport
}

func (p *proxyProtocolRT) RoundTrip(req *http.Request) (*http.Response, error) {
	h := newProxyHeader(p.version, filter.ConnectionFrom(req.Context()), req.URL.Host)
	if p.h2 != nil {
		return p.h2.roundTrip(req, h)
	}
	return p.h1.roundTrip(req, p.tt, h)
}
