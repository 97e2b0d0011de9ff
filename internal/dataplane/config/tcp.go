package config

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// TCPProxyFilterName is the network filter a TCP listener's filter chain
// holds instead of the HTTP connection manager.
const TCPProxyFilterName = "envoy.filters.network.tcp_proxy"

// DefaultTCPIdleTimeout is TcpProxy.idle_timeout when unset (Envoy: 1h).
const DefaultTCPIdleTimeout = time.Hour

// TCPProxy is a compiled envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy:
// each downstream connection goes to one cluster, copied byte for byte both
// ways. It is immutable but for the pick counter, and safe for concurrent
// use.
type TCPProxy struct {
	// StatPrefix is TcpProxy.stat_prefix; never empty.
	StatPrefix string
	// Clusters is TcpProxy.cluster (one entry, weight 1) or its
	// weighted_clusters; TotalWeight is the sum of the weights (> 0).
	Clusters    []WeightedCluster
	TotalWeight uint32
	// IdleTimeout closes the connection when no byte moved either way for
	// this long (TcpProxy.idle_timeout); 0 disables it. Unset means
	// DefaultTCPIdleTimeout.
	IdleTimeout time.Duration
	// MaxDownstreamConnectionDuration closes the connection, both sides,
	// this long after the tcp_proxy took it, bytes in flight or not
	// (TcpProxy.max_downstream_connection_duration, at least 1ms; Istio's
	// connectionPool.tcp.maxConnectionDuration); the access log shows
	// response flag DT. 0: no limit.
	MaxDownstreamConnectionDuration time.Duration
	// HashSourceIP is TcpProxy.hash_policy [{source_ip: {}}] (Istio's
	// consistentHash useSourceIp on a TCP port): a RING_HASH or MAGLEV
	// cluster places the connection by the client's IP (ConnectionHash).
	HashSourceIP bool
	// Tunneling is TcpProxy.tunneling_config (Istio's DestinationRule
	// trafficPolicy.tunnel): the connection is carried inside an HTTP
	// CONNECT (or POST) request to the cluster's endpoint, an HTTP proxy;
	// nil: bytes go to the endpoint as they are.
	Tunneling *Tunneling

	// route carries Clusters for Route.Pick, so that TCP connections are
	// spread by the same golden-ratio sequence as HTTP requests.
	route *Route
}

// Pick returns the cluster of the next connection: the only cluster, or
// one of the weighted clusters by the golden-ratio Weyl sequence of
// Route.Pick (shares hold over every window of connections). Safe for
// concurrent use; it allocates nothing.
func (p *TCPProxy) Pick() string { return p.route.Pick() }

// ConnectionHash is the hash of a downstream connection from downstreamIP
// (the client's IP address as text, no port; "" when unknown) for RING_HASH
// and MAGLEV clusters: with HashSourceIP, XXHash64 of the IP's text, as
// Envoy's tcp_proxy source_ip hash method and the same key HTTP's
// connection_properties.source_ip hashes (Route.RequestHash), so a client
// lands on the same endpoint over TCP and HTTP. ok is false without a hash
// policy or an IP: the balancer then picks at random, as Envoy's does.
// Pure; it allocates nothing.
func (p *TCPProxy) ConnectionHash(downstreamIP string) (hash uint64, ok bool) {
	if !p.HashSourceIP || downstreamIP == "" {
		return 0, false
	}
	return sourceIPHash(downstreamIP), true
}

// buildTCPProxy validates a TcpProxy. Fields that would change behaviour
// and that this version does not implement are refused; access_log is
// compiled by the caller (buildAccessLogs).
func buildTCPProxy(tp *tcpv3.TcpProxy) (*TCPProxy, error) {
	p := &TCPProxy{StatPrefix: tp.GetStatPrefix()}
	if p.StatPrefix == "" {
		return nil, ferr("stat_prefix", "must not be empty")
	}
	switch cs := tp.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, ferr("cluster", "must not be empty")
		}
		p.Clusters = []WeightedCluster{{Name: cs.Cluster, Weight: 1}}
		p.TotalWeight = 1
	case *tcpv3.TcpProxy_WeightedClusters:
		wcs := cs.WeightedClusters.GetClusters()
		if len(wcs) == 0 {
			return nil, ferr("weighted_clusters.clusters", "must not be empty")
		}
		var total uint64
		for i, wc := range wcs {
			path := idx("weighted_clusters.clusters", i)
			if wc.GetName() == "" {
				return nil, ferr(path+".name", "must not be empty")
			}
			if wc.GetWeight() == 0 {
				return nil, verr(path+".weight", "0", "must be at least 1")
			}
			if wc.GetMetadataMatch() != nil {
				return nil, ferr(path+".metadata_match", "not supported")
			}
			total += uint64(wc.GetWeight())
			p.Clusters = append(p.Clusters, WeightedCluster{Name: wc.GetName(), Weight: wc.GetWeight()})
		}
		if total > 1<<32-1 {
			return nil, verr("weighted_clusters", strconv.FormatUint(total, 10), "sum of weights must be 1 to 4294967295")
		}
		p.TotalWeight = uint32(total)
	default:
		return nil, ferr("cluster_specifier", "must be cluster or weighted_clusters")
	}
	var err error
	if p.IdleTimeout, err = duration(tp.GetIdleTimeout(), "idle_timeout", DefaultTCPIdleTimeout); err != nil {
		return nil, err
	}
	if p.MaxDownstreamConnectionDuration, err = duration(tp.GetMaxDownstreamConnectionDuration(), "max_downstream_connection_duration", 0); err != nil {
		return nil, err
	}
	if d := tp.GetMaxDownstreamConnectionDuration(); d != nil && p.MaxDownstreamConnectionDuration < time.Millisecond {
		return nil, verr("max_downstream_connection_duration", p.MaxDownstreamConnectionDuration.String(), "must be at least 1ms")
	}
	switch {
	case tp.GetOnDemand() != nil:
		return nil, ferr("on_demand", "not supported")
	case tp.GetMetadataMatch() != nil:
		return nil, ferr("metadata_match", "not supported")
	case tp.GetDownstreamIdleTimeout() != nil || tp.GetUpstreamIdleTimeout() != nil:
		return nil, ferr("", "downstream_idle_timeout and upstream_idle_timeout are not supported; use idle_timeout")
	case tp.GetMaxConnectAttempts() != nil && tp.GetMaxConnectAttempts().GetValue() != 1:
		return nil, verr("max_connect_attempts", strconv.FormatUint(uint64(tp.GetMaxConnectAttempts().GetValue()), 10), "must be 1 (connect retries are not supported)")
	case tp.GetBackoffOptions() != nil:
		return nil, ferr("backoff_options", "not supported")
	case tp.GetMaxDownstreamConnectionDurationJitterPercentage() != nil:
		return nil, ferr("max_downstream_connection_duration_jitter_percentage", "not supported")
	case len(tp.GetProxyProtocolTlvs()) > 0:
		return nil, ferr("proxy_protocol_tlvs", "not supported")
	case tp.GetUpstreamConnectMode() != tcpv3.UpstreamConnectMode_IMMEDIATE:
		return nil, verr("upstream_connect_mode", tp.GetUpstreamConnectMode().String(), "must be IMMEDIATE")
	}
	if p.HashSourceIP, err = buildTCPHashPolicy(tp.GetHashPolicy()); err != nil {
		return nil, err
	}
	if p.Tunneling, err = buildTunneling(tp.GetTunnelingConfig()); err != nil {
		return nil, under("tunneling_config", err)
	}
	if err := envoyValidate(tp); err != nil {
		return nil, ferr("", "%v", err)
	}
	p.route = &Route{Name: p.StatPrefix, Action: ActionRoute, Clusters: p.Clusters, TotalWeight: p.TotalWeight}
	if len(p.Clusters) > 1 {
		p.route.picks = new(atomic.Uint64)
	}
	return p, nil
}

