package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/loom-mesh/loom/internal/dataplane/config"
)

// DefaultOriginalDstPort is the port of an original-destination host whose
// header value names none: HTTP's.
const DefaultOriginalDstPort = 80

// ErrNoOriginalDst is returned (wrapped in *ConnectError) by the round trip
// of an ORIGINAL_DST cluster's host when the request has no usable
// destination header.
var ErrNoOriginalDst = errors.New("no original destination")

// egressState is what a cluster keeps for DNS and original-destination
// dialing. Its zero value dials "tcp".
type egressState struct {
	// network is config.Cluster.DNSNetwork of the latest generation; nil
	// or "" means "tcp".
	network atomic.Pointer[string]
}

// updateEgress takes c's DNS lookup family for the dialer.
func (st *clusterState) updateEgress(c *config.Cluster) {
	n := c.DNSNetwork
	st.egress.network.Store(&n)
}

// dialNetwork is the network st's connections to addr are dialed on:
// "unix" for a pipe endpoint (config.IsPipe), "tcp", or "tcp4"/"tcp6" for
// a DNS cluster restricted to one family. A host name in
// the address is resolved by Go's resolver when the connection is dialed.
func (st *clusterState) dialNetwork(network, addr string) string {
	if network == "tcp" && config.IsPipe(addr) {
		// A pipe endpoint (Envoy's Address.pipe): a unix domain socket.
		return "unix"
	}
	if n := st.egress.network.Load(); n != nil && *n != "" && network == "tcp" {
		return *n
	}
	return network
}

// pickOriginalDst is Pick for an ORIGINAL_DST cluster (lb_policy
// CLUSTER_PROVIDED): the request names the host. Its RT reads the
// destination from the request when the round trip starts, as
// originalDstRT documents; its Addr is that destination when the cluster
// reads the authority and authority is a valid one, "" otherwise.
func (st *clusterState) pickOriginalDst(c *config.Cluster, opts PickOptions) (*Host, error) {
	if err := st.admit(); err != nil {
		return nil, err
	}
	h := &Host{st: st, idx: -1}
	st.setTransport(h, c, c.Transport(nil), &opts)
	var fallback string
	if opts.Destination.IsValid() {
		port := opts.Destination.Port()
		if p := c.OriginalDst.PortOverride; p != 0 {
			port = uint16(p)
		}
		fallback = netip.AddrPortFrom(opts.Destination.Addr().Unmap(), port).String()
		h.Addr = fallback
	}
	h.RT = &originalDstRT{cfg: c.OriginalDst, next: h.RT, fallback: fallback}
	if c.OriginalDst.Authority() && opts.Authority != "" {
		h.Addr, _ = OriginalDstAddr(opts.Authority, c.OriginalDst.PortOverride)
	}
	return h, nil
}

// originalDstRT sends a request to the destination its header names
// (original_dst_lb_config.http_header_name; the authority for ":authority"
// or "host"), as OriginalDstAddr parses it, over next; without the header
// (or with use_http_header false) to fallback, the connection's original
// destination. A request without a usable destination fails with a
// *ConnectError wrapping ErrNoOriginalDst, before any connection is made.
type originalDstRT struct {
	cfg      *config.OriginalDstConfig
	next     http.RoundTripper
	fallback string // "ip:port"; "" for none
}

func (o *originalDstRT) RoundTrip(req *http.Request) (*http.Response, error) {
	var v string
	switch {
	case o.cfg.Authority():
		v = req.Host
	case o.cfg.UseHeader():
		v = req.Header.Get(o.cfg.Header)
	}
	var (
		addr string
		err  error
	)
	if v == "" && o.fallback != "" {
		addr = o.fallback
	} else if addr, err = OriginalDstAddr(v, o.cfg.PortOverride); err != nil {
		return nil, &ConnectError{Addr: v, Err: err}
	}
	out := *req // shallow: only the URL changes.
	u := *req.URL
	u.Host = addr
	out.URL = &u
	return o.next.RoundTrip(&out)
}

// OriginalDstAddr returns the "host:port" to dial for an original
// destination header value "HOST[:PORT]": HOST an IP address (IPv6 in
// brackets) or a DNS name, which the dialer resolves (Envoy takes only an
// IP address; resolving a name is a Loom extension for explicit HTTP-proxy
// mode, where the authority is all a request carries). PORT defaults to
// DefaultOriginalDstPort; portOverride, when not 0, replaces it
// (upstream_port_override). It fails with ErrNoOriginalDst, wrapped, when
// v is empty or not of that form.
func OriginalDstAddr(v string, portOverride uint32) (string, error) {
	if v == "" {
		return "", fmt.Errorf("%w: the request has no destination header", ErrNoOriginalDst)
	}
	host, port := v, uint64(DefaultOriginalDstPort)
	if h, p, err := net.SplitHostPort(v); err == nil {
		n, perr := strconv.ParseUint(p, 10, 16)
		if perr != nil || n == 0 {
			return "", fmt.Errorf("%w: %q: port must be 1-65535", ErrNoOriginalDst, v)
		}
		host, port = h, n
	} else if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		host = v[1 : len(v)-1]
	}
	// An IPv6 address must come in brackets (RFC 3986 authority).
	bracketed := strings.HasPrefix(v, "[")
	a, err := netip.ParseAddr(host)
	switch {
	case err == nil && a.Zone() == "" && a.Is6() == bracketed:
	case err != nil && !bracketed && config.ValidHostname(host):
	default:
		return "", fmt.Errorf("%w: %q: must be HOST[:PORT] with an IP address or a DNS name", ErrNoOriginalDst, v)
	}
	if portOverride != 0 {
		port = uint64(portOverride)
	}
	return net.JoinHostPort(host, strconv.FormatUint(port, 10)), nil
}
