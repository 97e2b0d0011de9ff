package filter

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
)

// XFF is an HTTP connection manager's trust in X-Forwarded-For: Envoy's
// HttpConnectionManager use_remote_address and xff_num_trusted_hops. The
// zero value is Envoy's default (false, 0).
type XFF struct {
	UseRemoteAddress bool
	TrustedHops      uint32
}

// TrustedClientAddress returns the request's downstream remote address
// as Envoy's connection manager computes it (RBAC remote_ip, Istio's
// remote.ip and remoteIpBlocks):
//
//   - with use_remote_address, the peer's address, or with N > 0 trusted
//     hops the Nth address from the right of X-Forwarded-For as received
//     (before Envoy appends the peer's);
//   - without, the (N+1)th address from the right of X-Forwarded-For.
//
// When X-Forwarded-For is absent, too short or its entry is not an IP
// address, it is the peer's address. Several X-Forwarded-For headers are
// read as one list, as Envoy joins them.
func TrustedClientAddress(r *http.Request, peer netip.Addr, x XFF) netip.Addr {
	skip := int(x.TrustedHops)
	if x.UseRemoteAddress {
		if skip == 0 {
			return peer
		}
		skip--
	}
	if a, ok := xffFromRight(r.Header["X-Forwarded-For"], skip); ok {
		return a
	}
	return peer
}

// xffFromRight returns the entry skip places from the right of the
// comma-separated values vs, parsed as an IP address.
func xffFromRight(vs []string, skip int) (netip.Addr, bool) {
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		for {
			j := strings.LastIndexByte(v, ',')
			entry := v[j+1:]
			if skip == 0 {
				a, err := netip.ParseAddr(strings.TrimSpace(entry))
				return a.Unmap(), err == nil
			}
			skip--
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return netip.Addr{}, false
}

// RequestAddresses returns r's peer and local addresses: the Connection's
// when the listener attached one, else what net/http knows
// (Request.RemoteAddr and the server's local address).
func RequestAddresses(r *http.Request) (source, destination netip.AddrPort) {
	if c := RequestConnection(r); c != nil {
		return c.Source, c.Destination
	}
	source, _ = netip.ParseAddrPort(r.RemoteAddr)
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		destination, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(source.Addr().Unmap(), source.Port()), netip.AddrPortFrom(destination.Addr().Unmap(), destination.Port())
}

// Upstreams lets a filter make its own calls to a cluster of the proxy,
// with the cluster's load balancing, circuit breakers and outlier
// detection (ext_authz's authorization service). The proxy's cluster
// manager implements it; it is safe for concurrent use.
type Upstreams interface {
	// RoundTrip sends req to an endpoint of cluster picked by the
	// cluster's load balancer, over the cluster's HTTP/1.1 or h2c pool;
	// RoundTrip sets req.URL's scheme and host. The caller must close the
	// response body. It fails when the cluster is unknown or has no
	// healthy endpoint, or the round trip fails.
	RoundTrip(cluster string, req *http.Request) (*http.Response, error)
	// GRPC returns the long-lived gRPC client connection to cluster:
	// one per cluster, kept across generations and closed when the
	// cluster goes; each (re)connection goes to an endpoint the cluster's
	// balancer picks. authority is the :authority of its calls, set by
	// the first caller. It fails when the cluster is unknown.
	GRPC(cluster, authority string) (grpc.ClientConnInterface, error)
}

type upstreamsKey struct{}

// WithUpstreams returns a child of ctx that carries u, for network
// filters (an HTTP filter finds it in its State).
func WithUpstreams(ctx context.Context, u Upstreams) context.Context {
	return context.WithValue(ctx, upstreamsKey{}, u)
}

// UpstreamsFrom returns the Upstreams of ctx: the State's, for a request,
// else the one WithUpstreams set; nil when there is none.
func UpstreamsFrom(ctx context.Context) Upstreams {
	if s := StateFromContext(ctx); s != nil && s.Upstreams != nil {
		return s.Upstreams
	}
	u, _ := ctx.Value(upstreamsKey{}).(Upstreams)
	return u
}
