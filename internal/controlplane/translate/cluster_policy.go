package translate

import (
	"math"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// defaultMinRingSize is the ring_hash_lb_config.minimum_ring_size Istio sets
// for a consistentHash with neither ringHash nor maglev (Envoy's default).
const defaultMinRingSize = 1024

// applyTrafficPolicy sets on outbound cluster c what Istio's
// applyTrafficPolicy sets for traffic policy tp (nil: none, which still
// gives Istio's defaults: LEAST_REQUEST and circuit breaker thresholds at
// their maximum). opts is the cluster's upstream HTTP options so far (nil
// when none); the returned value is what must be packed into
// typed_extension_protocol_options (nil when none). proto is the port's
// protocol. tp.tls and proxyProtocol are applied to the transport socket
// later (applyClusterTLS, applyUpstreamProxyProtocol); tunnel is the
// tcp_proxy's (tcpTunnelingConfig).
func applyTrafficPolicy(c *clusterv3.Cluster, tp *networking.TrafficPolicy, proto registry.Protocol, opts *upstreamhttpv3.HttpProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	cp := tp.GetConnectionPool()
	if cp == nil {
		cp = &networking.ConnectionPoolSettings{}
	}
	useClientProtocol := cp.GetHttp().GetUseClientProtocol()
	if !useClientProtocol && cp.GetHttp().GetH2UpgradePolicy() == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE {
		// Upgrade before the pool, as Istio's applyTrafficPolicy does, so
		// that the pool's HTTP/2 settings (maxConcurrentStreams) land on the
		// upgraded options. The mesh default (h2UpgradePolicy
		// DO_NOT_UPGRADE) upgrades nothing; a DestinationRule's UPGRADE
		// upgrades the port whatever it speaks. With useClientProtocol,
		// h2UpgradePolicy is ineffective (istio.io/api; Istio's
		// shouldH2Upgrade).
		opts = setH2(opts)
	}
	opts = applyConnectionPool(c, cp, opts)
	applyRetryBudget(c, tp.GetRetryBudget())
	if useClientProtocol {
		// Istio's applyConnectionPool: the upstream protocol follows the
		// downstream's, even on an HTTP/2 port.
		opts = setUseDownstreamProtocol(opts)
	}
	applyOutlierDetection(c, tp.GetOutlierDetection())
	applyLoadBalancer(c, tp.GetLoadBalancer())
	return opts
}

// defaultThresholds are Istio's circuit breaker thresholds when the
// connection pool sets none: every limit at its maximum, so that Envoy's
// small defaults (1024 requests, 3 retries) never reject traffic.
func defaultThresholds() *clusterv3.CircuitBreakers_Thresholds {
	return &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(math.MaxUint32),
		MaxPendingRequests: wrapperspb.UInt32(math.MaxUint32),
		MaxRequests:        wrapperspb.UInt32(math.MaxUint32),
		MaxRetries:         wrapperspb.UInt32(math.MaxUint32),
		TrackRemaining:     true,
	}
}

