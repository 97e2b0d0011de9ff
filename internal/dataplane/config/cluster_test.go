package config

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestBuildClusterLB(t *testing.T) {
	u32 := func(v uint32) *uint32 { return &v }
	tests := []struct {
		name    string
		mutate  func(c *clusterv3.Cluster)
		want    *Cluster // only the load-balancer fields are compared
		wantErr string
	}{
		{"default round robin", func(c *clusterv3.Cluster) {}, &Cluster{LBPolicy: LBRoundRobin}, ""},
		{"least request defaults", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST },
			&Cluster{LBPolicy: LBLeastRequest, LeastRequest: &LeastRequestConfig{ChoiceCount: 2, ActiveRequestBias: 1}}, ""},
		{"least request config", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				ChoiceCount: wrapperspb.UInt32(5), ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: 0.5, RuntimeKey: "x"}}}
		}, &Cluster{LBPolicy: LBLeastRequest, LeastRequest: &LeastRequestConfig{ChoiceCount: 5, ActiveRequestBias: 0.5}}, ""},
		{"random", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM }, &Cluster{LBPolicy: LBRandom}, ""},
		{"ring hash defaults", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RING_HASH },
			&Cluster{LBPolicy: LBRingHash, RingHash: &RingHashConfig{MinRingSize: 1024, MaxRingSize: 8 << 20}}, ""},
		{"ring hash sizes", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(64), MaximumRingSize: wrapperspb.UInt64(4096)}}
		}, &Cluster{LBPolicy: LBRingHash, RingHash: &RingHashConfig{MinRingSize: 64, MaxRingSize: 4096}}, ""},
		{"maglev default", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_MAGLEV },
			&Cluster{LBPolicy: LBMaglev, Maglev: &MaglevConfig{TableSize: 65537}}, ""},
		{"maglev size", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}}
		}, &Cluster{LBPolicy: LBMaglev, Maglev: &MaglevConfig{TableSize: 251}}, ""},
		{"panic threshold truncated", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 30.7}}
		}, &Cluster{LBPolicy: LBRoundRobin, HealthyPanicThreshold: u32(30)}, ""},
		{"panic threshold 0", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{}}
		}, &Cluster{LBPolicy: LBRoundRobin, HealthyPanicThreshold: u32(0)}, ""},

		{"cluster provided", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }, nil,
			`lb_policy = "CLUSTER_PROVIDED": must be ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV`},
		{"load_balancing_policy", func(c *clusterv3.Cluster) { c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{} }, nil,
			`load_balancing_policy: not supported`},
		{"choice count 1", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(1)}}
		}, nil, `least_request_lb_config.choice_count = "1": must be at least 2`},
		{"negative bias", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: -1}}}
		}, nil, `least_request_lb_config.active_request_bias.default_value = "-1": must be a finite number >= 0`},
		{"slow start without window", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{}}}
		}, &Cluster{LBPolicy: LBRoundRobin}, ""},
		{"round robin slow start defaults", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(30 * time.Second)}}}
		}, &Cluster{LBPolicy: LBRoundRobin, SlowStart: &SlowStartConfig{Window: 30 * time.Second, Aggression: 1, MinWeightPercent: 10}}, ""},
		{"least request slow start", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute),
					Aggression: &corev3.RuntimeDouble{DefaultValue: 2}, MinWeightPercent: &typev3.Percent{Value: 25}}}}
		}, &Cluster{LBPolicy: LBLeastRequest, LeastRequest: &LeastRequestConfig{ChoiceCount: 2, ActiveRequestBias: 1},
			SlowStart: &SlowStartConfig{Window: time.Minute, Aggression: 2, MinWeightPercent: 25}}, ""},
		{"slow start aggression 0", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute),
					Aggression: &corev3.RuntimeDouble{}}}}
		}, nil, `round_robin_lb_config.slow_start_config.aggression.default_value = "0": must be a finite number > 0`},
		{"slow start min weight over 100", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute),
					MinWeightPercent: &typev3.Percent{Value: 150}}}}
		}, nil, `least_request_lb_config.slow_start_config.min_weight_percent.value = "150": must be 0 to 100`},
		{"slow start negative window", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(-time.Second)}}}
		}, nil, `round_robin_lb_config.slow_start_config.slow_start_window = "-1s": must not be negative`},
		{"murmur", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				HashFunction: clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2}}
		}, nil, `ring_hash_lb_config.hash_function = "MURMUR_HASH_2": must be XX_HASH`},
		{"ring too big", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MaximumRingSize: wrapperspb.UInt64(1 << 24)}}
		}, nil, `ring_hash_lb_config.maximum_ring_size = "16777216": must be 1 to 8388608`},
		{"ring min over max", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(2048), MaximumRingSize: wrapperspb.UInt64(1024)}}
		}, nil, `ring_hash_lb_config.minimum_ring_size = "2048": must not exceed maximum_ring_size (1024)`},
		{"maglev not prime", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(65536)}}
		}, nil, `maglev_lb_config.table_size = "65536": must be a prime number up to 5000011`},
		{"maglev too big", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(5000077)}}
		}, nil, `maglev_lb_config.table_size = "5000077": must be a prime number up to 5000011`},
		{"locality weighted", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{}}
		}, &Cluster{LBPolicy: LBRoundRobin, LocalityWeighted: true}, ""},
		{"locality weighted ignored by ring hash", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{}}
		}, &Cluster{LBPolicy: LBRingHash, RingHash: &RingHashConfig{MinRingSize: DefaultMinRingSize, MaxRingSize: DefaultMaxRingSize}}, ""},
		{"zone aware", func(c *clusterv3.Cluster) {
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig_{}}
		}, nil, `common_lb_config.zone_aware_lb_config: not supported (zone aware load balancing)`},
		{"hash balance factor", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{ConsistentHashingLbConfig: &clusterv3.Cluster_CommonLbConfig_ConsistentHashingLbConfig{
				HashBalanceFactor: wrapperspb.UInt32(150)}}
		}, nil, `common_lb_config.consistent_hashing_lb_config.hash_balance_factor: not supported`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testResources(t)
			c := testCluster()
			tc.mutate(c)
			res.Clusters[0] = c
			g, err := Build(res, nil)
			if tc.wantErr != "" {
				want := `cluster "` + reviewsV1 + `": ` + tc.wantErr
				if err == nil {
					t.Fatalf("Build = generation %d, want error %q", g.Number, want)
				}
				if d := cmp.Diff(want, err.Error()); d != "" {
					t.Errorf("error (-want +got):\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			got := g.Clusters[reviewsV1]
			lb := &Cluster{LBPolicy: got.LBPolicy, LeastRequest: got.LeastRequest, RingHash: got.RingHash,
				Maglev: got.Maglev, HealthyPanicThreshold: got.HealthyPanicThreshold, SlowStart: got.SlowStart,
				LocalityWeighted: got.LocalityWeighted}
			if d := cmp.Diff(tc.want, lb); d != "" {
				t.Errorf("cluster (-want +got):\n%s", d)
			}
		})
	}
}

