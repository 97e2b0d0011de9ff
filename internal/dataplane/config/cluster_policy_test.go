package config

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// istioOutlier is the outlier_detection Istio emits for
// outlierDetection {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 50}.
func istioOutlier() *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(3),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(100),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(0),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
		Interval:                           durationpb.New(time.Second),
		BaseEjectionTime:                   durationpb.New(2 * time.Second),
		MaxEjectionPercent:                 wrapperspb.UInt32(50),
	}
}

func httpOptions(t testing.TB, o *httpv3.HttpProtocolOptions) map[string]*anypb.Any {
	t.Helper()
	if o.UpstreamProtocolOptions == nil {
		o.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}}
	}
	a, err := anypb.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{HTTPProtocolOptionsKey: a}
}

// h2Options are explicit HTTP/2 upstream options.
func h2Options(h2 *corev3.Http2ProtocolOptions) *httpv3.HttpProtocolOptions {
	return &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: h2}}}}
}

func TestClusterPolicy(t *testing.T) {
	type policy struct {
		CB      CircuitBreakers
		Outlier *OutlierDetection
		Conn    ConnectionOptions
	}
	tests := []struct {
		name string
		mut  func(t testing.TB, c *clusterv3.Cluster)
		want policy
	}{
		{"none", func(testing.TB, *clusterv3.Cluster) {}, policy{}},
		{"istio thresholds", func(_ testing.TB, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxConnections: wrapperspb.UInt32(1), MaxPendingRequests: wrapperspb.UInt32(2),
				MaxRequests: wrapperspb.UInt32(4294967295), MaxRetries: wrapperspb.UInt32(4294967295), TrackRemaining: true}}}
		}, policy{CB: CircuitBreakers{&Thresholds{1, 2, 4294967295, 4294967295, nil}}}},
		{"threshold defaults", func(_ testing.TB, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: wrapperspb.UInt32(0)}}}
		}, policy{CB: CircuitBreakers{&Thresholds{1024, 1024, 1024, 0, nil}}}},
		{"retry budget", func(_ testing.TB, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRetries: wrapperspb.UInt32(1),
				RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 50}, MinRetryConcurrency: wrapperspb.UInt32(0)}}}}
		}, policy{CB: CircuitBreakers{&Thresholds{1024, 1024, 1024, 1, &RetryBudget{50, 0}}}}},
		{"retry budget defaults", func(_ testing.TB, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}}}
		}, policy{CB: CircuitBreakers{&Thresholds{1024, 1024, 1024, 3, &RetryBudget{20, 3}}}}},
		{"istio outlier", func(_ testing.TB, c *clusterv3.Cluster) { c.OutlierDetection = istioOutlier() },
			policy{Outlier: &OutlierDetection{Consecutive5xx: 3, ConsecutiveLocalOriginFailure: 5, EnforcingConsecutive5xx: 100,
				EnforcingConsecutiveLocalOriginFailure: 100, Interval: time.Second, BaseEjectionTime: 2 * time.Second,
				MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 50}}},
		{"outlier defaults", func(_ testing.TB, c *clusterv3.Cluster) {
			c.OutlierDetection = &clusterv3.OutlierDetection{BaseEjectionTime: durationpb.New(400 * time.Second), SplitExternalLocalOriginErrors: true}
		}, policy{Outlier: &OutlierDetection{Consecutive5xx: 5, ConsecutiveGatewayFailure: 5, ConsecutiveLocalOriginFailure: 5,
			EnforcingConsecutive5xx: 100, EnforcingConsecutiveLocalOriginFailure: 100, SplitExternalLocalOriginErrors: true,
			Interval: 10 * time.Second, BaseEjectionTime: 400 * time.Second, MaxEjectionTime: 400 * time.Second, MaxEjectionPercent: 10}}},
		{"connection options", func(t testing.TB, c *clusterv3.Cluster) {
			c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{
				KeepaliveProbes: wrapperspb.UInt32(4), KeepaliveTime: wrapperspb.UInt32(7), KeepaliveInterval: wrapperspb.UInt32(3)}}
			c.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
				IdleTimeout: durationpb.New(time.Minute), MaxConnectionDuration: durationpb.New(time.Hour), MaxRequestsPerConnection: wrapperspb.UInt32(10)}})
		}, policy{Conn: ConnectionOptions{TCPKeepalive: &TCPKeepalive{Probes: 4, Time: 7 * time.Second, Interval: 3 * time.Second},
			IdleTimeout: time.Minute, MaxConnectionDuration: time.Hour, MaxRequestsPerConnection: 10}}},
		{"h2 max concurrent streams", func(t testing.TB, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(8)}}}}})
		}, policy{Conn: ConnectionOptions{MaxConcurrentStreams: 8}}},
		{"h2 connection keepalive", func(t testing.TB, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, h2Options(&corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
				Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(5 * time.Second), IntervalJitter: &typev3.Percent{Value: 15}}}))
		}, policy{Conn: ConnectionOptions{H2Keepalive: &H2Keepalive{Interval: 30 * time.Second, Timeout: 5 * time.Second}}}},
		{"deprecated cluster fields", func(t testing.TB, c *clusterv3.Cluster) {
			c.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Second)} //nolint:staticcheck // deprecated field still honoured.
			c.MaxRequestsPerConnection = wrapperspb.UInt32(2)                                                   //nolint:staticcheck // deprecated field still honoured.
		}, policy{Conn: ConnectionOptions{IdleTimeout: time.Second, MaxRequestsPerConnection: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCluster()
			tt.mut(t, c)
			g, err := Build(Resources{Clusters: []proto.Message{c}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			rc := g.Clusters[reviewsV1]
			got := policy{rc.CircuitBreakers, rc.Outlier, rc.Conn}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got)\n%s", d)
			}
		})
	}
}