// applyConnectionPool translates ConnectionPoolSettings as Istio's
// applyConnectionPool: tcp.maxConnections, http.http1MaxPendingRequests,
// http2MaxRequests and maxRetries set the DEFAULT circuit breaker
// thresholds (0 keeps Istio's maximum); tcp.connectTimeout the
// connect_timeout; tcp.tcpKeepalive upstream_connection_options; and
// http.idleTimeout (else tcp.idleTimeout), maxRequestsPerConnection and
// tcp.maxConnectionDuration the common_http_protocol_options of the
// returned HttpProtocolOptions. http.maxConcurrentStreams and
// http.http2KeepAlive (http2_protocol_options.connection_keepalive) apply
// to an HTTP/2 cluster only (an HTTP/2 port, or h2UpgradePolicy UPGRADE):
// an HTTP/1.1 one has no PINGs to send.
func applyConnectionPool(c *clusterv3.Cluster, cp *networking.ConnectionPoolSettings, opts *upstreamhttpv3.HttpProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	th := defaultThresholds()
	var (
		idleTimeout, maxConnectionDuration *durationpb.Duration
		maxRequestsPerConnection           uint32
		maxConcurrentStreams               uint32
		h2KeepAlive                        *networking.ConnectionPoolSettings_HTTPSettings_ConnectionKeepalive
	)
	if h := cp.GetHttp(); h != nil {
		if h.Http2MaxRequests > 0 {
			th.MaxRequests = wrapperspb.UInt32(uint32(h.Http2MaxRequests))
		}
		if h.Http1MaxPendingRequests > 0 {
			th.MaxPendingRequests = wrapperspb.UInt32(uint32(h.Http1MaxPendingRequests))
		}
		if h.MaxRetries > 0 {
			th.MaxRetries = wrapperspb.UInt32(uint32(h.MaxRetries))
		}
		idleTimeout = h.IdleTimeout
		maxRequestsPerConnection = uint32(max(h.MaxRequestsPerConnection, 0))
		maxConcurrentStreams = uint32(max(h.MaxConcurrentStreams, 0))
		h2KeepAlive = h.Http2KeepAlive
	}
	c.ConnectTimeout = durationpb.New(connectTimeout)
	if t := cp.GetTcp(); t != nil {
		if t.ConnectTimeout != nil {
			c.ConnectTimeout = durationpb.New(t.ConnectTimeout.AsDuration())
		}
		if t.MaxConnections > 0 {
			th.MaxConnections = wrapperspb.UInt32(uint32(t.MaxConnections))
		}
		maxConnectionDuration = t.MaxConnectionDuration
		if idleTimeout == nil {
			idleTimeout = t.IdleTimeout
		}
		if ka := t.TcpKeepalive; ka != nil {
			c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: tcpKeepalive(ka)}
		}
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}

	if idleTimeout != nil || maxConnectionDuration != nil || maxRequestsPerConnection > 0 || maxConcurrentStreams > 0 || h2KeepAlive != nil {
		if opts == nil {
			opts = &upstreamhttpv3.HttpProtocolOptions{}
		}
		if opts.CommonHttpProtocolOptions == nil {
			opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{}
		}
		common := opts.CommonHttpProtocolOptions
		if idleTimeout != nil {
			common.IdleTimeout = durationpb.New(idleTimeout.AsDuration())
		}
		if maxRequestsPerConnection > 0 {
			common.MaxRequestsPerConnection = wrapperspb.UInt32(maxRequestsPerConnection)
		}
		if maxConnectionDuration != nil {
			common.MaxConnectionDuration = durationpb.New(maxConnectionDuration.AsDuration())
		}
		if h2 := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions(); h2 != nil {
			if maxConcurrentStreams > 0 {
				h2.MaxConcurrentStreams = wrapperspb.UInt32(maxConcurrentStreams)
			}
			if h2KeepAlive != nil {
				h2.ConnectionKeepalive = &corev3.KeepaliveSettings{
					Interval: durationpb.New(h2KeepAlive.GetInterval().AsDuration()),
					Timeout:  durationpb.New(h2KeepAlive.GetTimeout().AsDuration()),
				}
			}
		}
	}
	return opts
}

// applyRetryBudget sets trafficPolicy.retryBudget (nil: none) on c's
// DEFAULT circuit breaker thresholds, as Istio's applyRetryBudget:
// budget_percent is percent, else the documented default 20 (Istio's code
// writes 0.2, a 0.2 % budget, against its own API's "Defaults to 20%");
// min_retry_concurrency is minRetryConcurrency, else 3 (0 cannot be
// told from unset). budgetInterval is refused by validation (the Loom
// proxy counts outstanding requests only).
func applyRetryBudget(c *clusterv3.Cluster, rb *networking.TrafficPolicy_RetryBudget) {
	if rb == nil || len(c.GetCircuitBreakers().GetThresholds()) == 0 {
		return
	}
	out := &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
		BudgetPercent:       &typev3.Percent{Value: defaultRetryBudgetPercent},
		MinRetryConcurrency: wrapperspb.UInt32(defaultRetryBudgetMinConcurrency),
	}
	if p := rb.GetPercent(); p != nil {
		out.BudgetPercent.Value = p.GetValue()
	}
	if n := rb.GetMinRetryConcurrency(); n > 0 {
		out.MinRetryConcurrency = wrapperspb.UInt32(n)
	}
	c.CircuitBreakers.Thresholds[0].RetryBudget = out
}

// The defaults of istio.io/api TrafficPolicy.RetryBudget (Envoy's too).
const (
	defaultRetryBudgetPercent        = 20
	defaultRetryBudgetMinConcurrency = 3
)

