package translate

import (
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestSampleDestinationRules translates Istio's sample DestinationRules and
// checks the load balancer and thresholds of the clusters they shape.
const sharedSamples = "../../../../shared/istio-samples"

func TestSampleDestinationRules(t *testing.T) {
	tests := []struct {
		file    string
		cluster string
		lb      clusterv3.Cluster_LbPolicy
		lbCfg   any
		maxConn uint32 // 0: the default maximum
	}{
		{"bookinfo/networking/destination-rule-reviews.yaml", "outbound|9080|v2|reviews.default.svc.cluster.local", clusterv3.Cluster_RANDOM, nil, 0},
		{"bookinfo/networking/destination-rule-all.yaml", "outbound|9080|v1|ratings.default.svc.cluster.local", clusterv3.Cluster_LEAST_REQUEST, nil, 0},
		{"bookinfo/networking/destination-rule-all-mtls.yaml", "outbound|9080||details.default.svc.cluster.local", clusterv3.Cluster_LEAST_REQUEST, nil, 0},
		{"pilot-testdata/config/destination-rule-all.yaml", "outbound|81|v1|destall.default.svc.cluster.local", clusterv3.Cluster_ROUND_ROBIN, nil, 99},
		{"pilot-testdata/config/destination-rule-all.yaml", "outbound|81|v2|destall.default.svc.cluster.local", clusterv3.Cluster_RING_HASH,
			&clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(42)}, 99},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.cluster, func(t *testing.T) {
			// Unchanged: the samples write durations the Go way ("1m", "8ms").
			f := filepath.Join(sharedSamples, tt.file)
			pc := loadPushContext(t, meshFile, f)
			r := mustGenerate(t, pc, productpageSidecar())
			var c *clusterv3.Cluster
			for _, rc := range r.Clusters {
				if rc.GetName() == tt.cluster {
					c = rc
				}
			}
			if c == nil {
				t.Fatalf("no cluster %q", tt.cluster)
			}
			if c.GetLbPolicy() != tt.lb {
				t.Errorf("lb_policy = %v, want %v", c.GetLbPolicy(), tt.lb)
			}
			if tt.lbCfg != nil {
				if diff := cmp.Diff(tt.lbCfg, c.GetRingHashLbConfig(), protocmp.Transform()); diff != "" {
					t.Errorf("ring_hash_lb_config (-want +got):\n%s", diff)
				}
			}
			want := defaultThresholds().GetMaxConnections().GetValue()
			if tt.maxConn != 0 {
				want = tt.maxConn
			}
			if got := c.GetCircuitBreakers().GetThresholds()[0].GetMaxConnections().GetValue(); got != want {
				t.Errorf("max_connections = %d, want %d", got, want)
			}
		})
	}
}