func TestClusterPolicyErrors(t *testing.T) {
	th := func(f func(th *clusterv3.CircuitBreakers_Thresholds)) func(testing.TB, *clusterv3.Cluster) {
		return func(_ testing.TB, c *clusterv3.Cluster) {
			t := &clusterv3.CircuitBreakers_Thresholds{}
			f(t)
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
		}
	}
	od := func(f func(od *clusterv3.OutlierDetection)) func(testing.TB, *clusterv3.Cluster) {
		return func(_ testing.TB, c *clusterv3.Cluster) {
			c.OutlierDetection = istioOutlier()
			f(c.OutlierDetection)
		}
	}
	common := func(o *corev3.HttpProtocolOptions) func(testing.TB, *clusterv3.Cluster) {
		return func(t testing.TB, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: o})
		}
	}
	const hpo = `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].common_http_protocol_options`
	const hpoH2 = `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http2_protocol_options`
	tests := []struct {
		name    string
		mut     func(testing.TB, *clusterv3.Cluster)
		wantErr string
	}{
		{"high priority", th(func(th *clusterv3.CircuitBreakers_Thresholds) { th.Priority = corev3.RoutingPriority_HIGH }),
			`circuit_breakers.thresholds[0].priority = "HIGH": must be DEFAULT`},
		{"duplicate default", func(_ testing.TB, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}, {}}}
		}, `circuit_breakers.thresholds[1].priority: duplicate DEFAULT thresholds`},
		{"retry budget interval", th(func(th *clusterv3.CircuitBreakers_Thresholds) {
			th.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetInterval: durationpb.New(time.Second)}
		}), `circuit_breakers.thresholds[0].retry_budget.budget_interval = "1s": must be 0 (not supported)`},
		{"retry budget percent", th(func(th *clusterv3.CircuitBreakers_Thresholds) {
			th.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 101}}
		}), `circuit_breakers.thresholds[0].retry_budget.budget_percent = "101": must be 0-100`},
		{"h2 keepalive without interval", func(t testing.TB, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, h2Options(&corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{Timeout: durationpb.New(time.Second)}}))
		}, hpoH2 + `.connection_keepalive.interval: must be set`},
		{"h2 keepalive zero timeout", func(t testing.TB, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, h2Options(&corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
				Interval: durationpb.New(time.Second), Timeout: durationpb.New(0)}}))
		}, hpoH2 + `.connection_keepalive.timeout = "0s": must be greater than 0`},
		{"h2 keepalive idle interval", func(t testing.TB, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = httpOptions(t, h2Options(&corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
				Interval: durationpb.New(time.Second), Timeout: durationpb.New(time.Second), ConnectionIdleInterval: durationpb.New(time.Second)}}))
		}, hpoH2 + `.connection_keepalive.connection_idle_interval: not supported`},
		{"per host thresholds", func(_ testing.TB, c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{PerHostThresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}}
		}, `circuit_breakers.per_host_thresholds: not supported`},
		{"success rate enforced", od(func(od *clusterv3.OutlierDetection) { od.EnforcingSuccessRate = wrapperspb.UInt32(100) }),
			`outlier_detection.enforcing_success_rate = "100": must be 0`},
		{"failure percentage enforced", od(func(od *clusterv3.OutlierDetection) { od.EnforcingFailurePercentage = wrapperspb.UInt32(1) }),
			`outlier_detection.enforcing_failure_percentage = "1": must be 0`},
		{"max ejection percent", od(func(od *clusterv3.OutlierDetection) { od.MaxEjectionPercent = wrapperspb.UInt32(101) }),
			`outlier_detection.max_ejection_percent = "101": must be at most 100`},
		{"enforcing over 100", od(func(od *clusterv3.OutlierDetection) { od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(200) }),
			`outlier_detection.enforcing_consecutive_5xx = "200": must be at most 100`},
		{"zero interval", od(func(od *clusterv3.OutlierDetection) { od.Interval = durationpb.New(0) }),
			`outlier_detection.interval = "0s": must be greater than 0`},
		{"negative base ejection", od(func(od *clusterv3.OutlierDetection) { od.BaseEjectionTime = durationpb.New(-time.Second) }),
			`outlier_detection.base_ejection_time = "-1s": must not be negative`},
		{"degraded hosts", od(func(od *clusterv3.OutlierDetection) { od.DetectDegradedHosts = wrapperspb.Bool(true) }),
			`outlier_detection.detect_degraded_hosts = "true": must be false`},
		{"happy eyeballs", func(_ testing.TB, c *clusterv3.Cluster) {
			c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{HappyEyeballsConfig: &clusterv3.UpstreamConnectionOptions_HappyEyeballsConfig{}}
		}, `upstream_connection_options.happy_eyeballs_config: not supported`},
		{"idle timeout 0", common(&corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(0)}),
			hpo + `.idle_timeout = "0s": must be greater than 0`},
		{"max stream duration", common(&corev3.HttpProtocolOptions{MaxStreamDuration: durationpb.New(time.Second)}),
			hpo + `.max_stream_duration: not supported`},
		{"underscores", common(&corev3.HttpProtocolOptions{HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_DROP_HEADER}),
			hpo + `.headers_with_underscores_action = "DROP_HEADER": must be ALLOW`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCluster()
			tt.mut(t, c)
			_, err := Build(Resources{Clusters: []proto.Message{c}}, nil)
			want := `cluster "` + reviewsV1 + `": ` + tt.wantErr
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err = %v\nwant prefix %s", err, want)
			}
		})
	}
}