// tcpKeepalive translates TCPSettings.tcpKeepalive: an empty one turns
// SO_KEEPALIVE on with the OS defaults; time and interval are whole
// seconds, as Envoy's TcpKeepalive takes them.
func tcpKeepalive(ka *networking.ConnectionPoolSettings_TCPSettings_TcpKeepalive) *corev3.TcpKeepalive {
	out := &corev3.TcpKeepalive{}
	if ka.Probes > 0 {
		out.KeepaliveProbes = wrapperspb.UInt32(ka.Probes)
	}
	if ka.Time != nil {
		out.KeepaliveTime = wrapperspb.UInt32(uint32(ka.Time.GetSeconds()))
	}
	if ka.Interval != nil {
		out.KeepaliveInterval = wrapperspb.UInt32(uint32(ka.Interval.GetSeconds()))
	}
	return out
}

// upstreamProtocolOptions are the upstream HTTP options of a cluster of a
// port speaking proto, as Istio's setUpstreamProtocol sets them before any
// traffic policy: explicit HTTP/2 (h2c) for HTTP2, GRPC and GRPC-Web; on a
// sidecar's clusters (sidecar), use_downstream_protocol_config for a port
// of unknown protocol (sniffed), so that an app's h2c stays HTTP/2 on
// every hop and its HTTP/1.1 stays HTTP/1.1; else nil. Istio leaves a
// gateway's unknown ports to HTTP/1.1: its clients may negotiate h2 by
// ALPN whatever the upstream speaks.
func upstreamProtocolOptions(proto registry.Protocol, sidecar bool) *upstreamhttpv3.HttpProtocolOptions {
	switch {
	case proto.IsHTTP2():
		return setH2(nil)
	case sidecar && proto == registry.Unknown:
		return setUseDownstreamProtocol(nil)
	}
	return nil
}

// setH2 makes opts (nil: new options) speak HTTP/2 upstream, keeping its
// common_http_protocol_options.
func setH2(opts *upstreamhttpv3.HttpProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	if opts == nil {
		opts = &upstreamhttpv3.HttpProtocolOptions{}
	}
	if opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
		return opts
	}
	opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	}
	return opts
}

// setUseDownstreamProtocol makes opts (nil: new options) use Envoy's
// use_downstream_protocol_config with HTTP/1.1 and HTTP/2 options (Istio's
// useClientProtocol), keeping its common_http_protocol_options.
func setUseDownstreamProtocol(opts *upstreamhttpv3.HttpProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	if opts == nil {
		opts = &upstreamhttpv3.HttpProtocolOptions{}
	}
	opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
		UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		},
	}
	return opts
}

// finishHTTPProtocolOptions fills the upstream_protocol_options Envoy
// requires when only common options were set: explicit HTTP/1.1, as Istio
// does.
func finishHTTPProtocolOptions(opts *upstreamhttpv3.HttpProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	if opts != nil && opts.UpstreamProtocolOptions == nil {
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
					HttpProtocolOptions: &corev3.Http1ProtocolOptions{},
				},
			},
		}
	}
	return opts
}

// applyOutlierDetection translates OutlierDetection as Istio's
// applyOutlierDetection: success-rate ejection off (enforcing 0), each
// consecutive-error count set with its enforcing percentage 100 (0 when
// the count is 0), and common_lb_config.healthy_panic_threshold set to
// minHealthPercent (0 when unset: Istio turns Envoy's 50 % panic mode off).
// The deprecated consecutiveErrors is ignored, as by Istio. Nil od leaves
// c unchanged.
func applyOutlierDetection(c *clusterv3.Cluster, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	out := &clusterv3.OutlierDetection{EnforcingSuccessRate: wrapperspb.UInt32(0)}
	if e := od.Consecutive_5XxErrors; e != nil {
		out.Consecutive_5Xx = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutive_5Xx = wrapperspb.UInt32(enforcing(e.GetValue()))
	}
	if e := od.ConsecutiveGatewayErrors; e != nil {
		out.ConsecutiveGatewayFailure = wrapperspb.UInt32(e.GetValue())
		out.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(enforcing(e.GetValue()))
	}
	if od.Interval != nil {
		out.Interval = durationpb.New(od.Interval.AsDuration())
	}
	if od.BaseEjectionTime != nil {
		out.BaseEjectionTime = durationpb.New(od.BaseEjectionTime.AsDuration())
	}
	if od.MaxEjectionPercent > 0 {
		out.MaxEjectionPercent = wrapperspb.UInt32(uint32(od.MaxEjectionPercent))
	}
	if od.SplitExternalLocalOriginErrors {
		out.SplitExternalLocalOriginErrors = true
		if n := od.ConsecutiveLocalOriginFailures.GetValue(); n > 0 {
			out.ConsecutiveLocalOriginFailure = wrapperspb.UInt32(n)
			out.EnforcingConsecutiveLocalOriginFailure = wrapperspb.UInt32(100)
		}
		out.EnforcingLocalOriginSuccessRate = wrapperspb.UInt32(0)
	}
	c.OutlierDetection = out
	commonLbConfig(c).HealthyPanicThreshold = &typev3.Percent{Value: float64(max(od.MinHealthPercent, 0))}
}