// buildTCPHashPolicy parses TcpProxy.hash_policy (envoy.type.v3.HashPolicy,
// at most one, as Envoy's validation says): source_ip gives sourceIP true;
// filter_state is refused.
func buildTCPHashPolicy(hps []*typev3.HashPolicy) (sourceIP bool, err error) {
	if len(hps) > 1 {
		return false, ferr("hash_policy", "must hold at most 1 policy, has %d", len(hps))
	}
	for i, hp := range hps {
		path := idx("hash_policy", i)
		switch hp.GetPolicySpecifier().(type) {
		case *typev3.HashPolicy_SourceIp_:
			sourceIP = true
		case *typev3.HashPolicy_FilterState_:
			return false, ferr(path+".filter_state", "not supported")
		default:
			return false, ferr(path+".policy_specifier", "must be source_ip")
		}
	}
	return sourceIP, nil
}

// Tunneling is a compiled TcpProxy.TunnelingConfig. Loom speaks it over
// HTTP/1.1 only (Envoy uses HTTP/2 when the cluster does): the proxy
// writes "CONNECT Hostname HTTP/1.1" (or "POST PostPath HTTP/1.1") with
// "Host: Hostname" and no other header, waits for the response head, and
// carries the connection's bytes both ways once it is 2xx (any 2xx, as
// Envoy's HTTP/1.1 tunnel, RFC 9110 9.3.6); anything else closes the
// downstream connection (UF). A POST goes with "Transfer-Encoding:
// chunked", its body the connection's bytes in chunks, and the response
// body is read by its framing, as Envoy's HTTP/1.1 codec sends and reads
// a request without Content-Length; CONNECT carries raw bytes. It is
// immutable.
type Tunneling struct {
	// Hostname is tunneling_config.hostname, "host:port" (Istio's
	// tunnel.targetHost:targetPort): the request target of CONNECT and
	// the Host header of both methods. Envoy's command operators
	// (%...%) in it are refused.
	Hostname string
	// UsePost is use_post (Istio's tunnel.protocol POST); PostPath is
	// post_path, "/" when unset.
	UsePost  bool
	PostPath string
}

// buildTunneling compiles tunneling_config; nil gives nil. headers_to_add,
// the propagation of response headers and trailers and the request ID
// settings change what Envoy sends or keeps and are refused.
func buildTunneling(tc *tcpv3.TcpProxy_TunnelingConfig) (*Tunneling, error) {
	if tc == nil {
		return nil, nil
	}
	if err := onlyFields("", tc, "hostname", "use_post", "post_path"); err != nil {
		return nil, err
	}
	t := &Tunneling{Hostname: tc.GetHostname(), UsePost: tc.GetUsePost(), PostPath: tc.GetPostPath()}
	switch {
	case t.Hostname == "":
		return nil, ferr("hostname", "must not be empty")
	case strings.Contains(t.Hostname, "%"):
		return nil, verr("hostname", t.Hostname, "command operators are not supported")
	case strings.ContainsAny(t.Hostname, " \t\r\n"):
		return nil, verr("hostname", t.Hostname, "must not contain white space")
	case t.PostPath != "" && !t.UsePost:
		return nil, verr("post_path", t.PostPath, "needs use_post")
	case t.PostPath != "" && (!strings.HasPrefix(t.PostPath, "/") || strings.ContainsAny(t.PostPath, " \t\r\n")):
		return nil, verr("post_path", t.PostPath, "must start with / and hold no white space")
	}
	if t.UsePost && t.PostPath == "" {
		t.PostPath = "/"
	}
	return t, nil
}
