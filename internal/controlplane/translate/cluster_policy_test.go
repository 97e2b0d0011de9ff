package translate

import (
	"math"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"github.com/loom-mesh/loom/internal/controlplane/config"
	"github.com/loom-mesh/loom/internal/controlplane/registry"
)

// decodeDR decodes the DestinationRule whose spec is the YAML spec.
func decodeDR(t *testing.T, spec string) *networking.DestinationRule {
	t.Helper()
	doc := "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\n  namespace: default\nspec:\n" + indent(spec)
	rs, errs := config.Decode("dr.yaml", []byte(doc))
	if err := errs.Err(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(rs) != 1 {
		t.Fatalf("decode: %d resources, want 1", len(rs))
	}
	dr, ok := rs[0].Spec.(*networking.DestinationRule)
	if !ok {
		t.Fatalf("decode: spec is %T", rs[0].Spec)
	}
	return dr
}

func indent(s string) string {
	out := "  "
	for i := 0; i < len(s); i++ {
		out += string(s[i])
		if s[i] == '\n' && i+1 < len(s) {
			out += "  "
		}
	}
	return out
}

// wantCluster is the outbound EDS cluster name with Istio's defaults
// (LEAST_REQUEST, thresholds at their maximum), changed by edit.
func wantCluster(name string, edit func(c *clusterv3.Cluster)) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(10 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: name},
		LbPolicy:             clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers:      &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{defaultThresholds()}},
	}
	if edit != nil {
		edit(c)
	}
	return c
}

func mustPack(t *testing.T, opts *upstreamhttpv3.HttpProtocolOptions) map[string]*anypb.Any {
	t.Helper()
	a, err := packAny(opts)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{httpProtocolOptionsKey: a}
}

func http1Options(common *corev3.HttpProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	return &upstreamhttpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: common,
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			},
		},
	}
}

func http2Options(common *corev3.HttpProtocolOptions, h2 *corev3.Http2ProtocolOptions) *upstreamhttpv3.HttpProtocolOptions {
	return &upstreamhttpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: common,
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: h2},
			},
		},
	}
}