// enforcing is the enforcing_* percentage Istio pairs with a consecutive
// error count: 100, or 0 when the count is 0 (detection off).
func enforcing(n uint32) uint32 {
	if n > 0 {
		return 100
	}
	return 0
}

func commonLbConfig(c *clusterv3.Cluster) *clusterv3.Cluster_CommonLbConfig {
	if c.CommonLbConfig == nil {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
	}
	return c.CommonLbConfig
}

// applyLoadBalancer translates LoadBalancerSettings as Istio's
// applyLoadBalancer: simple ROUND_ROBIN, LEAST_REQUEST (also LEAST_CONN
// and unset: Istio's default), RANDOM, PASSTHROUGH (an ORIGINAL_DST
// cluster, lb_policy CLUSTER_PROVIDED, no EDS); warmupDurationSecs or
// warmup gives ROUND_ROBIN and LEAST_REQUEST a slow_start_config; a
// consistentHash makes it MAGLEV (maglev.tableSize), or RING_HASH with
// ringHash.minimumRingSize, else the deprecated minimumRingSize, else 1024.
// localityLbSetting is not translated.
func applyLoadBalancer(c *clusterv3.Cluster, lb *networking.LoadBalancerSettings) {
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		if ss := slowStart(lb); ss != nil {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: ss}}
		}
	case networking.LoadBalancerSettings_RANDOM:
		c.LbPolicy = clusterv3.Cluster_RANDOM
	case networking.LoadBalancerSettings_PASSTHROUGH:
		c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		c.EdsClusterConfig = nil
		c.LoadAssignment = nil
	default: // LEAST_REQUEST, LEAST_CONN (deprecated alias), UNSPECIFIED
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		if ss := slowStart(lb); ss != nil {
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: ss}}
		}
	}

	ch := lb.GetConsistentHash()
	if ch == nil {
		return
	}
	switch {
	case ch.GetMaglev() != nil:
		c.LbPolicy = clusterv3.Cluster_MAGLEV
		c.LbConfig = nil
		if n := ch.GetMaglev().GetTableSize(); n != 0 {
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(n)}}
		}
	case ch.GetRingHash() != nil:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = nil
		if n := ch.GetRingHash().GetMinimumRingSize(); n != 0 {
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(n)}}
		}
	default:
		n := uint64(defaultMinRingSize)
		if m := ch.GetMinimumRingSize(); m != 0 { //nolint:staticcheck // deprecated field still honoured, as by Istio.
			n = m
		}
		c.LbPolicy = clusterv3.Cluster_RING_HASH
		c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(n)}}
	}
}

// slowStart is the slow_start_config of warmupDurationSecs (window), or of
// warmup (window, minimumPercent as min_weight_percent, aggression); nil
// when neither is set.
func slowStart(lb *networking.LoadBalancerSettings) *clusterv3.Cluster_SlowStartConfig {
	if d := lb.GetWarmupDurationSecs(); d != nil {
		return &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(d.AsDuration())}
	}
	w := lb.GetWarmup()
	if w == nil {
		return nil
	}
	ss := &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(w.GetDuration().AsDuration())}
	if mp := w.GetMinimumPercent(); mp != nil {
		ss.MinWeightPercent = &typev3.Percent{Value: mp.GetValue()}
	}
	if a := w.GetAggression(); a != nil {
		ss.Aggression = &corev3.RuntimeDouble{DefaultValue: a.GetValue()}
	}
	return ss
}