func TestIsPrime(t *testing.T) {
	var got []uint64
	for n := range uint64(30) {
		if isPrime(n) {
			got = append(got, n)
		}
	}
	if d := cmp.Diff([]uint64{2, 3, 5, 7, 11, 13, 17, 19, 23, 29}, got); d != "" {
		t.Errorf("(-want +got)\n%s", d)
	}
	for _, p := range []uint64{65537, 5000011} {
		if !isPrime(p) {
			t.Errorf("isPrime(%d) = false", p)
		}
	}
}

// TestBuildClusterUpstreamBind: upstream_bind_config.source_address is the
// cluster's UpstreamBind (Istio's 127.0.0.6 on inbound clusters); what
// Loom does not serve of BindConfig is refused, naming the field.
func TestBuildClusterUpstreamBind(t *testing.T) {
	src := func(addr string, port uint32) *corev3.BindConfig {
		return &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}
	}
	tests := []struct {
		name    string
		bind    *corev3.BindConfig
		want    string
		wantErr string
	}{
		{"none", nil, "", ""},
		{"istio inbound", src("127.0.0.6", 0), "127.0.0.6", ""},
		{"ipv6", src("::6", 0), "::6", ""},
		{"freebind false", &corev3.BindConfig{SourceAddress: src("127.0.0.6", 0).GetSourceAddress(), Freebind: wrapperspb.Bool(false)}, "127.0.0.6", ""},
		{"fixed port", src("127.0.0.6", 4000), "", `upstream_bind_config.source_address.port_value = "4000": must be 0 (the kernel picks the source port)`},
		{"host name", src("localhost", 0), "", `upstream_bind_config.source_address.address = "localhost": must be an IP address`},
		{"no source address", &corev3.BindConfig{}, "", `upstream_bind_config.source_address: must be set`},
		{"freebind", &corev3.BindConfig{SourceAddress: src("127.0.0.6", 0).GetSourceAddress(), Freebind: wrapperspb.Bool(true)}, "", `upstream_bind_config.freebind: not supported`},
		{"udp", &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6", Protocol: corev3.SocketAddress_UDP}}, "", `upstream_bind_config.source_address.protocol = "UDP": must be TCP`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := testResources(t)
			c := testCluster()
			c.UpstreamBindConfig = tc.bind
			res.Clusters[0] = c
			g, err := Build(res, nil)
			if tc.wantErr != "" {
				want := `cluster "` + reviewsV1 + `": ` + tc.wantErr
				if err == nil || err.Error() != want {
					t.Fatalf("Build error = %v, want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if got := g.Clusters[reviewsV1].UpstreamBind; got != tc.want {
				t.Errorf("UpstreamBind = %s, want %s", got, tc.want)
			}
		})
	}
}