func TestOutboundClusterTrafficPolicy(t *testing.T) {
	const name = "outbound|8000||httpbin.default.svc.cluster.local"
	tests := []struct {
		name  string
		proto registry.Protocol
		dr    string // DestinationRule spec; "" for none
		want  func(t *testing.T) *clusterv3.Cluster
	}{
		{"no DestinationRule: Istio's defaults", registry.HTTP, "", func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, nil)
		}},
		{"HTTP2 port keeps h2c", registry.GRPC, "", func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, http2Options(nil, &corev3.Http2ProtocolOptions{}))
			})
		}},
		{"circuit breaking task (httpbin)", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    tcp:
      maxConnections: 1
    http:
      http1MaxPendingRequests: 1
      maxRequestsPerConnection: 1
  outlierDetection:
    consecutive5xxErrors: 1
    interval: 1s
    baseEjectionTime: 180s
    maxEjectionPercent: 100
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				th := c.CircuitBreakers.Thresholds[0]
				th.MaxConnections = wrapperspb.UInt32(1)
				th.MaxPendingRequests = wrapperspb.UInt32(1)
				c.TypedExtensionProtocolOptions = mustPack(t, http1Options(&corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(1)}))
				c.OutlierDetection = &clusterv3.OutlierDetection{
					EnforcingSuccessRate:     wrapperspb.UInt32(0),
					Consecutive_5Xx:          wrapperspb.UInt32(1),
					EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
					Interval:                 durationpb.New(time.Second),
					BaseEjectionTime:         durationpb.New(3 * time.Minute),
					MaxEjectionPercent:       wrapperspb.UInt32(100),
				}
				c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
			})
		}},
		{"every connectionPool field", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    tcp:
      maxConnections: 99
      connectTimeout: 6s
      maxConnectionDuration: 3600s
      idleTimeout: 30s
      tcpKeepalive:
        probes: 3
        time: 7200s
        interval: 75s
    http:
      http1MaxPendingRequests: 14
      http2MaxRequests: 33
      maxRequestsPerConnection: 65
      maxRetries: 4
      idleTimeout: 20s
      maxConcurrentStreams: 10
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.ConnectTimeout = durationpb.New(6 * time.Second)
				c.CircuitBreakers.Thresholds[0] = &clusterv3.CircuitBreakers_Thresholds{
					MaxConnections:     wrapperspb.UInt32(99),
					MaxPendingRequests: wrapperspb.UInt32(14),
					MaxRequests:        wrapperspb.UInt32(33),
					MaxRetries:         wrapperspb.UInt32(4),
					TrackRemaining:     true,
				}
				c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{
					KeepaliveProbes: wrapperspb.UInt32(3), KeepaliveTime: wrapperspb.UInt32(7200), KeepaliveInterval: wrapperspb.UInt32(75),
				}}
				// http.idleTimeout wins over tcp.idleTimeout; maxConcurrentStreams
				// needs an HTTP/2 port.
				c.TypedExtensionProtocolOptions = mustPack(t, http1Options(&corev3.HttpProtocolOptions{
					IdleTimeout:              durationpb.New(20 * time.Second),
					MaxRequestsPerConnection: wrapperspb.UInt32(65),
					MaxConnectionDuration:    durationpb.New(time.Hour),
				}))
			})
		}},
		{"retryBudget", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    http:
      maxRetries: 4
  retryBudget:
    percent: 12.5
    minRetryConcurrency: 2
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				th := c.CircuitBreakers.Thresholds[0]
				th.MaxRetries = wrapperspb.UInt32(4)
				th.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
					BudgetPercent: &typev3.Percent{Value: 12.5}, MinRetryConcurrency: wrapperspb.UInt32(2)}
			})
		}},
		{"retryBudget defaults", registry.HTTP, `host: httpbin
trafficPolicy:
  retryBudget: {}
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.CircuitBreakers.Thresholds[0].RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
					BudgetPercent: &typev3.Percent{Value: 20}, MinRetryConcurrency: wrapperspb.UInt32(3)}
			})
		}},
		{"http2KeepAlive on an HTTP/2 port", registry.HTTP2, `host: httpbin
trafficPolicy:
  connectionPool:
    http:
      http2KeepAlive: {interval: 30s, timeout: 5s}
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, http2Options(&corev3.HttpProtocolOptions{},
					&corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
						Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(5 * time.Second)}}))
			})
		}},
		{"http2KeepAlive upgraded", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    http:
      h2UpgradePolicy: UPGRADE
      http2KeepAlive: {interval: 1s, timeout: 2s}
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, http2Options(&corev3.HttpProtocolOptions{},
					&corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
						Interval: durationpb.New(time.Second), Timeout: durationpb.New(2 * time.Second)}}))
			})
		}},
		{"tcp idleTimeout, empty keepalive, HTTP/2 streams", registry.HTTP2, `host: httpbin
trafficPolicy:
  connectionPool:
    tcp:
      idleTimeout: 30s
      tcpKeepalive: {}
    http:
      maxConcurrentStreams: 10
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{}}
				c.TypedExtensionProtocolOptions = mustPack(t, http2Options(
					&corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(30 * time.Second)},
					&corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(10)}))
			})
		}},
		{"h2UpgradePolicy UPGRADE", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    http:
      h2UpgradePolicy: UPGRADE
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, http2Options(nil, &corev3.Http2ProtocolOptions{}))
			})
		}},
		{"h2UpgradePolicy UPGRADE keeps maxConcurrentStreams", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    http:
      h2UpgradePolicy: UPGRADE
      maxConcurrentStreams: 7
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, http2Options(
					&corev3.HttpProtocolOptions{}, &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(7)}))
			})
		}},
		{"useClientProtocol on an HTTP/2 port", registry.GRPC, `host: httpbin
trafficPolicy:
  connectionPool:
    http:
      useClientProtocol: true
      idleTimeout: 30s
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, &upstreamhttpv3.HttpProtocolOptions{
					CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(30 * time.Second)},
					UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
						UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
							HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}})
			})
		}},
		{"useClientProtocol and UPGRADE: useClientProtocol wins", registry.HTTP, `host: httpbin
trafficPolicy:
  connectionPool:
    http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}
`, func(t *testing.T) *clusterv3.Cluster {
			// istio.io/api: with useClientProtocol, h2UpgradePolicy is ineffective.
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = mustPack(t, &upstreamhttpv3.HttpProtocolOptions{
					UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
						UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
							HttpProtocolOptions: &corev3.Http1ProtocolOptions{}, Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}})
			})
		}},
		{"ROUND_ROBIN with warmupDurationSecs", registry.HTTP, `host: httpbin
trafficPolicy:
  loadBalancer:
    simple: ROUND_ROBIN
    warmupDurationSecs: 60s
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
				c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
					SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute)}}}
			})
		}},
		{"LEAST_REQUEST with warmup", registry.HTTP, `host: httpbin
trafficPolicy:
  loadBalancer:
    simple: LEAST_REQUEST
    warmup:
      duration: 300s
      minimumPercent: 5
      aggression: 2
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
					SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{
						SlowStartWindow:  durationpb.New(5 * time.Minute),
						MinWeightPercent: &typev3.Percent{Value: 5},
						Aggression:       &corev3.RuntimeDouble{DefaultValue: 2},
					}}}
			})
		}},
		{"RANDOM", registry.HTTP, "host: httpbin\ntrafficPolicy:\n  loadBalancer:\n    simple: RANDOM\n", func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM })
		}},
		{"PASSTHROUGH", registry.HTTP, "host: httpbin\ntrafficPolicy:\n  loadBalancer:\n    simple: PASSTHROUGH\n", func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
				c.EdsClusterConfig = nil
			})
		}},
		{"consistentHash: default ring", registry.HTTP, `host: httpbin
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpHeaderName: x-user
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_RING_HASH
				c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(1024)}}
			})
		}},
		{"consistentHash: deprecated minimumRingSize", registry.HTTP, `host: httpbin
trafficPolicy:
  loadBalancer:
    consistentHash:
      useSourceIp: true
      minimumRingSize: 42
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_RING_HASH
				c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(42)}}
			})
		}},
		{"consistentHash: ringHash", registry.HTTP, `host: httpbin
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpQueryParameterName: user
      ringHash:
        minimumRingSize: 2048
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_RING_HASH
				c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(2048)}}
			})
		}},
		{"consistentHash: maglev", registry.HTTP, `host: httpbin
trafficPolicy:
  loadBalancer:
    consistentHash:
      httpCookie: {name: user, ttl: 0s}
      maglev:
        tableSize: 65537
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.LbPolicy = clusterv3.Cluster_MAGLEV
				c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(65537)}}
			})
		}},
		{"outlierDetection: every field", registry.HTTP, `host: httpbin
trafficPolicy:
  outlierDetection:
    consecutive5xxErrors: 0
    consecutiveGatewayErrors: 3
    consecutiveLocalOriginFailures: 2
    splitExternalLocalOriginErrors: true
    interval: 10s
    baseEjectionTime: 30s
    maxEjectionPercent: 50
    minHealthPercent: 20
`, func(t *testing.T) *clusterv3.Cluster {
			return wantCluster(name, func(c *clusterv3.Cluster) {
				c.OutlierDetection = &clusterv3.OutlierDetection{
					EnforcingSuccessRate:                   wrapperspb.UInt32(0),
					Consecutive_5Xx:                        wrapperspb.UInt32(0),
					EnforcingConsecutive_5Xx:               wrapperspb.UInt32(0),
					ConsecutiveGatewayFailure:              wrapperspb.UInt32(3),
					EnforcingConsecutiveGatewayFailure:     wrapperspb.UInt32(100),
					Interval:                               durationpb.New(10 * time.Second),
					BaseEjectionTime:                       durationpb.New(30 * time.Second),
					MaxEjectionPercent:                     wrapperspb.UInt32(50),
					SplitExternalLocalOriginErrors:         true,
					ConsecutiveLocalOriginFailure:          wrapperspb.UInt32(2),
					EnforcingConsecutiveLocalOriginFailure: wrapperspb.UInt32(100),
					EnforcingLocalOriginSuccessRate:        wrapperspb.UInt32(0),
				}
				c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 20}}
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tp *networking.TrafficPolicy
			if tt.dr != "" {
				tp = clusterTrafficPolicy(decodeDR(t, tt.dr), nil, 8000)
			}
			got, err := buildOutboundCluster(name, tt.proto, false, tp)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want(t)
			want.Filters = []*clusterv3.Filter{mxClusterFilter()}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Errorf("cluster (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefaultThresholdsAreMaximal(t *testing.T) {
	th := defaultThresholds()
	for _, v := range []*wrapperspb.UInt32Value{th.MaxConnections, th.MaxPendingRequests, th.MaxRequests, th.MaxRetries} {
		if v.GetValue() != math.MaxUint32 {
			t.Errorf("threshold = %d, want %d", v.GetValue(), uint32(math.MaxUint32))
		}
	}
}

// TestUpstreamProtocolBySidecar: Istio's setUpstreamProtocol, then the
// DestinationRule: a sidecar's cluster of a port of unknown protocol
// follows the downstream's protocol, a gateway's does not; HTTP/2 ports
// are HTTP/2 on both; a DestinationRule's h2UpgradePolicy UPGRADE makes the
// sniffed port HTTP/2 (Istio's applyH2Upgrade runs after).
func TestUpstreamProtocolBySidecar(t *testing.T) {
	const upgrade = `host: web
trafficPolicy:
  connectionPool:
    http: {h2UpgradePolicy: UPGRADE}
`
	tests := []struct {
		name    string
		proto   registry.Protocol
		sidecar bool
		dr      string
		want    string // "", "h2", "downstream"
	}{
		{"sidecar, unknown", registry.Unknown, true, "", "downstream"},
		{"gateway, unknown", registry.Unknown, false, "", ""},
		{"sidecar, HTTP", registry.HTTP, true, "", ""},
		{"sidecar, TCP", registry.TCP, true, "", ""},
		{"sidecar, GRPC", registry.GRPC, true, "", "h2"},
		{"gateway, HTTP2", registry.HTTP2, false, "", "h2"},
		{"sidecar, unknown, h2UpgradePolicy UPGRADE", registry.Unknown, true, upgrade, "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tp *networking.TrafficPolicy
			if tt.dr != "" {
				tp = clusterTrafficPolicy(decodeDR(t, tt.dr), nil, 8080)
			}
			c, err := buildOutboundCluster("outbound|8080||web.default.svc.cluster.local", tt.proto, tt.sidecar, tp)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if a := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; a != nil {
				var o upstreamhttpv3.HttpProtocolOptions
				if err := a.UnmarshalTo(&o); err != nil {
					t.Fatal(err)
				}
				switch {
				case o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
					got = "h2"
				case o.GetUseDownstreamProtocolConfig() != nil:
					got = "downstream"
				}
			}
			if got != tt.want {
				t.Errorf("upstream protocol %q, want %q", got, tt.want)
			}
		})
	}
}
