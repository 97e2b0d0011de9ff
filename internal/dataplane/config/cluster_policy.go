package config

import (
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Envoy's defaults of circuit_breakers.thresholds when a field is unset.
const (
	DefaultMaxConnections     = 1024
	DefaultMaxPendingRequests = 1024
	DefaultMaxRequests        = 1024
	DefaultMaxRetries         = 3
)

// CircuitBreakers is envoy.config.cluster.v3.CircuitBreakers: the
// thresholds of the DEFAULT routing priority (Istio's
// DestinationRule trafficPolicy.connectionPool). The zero value means the
// cluster sets no thresholds and Envoy's defaults apply (Limits).
type CircuitBreakers struct {
	// Thresholds is nil when circuit_breakers has no DEFAULT thresholds.
	Thresholds *Thresholds
}

// Thresholds is envoy.config.cluster.v3.CircuitBreakers.Thresholds with
// every unset field resolved to Envoy's default. All limits count per
// cluster, across its endpoints.
type Thresholds struct {
	MaxConnections     uint32 // open upstream connections (HTTP/1.1, HTTP/2 and TCP alike); Istio tcp.maxConnections
	MaxPendingRequests uint32 // requests waiting for a connection; Istio http.http1MaxPendingRequests
	MaxRequests        uint32 // outstanding requests; Istio http.http2MaxRequests
	MaxRetries         uint32 // concurrent retries; Istio http.maxRetries
	// RetryBudget, when set, replaces MaxRetries (Envoy's retry_budget
	// overrides max_retries; Istio trafficPolicy.retryBudget).
	RetryBudget *RetryBudget
}

// RetryBudget is envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget
// with Envoy's defaults resolved: the concurrent retries allowed are
// BudgetPercent of the cluster's outstanding requests (active and pending),
// but never fewer than MinRetryConcurrency. budget_interval is refused.
type RetryBudget struct {
	BudgetPercent       float64 // 0-100; default 20
	MinRetryConcurrency uint32  // default 3
}

// Envoy's defaults of retry_budget.
const (
	DefaultRetryBudgetPercent        = 20
	DefaultRetryBudgetMinConcurrency = 3
)

// MaxRetriesFor returns the concurrent retries allowed while requests are
// outstanding on the cluster: MaxRetries, or with a RetryBudget
// max(BudgetPercent% of requests, MinRetryConcurrency), as Envoy's
// RetryBudgetImpl::max.
func (t Thresholds) MaxRetriesFor(requests int64) int64 {
	if t.RetryBudget == nil {
		return int64(t.MaxRetries)
	}
	return max(int64(t.RetryBudget.BudgetPercent/100*float64(max(requests, 0))), int64(t.RetryBudget.MinRetryConcurrency))
}

// Limits returns the thresholds in force: cb.Thresholds, or Envoy's
// defaults (1024, 1024, 1024, 3) when it is nil.
func (cb CircuitBreakers) Limits() Thresholds {
	if cb.Thresholds != nil {
		return *cb.Thresholds
	}
	return Thresholds{MaxConnections: DefaultMaxConnections, MaxPendingRequests: DefaultMaxPendingRequests, MaxRequests: DefaultMaxRequests, MaxRetries: DefaultMaxRetries}
}

// OutlierDetection is envoy.config.cluster.v3.OutlierDetection (Istio's
// DestinationRule trafficPolicy.outlierDetection) with Envoy's defaults
// resolved. Only the consecutive-failure detectors are implemented;
// success-rate and failure-percentage ejection are refused when enforced.
type OutlierDetection struct {
	// Consecutive5xx is the number of consecutive 5xx responses (and, unless
	// SplitExternalLocalOriginErrors, local-origin failures) that eject a
	// host. Default 5; 0 disables the detector.
	Consecutive5xx uint32
	// ConsecutiveGatewayFailure counts 502, 503 and 504 (and local-origin
	// failures unless split). Default 5; 0 disables.
	ConsecutiveGatewayFailure uint32
	// ConsecutiveLocalOriginFailure counts connect failures, timeouts and
	// resets when SplitExternalLocalOriginErrors. Default 5; 0 disables.
	ConsecutiveLocalOriginFailure uint32
	// Enforcing* are the chances, 0-100 percent, that a detection ejects
	// the host. Envoy's defaults: 100, 0 and 100.
	EnforcingConsecutive5xx                uint32
	EnforcingConsecutiveGatewayFailure     uint32
	EnforcingConsecutiveLocalOriginFailure uint32
	// SplitExternalLocalOriginErrors counts local-origin failures apart from
	// the upstream's own 5xx responses.
	SplitExternalLocalOriginErrors bool
	// Interval is Envoy's ejection sweep period (default 10s); it paces
	// how fast a host's ejection multiplier decays.
	Interval time.Duration
	// BaseEjectionTime (default 30s) times the number of ejections of the
	// host is how long it stays ejected, capped by MaxEjectionTime
	// (default 300s, at least BaseEjectionTime), plus up to
	// MaxEjectionTimeJitter (default 0).
	BaseEjectionTime      time.Duration
	MaxEjectionTime       time.Duration
	MaxEjectionTimeJitter time.Duration
	// MaxEjectionPercent, 0-100 (default 10), caps the share of the
	// cluster's endpoints ejected at once; AlwaysEjectOneHost lifts the cap
	// for the first ejection.
	MaxEjectionPercent uint32
	AlwaysEjectOneHost bool
}

// Envoy's defaults of outlier_detection.
const (
	DefaultConsecutiveFailures = 5
	DefaultOutlierInterval     = 10 * time.Second
	DefaultBaseEjectionTime    = 30 * time.Second
	DefaultMaxEjectionTime     = 300 * time.Second
	DefaultMaxEjectionPercent  = 10
)

// ConnectionOptions are a cluster's upstream connection settings:
// upstream_connection_options and the common_http_protocol_options and
// http2_protocol_options of its HttpProtocolOptions (Istio's
// trafficPolicy.connectionPool). The zero value keeps the proxy's defaults.
type ConnectionOptions struct {
	// TCPKeepalive is nil when upstream_connection_options.tcp_keepalive is
	// unset (the dialer's own keep-alive applies).
	TCPKeepalive *TCPKeepalive
	// IdleTimeout closes connections idle this long; 0 keeps the proxy's
	// default. Istio http.idleTimeout.
	IdleTimeout time.Duration
	// MaxConnectionDuration retires a connection this long after it was
	// opened, once its request is over; 0: no limit. Istio
	// tcp.maxConnectionDuration.
	MaxConnectionDuration time.Duration
	// MaxRequestsPerConnection closes a connection after this many
	// requests; 0: no limit. Istio http.maxRequestsPerConnection.
	MaxRequestsPerConnection uint32
	// MaxConcurrentStreams is http2_protocol_options.max_concurrent_streams
	// (Istio http.maxConcurrentStreams): the most streams open at once on
	// one HTTP/2 upstream connection; 0 when unset (only the server's
	// SETTINGS_MAX_CONCURRENT_STREAMS limits them).
	MaxConcurrentStreams uint32
	// H2Keepalive is http2_protocol_options.connection_keepalive (Istio
	// http.http2KeepAlive): HTTP/2 PINGs on the cluster's HTTP/2
	// connections; nil when unset.
	H2Keepalive *H2Keepalive
}

// H2Keepalive is envoy.config.core.v3.KeepaliveSettings for upstream
// HTTP/2 connections. A connection on which no frame arrived for Interval
// is sent a PING; one whose PING is not answered within Timeout is closed
// (its streams fail as a reset). Envoy pings every interval whatever the
// traffic; a connection that receives frames is alive either way.
// interval_jitter is accepted, but pings are not jittered.
type H2Keepalive struct {
	Interval time.Duration // > 0
	Timeout  time.Duration // > 0
}

// TCPKeepalive is envoy.config.core.v3.TcpKeepalive (Istio
// connectionPool.tcp.tcpKeepalive). A zero field leaves the socket's
// setting unchanged.
type TCPKeepalive struct {
	Probes   uint32        // unanswered probes before the connection is dropped
	Time     time.Duration // idle time before the first probe, whole seconds
	Interval time.Duration // between probes, whole seconds
}

// buildClusterPolicy parses c's circuit breakers, outlier detection and
// connection options into rc.
func buildClusterPolicy(c *clusterv3.Cluster, rc *Cluster) error {
	var err error
	if rc.CircuitBreakers, err = buildCircuitBreakers(c.GetCircuitBreakers()); err != nil {
		return under("circuit_breakers", err)
	}
	if od := c.GetOutlierDetection(); od != nil {
		if rc.Outlier, err = buildOutlierDetection(od); err != nil {
			return under("outlier_detection", err)
		}
	}
	if rc.Conn, err = buildConnectionOptions(c); err != nil {
		return err
	}
	return nil
}

func buildCircuitBreakers(cb *clusterv3.CircuitBreakers) (CircuitBreakers, error) {
	var out CircuitBreakers
	if len(cb.GetPerHostThresholds()) > 0 {
		return out, ferr("per_host_thresholds", "not supported")
	}
	for i, th := range cb.GetThresholds() {
		p := idx("thresholds", i)
		if th.GetPriority() != corev3.RoutingPriority_DEFAULT {
			return out, verr(p+".priority", th.GetPriority().String(), "must be DEFAULT (routing priorities are not supported)")
		}
		if out.Thresholds != nil {
			return out, ferr(p+".priority", "duplicate DEFAULT thresholds")
		}
		rb, err := buildRetryBudget(th.GetRetryBudget())
		if err != nil {
			return out, under(p+".retry_budget", err)
		}
		if th.GetMaxConnectionPools() != nil {
			return out, ferr(p+".max_connection_pools", "not supported")
		}
		out.Thresholds = &Thresholds{
			MaxConnections:     u32(th.GetMaxConnections(), DefaultMaxConnections),
			MaxPendingRequests: u32(th.GetMaxPendingRequests(), DefaultMaxPendingRequests),
			MaxRequests:        u32(th.GetMaxRequests(), DefaultMaxRequests),
			MaxRetries:         u32(th.GetMaxRetries(), DefaultMaxRetries),
			RetryBudget:        rb,
		}
		// track_remaining only adds the remaining_* gauges: accepted.
	}
	return out, nil
}

// buildRetryBudget reads a retry_budget (nil: none). A non-zero
// budget_interval (requests counted over a sliding window) is not
// supported.
func buildRetryBudget(rb *clusterv3.CircuitBreakers_Thresholds_RetryBudget) (*RetryBudget, error) {
	if rb == nil {
		return nil, nil
	}
	out := &RetryBudget{BudgetPercent: DefaultRetryBudgetPercent, MinRetryConcurrency: u32(rb.GetMinRetryConcurrency(), DefaultRetryBudgetMinConcurrency)}
	if bp := rb.GetBudgetPercent(); bp != nil {
		var err error
		if out.BudgetPercent, err = percent("budget_percent", bp); err != nil {
			return nil, err
		}
	}
	if d := rb.GetBudgetInterval(); d != nil && d.AsDuration() != 0 {
		return nil, verr("budget_interval", d.AsDuration().String(), "must be 0 (not supported)")
	}
	return out, nil
}

func buildOutlierDetection(od *clusterv3.OutlierDetection) (*OutlierDetection, error) {
	out := &OutlierDetection{
		Consecutive5xx:                         u32(od.GetConsecutive_5Xx(), DefaultConsecutiveFailures),
		ConsecutiveGatewayFailure:              u32(od.GetConsecutiveGatewayFailure(), DefaultConsecutiveFailures),
		ConsecutiveLocalOriginFailure:          u32(od.GetConsecutiveLocalOriginFailure(), DefaultConsecutiveFailures),
		EnforcingConsecutive5xx:                u32(od.GetEnforcingConsecutive_5Xx(), 100),
		EnforcingConsecutiveGatewayFailure:     u32(od.GetEnforcingConsecutiveGatewayFailure(), 0),
		EnforcingConsecutiveLocalOriginFailure: u32(od.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		SplitExternalLocalOriginErrors:         od.GetSplitExternalLocalOriginErrors(),
		MaxEjectionPercent:                     u32(od.GetMaxEjectionPercent(), DefaultMaxEjectionPercent),
		AlwaysEjectOneHost:                     od.GetAlwaysEjectOneHost().GetValue(),
	}
	for _, p := range []struct {
		path string
		v    uint32
	}{
		{"enforcing_consecutive_5xx", out.EnforcingConsecutive5xx},
		{"enforcing_consecutive_gateway_failure", out.EnforcingConsecutiveGatewayFailure},
		{"enforcing_consecutive_local_origin_failure", out.EnforcingConsecutiveLocalOriginFailure},
		{"max_ejection_percent", out.MaxEjectionPercent},
	} {
		if p.v > 100 {
			return nil, verr(p.path, strconv.FormatUint(uint64(p.v), 10), "must be at most 100")
		}
	}
	// Success-rate and failure-percentage ejection are not implemented.
	// Istio emits enforcing_success_rate 0 explicitly; an unset one (Envoy
	// default 100) is accepted too, and the detector does not run.
	for _, p := range []struct {
		path string
		v    *wrapperspb.UInt32Value
	}{
		{"enforcing_success_rate", od.GetEnforcingSuccessRate()},
		{"enforcing_local_origin_success_rate", od.GetEnforcingLocalOriginSuccessRate()},
		{"enforcing_failure_percentage", od.GetEnforcingFailurePercentage()},
		{"enforcing_failure_percentage_local_origin", od.GetEnforcingFailurePercentageLocalOrigin()},
	} {
		if p.v.GetValue() > 0 {
			return nil, verr(p.path, strconv.FormatUint(uint64(p.v.GetValue()), 10), "must be 0 (only consecutive-failure ejection is supported)")
		}
	}
	if od.GetDetectDegradedHosts().GetValue() {
		return nil, verr("detect_degraded_hosts", "true", "must be false (not supported)")
	}
	if len(od.GetMonitors()) > 0 {
		return nil, ferr("monitors", "not supported")
	}
	var err error
	if out.Interval, err = positive(od.GetInterval(), "interval", DefaultOutlierInterval); err != nil {
		return nil, err
	}
	if out.BaseEjectionTime, err = positive(od.GetBaseEjectionTime(), "base_ejection_time", DefaultBaseEjectionTime); err != nil {
		return nil, err
	}
	if out.MaxEjectionTime, err = positive(od.GetMaxEjectionTime(), "max_ejection_time", DefaultMaxEjectionTime); err != nil {
		return nil, err
	}
	// Envoy: the ejection time never goes below base_ejection_time.
	out.MaxEjectionTime = max(out.MaxEjectionTime, out.BaseEjectionTime)
	if out.MaxEjectionTimeJitter, err = duration(od.GetMaxEjectionTimeJitter(), "max_ejection_time_jitter", 0); err != nil {
		return nil, err
	}
	return out, nil
}

func buildConnectionOptions(c *clusterv3.Cluster) (ConnectionOptions, error) {
	var out ConnectionOptions
	uco := c.GetUpstreamConnectionOptions()
	if uco.GetHappyEyeballsConfig() != nil {
		return out, ferr("upstream_connection_options.happy_eyeballs_config", "not supported")
	}
	if uco.GetSetLocalInterfaceNameOnUpstreamConnections() {
		return out, verr("upstream_connection_options.set_local_interface_name_on_upstream_connections", "true", "must be false (not supported)")
	}
	if ka := uco.GetTcpKeepalive(); ka != nil {
		out.TCPKeepalive = &TCPKeepalive{
			Probes:   ka.GetKeepaliveProbes().GetValue(),
			Time:     time.Duration(ka.GetKeepaliveTime().GetValue()) * time.Second,
			Interval: time.Duration(ka.GetKeepaliveInterval().GetValue()) * time.Second,
		}
	}

	// The deprecated Cluster fields apply when the typed
	// HttpProtocolOptions does not carry common_http_protocol_options.
	common, path := c.GetCommonHttpProtocolOptions(), "common_http_protocol_options" //nolint:staticcheck // deprecated field still honoured.
	if mr := c.GetMaxRequestsPerConnection(); mr != nil {                            //nolint:staticcheck // deprecated field still honoured.
		out.MaxRequestsPerConnection = mr.GetValue()
	}
	if a := c.GetTypedExtensionProtocolOptions()[HTTPProtocolOptionsKey]; a != nil {
		var opts httpv3.HttpProtocolOptions
		// buildCluster reports a malformed message; read only a good one.
		if anyTo(a, &opts) == nil {
			p := "typed_extension_protocol_options[" + strconv.Quote(HTTPProtocolOptionsKey) + "]"
			if opts.GetCommonHttpProtocolOptions() != nil {
				common, path = opts.GetCommonHttpProtocolOptions(), p+".common_http_protocol_options"
			}
			h2 := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions()
			out.MaxConcurrentStreams = h2.GetMaxConcurrentStreams().GetValue()
			if ka := h2.GetConnectionKeepalive(); ka != nil {
				var err error
				if out.H2Keepalive, err = buildH2Keepalive(ka); err != nil {
					return out, under(p+".explicit_http_config.http2_protocol_options.connection_keepalive", err)
				}
			}
		}
	}
	if common == nil {
		return out, nil
	}
	var err error
	if out.IdleTimeout, err = duration(common.GetIdleTimeout(), path+".idle_timeout", 0); err != nil {
		return out, err
	}
	if common.GetIdleTimeout() != nil && out.IdleTimeout == 0 {
		return out, verr(path+".idle_timeout", "0s", "must be greater than 0 (disabling the idle timeout is not supported)")
	}
	if out.MaxConnectionDuration, err = duration(common.GetMaxConnectionDuration(), path+".max_connection_duration", 0); err != nil {
		return out, err
	}
	if mr := common.GetMaxRequestsPerConnection(); mr != nil {
		out.MaxRequestsPerConnection = mr.GetValue()
	}
	switch {
	case common.GetMaxHeadersCount() != nil:
		return out, ferr(path+".max_headers_count", "not supported")
	case common.GetMaxResponseHeadersKb() != nil:
		return out, ferr(path+".max_response_headers_kb", "not supported")
	case common.GetMaxStreamDuration() != nil:
		return out, ferr(path+".max_stream_duration", "not supported")
	case common.GetMaxConnectionDurationJitter() != nil:
		return out, ferr(path+".max_connection_duration_jitter", "not supported")
	case common.GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_ALLOW:
		return out, verr(path+".headers_with_underscores_action", common.GetHeadersWithUnderscoresAction().String(), "must be ALLOW")
	}
	return out, nil
}

// buildH2Keepalive reads a connection_keepalive. The loom proxy pings
// only on a quiet connection, so interval is required (Envoy would then
// ping ahead of a new stream only, with connection_idle_interval, which is
// not supported).
func buildH2Keepalive(ka *corev3.KeepaliveSettings) (*H2Keepalive, error) {
	if ka.GetConnectionIdleInterval() != nil {
		return nil, ferr("connection_idle_interval", "not supported")
	}
	out := &H2Keepalive{}
	var err error
	if ka.GetInterval() == nil {
		return nil, ferr("interval", "must be set (pings ahead of a new stream only are not supported)")
	}
	if out.Interval, err = positive(ka.GetInterval(), "interval", 0); err != nil {
		return nil, err
	}
	if ka.GetTimeout() == nil {
		return nil, ferr("timeout", "must be set")
	}
	if out.Timeout, err = positive(ka.GetTimeout(), "timeout", 0); err != nil {
		return nil, err
	}
	return out, nil
}

// u32 is v's value, or def when v is unset.
func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

// positive is duration's value, which must be greater than zero when set.
func positive(d *durationpb.Duration, path string, def time.Duration) (time.Duration, error) {
	v, err := duration(d, path, def)
	if err == nil && v == 0 {
		return 0, verr(path, "0s", "must be greater than 0")
	}
	return v, err
}
